# python3 alloc.py N: an allocation-heavy Python workload for scripts/bench,
# of the same kind as alloc.php: lists of strings, objects, json round-trips,
# string building, dicts growing and torn down. Prints one deterministic line.
import json
import random
import sys
import zlib


class Item:
    __slots__ = ("id", "name", "tags", "parent")

    def __init__(self, id, name, tags, parent):
        self.id, self.name, self.tags, self.parent = id, name, tags, parent


n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
rng = random.Random(42)
check = 0
for _ in range(n):
    words = [chr(97 + i % 26) * (1 + rng.randint(0, 40)) + str(i) for i in range(20000)]
    items, prev = [], None
    for i, w in enumerate(words):
        prev = Item(i, w, [w, w.upper(), i % 7], prev if i % 10 else None)
        items.append(prev)
    doc = {it.name: {"id": it.id, "tags": it.tags, "parent": it.parent and it.parent.id}
           for it in items[:5000]}
    text = json.dumps(doc)
    back = json.loads(text)
    check += len(back) + len(text)
    s = ""
    for w in words:
        s += w + ","
    check += len(s) + len("|".join(w[::-1] for w in words))
    words.sort()
    groups = {}
    for w in words:
        groups.setdefault(w[0], []).append(w)
    check += len(groups) + zlib.crc32((words[0] + words[-1]).encode())
    del words, items, doc, text, back, s, groups, prev
print("python", n, check)
