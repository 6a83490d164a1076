"""Threaded workload for the python compatibility test.

Eight threads create messages (dicts of lists of strings, bytes) and pass them
around through queue.Queue inboxes: each message is made in one thread,
rewritten in five others and freed wherever it finishes (frees from a thread
that does not own the memory). A message's route depends only on its values,
never on timing, so the output is deterministic. Then waves of short-lived
threads whose objects outlive them.
"""
import hashlib
import queue
import threading

NTHREADS = 8
ROUNDS = 3000
HOPS = 5
TOTAL = NTHREADS * ROUNDS

inboxes = [queue.Queue() for _ in range(NTHREADS)]
results = queue.Queue()
lock = threading.Lock()
finished = [0]
all_done = threading.Event()


def handle(me, msg, local):
    if msg["hops"] < HOPS:
        msg["hops"] += 1
        msg["payload"].append(str(me) * msg["hops"])
        msg["payload"] = [p[::-1] for p in msg["payload"]]
        msg["seen"] = msg["seen"] + (me,)
        inboxes[(me + 1 + msg["seq"] % 3) % NTHREADS].put(msg)
        return
    h = hashlib.sha1()
    for p in msg["payload"]:
        h.update(p.encode())
    h.update(msg["blob"])
    h.update(repr(msg["seen"]).encode())
    local.append((msg["origin"], msg["seq"], h.hexdigest()))
    with lock:
        finished[0] += 1
        if finished[0] == TOTAL:
            all_done.set()


def worker(me):
    local = []
    inbox = inboxes[me]
    for seq in range(ROUNDS):
        msg = {"origin": me, "seq": seq, "hops": 0, "seen": (),
               "payload": [f"{me}:{seq}:{i}" * (1 + i % 4) for i in range(8)],
               "blob": bytes(range(seq % 256)) * (1 + seq % 3)}
        inboxes[(me + 1) % NTHREADS].put(msg)
        if seq % 16 == 15:
            # work off what has arrived so far, without blocking
            while True:
                try:
                    handle(me, inbox.get_nowait(), local)
                except queue.Empty:
                    break
    while True:
        msg = inbox.get()
        if msg is None:
            break
        handle(me, msg, local)
    results.put(local)


threads = [threading.Thread(target=worker, args=(i,), name=f"w{i}")
           for i in range(NTHREADS)]
for t in threads:
    t.start()
all_done.wait()
for q in inboxes:
    q.put(None)
for t in threads:
    t.join()

digests = []
while not results.empty():
    digests.extend(results.get())
digests.sort()
print(f"messages completed: {len(digests)} of {TOTAL}")
assert len({(o, s) for o, s, _ in digests}) == TOTAL
for origin in range(NTHREADS):
    mine = [d for o, _, d in digests if o == origin]
    print(f"origin {origin}: {len(mine)} messages, sha256 "
          + hashlib.sha256("".join(mine).encode()).hexdigest())
for o, s, d in digests[::TOTAL // 120]:
    print(f"{o} {s:5d} {d}")
print("total sha256",
      hashlib.sha256("".join(d for _, _, d in digests).encode()).hexdigest())

# Short-lived threads, in waves: each builds objects that outlive it and are
# freed by the main thread after it has exited (its heap goes to the pool and
# is adopted by a later thread while those blocks are still live).
kept = []
for wave in range(12):
    box = queue.Queue()

    def short(n, box=box, wave=wave):
        objs = [{"w": wave, "n": n, "s": f"{wave}.{n}." * (1 + k % 20),
                 "b": bytearray(k % 700)} for k in range(400)]
        box.put((n, objs))

    ts = [threading.Thread(target=short, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    got = sorted((box.get() for _ in ts), key=lambda x: x[0])
    kept.append(got)
    if len(kept) > 3:
        old = kept.pop(0)   # freed here, long after the threads that made them
        del old
    print(f"wave {wave:2d}: " + hashlib.sha256(
        "".join(o["s"] + str(len(o["b"])) for _, objs in got for o in objs).encode()
    ).hexdigest())
