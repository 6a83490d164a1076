#!/usr/bin/python3
"""Checks `zmm report` in headless Chromium.

    check.py ZMM_SCRIPT OUTDIR

Writes the page of three_requests.json (3 requests from 2 processes, 5 leak
groups, a warning line, a request name that tries to close the <script>) and
of an empty log into OUTDIR, has Chromium run each page's script and dump the
resulting DOM, and checks it: the requests table, the chart's points, the
groups, and the filters. A filter in the page's address (#function=keep_me)
is applied by setting the input and firing its "input" event, the path of
typing, so the dump after it shows what typing shows.

Installs Chromium when missing and root; otherwise exits 77 (skipped).
Prints "ok", or the first failure and exits 1 (the pages stay in OUTDIR).
"""

import html.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = "/usr/bin/chromium"
SKIP = 77


class Failure(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise Failure(message)


# ---------------------------------------------------------------------------
# Chromium


def ensure_chromium():
    if os.path.exists(CHROMIUM):
        return
    if os.geteuid() != 0:
        print(f"skipped: {CHROMIUM} is missing (apt-get install chromium)")
        sys.exit(SKIP)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)


def dump_dom(page, fragment=""):
    """The DOM of PAGE once its scripts have run (they draw everything
    synchronously, before the load event that --dump-dom waits for)."""
    with tempfile.TemporaryDirectory(prefix="zmm-report-chromium-") as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                               f"--user-data-dir={profile}", "--dump-dom", f"file://{page}{fragment}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    expect(proc.returncode == 0 and "</html>" in proc.stdout,
           f"chromium failed on {page}{fragment} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return Dom(proc.stdout)


class Dom(html.parser.HTMLParser):
    """Just enough of a DOM: elements with their attributes and text."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    class Node:
        def __init__(self, tag, attrs, parent):
            self.tag, self.attrs, self.parent, self.children, self.texts = tag, dict(attrs), parent, [], []

        def text(self):
            return "".join(t if isinstance(t, str) else t.text() for t in self.texts)

        def classes(self):
            return (self.attrs.get("class") or "").split()

        def all(self, pred):
            for c in self.children:
                if pred(c):
                    yield c
                yield from c.all(pred)

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Dom.Node("#document", {}, None)
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Dom.Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        self.cur.texts.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_endtag(self, tag):
        n = self.cur
        while n.parent and n.tag != tag:
            n = n.parent
        if n.parent:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.texts.append(data)

    def by_id(self, id_):
        found = list(self.root.all(lambda n: n.attrs.get("id") == id_))
        expect(found, f"no element with id {id_!r}")
        return found[0]

    def by_class(self, cls, under=None):
        return list((under or self.root).all(lambda n: cls in n.classes()))


# ---------------------------------------------------------------------------
# The pages


def check_full(dom):
    rows = dom.by_id("requests-body").children
    expect(len(rows) == 3, f"{len(rows)} rows in the requests table, expected 3")
    # in the order the requests ended, which is not the order of the log's lines
    cells = [[td.text() for td in tr.children] for tr in rows]
    expect([(c[0], c[2]) for c in cells] == [("1", "4101"), ("1", "4102"), ("2", "4101")],
           f"rows not in end-time order: {cells}")
    expect(cells[1][1] == "upload </script><!-- <b>", f"the request name, shown as text, is {cells[1][1]!r}")

    summary = " ".join(dom.by_id("summary").text().split())
    for part in ("3 requests", "2 processes", "8 lost blocks (792 B)", "3 requests with leaks",
                 "2 still reachable (96 B)"):
        expect(part in summary, f"summary {summary!r} lacks {part!r}")
    expect("1 line of the log skipped" in dom.root.text(), "no note of the skipped warning line")

    chart = dom.by_id("chart")
    points = [c for c in dom.by_class("point", chart) if c.tag == "circle"]
    peaks = [c for c in points if "peak" in c.classes()]
    lost = [c for c in points if "lost" in c.classes()]
    expect(len(points) == 6 and len(peaks) == 3 and len(lost) == 3,
           f"{len(peaks)} peak and {len(lost)} lost points of {len(points)}, expected 3 and 3")
    titles = [p.children[0].text() if p.children else "" for p in peaks]
    expect(titles[0].startswith("#1 index (pid 4101): peak 40 KiB"), f"first peak point's tooltip: {titles[0]!r}")

    # in the order their requests ended, each request's in the log's order
    check_groups(dom, 5, ["keep_me", "make_node", "cache<std::string>::insert", "strdup", "read_body"])
    frames = [" ".join(f.text().split()) for f in dom.by_class("frame", dom.by_class("group")[0])]
    expect(frames[0] == "#0 keep_me /src/cache.c:12 (server+0x11f7)", f"first frame reads {frames[0]!r}")


def check_groups(dom, count, first_functions):
    groups = dom.by_class("group")
    shown = [g for g in groups if "display:none" not in (g.attrs.get("style") or "").replace(" ", "")]
    tops = [dom.by_class("fn", g)[0].text() for g in shown]
    expect(tops == first_functions, f"groups' first functions {tops}, expected {first_functions}")
    counter = dom.by_id("group-count").text()
    expect(counter == f"{count} of 5 groups", f"group count reads {counter!r}, expected '{count} of 5 groups'")


def check_function_filter(dom):
    # keep_me is the top frame of one group and the second of another
    check_groups(dom, 2, ["keep_me", "make_node"])
    hits = [f.text() for f in dom.by_class("hit")]
    expect(hits == ["keep_me", "keep_me"], f"highlighted functions {hits}")
    expect(len(dom.by_id("requests-body").children) == 3, "the function filter narrowed the requests table")


def check_request_filter(dom):
    check_groups(dom, 2, ["cache<std::string>::insert", "strdup"])
    rows = dom.by_id("requests-body").children
    expect(len(rows) == 1, f"{len(rows)} rows for request name 'upload', expected 1")
    expect(dom.by_id("request-count").text() == "1 of 3 requests", "request count")


def check_empty(dom):
    text = dom.by_id("no-requests").text()
    expect(text.startswith("No requests in this log"), f"empty log's page says {text!r}")
    expect(not dom.by_class("group") and not dom.by_class("point"), "the empty log's page shows groups or points")


def report(zmm, outdir, log, *args):
    # `zmm report` must not build libzmm.so: point the build at a directory
    # that must stay absent
    no_build = os.path.join(outdir, "no-build")
    proc = subprocess.run([zmm, "report", log, *args], env=dict(os.environ, ZMM_BUILD_DIR=no_build),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    expect(proc.returncode == 0, f"zmm report {log} failed (exit {proc.returncode}):\n{proc.stderr}")
    expect(not os.path.exists(no_build), "zmm report built libzmm.so")


def main():
    zmm, outdir = sys.argv[1], os.path.abspath(sys.argv[2])
    ensure_chromium()
    os.makedirs(outdir, exist_ok=True)
    log = os.path.join(outdir, "three_requests.json")
    shutil.copyfile(os.path.join(HERE, "three_requests.json"), log)
    page = os.path.join(outdir, "three_requests.html")  # the default: beside the log
    empty_log, empty_page = os.path.join(outdir, "empty.json"), os.path.join(outdir, "empty-report.html")
    open(empty_log, "w").close()
    for p in (page, empty_page):
        if os.path.exists(p):
            os.unlink(p)
    try:
        report(zmm, outdir, log)
        report(zmm, outdir, empty_log, "-o", empty_page)
        with open(page, encoding="utf-8") as f:
            source = f.read()
        expect(not re.search(r"<(script|link|img)[^>]+(src|href)=", source), "the page loads something")
        expect(source.count("</script>") == 2, "the log's text closed a <script> early")
        check_full(dump_dom(page))
        check_function_filter(dump_dom(page, "#function=keep_me"))
        check_request_filter(dump_dom(page, "#request=UPLOAD"))
        check_empty(dump_dom(empty_page))
    except Failure as e:
        print(f"FAIL: {e}\n(pages in {outdir})")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
