#!/usr/bin/python3
"""scripts/bench's report: reads the raw runs (TSV), writes the Markdown
tables (median wall time and peak RSS, ratio to the best of each workload,
geometric means) and an SVG bar chart of the time ratios. Standard library
only: it runs wherever the benchmark does."""

import argparse
import csv
import math
import signal
import statistics
from collections import OrderedDict
from html import escape

COLORS = {"glibc": "#7f7f7f", "mimalloc": "#1f77b4", "jemalloc": "#2ca02c",
          "tcmalloc": "#ff7f0e", "zmm": "#d62728", "ZendMM": "#9467bd"}
EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def describe(status):
    """A failed run's status as the table shows it: crash-11 -> crash (exit 139, SIGSEGV)."""
    kind, _, num = status.partition("-")
    if kind == "crash":
        try:
            name = signal.Signals(int(num)).name
        except ValueError:
            name = "signal " + num
        return f"crash (exit {128 + int(num)}, {name})"
    if kind == "exit":
        return f"failed (exit {num})"
    return status.replace("-", " ")


def load(path):
    """{workload: {variant: [rows]}}, both in the order they were run."""
    runs = OrderedDict()
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            runs.setdefault(row["workload"], OrderedDict()).setdefault(row["variant"], []).append(row)
    return runs


def summarize(runs):
    """{workload: {variant: cell}}, a cell being a dict with either time/rss
    medians (every run ok) or the failure to show."""
    out = OrderedDict()
    for w, variants in runs.items():
        cells = OrderedDict()
        for v, rows in variants.items():
            bad = [r["status"] for r in rows if r["status"] != "ok"]
            if bad:
                cells[v] = {"fail": describe(bad[0]) + (f", {len(bad)}/{len(rows)} runs" if len(bad) < len(rows) else "")}
            else:
                cells[v] = {"time": statistics.median(float(r["wall"]) for r in rows),
                            "rss": statistics.median(float(r["rss_kib"]) for r in rows) / 1024}
        ok = [c for c in cells.values() if "fail" not in c]
        for key in ("time", "rss"):
            best = min((c[key] for c in ok), default=None)
            for c in ok:
                c[key + "_ratio"] = c[key] / best
        out[w] = cells
    return out


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def span(names):
    return ", ".join(names) if len(names) <= 2 else f"{names[0]} … {names[-1]}"


def markdown(cells, variants, args):
    lines = [f"# zmm benchmarks: `{args.title}`", "",
             f"Machine: {args.machine}.  ",
             f"zmm {args.version}; median of {args.runs} interleaved runs per cell; "
             "ratio to the best of each row in parentheses (**bold**: the best).", ""]

    def table(key, unit, fmt):
        lines.append("| workload | " + " | ".join(variants) + " |")
        lines.append("|---|" + "---:|" * len(variants))
        for w, row in cells.items():
            out = []
            for v in variants:
                c = row.get(v)
                if c is None:
                    out.append("–")
                elif "fail" in c:
                    out.append(c["fail"])
                else:
                    text = f"{fmt(c[key])} {unit} ({c[key + '_ratio']:.2f}×)"
                    out.append(f"**{text}**" if c[key + "_ratio"] == 1.0 else text)
            lines.append(f"| {w} | " + " | ".join(out) + " |")
        group = [w for w in args.geomean.split(",") if w in cells]
        if group:
            out = []
            for v in variants:
                rs = [cells[w][v][key + "_ratio"] for w in group if v in cells[w] and "fail" not in cells[w][v]]
                out.append(f"{geomean(rs):.2f}×" + ("" if len(rs) == len(group) else f" ({len(rs)}/{len(group)})")
                           if rs else "–")
            lines.append(f"| geomean of ratios ({span(group)}) | " + " | ".join(out) + " |")
        lines.append("")

    lines += ["## Wall time", ""]
    table("time", "s", lambda x: f"{x:.3f}")
    lines += ["## Peak RSS", ""]
    table("rss", "MiB", lambda x: f"{x:.1f}")

    # zmm against each peer head to head: the targets are phrased so.
    group = [w for w in args.geomean.split(",") if w in cells]
    peers = [v for v in variants if v != "zmm" and any(v in cells[w] for w in group)]
    if "zmm" in variants and group and peers:
        lines += [f"## zmm ÷ each peer, geometric mean over {', '.join(group)}", "",
                  "| | " + " | ".join(peers) + " |", "|---|" + "---:|" * len(peers)]
        for key, label in (("time", "wall time"), ("rss", "peak RSS")):
            out = []
            for p in peers:
                rs = [cells[w]["zmm"][key] / cells[w][p][key] for w in group
                      if all(v in cells[w] and "fail" not in cells[w][v] for v in ("zmm", p))]
                out.append(f"{geomean(rs):.2f}×" if rs else "–")
            lines.append(f"| {label} | " + " | ".join(out) + " |")
        lines.append("")
    lines += [f"![wall time, ratio to the best per workload]({args.svg.rsplit('/', 1)[-1]})", ""]
    if args.workload or args.variant:
        lines += ["## How each cell ran", "",
                  "Allocators (zmm's library is a snapshot of build/libzmm.so taken at start):", ""]
        lines += [f"- {v.split('=', 1)[0]}: `{v.split('=', 1)[1]}`" for v in args.variant]
        lines += ["", "Workloads (under each allocator, unless named with a variant):", ""]
        lines += [f"- {w.split('=', 1)[0]}: `{w.split('=', 1)[1]}`" for w in args.workload]
        lines.append("")
    if args.note:
        lines += ["Notes:", ""] + [f"- {n}" for n in args.note] + [""]
    return "\n".join(lines)


def svg(cells, variants):
    """Horizontal grouped bars: one group per workload, one bar per variant,
    length = time ratio to the best (1.0 = the fastest), cut at CAP."""
    CAP, label_w, plot_w, bar_h, gap, top = 4.0, 110, 480, 11, 12, 60
    colors = dict(COLORS)
    for i, v in enumerate(v for v in variants if v not in colors):
        colors[v] = EXTRA_COLORS[i % len(EXTRA_COLORS)]
    x = lambda r: label_w + plot_w * min(r, CAP) / CAP
    body, y = [], top
    for w, row in cells.items():
        present = [v for v in variants if v in row]
        body.append(f'<text x="{label_w - 8}" y="{y + len(present) * bar_h / 2 + 4}" text-anchor="end" '
                    f'font-weight="bold">{escape(w)}</text>')
        for v in present:
            c = row[v]
            if "fail" in c:
                body.append(f'<text x="{label_w + 4}" y="{y + bar_h - 2}" fill="#b00" font-size="10">'
                            f'{escape(v)}: {escape(c["fail"])}</text>')
            else:
                r = c["time_ratio"]
                body.append(f'<rect x="{label_w}" y="{y}" width="{x(r) - label_w:.1f}" height="{bar_h - 2}" '
                            f'fill="{colors[v]}"><title>{escape(w)} {escape(v)}: {c["time"]:.3f} s, '
                            f'{r:.2f}×</title></rect>')
                body.append(f'<text x="{x(r) + 3:.1f}" y="{y + bar_h - 2}" font-size="9">'
                            f'{r:.2f}×{" ▸" if r > CAP else ""}</text>')
            y += bar_h
        y += gap
    height = y + 20
    grid = []
    for t in (1, 2, 3, 4):  # 1× (the best) dashed and dark, the others light
        style = 'stroke="#444" stroke-dasharray="3,2"' if t == 1 else 'stroke="#ccc"'
        grid.append(f'<line x1="{x(t)}" y1="{top - 6}" x2="{x(t)}" y2="{y}" {style}/>'
                    f'<text x="{x(t)}" y="{y + 12}" text-anchor="middle" font-size="10">{t}×</text>')
    width = label_w + plot_w + 60
    # Legend entries as wide as their names (about 6.5 px a character at
    # 11 px), wrapped onto more lines when they do not fit; the plot moves down.
    legend, lx, ly = [], label_w, 28
    for v in variants:
        w = 14 + int(6.5 * len(v)) + 16
        if lx + w > width and lx > label_w:
            lx, ly = label_w, ly + 16
        legend.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colors[v]}"/>'
                      f'<text x="{lx + 14}" y="{ly + 9}" font-size="11">{escape(v)}</text>')
        lx += w
    shift = ly - 28
    if shift:
        body = [f'<g transform="translate(0,{shift})">'] + body + grid + ["</g>"]
        grid, height = [], height + shift
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n'
            f'<text x="{label_w}" y="16" font-weight="bold">Wall time, ratio to the fastest per workload '
            f'(lower is better)</text>\n' + "\n".join(legend + grid + body) + "\n</svg>\n")


# --- scripts/bench leaks -------------------------------------------------------

GLIBC, PLAIN, TRACED = "glibc", "zmm, no requests", "zmm, requests + backtraces"
# (tool, how many times slower than TRACED it must be, the wording)
SPEED_TARGETS = (("heaptrack", 5.0), ("valgrind", 20.0))
RSS_TARGET = 1.5  # TRACED's peak RSS over PLAIN's, at most (exclusive)


def leaks_markdown(args):
    """The leak-tool table: per tool the median wall time, the time per request
    (tools may run different request counts), peak RSS, their ratios to glibc
    and to zmm without requests, the leaks found; then the issue's targets."""
    runs = OrderedDict()
    with open(args.raw, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            runs.setdefault(row["variant"], []).append(row)
    cells = OrderedDict()
    for v, rows in runs.items():
        bad = [r["status"] for r in rows if r["status"] != "ok"]
        n = int(rows[0]["requests"])
        if bad:
            cells[v] = {"n": n, "fail": describe(bad[0]) + (f", {len(bad)}/{len(rows)} runs" if len(bad) < len(rows) else "")}
        else:
            t = statistics.median(float(r["wall"]) for r in rows)
            cells[v] = {"n": n, "time": t, "per": t / n * 1000,
                        "cpu": statistics.median(float(r["cpu"]) for r in rows),
                        "rss": statistics.median(float(r["rss_kib"]) for r in rows) / 1024,
                        # the program's own, and a helper process's (zmm-symbolizer)
                        "own_rss": statistics.median(float(r.get("own_rss_kib") or r["rss_kib"]) for r in rows) / 1024,
                        "helper_rss": statistics.median(float(r.get("helper_rss_kib") or 0) for r in rows) / 1024}
    found = dict(f.split("=", 1) for f in args.found)
    ok = lambda v: v in cells and "fail" not in cells[v]

    def ratio(v, base, key):
        return f"{cells[v][key] / cells[base][key]:.2f}×" if ok(v) and ok(base) else "–"

    lines = [f"# zmm leak reports against leak tools: `{args.title}`", "",
             f"Machine: {args.machine}.  ",
             f"zmm {args.version}; median of {args.runs} interleaved runs per tool; the request-shaped "
             "workload (`tests/bench/requests.cpp`).", "",
             f"| tool | requests | wall time | CPU time | per request | time ÷ {GLIBC} | time ÷ {PLAIN} "
             f"| peak RSS | RSS ÷ {GLIBC} | RSS ÷ {PLAIN} | leaks found |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, c in cells.items():
        leaks = found.get(v, "–")
        if leaks != "–":
            leaks += f" of {3 * c['n']}"
        if "fail" in c:
            lines.append(f"| {v} | {c['n']} | {c['fail']} | | | | | | | | {leaks} |")
            continue
        lines.append(f"| {v} | {c['n']} | {c['time']:.3f} s | {c['cpu']:.3f} s | {c['per']:.3f} ms | {ratio(v, GLIBC, 'per')} | "
                     f"{ratio(v, PLAIN, 'per')} | {c['rss']:.1f} MiB | {ratio(v, GLIBC, 'rss')} | "
                     f"{ratio(v, PLAIN, 'rss')} | {leaks} |")
    lines += ["", "## Targets (issue 3)", "", "| target | measured | met |", "|---|---:|---|"]
    for tool, want in SPEED_TARGETS:
        if ok(tool) and ok(TRACED):
            x = cells[tool]["per"] / cells[TRACED]["per"]
            verdict = "yes" if x >= want else f"no: {want / x:.1f}× short"
            lines.append(f"| {TRACED} ≥ {want:g}× faster than {tool} (time per request) | {x:.2f}× | {verdict} |")
        else:
            lines.append(f"| {TRACED} ≥ {want:g}× faster than {tool} | – | not measured |")
    if ok(TRACED) and ok(PLAIN):
        x = cells[TRACED]["own_rss"] / cells[PLAIN]["own_rss"]
        verdict = "yes" if x < RSS_TARGET else f"no: {x / RSS_TARGET:.1f}× over"
        helper = cells[TRACED]["helper_rss"]
        apart = f" (the program: {cells[TRACED]['own_rss']:.1f} MiB; its symbolizer process: {helper:.1f} MiB)" if helper else ""
        lines.append(f"| peak RSS of {TRACED} < {RSS_TARGET:g}× {PLAIN}{apart} | {x:.2f}× | {verdict} |")
    lines += ["", "## How each tool ran", ""]
    lines += [f"- {v.split('=', 1)[0]}: `{v.split('=', 1)[1]}`" for v in args.variant]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in args.note] + [""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--svg", help="the chart (timing mode; required there)")
    ap.add_argument("--leaks", action="store_true", help="the leak-tool table of scripts/bench leaks")
    ap.add_argument("--found", action="append", default=[], metavar="TOOL=COUNT",
                    help="leaks mode: the leaks a tool reported")
    ap.add_argument("--allocators", default="")
    ap.add_argument("--geomean", default="")
    ap.add_argument("--title", default="scripts/bench")
    ap.add_argument("--machine", default="")
    ap.add_argument("--version", default="")
    ap.add_argument("--runs", default="")
    ap.add_argument("--workload", action="append", default=[], metavar="NAME=COMMAND",
                    help="the command a workload ran, listed under the tables")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ENVIRONMENT",
                    help="how an allocator was selected, listed under the tables")
    ap.add_argument("--note", action="append", default=[], help="a line of notes under the tables")
    args = ap.parse_args()
    if args.leaks:
        text = leaks_markdown(args)
        with open(args.md, "w") as f:
            f.write(text)
        print(text)
        return
    if not args.svg:
        ap.error("--svg is required (except with --leaks)")

    cells = summarize(load(args.raw))
    seen = OrderedDict((v, None) for row in cells.values() for v in row)
    variants = [a for a in args.allocators.split(",") if a in seen] + \
               [v for v in seen if v not in args.allocators.split(",")]
    text = markdown(cells, variants, args)
    with open(args.md, "w") as f:
        f.write(text)
    with open(args.svg, "w") as f:
        f.write(svg(cells, variants))
    print(text)


if __name__ == "__main__":
    main()
