"""Load for the memcached compatibility test (memcached.sh).

    python3 memcached_client.py HOST PORT OPS_PER_CLIENT [CLIENTS]

CLIENTS threads (default 8), one connection each, run a deterministic mix of
the text protocol on their own keys: set/add/replace of values from 1 byte to
300 KiB, get and multi-get, gets + cas, append/prepend, incr/decr, touch,
delete. Every reply is checked against a local model of what the key should
hold; a mismatch ends the run with status 1. Prints per-client summaries, a
digest of every value read, and the server's counters that do not depend on
timing (so the plain and preloaded runs print the same lines).
"""
import hashlib
import random
import socket
import sys
import threading

host, port, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
nclients = int(sys.argv[4]) if len(sys.argv) > 4 else 8
SIZES = [1, 7, 64, 100, 500, 1000, 4000, 10000, 30000, 100000, 300000]


class Conn:
    def __init__(self):
        self.sock = socket.create_connection((host, port), timeout=60)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def store(self, cmd, key, value, cas=None):
        extra = f" {cas}" if cas is not None else ""
        self.send(f"{cmd} {key} 0 0 {len(value)}{extra}\r\n".encode() + value + b"\r\n")
        return self.line()

    def get(self, keys, cmd="get"):
        self.send(f"{cmd} {' '.join(keys)}\r\n".encode())
        out = {}
        while True:
            line = self.line()
            if line == b"END":
                return out
            parts = line.split()
            if parts[0] != b"VALUE":
                raise RuntimeError(f"unexpected reply {line!r}")
            data = self.exact(int(parts[3]))
            out[parts[1].decode()] = (data, int(parts[4]) if cmd == "gets" else None)

    def simple(self, cmd):
        self.send(cmd.encode() + b"\r\n")
        return self.line()


def value_for(rng, tag):
    n = rng.choice(SIZES)
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


failures = []
results = {}


def client(cid):
    rng = random.Random(1000 + cid)
    c = Conn()
    model = {}
    counts = dict.fromkeys(["set", "get", "mget", "cas", "append", "incr", "touch", "delete", "add", "replace"], 0)
    digest = hashlib.sha256()
    keys = [f"c{cid}:key{i}" for i in range(400)]

    def expect(cond, what):
        if not cond:
            raise AssertionError(f"client {cid}: {what}")

    for op in range(ops):
        k = rng.choice(keys)
        r = rng.random()
        if r < 0.30:
            v = value_for(rng, f"{k}:{op}")
            expect(c.store("set", k, v) == b"STORED", f"set {k}")
            model[k] = v
            counts["set"] += 1
        elif r < 0.55:
            got = c.get([k])
            expect(got.get(k, (None,))[0] == model.get(k), f"get {k}")
            if k in got:
                digest.update(got[k][0])
            counts["get"] += 1
        elif r < 0.65:
            ks = rng.sample(keys, 20)
            got = c.get(ks)
            for kk in ks:
                expect(got.get(kk, (None,))[0] == model.get(kk), f"multi-get {kk}")
            counts["mget"] += 1
        elif r < 0.72:
            got = c.get([k], "gets")
            if k in got:
                v = value_for(rng, f"cas:{k}:{op}")
                expect(c.store("cas", k, v, got[k][1]) == b"STORED", f"cas {k}")
                model[k] = v
                expect(c.store("cas", k, b"stale", got[k][1]) == b"EXISTS", f"stale cas {k}")
            counts["cas"] += 1
        elif r < 0.78:
            if k in model and len(model[k]) < 500000:
                tail = f"+{op}".encode()
                if op % 2:
                    expect(c.store("append", k, tail) == b"STORED", f"append {k}")
                    model[k] = model[k] + tail
                else:
                    expect(c.store("prepend", k, tail) == b"STORED", f"prepend {k}")
                    model[k] = tail + model[k]
            counts["append"] += 1
        elif r < 0.84:
            nk = f"c{cid}:n{op % 17}"
            if nk not in model:
                expect(c.store("set", nk, b"100") == b"STORED", f"set counter {nk}")
                model[nk] = b"100"
            d = op % 50
            if op % 3:
                reply = c.simple(f"incr {nk} {d}")
                model[nk] = str(int(model[nk]) + d).encode()
            else:
                reply = c.simple(f"decr {nk} {d}")
                model[nk] = str(max(0, int(model[nk]) - d)).encode()
            expect(reply == model[nk], f"incr/decr {nk}: {reply!r} != {model[nk]!r}")
            counts["incr"] += 1
        elif r < 0.87:
            reply = c.simple(f"touch {k} 0")
            expect(reply == (b"TOUCHED" if k in model else b"NOT_FOUND"), f"touch {k}")
            counts["touch"] += 1
        elif r < 0.92:
            v = value_for(rng, f"add:{k}:{op}")
            if k in model:
                expect(c.store("replace", k, v) == b"STORED", f"replace {k}")
                counts["replace"] += 1
            else:
                expect(c.store("add", k, v) == b"STORED", f"add {k}")
                counts["add"] += 1
            model[k] = v
        else:
            reply = c.simple(f"delete {k}")
            expect(reply == (b"DELETED" if k in model else b"NOT_FOUND"), f"delete {k}")
            model.pop(k, None)
            counts["delete"] += 1
    # a final sweep: everything the model holds must read back
    got = c.get(sorted(model))
    for k, v in model.items():
        g = got.get(k, (None,))[0]
        if ":n" in k and g is not None:
            g = g.rstrip(b" ")   # decr pads a shorter number with spaces
        expect(g == v, f"final {k}: {g[:40]!r} != {v[:40]!r}")
        digest.update(v)
    results[cid] = (counts, len(model), sum(map(len, model.values())), digest.hexdigest())
    c.sock.close()


def run(cid):
    try:
        client(cid)
    except Exception as e:  # reported below; the run then fails
        failures.append(f"client {cid}: {type(e).__name__}: {e}")


threads = [threading.Thread(target=run, args=(i,)) for i in range(nclients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)

total = hashlib.sha256()
for cid in range(nclients):
    counts, nkeys, nbytes, dig = results[cid]
    total.update(dig.encode())
    print(f"client {cid}: {nkeys} keys, {nbytes} bytes, "
          + " ".join(f"{k} {v}" for k, v in counts.items()) + f", digest {dig[:16]}")
print(f"all clients: digest {total.hexdigest()}")

c = Conn()
c.send(b"stats\r\n")
stats = {}
while True:
    line = c.line()
    if line == b"END":
        break
    _, name, value = line.decode().split(" ", 2)
    stats[name] = value
for name in ["curr_items", "total_items", "cmd_get", "cmd_set", "cmd_touch", "get_hits",
             "get_misses", "delete_hits", "delete_misses", "incr_hits", "decr_hits",
             "cas_hits", "cas_badval", "touch_hits", "touch_misses", "evictions",
             "total_connections"]:
    print(f"stat {name} {stats.get(name, '?')}")
