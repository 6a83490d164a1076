#!/usr/bin/python3
"""`zmm report`: turns a JSON log (ZMM_LOG_FORMAT=json, one object per
request) into one self-contained HTML page: a summary, the requests table, a
chart of peak and lost bytes per request, and every leak group with its
frames, filterable by request name and by function.

    zmm_report.py LOG.json [-o REPORT.html]

The page is zmm_report.html (beside this script) with the log's data embedded
as JSON; it needs no network. Standard library only: it runs wherever the
program that wrote the log does.
"""

import argparse
import html
import json
import os
import re
import sys

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zmm_report.html")

# What the page shows of a request; the rest of the object (scan figures,
# real_* usage, the limit) stays in the log.
REQUEST_FIELDS = ("request", "name", "pid", "tid", "duration_ns", "usage", "peak", "leaks",
                  "leaked_bytes", "reachable", "reachable_bytes", "suppressed", "suppressed_bytes")
FRAME_FIELDS = ("function", "file", "line", "module", "offset")


def read_log(path):
    """The request objects of the log in the order they ended, and how many
    lines were skipped: lines that are not JSON objects (zmm's own warnings)
    and objects that do not parse (two processes appending to one log can
    interleave a torn line)."""
    requests, skipped = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line) if line.startswith("{") else None
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "request" in obj:
                requests.append(obj)
            else:
                skipped += 1
    # Processes append as their requests end, so the file is almost in order;
    # a log from before time_ns existed keeps the order of its lines.
    if all(isinstance(r.get("time_ns"), int) for r in requests):
        requests.sort(key=lambda r: r["time_ns"])
    return requests, skipped


def page_data(log_name, requests, skipped):
    """The JSON the page embeds. Frames are stored once and named by index
    (a leak repeated in every request repeats its whole backtrace), and block
    addresses and pcs are dropped: a big log must still make a page a browser
    can open."""
    frames, frame_index, groups, out = [], {}, [], []
    for i, r in enumerate(requests):
        req = {k: r.get(k, 0) for k in REQUEST_FIELDS}
        req["name"] = str(r.get("name") or "")
        # milliseconds fit a double exactly; nanoseconds since 1970 do not
        req["end_ms"] = r["time_ns"] // 1_000_000 if isinstance(r.get("time_ns"), int) else None
        out.append(req)
        for g in r.get("groups") or ():
            refs = []
            for fr in g.get("frames") or ():
                key = tuple(fr.get(k) for k in FRAME_FIELDS)
                if key not in frame_index:
                    frame_index[key] = len(frames)
                    frames.append(dict(zip(FRAME_FIELDS, key)))
                refs.append(frame_index[key])
            groups.append({"request": i, "kind": g.get("kind", "?"), "blocks": g.get("blocks", 0),
                           "bytes": g.get("bytes", 0), "frames": refs})
    return {"log": log_name, "skipped": skipped, "requests": out, "groups": groups, "frames": frames}


def script_json(data):
    """JSON safe inside <script>: no "</script>" or "<!--" can end or change
    the element early. "<", ">" and "&" only occur inside JSON strings, where
    \\u escapes mean the same characters."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data, log_path):
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    fills = {"TITLE": html.escape(f"zmm report: {os.path.basename(log_path)}"),
             "LOG": html.escape(log_path), "DATA": script_json(data)}
    # one pass, so text from the log can never be taken for a placeholder
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: fills[m.group(1)], template)


def default_output(log_path):
    """LOG.json -> LOG.html beside it."""
    out = os.path.splitext(log_path)[0] + ".html"
    return out if out != log_path else log_path + ".html"


def main():
    ap = argparse.ArgumentParser(prog="zmm report", description=__doc__.split("\n\n")[0])
    ap.add_argument("log", help="a JSON log (ZMM_LOG_FORMAT=json)")
    ap.add_argument("-o", "--output", help="the HTML page to write (default: LOG.html beside the log)")
    args = ap.parse_args()
    try:
        requests, skipped = read_log(args.log)
    except OSError as e:
        sys.exit(f"zmm: report: {e.strerror}: {args.log}")
    out = args.output or default_output(args.log)
    page = render(page_data(os.path.basename(args.log), requests, skipped), args.log)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        sys.exit(f"zmm: report: {e.strerror}: {out}")
    groups = sum(len(r.get("groups") or ()) for r in requests)
    fatal = sum(1 for r in requests if r.get("fatal"))
    notes = ""
    if fatal:
        notes += f", {fatal} ended by the memory limit"
    if skipped:
        notes += f"; {skipped} lines skipped (not zmm's JSON: warnings, or a text log)"
    print(f"zmm: report: {len(requests)} requests, {groups} leak groups{notes} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
