"""Dict/list/str-heavy workload for the python compatibility test.

Deterministic: fixed PRNG seed, no addresses, no hash-order-dependent output
(the driver also fixes PYTHONHASHSEED). Prints a few hundred lines and
checksums of everything it built.
"""
import hashlib
import json
import random
import sys
from collections import Counter, OrderedDict, defaultdict

rng = random.Random(20240601)
WORDS = ["zend", "chunk", "bin", "page", "heap", "slot", "run", "huge",
         "request", "leak", "arena", "cache", "free", "alloc", "mmap", "brk"]


def word(n):
    return "-".join(rng.choice(WORDS) for _ in range(n))


digest = hashlib.sha256()


def emit(line):
    digest.update(line.encode())
    digest.update(b"\n")
    print(line)


# 1. dicts of strings, grown and shrunk repeatedly
table = {}
for i in range(60000):
    key = f"k{i % 7919}:{word(1 + i % 4)}"
    table[key] = table.get(key, "") + WORDS[i % len(WORDS)][: 1 + i % 5]
    if i % 3 == 0:
        table.pop(f"k{(i * 31) % 7919}:{WORDS[i % len(WORDS)]}", None)
emit(f"table: {len(table)} keys, {sum(map(len, table.values()))} value chars")
for k in sorted(table)[:50]:
    emit(f"  {k} = {table[k][:40]}")

# 2. lists: build, sort with keys, slice, reverse, join
rows = [(word(3), rng.randrange(10**6), i) for i in range(40000)]
rows.sort(key=lambda r: (r[0], -r[1], r[2]))
emit(f"rows: first {rows[0]}, last {rows[-1]}")
by_len = sorted(rows, key=lambda r: (len(r[0]), r[1]))
emit("shortest: " + ", ".join(r[0] for r in by_len[:8]))
chunks = ["|".join(r[0] for r in rows[i:i + 100]) for i in range(0, len(rows), 100)]
emit(f"chunks: {len(chunks)}, total {sum(map(len, chunks))} chars")
big = "\n".join(chunks)
emit(f"big: {len(big)} chars, {big.count('zend')} x 'zend', sha256 "
     + hashlib.sha256(big.encode()).hexdigest())

# 3. string churn: replace, split, upper, format, encode/decode
text = big
for a, b in [("zend", "ZEND"), ("heap", "h"), ("-", "_"), ("|", " | ")]:
    text = text.replace(a, b)
parts = text.split()
emit(f"text: {len(text)} chars, {len(parts)} parts")
counts = Counter(p for p in parts if p != "|")
for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:40]:
    emit(f"  {c:6d} {w}")
enc = text.encode("utf-16")
emit(f"utf-16 round trip ok: {enc.decode('utf-16') == text}")
uni = "".join(chr(0x100 + (i * 7) % 0x2000) for i in range(50000))
emit(f"unicode: {len(uni)} chars, utf-8 {len(uni.encode())} bytes, "
     + hashlib.md5(uni.encode()).hexdigest())

# 4. nested structures and a json round trip
groups = defaultdict(list)
for name, value, idx in rows:
    groups[name.split("-")[0]].append({"name": name, "value": value, "idx": idx,
                                       "tags": [name[:3], str(value % 97)]})
doc = OrderedDict((k, groups[k]) for k in sorted(groups))
s = json.dumps(doc, sort_keys=True, indent=1)
back = json.loads(s)
emit(f"json: {len(s)} chars, round trip equal: {back == json.loads(json.dumps(back))}")
emit("json sha256 " + hashlib.sha256(s.encode()).hexdigest())
for k in back:
    vals = [d["value"] for d in back[k]]
    emit(f"  {k:8s} n={len(vals):5d} min={min(vals):7d} max={max(vals):7d} "
         f"sum={sum(vals)}")

# 5. many small objects that die young, and sets
alive = []
for gen in range(30):
    batch = [{"g": gen, "s": str(i) * (i % 9), "l": list(range(i % 13))}
             for i in range(3000)]
    alive.extend(batch[::97])
    emit(f"gen {gen:2d}: kept {len(alive)}, "
         f"set {len({d['s'] for d in batch})}, "
         f"sum {sum(len(d['l']) for d in batch)}")
    del batch

# 6. bytes and bytearray
ba = bytearray()
for i in range(20000):
    ba += (WORDS[i % len(WORDS)] * (1 + i % 3)).encode()
    if i % 1000 == 999:
        del ba[: len(ba) // 3]
emit(f"bytearray: {len(ba)} bytes, sha256 {hashlib.sha256(ba).hexdigest()}")

for i in range(150):
    emit(f"line {i:3d}: {word(4)} {rng.random():.12f} {'x' * (i % 17)}")

print(f"checksum of all lines above: {digest.hexdigest()}")
sys.stdout.flush()
