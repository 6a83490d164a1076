#!/usr/bin/python3
"""Issue 6: unmodified programs under ZMM_REQUEST=process (ZMM_LEAKS=lost,
the default) report the same definitely and indirectly lost blocks, by
count and bytes, as valgrind --leak-check=full on the same run: none where
valgrind finds none (python3, sqlite3, git status and log), the same ones
where it finds some (git diff --stat leaks a 2 KiB block and the 7-byte
string it points to).

usage: leaks_vs_valgrind.py LIBZMM   (needs valgrind, git, sqlite3, python3)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

LIB = os.path.abspath(sys.argv[1])
WORKLOAD_PY = ("import json, re\n"
               "d = {i: str(i) * 3 for i in range(3000)}\n"
               "s = json.dumps(d); e = json.loads(s)\n"
               "print(len(s), len(e), len(re.findall('1', s)))\n")
WORKLOAD_SQL = """create table t(a integer primary key, b text);
with recursive c(x) as (select 1 union all select x + 1 from c where x < 2000)
  insert into t select x, hex(randomblob(20)) from c;
create index tb on t(b);
select count(*), length(max(b)) from t;
"""
VALGRIND = re.compile(r"==\d+==\s+(definitely|indirectly) lost: ([\d,]+) bytes in ([\d,]+) blocks")


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMM_") and k != "LD_PRELOAD"}
    env.update(extra)
    return env


def by_valgrind(argv, cwd):
    r = subprocess.run(["valgrind", "--leak-check=full", "--error-exitcode=0", *argv], cwd=cwd,
                       env=clean_env({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors="replace", timeout=300)
    found = {"definite": (0, 0), "indirect": (0, 0)}
    for kind, nbytes, blocks in VALGRIND.findall(r.stderr):
        found["definite" if kind == "definitely" else "indirect"] = (int(blocks.replace(",", "")),
                                                                     int(nbytes.replace(",", "")))
    if "LEAK SUMMARY" not in r.stderr and "All heap blocks were freed" not in r.stderr:
        raise RuntimeError(f"valgrind gave no leak summary for {argv}:\n{r.stderr[-2000:]}")
    return found, r.stdout


def by_zmm(argv, cwd, log):
    r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors="replace", timeout=300,
                       env=clean_env({"LD_PRELOAD": LIB, "ZMM_REQUEST": "process", "ZMM_LOG_FORMAT": "json",
                                      "ZMM_LOG": log}))
    found = {"definite": [0, 0], "indirect": [0, 0]}
    objects = []
    with open(log) as f:
        objects = [json.loads(line) for line in f if line.startswith("{")]
    os.unlink(log)
    if len(objects) != 1:
        raise RuntimeError(f"{len(objects)} JSON reports from {argv}, expected one at exit")
    for g in objects[0]["groups"]:
        found[g["kind"]][0] += g["blocks"]
        found[g["kind"]][1] += g["bytes"]
    return {k: tuple(v) for k, v in found.items()}, r.stdout, objects[0]


def git(repo, *args):
    subprocess.run(["git", "-C", repo, *args], check=True, stdout=subprocess.DEVNULL,
                   env=clean_env({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                  "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00",
                                  "GIT_COMMITTER_DATE": "2026-01-01T00:00:00"}))


def main():
    for tool in ("valgrind", "git", "sqlite3"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed")
            return 77
    failures = []
    with tempfile.TemporaryDirectory() as d:
        repo = os.path.join(d, "repo")
        os.mkdir(repo)
        git(repo, "init", "-q")
        for n in range(3):
            with open(os.path.join(repo, f"f{n}.txt"), "w") as f:
                f.write("".join(f"line {i} of commit {n}\n" for i in range(200 * (n + 1))))
            git(repo, "add", ".")
            git(repo, "commit", "-q", "-m", f"commit {n}")
        with open(os.path.join(d, "w.sql"), "w") as f:
            f.write(WORKLOAD_SQL)
        cases = [
            ("python3", ["/usr/bin/python3", "-S", "-c", WORKLOAD_PY], d, True),
            ("sqlite3", ["sqlite3", ":memory:", ".read w.sql"], d, True),
            ("git status", ["git", "status", "--short"], repo, True),
            ("git log", ["git", "log", "--oneline", "-3"], repo, True),
            ("git diff --stat", ["git", "diff", "HEAD~1", "--stat"], repo, False),
        ]
        for name, argv, cwd, clean in cases:
            vg, vg_out = by_valgrind(argv, cwd)
            zm, zm_out, report = by_zmm(argv, cwd, os.path.join(d, "zmm.json"))
            line = (f"{name}: valgrind definite {vg['definite']} indirect {vg['indirect']}; "
                    f"zmm definite {zm['definite']} indirect {zm['indirect']} "
                    f"(reachable {report['reachable']}, scan {report['scan']['ns'] / 1e6:.1f} ms)")
            print(line)
            if zm != vg:
                failures.append(line)
            if clean and vg["definite"] != (0, 0):
                failures.append(f"{name}: valgrind found leaks in a case chosen to have none: {vg}")
            if not clean and vg["definite"] == (0, 0):
                failures.append(f"{name}: valgrind found no leak in the case chosen to have one")
            if vg_out != zm_out:
                failures.append(f"{name}: output differs between the two runs")
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
