#!/usr/bin/python3
"""Runs the request test programs under the preload and checks what they print.

    check.py TEST LIBZMM PROGRAM...

Each TEST below runs its program(s) with LD_PRELOAD=LIBZMM, in an environment
cleaned of every ZMM_* variable (each run sets the ones it tests), and checks
the exit status, stdout and stderr: the leak reports (text or JSON), the
memory-limit message, the programs' own "ok"/"FAIL" lines. Prints one "ok"
line, or the first failure with the output of the last run and exits 1.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

# ---------------------------------------------------------------------------
# Running


class Failure(Exception):
    pass


class Run:
    def __init__(self, argv, env, proc):
        self.argv = argv
        self.env = env
        self.status = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def describe(self):
        envs = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        return (f"--- run: {envs} {' '.join(self.argv)}\n--- exit status {self.status}\n"
                f"--- stdout\n{self.out}--- stderr\n{self.err}")


LIB = None
CURRENT = []
# ZendMM's rule, every live request block is a leak: for the tests of other
# features whose programs keep their planted blocks in reach on purpose.
ZENDMM = {"ZMM_LEAKS": "all"}  # the runs of the current test, shown on failure


def run(argv, env=None, timeout=120, cwd=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("ZMM_") and k != "LD_PRELOAD"}
    shown = {"LD_PRELOAD": LIB, **(env or {})}
    full.update(shown)
    proc = subprocess.run(argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, text=True, errors="replace", cwd=cwd)
    r = Run(argv, shown, proc)
    CURRENT.append(r)
    return r


def expect(cond, message):
    if not cond:
        raise Failure(message)


def expect_status(r, status):
    expect(r.status == status, f"exit status {r.status}, expected {status}")


def expect_ok_lines(r):
    """The program's own checks: no FAIL line, and "ok" last."""
    fails = [line for line in r.out.splitlines() if line.startswith("FAIL")]
    expect(not fails, "the program's checks failed:\n" + "\n".join(fails))
    lines = r.out.splitlines()
    expect(lines and lines[-1] == "ok", "the program did not end with 'ok'")


# ---------------------------------------------------------------------------
# Text reports (DESIGN.md, Leak report)

HEADER = re.compile(r"^zmm: request (\d+) '(.*)' \(pid (\d+), tid (\d+)\) ended: (\d+) (leak|leaks), "
                    r"(\d+) bytes; peak (\S+ ?\S*)$")
GROUP = re.compile(r"^Freeing 0x([0-9a-f]+) \((\d+) bytes\): (\d+) (block|blocks), (\d+) bytes"
                   r"(?:, (definitely lost|indirectly lost))?, allocated at:$")
# After a report (or alone, for a request whose blocks are all reachable or
# suppressed): "zmm: request N: B blocks (X bytes) still reachable; ..."
SUMMARY = re.compile(r"^zmm: request (\d+): (?:(\d+) blocks? \((\d+) bytes\) still reachable)?(?:; )?"
                     r"(?:(\d+) blocks? \((\d+) bytes\) in (\d+) groups? suppressed)?$")
FRAME = re.compile(r"^    #(\d+) 0x([0-9a-f]+)(?: in (.+?))?(?: (\S+):(\d+))? \(([^()\s]+)\+0x([0-9a-f]+)\)$")
TOTAL = re.compile(r"^=== Total (\d+) memory leaks detected ===$")


class Report:
    def __init__(self, m):
        self.id = int(m[1])
        self.name = m[2]
        self.pid = int(m[3])
        self.tid = int(m[4])
        self.leaks = int(m[5])
        self.word = m[6]
        self.bytes = int(m[7])
        self.peak = m[8]
        self.groups = []
        self.total = None
        self.reachable = 0
        self.suppressed = 0

    def function_names(self):
        return [f["function"] for g in self.groups for f in g["frames"]]


def parse_reports(text):
    """Splits stderr (or a log) into text reports and the other lines.

    Returns (reports, others): others are (index_of_next_report, line), so a
    caller can tell which lines came before, between or after reports."""
    reports, others = [], []
    current = None
    for line in text.splitlines():
        if current is None:
            m = HEADER.match(line)
            if m:
                current = Report(m)
                continue
            m = SUMMARY.match(line)
            if m and reports and reports[-1].id == int(m[1]):
                reports[-1].reachable = int(m[2] or 0)
                reports[-1].suppressed = int(m[4] or 0)
                continue
            expect(not (GROUP.match(line) or FRAME.match(line) or TOTAL.match(line)),
                   f"a report line outside a report: {line!r}")
            others.append((len(reports), line))
            continue
        m = GROUP.match(line)
        if m:
            current.groups.append({"address": int(m[1], 16), "size": int(m[2]), "blocks": int(m[3]),
                                   "bytes": int(m[5]), "frames": [], "plural": m[4], "kind": m[6] or "live"})
            continue
        m = FRAME.match(line)
        if m:
            expect(current.groups, f"a frame before any group: {line!r}")
            current.groups[-1]["frames"].append({
                "index": int(m[1]), "pc": int(m[2], 16), "function": m[3] or "", "file": m[4] or "",
                "line": int(m[5]) if m[5] else 0, "module": m[6], "offset": int(m[7], 16)})
            continue
        m = TOTAL.match(line)
        if m:
            current.total = int(m[1])
            reports.append(current)
            current = None
            continue
        raise Failure(f"unexpected line inside the report of request {current.id}: {line!r}")
    expect(current is None, "a report without its '=== Total' line")
    for r in reports:
        check_report_shape(r)
    return reports, others


def check_report_shape(r):
    """What every text report must satisfy, whatever it reports."""
    where = f"report of request {r.id} '{r.name}'"
    expect(r.leaks == r.total, f"{where}: header says {r.leaks} leaks, total line {r.total}")
    expect((r.leaks == 1) == (r.word == "leak"), f"{where}: '1 leak' / 'N leaks' wording")
    expect(r.groups, f"{where}: no 'Freeing' group")
    expect(sum(g["blocks"] for g in r.groups) == r.leaks, f"{where}: the groups' blocks do not add up")
    expect(sum(g["bytes"] for g in r.groups) == r.bytes, f"{where}: the groups' bytes do not add up")
    sizes = [g["bytes"] for g in r.groups]
    expect(sizes == sorted(sizes, reverse=True), f"{where}: groups not ordered by bytes: {sizes}")
    for g in r.groups:
        expect((g["blocks"] == 1) == (g["plural"] == "block"), f"{where}: '1 block' / 'N blocks' wording")
        expect(g["size"] <= g["bytes"], f"{where}: a group's first block is larger than the group")
        if g["blocks"] == 1:
            expect(g["size"] == g["bytes"], f"{where}: a one-block group's bytes differ from its block's size")
        expect(g["frames"], f"{where}: a group without frames")
        expect([f["index"] for f in g["frames"]] == list(range(len(g["frames"]))),
               f"{where}: frame numbers are not 0, 1, 2, ...")


def group_at(report, address):
    for g in report.groups:
        if g["address"] == address:
            return g
    raise Failure(f"no group of request {report.id} opens with 'Freeing {address:#x}'")


# ---------------------------------------------------------------------------
# The planted-leaks program (leaks.cpp)

DEEP = [f"planted::deep{n:02d}" for n in range(12, 0, -1)]  # frame #0 .. #11


def parse_leaks_stdout(r):
    info = {"plants": []}
    for line in r.out.splitlines():
        w = line.split()
        if w[0] == "pid":
            info["pid"] = int(w[1])
        elif w[0] == "request":
            info["id"], info["leaked"] = int(w[1]), int(w[3])
        elif w[0] == "second_end":
            info["second_end"] = int(w[1])
        elif w[0] == "clean":
            info["clean_id"], info["clean_leaked"] = int(w[1]), int(w[3])
        elif w[0] == "persistent":
            info["persistent"] = int(w[1], 16)
        elif w[0] == "plant":
            info["plants"].append({"function": w[1], "size": int(w[2]), "blocks": [int(a, 16) for a in w[3:]]})
    expect(len(info["plants"]) == 7, f"the program planted {len(info['plants'])} kinds of leak, not 7")
    expect(info["leaked"] == 9, f"zmm_request_end returned {info['leaked']}, expected 9")
    expect(info["second_end"] == -1, "zmm_request_end without an open request must return -1")
    expect(info["clean_leaked"] == 0, f"the clean request: zmm_request_end returned {info['clean_leaked']}")
    expect(info["clean_id"] > info["id"] > 0, "request ids must be positive and increase")
    return info


def check_planted_frames(function, frames, module):
    """frames: dicts with function/file/line/module. The planted function is
    frame #0 (zmm's own frames are not shown); deep12's chain follows it."""
    where = f"the group of {function}"
    expect(frames, f"{where}: no frames")
    f0 = frames[0]
    expect(f0["function"].startswith(function + "("),
           f"{where}: frame #0 is {f0['function']!r}, expected {function}(...) (demangled)")
    expect(f0["file"].endswith("leaks.cpp") and f0["line"] > 0,
           f"{where}: frame #0 has no file:line in leaks.cpp ({f0['file']}:{f0['line']})")
    expect(f0["module"] == module, f"{where}: frame #0's module is {f0['module']!r}, expected {module!r}")
    names = [f["function"] for f in frames]
    if function == "planted::deep12":
        expect(len(frames) >= 13, f"{where}: {len(frames)} frames, expected at least 13")
        for i, want in enumerate(DEEP):
            expect(names[i].startswith(want + "("), f"{where}: frame #{i} is {names[i]!r}, expected {want}(int)")
        expect(names[12] == "main", f"{where}: frame #12 is {names[12]!r}, expected main")
    else:
        expect("main" in names[:3], f"{where}: main is not among the first frames: {names}")


def check_leaks_text(text, info, module, expect_marks=True):
    reports, others = parse_reports(text)
    expect(len(reports) == 1, f"{len(reports)} reports, expected exactly 1 (the planted request)")
    rep = reports[0]
    expect(rep.id == info["id"] and rep.name == "planted", f"the report is of request {rep.id} '{rep.name}'")
    expect(rep.pid == info["pid"] and rep.tid == info["pid"], "the report's pid/tid are not the program's")
    expect(rep.leaks == 9, f"the report counts {rep.leaks} leaks, expected 9")
    want_bytes = sum(p["size"] * len(p["blocks"]) for p in info["plants"])
    expect(rep.bytes == want_bytes, f"the report counts {rep.bytes} bytes, expected {want_bytes}")
    expect(len(rep.groups) == 7, f"{len(rep.groups)} groups, expected 7 (the loop's 3 leaks are one)")
    for p in info["plants"]:
        g = group_at(rep, min(p["blocks"]))  # a group opens with its lowest address
        expect(g["size"] == p["size"], f"{p['function']}: 'Freeing' says {g['size']} bytes, planted {p['size']}")
        expect(g["blocks"] == len(p["blocks"]), f"{p['function']}: {g['blocks']} blocks, planted {len(p['blocks'])}")
        expect(g["bytes"] == p["size"] * len(p["blocks"]), f"{p['function']}: group bytes {g['bytes']}")
        check_planted_frames(p["function"], g["frames"], module)
        expect(g["kind"] == "definitely lost", f"{p['function']}: kind {g['kind']!r}, expected 'definitely lost'")
    expect(f"{info['persistent']:x}" not in text, "the persistent block appears in the report")
    if expect_marks:
        expect(others == [(1, "MARK clean begin"), (1, "MARK clean end")],
               f"stderr has other lines than the report and the clean request's marks: {others}")
    return rep


def test_leaks(prog):
    r = run([prog])
    expect_status(r, 0)
    info = parse_leaks_stdout(r)
    check_leaks_text(r.err, info, os.path.basename(prog))


def test_json(prog):
    r = run([prog], {"ZMM_LOG_FORMAT": "json"})
    expect_status(r, 0)
    info = parse_leaks_stdout(r)
    lines = r.err.splitlines()
    # One object per request, a clean one too (the log is a record of requests).
    expect(len(lines) == 4 and lines[1] == "MARK clean begin" and lines[3] == "MARK clean end",
           f"expected the planted request's object, then the clean one's between the marks: {lines}")
    try:
        o = json.loads(lines[0])
        clean = json.loads(lines[2])
    except ValueError as e:
        raise Failure(f"the report is not JSON: {e}")
    expect(clean["name"] == "clean" and clean["leaks"] == 0 and clean["groups"] == [],
           f"the clean request's object: {clean}")
    expect(isinstance(o, dict), "the report is not a JSON object")
    for key, kind in [("request", int), ("name", str), ("pid", int), ("tid", int), ("usage", int), ("peak", int),
                      ("real_usage", int), ("real_peak", int), ("duration_ns", int), ("leaks", int),
                      ("leaked_bytes", int), ("reachable", int), ("reachable_bytes", int), ("suppressed", int),
                      ("suppressed_bytes", int), ("groups", list)]:
        expect(isinstance(o.get(key), kind), f"field {key!r} missing or not {kind.__name__}: {o.get(key)!r}")
    expect("limit" in o and o["limit"] is None, f"limit should be null without a limit: {o.get('limit')!r}")
    expect(o["request"] == info["id"] and o["name"] == "planted", "request id or name")
    expect(o["pid"] == info["pid"] and o["tid"] == info["pid"], "pid or tid")
    expect(o["leaks"] == 9, f"leaks {o['leaks']}, expected 9")
    want_bytes = sum(p["size"] * len(p["blocks"]) for p in info["plants"])
    expect(o["leaked_bytes"] == want_bytes, f"leaked_bytes {o['leaked_bytes']}, expected {want_bytes}")
    expect(o["peak"] >= o["usage"] > 0 and o["real_peak"] >= o["real_usage"] > 0, "usage/peak figures")
    groups = o["groups"]
    expect(len(groups) == 7, f"{len(groups)} groups, expected 7")
    expect(sum(g["blocks"] for g in groups) == 9, "the groups' blocks do not add up to 9")
    expect([g["bytes"] for g in groups] == sorted((g["bytes"] for g in groups), reverse=True),
           "groups not ordered by bytes")
    by_address = {}
    for g in groups:
        for key in ("kind", "blocks", "bytes", "blocks_at", "frames"):
            expect(key in g, f"a group without {key!r}")
        expect(g["kind"] == "definite", f"a planted group's kind is {g['kind']!r}, expected 'definite'")
        expect(len(g["blocks_at"]) == g["blocks"], "blocks_at does not list every block")
        expect(sum(b["size"] for b in g["blocks_at"]) == g["bytes"], "a group's sizes do not add up")
        for b in g["blocks_at"]:
            expect(isinstance(b["address"], str) and b["address"].startswith("0x"), "address is not a 0x string")
            by_address[int(b["address"], 16)] = (g, b["size"])
        for f in g["frames"]:
            for key in ("pc", "function", "file", "line", "module", "offset"):
                expect(key in f, f"a frame without {key!r}: {f}")
            int(f["pc"], 16), int(f["offset"], 16)
    for p in info["plants"]:
        found = {by_address.get(a, (None, 0))[0] is not None for a in p["blocks"]}
        expect(found == {True}, f"{p['function']}: a planted block is not in the JSON report")
        g = by_address[p["blocks"][0]][0]
        expect(sorted(int(b["address"], 16) for b in g["blocks_at"]) == sorted(p["blocks"]),
               f"{p['function']}: its group holds other blocks than the planted ones")
        expect(all(by_address[a][1] == p["size"] for a in p["blocks"]), f"{p['function']}: block sizes")
        check_planted_frames(p["function"], g["frames"], os.path.basename(prog))
    expect(info["persistent"] not in by_address, "the persistent block is in the report")
    # What backtraces add to the scan's roots: zmm's own tables are left
    # out, and so is libunwind's trace cache, which its unw_backtrace maps
    # (256 KiB, written whole) on a thread's first call: zmm warms libunwind
    # up step by step, and this thread's captures are the fast unwinder's.
    untraced = run([prog], {"ZMM_LOG_FORMAT": "json", "ZMM_BACKTRACE": "0"})
    expect_status(untraced, 0)
    plain = json.loads(untraced.err.splitlines()[0])
    traced_bytes, untraced_bytes = o["scan"].get("bytes"), plain["scan"].get("bytes")
    expect(traced_bytes is not None and untraced_bytes is not None,
           f"scans without bytes: {o['scan']} {plain['scan']}")
    expect(traced_bytes < untraced_bytes + 128 * 1024,
           f"the traced request's scan read {traced_bytes} bytes, the untraced one's {untraced_bytes}")


def test_log_file(prog):
    with tempfile.TemporaryDirectory(prefix="zmm-requests-") as d:
        r = run([prog], {"ZMM_LOG": os.path.join(d, "zmm-%p.log")})
        expect_status(r, 0)
        info = parse_leaks_stdout(r)
        expect(r.err.splitlines() == ["MARK clean begin", "MARK clean end"],
               "with ZMM_LOG, stderr must hold only the program's own lines")
        files = sorted(os.listdir(d))
        want = f"zmm-{info['pid']}.log"
        expect(files == [want], f"ZMM_LOG=zmm-%p.log made {files}, expected [{want!r}]")
        with open(os.path.join(d, want)) as f:
            text = f.read()
        check_leaks_text(text, info, os.path.basename(prog), expect_marks=False)
    # A process with nothing to report leaves no file (a clean run, its
    # process-wide request ended without leaks): as a sanitizer's log_path.
    with tempfile.TemporaryDirectory(prefix="zmm-requests-") as d:
        r = run(["/bin/true"], {"ZMM_REQUEST": "process", "ZMM_LOG": os.path.join(d, "zmm-%p.log")})
        expect_status(r, 0)
        files = sorted(os.listdir(d))
        expect(files == [], f"a clean run under ZMM_LOG=zmm-%p.log made {files}, expected none")
    # A log zmm cannot open or write to is said once on stderr, and the
    # reports go there instead; a FIFO nobody reads holds nothing up.
    with tempfile.TemporaryDirectory(prefix="zmm-requests-") as d:
        fifo = os.path.join(d, "fifo")
        os.mkfifo(fifo)
        for log, said in ((d, "EISDIR"), (os.path.join(d, "no", "such.log"), "ENOENT"), (fifo, "ENXIO"),
                          ("/dev/full", "ENOSPC")):
            r = run([prog], {"ZMM_LOG": log})
            expect_status(r, 0)
            warnings = [line for line in r.err.splitlines() if line.startswith("zmm: warning:")]
            expect(len(warnings) == 1 and said in warnings[0], f"ZMM_LOG={log}: expected one warning naming {said}, "
                                                               f"got {warnings}")
            if log != "/dev/full":  # (its first report is lost; the later ones come to stderr)
                expect(len(parse_reports(r.err)[0]) >= 1, f"ZMM_LOG={log}: the report did not come to stderr")


def test_leak_exitcode(leaks_prog, tool):
    code = {"ZMM_LEAK_EXITCODE": "23"}
    r = run([leaks_prog], code)
    expect_status(r, 23)
    expect(len(parse_reports(r.err)[0]) == 1, "the report is still written")
    # process-wide: a leaking tool exits 23; a clean one keeps its status
    r = run([tool, "2", "0", "0"], {**code, "ZMM_REQUEST": "process"})
    expect_status(r, 23)
    expect(len(parse_reports(r.err)[0]) == 1, "the report is still written")
    r = run([tool, "0", "0", "0"], {**code, "ZMM_REQUEST": "process"})
    expect_status(r, 0)
    expect(r.err == "", "a process without leaks reports nothing")
    r = run([tool, "0", "0", "7"], {**code, "ZMM_REQUEST": "process"})
    expect_status(r, 7)
    # no request at all (ZMM_REQUEST=api, the default): nothing leaked in a request
    r = run([tool, "3", "0", "5"], code)
    expect_status(r, 5)
    expect(r.err == "", "without requests nothing is reported")


# ---------------------------------------------------------------------------
# ZMM_REQUEST=process


def test_process(tool):
    module = os.path.basename(tool)
    r = run([tool, "4", "2", "0"], {"ZMM_REQUEST": "process"})
    expect_status(r, 0)
    late = [int(a, 16) for a in r.out.split()[1:3]]
    reports, others = parse_reports(r.err)
    expect(len(reports) == 1, f"{len(reports)} reports, expected exactly one, at exit")
    expect(others == [], f"stderr has other lines: {others}")
    rep = reports[0]
    expect(rep.name == "process", f"the request is named {rep.name!r}, expected 'process'")
    expect(rep.leaks == 6, f"{rep.leaks} leaks, expected 6 (4 from main, 2 from the thread)")
    expect(rep.bytes == 2 * 111 + 222 + 333 + 2 * 444, f"{rep.bytes} bytes leaked")
    want = {"thread_leak": (2, 444), "leak_one": (2, 111), "leak_two": (1, 222), "leak_three": (1, 333)}
    expect(len(rep.groups) == len(want), f"{len(rep.groups)} groups, expected {len(want)}")
    for g in rep.groups:
        f0 = g["frames"][0]
        expect(f0["function"] in want, f"a group whose frame #0 is {f0['function']!r}")
        blocks, size = want.pop(f0["function"])
        expect((g["blocks"], g["size"]) == (blocks, size), f"{f0['function']}: {g['blocks']} blocks of {g['size']}")
        expect(f0["module"] == module and f0["file"].endswith("leaky_tool.c"), f"{f0['function']}: module, file")
    for a in late:
        expect(f"{a:x}" not in r.err, "a block freed by atexit or a static destructor was reported")
    # Nothing leaked: nothing printed, and the program's status.
    r = run([tool, "0", "0", "3"], {"ZMM_REQUEST": "process"})
    expect_status(r, 3)
    expect(r.err == "", "a run without leaks must print nothing")
    # The default (api) makes no request of an unmodified program.
    r = run([tool, "3", "1", "0"])
    expect_status(r, 0)
    expect(r.err == "", "without ZMM_REQUEST=process an unmodified program gets no report")


def test_process_python():
    python = "/usr/bin/python3"
    script = "import os, json; d = {i: str(i) * 3 for i in range(1000)}; print(os.getpid())"
    # By default (lost) CPython loses nothing: what it holds at exit is reachable.
    r = run([python, "-S", "-c", script], {"ZMM_REQUEST": "process", "ZMM_LOG_FORMAT": "json"}, timeout=120)
    expect_status(r, 0)
    o = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    expect(len(o) == 1 and o[0]["leaks"] == 0 and o[0]["reachable"] > 0,
           f"CPython at exit: expected no lost block and many reachable ones: {r.err[:500]}")
    r = run([python, "-S", "-c", script], {"ZMM_REQUEST": "process", **ZENDMM}, timeout=120)
    expect_status(r, 0)
    pid = int(r.out.split()[0])
    reports, others = parse_reports(r.err)
    expect(others == [], f"stderr has other lines: {others[:5]}")
    expect(len(reports) == 1, f"{len(reports)} reports, expected exactly one, at exit")
    rep = reports[0]
    expect(rep.name == "process" and rep.pid == pid, "the report names another request or process")
    expect(rep.leaks > 0, "CPython leaves blocks at exit: the report should list them")
    expect(any(f["module"].startswith("python3") for g in rep.groups for f in g["frames"]),
           "no frame in the python3 executable")


# ---------------------------------------------------------------------------
# The memory limit (limit.cpp)

LIMIT_LINE = re.compile(r"^Allowed memory size of (\d+) bytes exhausted \(tried to allocate (\d+) bytes\)$")


def check_fatal(r, limit, fill, name="limited"):
    expect_status(r, 255)
    expect("FAIL" not in r.out, "the program went on past the limit")
    lines = r.err.splitlines()
    first = [i for i, line in enumerate(lines) if line.startswith("Allowed memory size")]
    expect(len(first) == 1, "no (or more than one) 'Allowed memory size' line on stderr")
    i = first[0]
    m = LIMIT_LINE.match(lines[i])
    expect(m, f"the limit line is not ZendMM's: {lines[i]!r}")
    expect(int(m[1]) == limit, f"the message names a limit of {m[1]} bytes, expected {limit}")
    expect(int(m[2]) > 0, "tried to allocate 0 bytes?")
    expect(re.match(rf"^zmm: in request \d+ '{name}' \(pid \d+, tid \d+\), the allocation came from:$",
                    lines[i + 1] if i + 1 < len(lines) else ""),
           f"the line after the message does not name the request {name!r}")
    frames = [FRAME.match(line) for line in lines[i + 2:]]
    expect(frames and all(frames), "the backtrace of the allocation is missing or malformed")
    functions = [f[3] or "" for f in frames]
    expect(fill in functions[0], f"the backtrace's frame #0 is {functions[0]!r}, expected {fill}")
    expect("main" in functions, "the backtrace does not reach main")
    return int(m[2])


def test_limit_fatal(prog):
    # the limit from the API, a large run that needs a new chunk
    r = run([prog, "fatal-api", "large"])
    expect(r.out == "ready\n", "the program did not get to its request (persistent memory is not limited)")
    check_fatal(r, 8 << 20, "fill_large")
    # the limit from the API, a huge block
    r = run([prog, "fatal-api", "huge"])
    expect(r.out == "ready\n", "the program did not get to its request")
    check_fatal(r, 8 << 20, "fill_huge")
    # the limit from ZMM_MEMORY_LIMIT (12 MiB of persistent memory first)
    r = run([prog, "fatal-env", "large"], {"ZMM_MEMORY_LIMIT": "4M"})
    expect(r.out == "ready\n", "the program did not get to its request (persistent memory is not limited)")
    check_fatal(r, 4 << 20, "fill_large")
    r = run([prog, "fatal-env", "huge"], {"ZMM_MEMORY_LIMIT": "7340032", "ZMM_LIMIT_ACTION": "fatal"})
    check_fatal(r, 7 << 20, "fill_huge")
    # With a log file: the message on stderr still; in the log as text, or
    # as one JSON object in a JSON log (a text line there broke its readers).
    for fmt in ("text", "json"):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "zmm.log")
            r = run([prog, "fatal-api", "large"], {"ZMM_LOG": log, "ZMM_LOG_FORMAT": fmt})
            m = check_fatal(r, 8 << 20, "fill_large")
            with open(log) as f:
                lines = f.read().splitlines()
        if fmt == "text":
            expect(any(line.startswith("Allowed memory size of 8388608 bytes exhausted") for line in lines),
                   f"the text log lacks the limit's message: {lines}")
            continue
        objs = []
        for line in lines:
            try:
                objs.append(json.loads(line))
            except ValueError:
                raise Failure(f"a line of the JSON log is not JSON: {line!r}")
        expect(len(objs) == 1, f"{len(objs)} objects in the JSON log, expected the limit's one: {objs}")
        o = objs[0]
        expect(o.get("fatal") == "memory_limit" and o.get("limit") == 8 << 20 and o.get("tried_to_allocate") == m
               and o.get("name") == "limited" and o.get("message", "").startswith("Allowed memory size of 8388608"),
               f"the limit's JSON object: {o}")
        expect(any("fill_large" in fr.get("function", "") for fr in o.get("frames", [])),
               f"the limit's JSON object lacks the allocation's frames: {o}")


def all_of(*cases):
    """Runs every case (a callable) and fails with all their failures."""
    failures = []
    for case in cases:
        try:
            case()
        except Failure as e:
            failures.append(str(e))
    expect(not failures, "\n  ".join([f"{len(failures)} of {len(cases)} cases failed:"] + failures))


def test_limit_fatal_size(prog):
    """The M of 'tried to allocate M bytes' is ZendMM's: the size of the page
    run the allocation needs (64 KiB for malloc(65536), a bin's run for a
    small block), or the huge block's size rounded to pages (3 MiB for
    malloc(3 MiB), 3 MiB + 4 KiB for malloc(3 MiB + 32)); not zmm's chunk or
    mapping size. The limit handler's `requested` is the same figure."""
    def large():
        m = check_fatal(run([prog, "fatal-api", "large"]), 8 << 20, "fill_large")
        expect(m == 65536, f"malloc(65536) past the limit: 'tried to allocate {m} bytes', expected 65536")

    def huge():
        m = check_fatal(run([prog, "fatal-api", "huge"]), 8 << 20, "fill_huge")
        expect(m == 3 << 20, f"malloc(3 MiB) past the limit: 'tried to allocate {m} bytes', expected {3 << 20}")

    def huge_odd():
        m = check_fatal(run([prog, "fatal-api", "huge-odd"]), 8 << 20, "fill_huge")
        want = (3 << 20) + 4096
        expect(m == want, f"malloc(3 MiB + 32) past the limit: 'tried to allocate {m} bytes', expected {want} "
                          "(ZendMM's page-rounded huge size)")

    def small():
        m = check_fatal(run([prog, "fatal-api", "small"]), 8 << 20, "fill_small")
        expect(m == 4096, f"malloc(100) past the limit: 'tried to allocate {m} bytes', expected 4096 "
                          "(the one-page run of its bin)")

    def handler():
        m = re.search(r"requested (\d+)", run([prog, "handler"]).out)
        expect(m and int(m[1]) == 65536,
               f"the limit handler's `requested` for malloc(65536) is {m and m[1]}, expected 65536")

    all_of(large, huge, huge_odd, small, handler)


def test_limit_spread(prog):
    """A request's limit leaves out the chunks earlier requests' live blocks
    are in, however few their bytes."""
    r = run([prog, "spread"], {"ZMM_LIMIT_ACTION": "enomem", "ZMM_LEAKS": "0"})
    expect_status(r, 0)
    expect(r.out.strip() == "ok", r.out)


def test_limit_enomem(prog):
    r = run([prog, "enomem"], {"ZMM_LIMIT_ACTION": "enomem", **ZENDMM})
    expect_status(r, 0)
    expect_ok_lines(r)
    for name in ("first", "second", "third"):
        # 124 runs of 64 KiB fill 8 MiB of new chunks; after a request that
        # leaked (the third follows one), the free space of the chunks holding
        # its leaks, left out of the limit, may add a few.
        m = re.search(rf"^{name}: (\d+) runs of 64 KiB$", r.out, re.M)
        expect(m is not None and 124 <= int(m[1]) <= 124 + 31, f"request {name!r} did not get its whole budget")
    reports, others = parse_reports(r.err)
    expect(others == [], f"stderr has other lines: {others}")
    expect([(x.name, x.leaks) for x in reports] == [("second", 122)],
           f"reports {[(x.name, x.leaks) for x in reports]}, expected the second request's 122 leaks")
    expect(reports[0].groups[0]["frames"][0]["function"].endswith("fill_large()"), "frame #0 is not fill_large")


def test_limit_handler(prog):
    r = run([prog, "handler"], ZENDMM)
    lines = r.out.splitlines()
    expect("FAIL" not in r.out, "the program's checks failed")
    expect(lines[:1] == ["ready"] and "ok" in lines, "the program did not run its checks")
    expect(any(line.startswith("bailout: 124 runs, handler called with limit 8388608") for line in lines),
           "the longjmp handler")
    expect("raised: 248 runs" in lines, "the handler that raises the limit")
    # the last part: a handler that returns; the fatal action follows it
    err = r.err.splitlines()
    expect(err[:1] == ["limit handler returned"], "the returning handler did not run first")
    check_fatal(r, 8 << 20, "fill_large", name="returns")


# ---------------------------------------------------------------------------
# Threads, loops, reclaim, usage


def test_threads(prog):
    r = run([prog], ZENDMM)
    expect_status(r, 0)
    expect_ok_lines(r)
    want = sorted((w[1] + " " + w[2], int(w[3])) for w in (line.split() for line in r.out.splitlines())
                  if w[0] == "leaky")
    expect(want, "the program planted no leaks")
    reports, others = parse_reports(r.err)
    expect(others == [], f"stderr has other lines: {others[:5]}")
    got = sorted((x.name, x.leaks) for x in reports)
    expect(got == want, f"reports {got}\nexpected {want}")
    tids = {}
    for x in reports:
        expect(len(x.groups) == 1 and "leak_from_thread" in x.groups[0]["frames"][0]["function"],
               f"request {x.name}: the leaks' group is not leak_from_thread's")
        expect(x.tid != x.pid, f"request {x.name}: ran on the main thread?")
        tids.setdefault(x.name.split()[0], set()).add(x.tid)
    expect(len(tids) == 4 and all(len(s) == 1 for s in tids.values()) and len(set.union(*tids.values())) == 4,
           f"each thread's requests must report that thread's tid: {tids}")


def test_selfcheck(prog, *args, env=None):
    r = run([prog, *args], env)
    expect_status(r, 0)
    expect_ok_lines(r)
    return r


def test_loop(prog, mode):
    # A small resident budget: the OS-memory bound the program checks (16 MiB
    # of growth over the second half) must exceed what two heaps' caches of
    # freed huge mappings may hold between purges, and not much more.
    env = {"ZMM_PURGE_BUDGET": "4M"}
    if mode == "leaky":
        env["ZMM_LEAKS"] = "0"
    r = test_selfcheck(prog, mode, env=env)
    expect(r.err == "", "stderr should be empty")


def test_usage(prog):
    # ZMM_LEAKS=0: a report symbolizes, and what that allocates (persistent)
    # would blur the process's figures that the program checks exactly.
    # Traced (the default) and untraced: carried blocks take different routes.
    for backtrace in ("16", "0"):
        r = test_selfcheck(prog, env={"ZMM_LEAKS": "0", "ZMM_BACKTRACE": backtrace})
        expect(r.err == "", "stderr should be empty")


def test_reclaim(prog):
    module = os.path.basename(prog)
    for mode in ("keep", "release"):
        env = {"ZMM_RECLAIM": "1"} if mode == "release" else {}
        # exact usage figures, no report
        r = test_selfcheck(prog, mode, "exact", env={**env, "ZMM_LEAKS": "0"})
        expect(r.err == "", "ZMM_LEAKS=0 must print nothing")
        # the report, identical either way
        r = test_selfcheck(prog, mode, env={**env, **ZENDMM})
        reports, others = parse_reports(r.err)
        expect(others == [], f"stderr has other lines: {others}")
        expect(len(reports) == 1 and reports[0].name == "leaky" and reports[0].leaks == 102,
               "expected one report: request 'leaky', 102 leaks")
        got = [(g["frames"][0]["function"], g["blocks"], g["bytes"]) for g in reports[0].groups]
        want = [("leak_huge", 1, 3 * 2**20 + 100), ("leak_small", 100, 100000), ("leak_large", 1, 65536)]
        expect(got == want, f"groups {got}, expected {want}")
        expect(all(g["frames"][0]["module"] == module for g in reports[0].groups), "frame #0's module")


def test_repro_demangle(prog):
    """Issue 3: demangled names for every frame that has a symbol, also in a
    C++ program that does not load libstdc++ at start-up (demangle.cpp)."""
    def case(args, loaded):
        r = run([prog, *args], ZENDMM)
        expect_status(r, 0)
        expect(f"libstdc++ {loaded}" in r.out and "leaked 1" in r.out, "the program did not run as planned")
        reports, _ = parse_reports(r.err)
        expect(len(reports) == 1, "expected one report")
        f0 = reports[0].groups[0]["frames"][0]["function"]
        expect(f0 == "shapes::Circle::make(int)",
               f"libstdc++ {'loaded by dlopen before the request' if args else 'not loaded'}: "
               f"frame #0 is {f0!r}, expected 'shapes::Circle::make(int)'")

    all_of(lambda: case([], "not loaded"), lambda: case(["dlopen"], "loaded"))


def test_reload(prog, lib_a, lib_b):
    """A library unloaded and another loaded at its addresses (reload.c):
    the second's leak has its own frames (alloc_here, then caller_b and main)
    and its own module, with zmm's unwinder and with libunwind alone, the
    first library opened before or after zmm prepared its unwinders."""
    def case(fast, *warm):
        r = run([prog, lib_a, lib_b, *warm], {**ZENDMM, "ZMM_FAST_UNWIND": fast})
        expect_status(r, 0)
        expect_ok_lines(r)
        expect("request a leaked 0" in r.out and "request b leaked 1" in r.out,
               "the program did not run as planned")
        reports, _ = parse_reports(r.err)
        expect(len(reports) == 1 and reports[0].name == "b", "expected one report, of request 'b'")
        frames = reports[0].groups[0]["frames"]
        names = [f["function"] for f in frames]
        where = f"ZMM_FAST_UNWIND={fast}{' warm' if warm else ''}"
        expect(len(frames) >= 3 and names[:3] == ["alloc_here", "caller_b", "main"],
               f"{where}: the frames are {names}, expected alloc_here, caller_b, main first")
        want = os.path.basename(lib_b)
        expect(frames[0]["module"] == want,
               f"{where}: frame #0's module is {frames[0]['module']!r}, expected {want!r}")

    all_of(lambda: case("1"), lambda: case("0"), lambda: case("1", "warm"), lambda: case("0", "warm"))


def test_shim(pie, nopie):
    """zmm.h's shim (shim.c) in a PIE and in a position-dependent program,
    where the linker sets the weak references to 0 (the shim asks dlsym):
    under the preload the calls reach zmm, the request reports its leak;
    without it they return -1 and 0."""
    def case(prog, on):
        env = {"ZMM_REQUEST": "api", "ZMM_LEAKS": "all"} if on else {"LD_PRELOAD": ""}
        r = run([prog, "on" if on else "off"], env)
        expect_status(r, 0)
        expect_ok_lines(r)
        reports, _ = parse_reports(r.err)
        expect(len(reports) == (2 if on else 0), f"{prog}: {len(reports)} reports, expected {2 if on else 0}")
        expect(all(rep.leaks == 1 for rep in reports), f"{prog}: each request should report its one leak")

    all_of(lambda: case(pie, True), lambda: case(nopie, True), lambda: case(pie, False), lambda: case(nopie, False))


def test_fork_loader(prog):
    """fork() while another thread holds the loader's lock (fork_loader.c):
    the child, whose lock stays held, neither hangs in its first traced
    allocations (a call site new to the unwinder) nor at its request's end,
    and reports its leak, definitely lost, with planted_in_child,
    caller_in_child and main first. Also with libunwind loaded before the fork and ZMM_FAST_UNWIND=0 (the
    child unwinds with the fast unwinder all the same), with the child's
    own dlopen and dlclose (zmm looks for no unloads there), and with names
    from inside the process (ZMM_SYMBOLIZER=0: no libdw loaded in the child;
    the frames are there, their offsets in the program)."""
    def case(args, env, named=True):
        r = run([prog, *args], {"ZMM_REQUEST": "api", **env}, timeout=60)
        expect_status(r, 0)
        expect("child leaked 1" in r.out and "child exit 0" in r.out, "the child did not run as planned")
        reports, _ = parse_reports(r.err)
        expect([rep.name for rep in reports][-1:] == ["child"], "expected the last report to be request 'child''s")
        group = reports[-1].groups[0]
        names = [f["function"] for f in group["frames"]]
        where = f"{' '.join(args)} {env}"
        if named:
            expect(names[:3] == ["planted_in_child", "caller_in_child", "main"],
                   f"{where}: the frames are {names}, expected planted_in_child, caller_in_child, main first")
        else:
            module = os.path.basename(prog)
            expect(len(group["frames"]) >= 3 and all(f["module"] == module for f in group["frames"][:3]),
                   f"{where}: expected 3 frames in {module} first, got {group['frames'][:3]}")
        expect(group["kind"] == "definitely lost", f"{where}: the leak is {group['kind']!r}, expected 'definitely lost'")

    all_of(lambda: case([], {}),
           lambda: case(["parent"], {"ZMM_FAST_UNWIND": "0"}),
           lambda: case(["dlopen"], {}),
           lambda: case([], {"ZMM_SYMBOLIZER": "0"}, named=False))


# ---------------------------------------------------------------------------

def test_symbolizer(prog, leaks_prog):
    """Names from the helper process: three reports (the first, one after
    the program took over the helper's fd number, a forked child's), each
    naming planted_leak at symbolizer.c:LINE; then leaks.cpp's report with
    names from inside the process (ZMM_SYMBOLIZER=0), with a helper that
    does not exist (names from inside too), and with every backtrace from
    libunwind (ZMM_FAST_UNWIND=0)."""
    r = run([prog], {"ZMM_LEAKS": "all"})
    expect_status(r, 0)
    expect_ok_lines(r)
    pids = [int(w) for line in r.out.splitlines() if line.startswith("pid ") for w in line.split()[1::2]]
    reports, _ = parse_reports(r.err)
    expect([rep.name for rep in reports] == ["first", "second", "child"],
           f"reports of {[rep.name for rep in reports]}, expected first, second, child")
    expect([rep.pid for rep in reports] == [pids[0], pids[0], pids[1]], "the reports' pids")
    for rep in reports:
        f0 = rep.groups[0]["frames"][0]
        expect(f0["function"] == "planted_leak", f"report '{rep.name}': frame #0 is {f0['function']!r}")
        expect(f0["file"].endswith("symbolizer.c") and f0["line"] > 0,
               f"report '{rep.name}': frame #0 at {f0['file']}:{f0['line']}")
        expect("main" in [f["function"] for f in rep.groups[0]["frames"]], f"report '{rep.name}': no main")
    for mode in ("subreaper", "chdir"):
        r = run([prog, mode], {"ZMM_LEAKS": "all"})
        expect_status(r, 0)
        expect_ok_lines(r)
        reports, _ = parse_reports(r.err)
        expect(len(reports) == 1 and reports[0].groups[0]["frames"][0]["function"] == "planted_leak",
               f"{mode}: the report does not name planted_leak")
    # The relative preload path and the program's chdir("/"): run from the
    # library's directory.
    libdir = os.path.dirname(LIB)
    r = run([os.path.abspath(prog), "chdir"], {"ZMM_LEAKS": "all", "LD_PRELOAD": "./" + os.path.basename(LIB)},
            cwd=libdir)
    expect_status(r, 0)
    expect_ok_lines(r)
    # The helper's environment: zmm off in it (a system-wide preload), no
    # LD_PRELOAD, no other ZMM_ option.
    with tempfile.TemporaryDirectory() as tmp:
        dump, wrapper = os.path.join(tmp, "env"), os.path.join(tmp, "helper")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nenv > {dump}\nexec {libdir}/zmm-symbolizer\n")
        os.chmod(wrapper, 0o755)
        r = run([prog, "chdir"], {"ZMM_LEAKS": "all", "ZMM_SYMBOLIZER": wrapper})
        expect_status(r, 0)
        expect_ok_lines(r)
        env = dict(line.split("=", 1) for line in open(dump).read().splitlines() if "=" in line)
        expect(env.get("ZMM_ALLOC") == "0", f"the helper runs without ZMM_ALLOC=0: {env.get('ZMM_ALLOC')!r}")
        expect("LD_PRELOAD" not in env and not [k for k in env if k.startswith("ZMM_") and k != "ZMM_ALLOC"],
               f"the helper's environment keeps the preload or zmm's options: {sorted(env)}")
    for env in ({"ZMM_SYMBOLIZER": "0"}, {"ZMM_SYMBOLIZER": "/nonexistent/zmm-symbolizer"},
                {"ZMM_FAST_UNWIND": "0"}):
        r = run([leaks_prog], env)
        expect_status(r, 0)
        check_leaks_text(r.err, parse_leaks_stdout(r), os.path.basename(leaks_prog))


def test_seccomp(prog, coroutine):
    """Backtraces captured under a seccomp filter that kills for opening a
    file (the fast unwinder and libunwind's fallback both), on the main
    thread's stack grown deeper and on a new thread; and on a stack a thread
    switched to (coroutine.c)."""
    for p in (prog, coroutine):
        for env in ({}, {"ZMM_FAST_UNWIND": "0"}):
            r = run([p], {"ZMM_LEAKS": "0", **env})
            expect_status(r, 0)
            expect_ok_lines(r)


def test_reach(prog):
    """Issue 6: each planted kind, as the JSON log and zmm_request_end say."""
    def run_reach(env):
        r = run([prog], {"ZMM_LOG_FORMAT": "json", **env})
        expect_status(r, 0)
        expect("FAIL" not in r.out, r.out)
        ret = dict((w[0], int(w[1])) for w in (line.split() for line in r.out.splitlines()))
        objs = {}
        for line in r.err.splitlines():
            expect(line.startswith("{"), f"stderr has another line than a JSON object: {line!r}")
            o = json.loads(line)
            objs[o["name"]] = o
        return ret, objs

    def kinds(o):
        return sorted((g["kind"], g["blocks"]) for g in o["groups"])

    with tempfile.TemporaryDirectory() as d:
        sup = os.path.join(d, "zmm.supp")
        with open(sup, "w") as f:
            f.write("# a comment\n\nleak:suppress_me\n")
        ret, objs = run_reach({})
        ret_s, objs_s = run_reach({"ZMM_SUPPRESSIONS": sup})
        # Names looked up in the process (libdw) instead of by the helper:
        # the program's own checks (errno kept, no standard descriptor
        # taken) hold there too.
        run_reach({"ZMM_SYMBOLIZER": "0"})
    want = {  # name: (zmm_request_end, groups by kind, reachable blocks)
        "lost": (1, [("definite", 1)], 0),
        "list": (6, [("definite", 1), ("indirect", 5)], 0),
        "global": (0, [], 1),
        "interior": (0, [], 1),
        "other_stack": (0, [], 1),
        "missed_stack": (0, [], 1),
        "cache1": (0, [], 10), "cache2": (0, [], 10), "cache3": (0, [], 10), "cache4": (0, [], 10),
        "cache5": (0, [], 0),
        "threads": (0, [], 0),
        "huge_cache": (4, [("definite", 4)], 0),
        "huge_slack": (4, [("definite", 4)], 1),
        "huge_tail": (0, [], 1),
        "dead_stack": (0, [], 1),
        "reuse1": (1, [("definite", 1)], 0), "reuse_mid": (0, [], 0), "reuse2": (1, [("definite", 1)], 0),
        "holder1": (1, [("definite", 1)], 1), "holder2": (1, [("definite", 1)], 0),
        "found1": (1, [("definite", 1)], 0), "found2": (0, [], 1), "found3": (0, [], 2),
        "nofd1": (1, [("live", 1)], 0), "nofd2": (0, [], 2),
        "suppress": (2, [("definite", 1), ("definite", 1)], 0),
    }
    # Untraced requests (ZMM_BACKTRACE=0) keep their heap too, the blocks
    # earlier requests left carried in a table: the same kinds and counts
    # (runtime blocks and suppressions need backtraces: not compared).
    ret_u, objs_u = run_reach({"ZMM_BACKTRACE": "0"})
    for name, (n, groups, reachable) in want.items():
        if name in ("threads", "suppress", "other_stack", "missed_stack", "dead_stack"):
            continue
        o = objs_u[name]
        blocks_by_kind = {}  # without backtraces each block is a group of its own
        for g in o["groups"]:
            blocks_by_kind[g["kind"]] = blocks_by_kind.get(g["kind"], 0) + g["blocks"]
        want_by_kind = {}
        for k, b in groups:
            want_by_kind[k] = want_by_kind.get(k, 0) + b
        expect(ret_u[name] == n and o["leaks"] == n and o["reachable"] == reachable and
               blocks_by_kind == want_by_kind,
               f"untraced, {name}: zmm_request_end {ret_u[name]}, expected {n} lost, {reachable} reachable: {o}")
    for name, (n, groups, reachable) in want.items():
        expect(name in objs, f"no JSON object for request {name!r}")
        o = objs[name]
        expect(ret[name] == n and o["leaks"] == n, f"{name}: zmm_request_end {ret[name]}, leaks {o['leaks']}, "
               f"expected {n}: {o}")
        expect(kinds(o) == groups, f"{name}: groups {kinds(o)}, expected {groups}")
        expect(o["reachable"] == reachable, f"{name}: {o['reachable']} reachable, expected {reachable}")
        if name != "missed_stack":
            expect(o["scan"] is None or o["scan"].get("threads_missed", 0) == 0, f"{name}: a thread did not stop")
    expect(objs["other_stack"]["scan"]["threads"] >= 1, "other_stack: the holder thread was not stopped")
    m = objs["missed_stack"]["scan"]
    expect(m["threads_missed"] == 1 and m["ns"] < 3e9,
           f"missed_stack: the thread that blocks the signal behind zmm's back: {m}")
    # The suppression file removes exactly suppress_me_please's group.
    s = objs_s["suppress"]
    expect(ret_s["suppress"] == 1 and s["leaks"] == 1 and s["suppressed"] == 1 and s["suppressed_groups"] == 1,
           f"with the suppression file: {s}")
    def planter(g):  # frame #0 is the clearing helper
        return g["frames"][1]["function"]
    expect(planter(s["groups"][0]) == "keep_me", f"the group kept: {s['groups'][0]['frames'][:2]}")
    names = {planter(g) for g in objs["suppress"]["groups"]}
    expect(names == {"keep_me", "suppress_me_please"}, f"without the file: {names}")
    for name in want:
        if name != "suppress":
            expect(objs_s[name]["leaks"] == objs[name]["leaks"], f"{name}: the suppression file changed it")


def test_scan_stress(prog):
    """Cases that once crashed, hung or misreported (scan_stress.c)."""
    for i in range(5):  # the crash came one run in three
        r = run([prog, "exit_churn"], {"ZMM_REQUEST": "process", "ZMM_LOG_FORMAT": "json"})
        expect_status(r, 0)
    r = run([prog, "fork"], {"ZMM_LOG_FORMAT": "json", "ZMM_LOG": "/dev/null"}, timeout=150)
    expect_status(r, 0)
    expect(r.out.strip() == "fork ok", f"fork: {r.out!r}")
    r = run([prog, "sigqueue"], {"ZMM_LOG_FORMAT": "json", "ZMM_LOG": "/dev/null"})
    expect_status(r, 0)
    w = r.out.split()
    expect(len(w) == 3 and w[1] == "queued" and 0 <= int(w[2]) <= 2,
           f"sigqueue: zmm queues a stop signal per scan for a thread that blocks it: {r.out!r}")
    r = run(["sh", "-c", f"ulimit -n 64 && exec {prog} emfile"], {"ZMM_LOG_FORMAT": "json"})
    expect_status(r, 0)
    o = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    expect(len(o) == 1 and o[0]["scan"] == {"failed": True} and o[0]["leaks"] == 1 and r.out.strip() == "emfile 1",
           f"emfile: the scan cannot run; it must say so and list the live block: {r.out!r} {r.err[:400]!r}")


def test_handler_scan(prog):
    """A handler's huge allocation (the reentry heap's lock held, an unmap
    waiting for the scan) while another thread's request ends and a timer's
    handler allocates there: both go on (handler_scan.c)."""
    for _ in range(2):
        r = run([prog], {"ZMM_LOG": "/dev/null"}, timeout=40)
        expect_status(r, 0)
        expect(r.out.strip() == "handler_scan ok", f"handler_scan: {r.out!r} {r.err[-400:]!r}")


def test_signal_carry(prog):
    """ZMM_REQUEST=signal: a block reachable in request 1 and dropped in
    request 2 is reported lost by request 2, once."""
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "zmm.json")
        r = run([prog], {"ZMM_REQUEST": "signal", "ZMM_LOG_FORMAT": "json", "ZMM_LOG": log})
        expect_status(r, 0)
        expect(r.out.strip() == "ok", r.out)
        with open(log) as f:
            objs = [json.loads(line) for line in f if line.startswith("{")]
    expect(len(objs) == 3, f"{len(objs)} reports, expected 3")
    first, second, third = objs
    expect(first["leaks"] == 0 and first["reachable"] >= 1, f"request 1: the cache is reachable: {first}")
    sizes = [b["size"] for g in second["groups"] for b in g["blocks_at"]]
    expect(second["leaks"] == 1 and sizes == [100] and second["groups"][0]["kind"] == "definite",
           f"request 2: the dropped cache block is lost: {second}")
    expect(third["leaks"] == 0, f"request 3: nothing new is lost: {third}")


def test_signal_masked(prog):
    """ZMM_REQUEST=signal: a thread that blocks every signal joins the
    request at its slow path; its share, missing from the request's report,
    is reported on its own under the same id when it ends."""
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "zmm.json")
        r = run([prog], {"ZMM_REQUEST": "signal", "ZMM_LOG_FORMAT": "json", "ZMM_LOG": log, "ZMM_LEAKS": "all"})
        expect_status(r, 0)
        expect(r.out.strip() == "ok", r.out)
        with open(log) as f:
            objs = [json.loads(line) for line in f if line.startswith("{")]
    expect(len(objs) == 5, f"{len(objs)} reports, expected 5: {objs}")
    first, late = objs[0], objs[4]
    expect(all(o["leaks"] == 0 for o in objs[1:4]), f"the later requests leaked: {objs[1:4]}")
    expect(first["leaks"] == 0, f"the request's report holds the masked thread's share: {first}")
    expect(late["request"] == first["request"], f"the late share's id {late['request']} is not its request's")
    expect(late["leaks"] == 3, f"the late share: {late['leaks']} leaks, expected 3: {late}")
    text = json.dumps(late)
    expect("leak_in_masked_thread" in text, f"the late share's frames do not name leak_in_masked_thread: {late}")
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "zmm.json")
        r = run([prog, "fork"], {"ZMM_REQUEST": "signal", "ZMM_LOG_FORMAT": "json", "ZMM_LOG": log,
                                 "ZMM_LEAKS": "all"})
        expect_status(r, 0)
        with open(log) as f:
            objs = [json.loads(line) for line in f if line.startswith("{")]
    expect(len(objs) == 1 and objs[0]["leaks"] == 1, f"children forked around the end reported it again: {objs}")
    for attempt in range(5):  # (a race: each run may hit it or not)
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "zmm.json")
            r = run([prog, "exit"], {"ZMM_REQUEST": "signal", "ZMM_LOG_FORMAT": "json", "ZMM_LOG": log,
                                     "ZMM_LEAKS": "all"})
            expect_status(r, 0)
            objs = []
            if os.path.exists(log):
                with open(log) as f:
                    objs = [json.loads(line) for line in f if line.startswith("{")]
        expect(len(objs) == 1 and objs[0]["leaks"] == 1 and "leak_before_exit" in json.dumps(objs[0]),
               f"run {attempt}: an exit right after the request's end lost its report: {objs}")


def test_remote_large(prog):
    """Blocks another thread freed after a request's end drained its heap,
    before the scan, are free, not lost: page runs and huge blocks too."""
    for size, slots in (("20000", "4000"), ("65536", "4000"), ("64", "4000"), ("3000000", "100")):
        r = run([prog, size, slots], {"ZMM_LOG": os.devnull})
        expect(r.status == 0, f"size {size}: {r.out.strip()} (the program leaks nothing)")


TESTS = {
    "remote_large": test_remote_large,
    "signal_masked": test_signal_masked,
    "leaks": test_leaks,
    "reach": test_reach,
    "symbolizer": test_symbolizer,
    "seccomp": test_seccomp,
    "scan_stress": test_scan_stress,
    "signal_carry": test_signal_carry,
    "handler_scan": test_handler_scan,
    "json": test_json,
    "log_file": test_log_file,
    "leak_exitcode": test_leak_exitcode,
    "process": test_process,
    "process_python": test_process_python,
    "limit_fatal": test_limit_fatal,
    "limit_fatal_size": test_limit_fatal_size,
    "limit_enomem": test_limit_enomem,
    "limit_spread": test_limit_spread,
    "limit_handler": test_limit_handler,
    "threads": test_threads,
    "loop_clean": lambda prog: test_loop(prog, "clean"),
    "loop_leaky": lambda prog: test_loop(prog, "leaky"),
    "reclaim": test_reclaim,
    "usage": test_usage,
    "repro_demangle": test_repro_demangle,
    "reload": test_reload,
    "fork_loader": test_fork_loader,
    "shim": test_shim,
    "repro_leak_freed_later": lambda prog: test_selfcheck(prog, env={"ZMM_LEAKS": "0"}),
    "carried": lambda prog: test_selfcheck(prog, env={"ZMM_BACKTRACE": "0", "ZMM_LEAKS": "all", "ZMM_LOG": os.devnull}),
}


def main():
    global LIB
    if len(sys.argv) < 3 or sys.argv[1] not in TESTS:
        sys.exit(f"usage: check.py {{{'|'.join(TESTS)}}} LIBZMM PROGRAM...")
    name, LIB, progs = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:]
    try:
        TESTS[name](*progs)
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"FAIL requests.{name}: {e}")
        for r in CURRENT[-1:]:
            text = r.describe()
            print(text if len(text) < 20000 else text[:10000] + "\n[...]\n" + text[-10000:])
        sys.exit(1)
    print(f"ok requests.{name} ({len(CURRENT)} runs)")


if __name__ == "__main__":
    main()
