#!/usr/bin/env python3
"""Check the built book as a browser shows it: headless Chromium, offline, at 1280 px.

    make check-html                      # = python scripts/check_html.py _build/html
    python scripts/check_html.py _build/html --screenshots out/screenshots

For every page of the built book (``make book`` first) Chromium loads the page in a frame
1280 px wide, waits until MathJax has typeset it, and reports:

* **formulas**: how many MathJax typeset; a page fails if TeX is left raw in its text
  (``\\(``, ``\\[``, ``\\begin{``, outside code blocks) or MathJax reports an error in a
  formula. Formulas render from the book's own copy of MathJax, so this holds offline;
* **width**: a page fails if it is wider than the window (a horizontal scroll bar on the
  whole page); the elements that stick out are named;
* **clipped blocks**: outputs, code and tables whose content is wider than their box, so a
  reader must scroll them sideways (reported; ``--strict`` makes them failures too);
* the page's height in pixels.

Chromium is Debian's package (``apt-get install chromium``); when it is not installed the
script says so and exits 0 (it is not part of CI). Exit codes: 0 every page passes (or no
Chromium), 1 a page fails, 2 no built book.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WIDTH = 1280
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs inside a wrapper page that holds the book page in a 1280 px frame; writes its findings
# as JSON into <pre id="result">, which --dump-dom then prints.
_PROBE = r"""
const frame = document.getElementById("page");
frame.addEventListener("load", async () => {
  const w = frame.contentWindow, d = frame.contentDocument, out = {};
  try {
    if (w.MathJax && w.MathJax.startup && w.MathJax.startup.promise) { await w.MathJax.startup.promise; }
    out.mathjax = !!(w.MathJax && w.MathJax.startup);
  } catch (e) { out.mathjax = false; out.mathjax_error = String(e); }
  out.formulas = d.querySelectorAll("mjx-container").length;
  out.math_errors = [];  // the TeX of every formula MathJax could not typeset, with its message
  try {
    for (const item of w.MathJax.startup.document.math) {
      const bad = item.typesetRoot && item.typesetRoot.querySelector && item.typesetRoot.querySelector("mjx-merror");
      if (bad) out.math_errors.push((bad.getAttribute("data-mjx-error") || "error") + " in " + String(item.math).slice(0, 120));
    }
  } catch (e) {}
  if (!out.math_errors.length) {
    out.math_errors = Array.from(d.querySelectorAll("mjx-merror"), (e) => e.getAttribute("data-mjx-error") || "error");
  }
  // raw TeX left in the visible text, outside code
  const skip = new Set(["SCRIPT", "STYLE", "PRE", "CODE", "TEXTAREA", "MJX-CONTAINER", "MJX-ASSISTIVE-MML"]);
  const raw = [];
  const walker = d.createTreeWalker(d.body, NodeFilter.SHOW_TEXT, {acceptNode(node) {
    for (let p = node.parentElement; p; p = p.parentElement) { if (skip.has(p.tagName)) return NodeFilter.FILTER_REJECT; }
    return NodeFilter.FILTER_ACCEPT; }});
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.textContent.match(/\\\(|\\\[|\\begin\{/);
    if (m) raw.push(n.textContent.slice(Math.max(0, m.index - 20), m.index + 60).replace(/\s+/g, " "));
  }
  out.raw_tex = raw;
  const root = d.documentElement;
  out.client_width = root.clientWidth;
  out.scroll_width = root.scrollWidth;
  out.height = root.scrollHeight;
  // elements that stick out of the window, and blocks whose content is wider than their box
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\s+/).slice(0, 2).join(".") : "");
  const section = (el) => { for (let p = el; p; p = p.parentElement) {
      if (p.tagName === "SECTION" && p.id) return p.id; } return ""; };
  out.wide = [];
  for (const el of d.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > root.clientWidth + 1 && out.wide.length < 5) out.wide.push(describe(el) + " right=" + Math.round(r.right));
  }
  out.clipped = [];
  for (const el of d.body.querySelectorAll("pre, table, div.cell_output > div, div.output, div.highlight")) {
    const style = w.getComputedStyle(el);
    if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0 && /(auto|scroll|hidden)/.test(style.overflowX)) {
      const first = (el.innerText || "").split("\n")[0].slice(0, 50);
      out.clipped.push({where: section(el), what: describe(el), content: el.scrollWidth, box: el.clientWidth, first: first});
    }
  }
  document.getElementById("result").textContent = JSON.stringify(out);
});
"""


@dataclass
class PageResult:
    page: str
    ok: bool
    formulas: int = 0
    width: int = 0
    height: int = 0
    clipped: int = 0
    problems: tuple[str, ...] = ()
    details: dict | None = None


def find_chromium() -> str | None:
    """``$CHROMIUM`` or the first Chromium/Chrome on PATH (Debian: /usr/bin/chromium)."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(binary: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="check-html-profile-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--allow-file-access-from-files", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def probe(binary: str, page: Path, budget_ms: int = 20000, timeout: float = 120.0) -> dict:
    """Load ``page`` in a 1280 px frame in headless Chromium; what :data:`_PROBE` found (a dict)."""
    with tempfile.TemporaryDirectory(prefix="check-html-") as tmp:
        wrapper = Path(tmp) / "wrapper.html"
        wrapper.write_text(
            "<!DOCTYPE html><html><body style='margin:0'><pre id='result'>null</pre>"
            f"<iframe id='page' src='{html.escape(page.resolve().as_uri())}' "
            f"style='width:{WIDTH}px;height:2000px;border:0'></iframe>"
            f"<script>{_PROBE}</script></body></html>")
        for attempt in range(2):  # a headless start can time out on a busy machine: one retry
            try:
                result = _chromium(binary, f"--virtual-time-budget={budget_ms}", f"--window-size={WIDTH + 40},2100",
                                   "--dump-dom", wrapper.as_uri(), timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                if attempt == 1:
                    raise
        found = re.search(r"<pre id=\"result\">(.*?)</pre>", result.stdout, re.S)
        if not found:
            raise RuntimeError(f"Chromium printed no result for {page} (exit {result.returncode}): {result.stderr[-500:]}")
        return json.loads(html.unescape(found.group(1)))


def judge(page: str, found: dict | None, strict: bool) -> PageResult:
    """Pass or fail one page from what :func:`probe` found."""
    if not found:
        return PageResult(page, False, problems=("the page did not load in the frame",))
    problems = []
    if found.get("raw_tex"):
        problems.append(f"{len(found['raw_tex'])} raw TeX fragment(s), e.g. {found['raw_tex'][0]!r}")
    if found.get("math_errors"):
        problems.append(f"{len(found['math_errors'])} formula(s) with a MathJax error, e.g. {found['math_errors'][0]!r}")
    if found.get("scroll_width", 0) > found.get("client_width", WIDTH):
        problems.append(f"page {found['scroll_width']} px wide in a {found['client_width']} px window: "
                        + ", ".join(found.get("wide", [])))
    clipped = found.get("clipped", [])
    if strict and clipped:
        problems.append(f"{len(clipped)} block(s) wider than their box (--strict)")
    return PageResult(page, not problems, int(found.get("formulas", 0)), int(found.get("scroll_width", 0)),
                      int(found.get("height", 0)), len(clipped), tuple(problems), found)


def pages_of(site: Path) -> list[Path]:
    """Every HTML page of the built book (not Sphinx's own folders such as ``_static``)."""
    return sorted(p for p in site.rglob("*.html")
                  if not any(part.startswith("_") for part in p.relative_to(site).parts[:-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", type=Path, default=Path("_build/html"), help="the built book (default _build/html)")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="also save a 1280 x 2000 px screenshot of the top of every page into this folder")
    parser.add_argument("--strict", action="store_true", help="blocks that must be scrolled sideways fail the page too")
    parser.add_argument("--verbose", action="store_true", help="list the clipped blocks of every page")
    args = parser.parse_args(argv)

    binary = find_chromium()
    if binary is None:
        print("[check-html] skipped: no Chromium found (Debian: apt-get install chromium; or set CHROMIUM=/path)")
        return 0
    if not (args.site / "index.html").is_file():
        print(f"[check-html] no built book in {args.site} (run `make book` first)", file=sys.stderr)
        return 2
    pages = pages_of(args.site)
    print(f"[check-html] {len(pages)} pages of {args.site}, headless {Path(binary).name}, window {WIDTH} px")
    results = []
    for page in pages:
        name = str(page.relative_to(args.site))
        try:
            results.append(judge(name, probe(binary, page), args.strict))
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            results.append(PageResult(name, False, problems=(f"Chromium failed: {exc}",)))
        if args.screenshots is not None:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            shot = (args.screenshots / name.replace("/", "_")).with_suffix(".png")
            _chromium(binary, "--virtual-time-budget=20000", f"--window-size={WIDTH},2000", "--hide-scrollbars",
                      f"--screenshot={shot.resolve()}", page.resolve().as_uri(), timeout=120)
    print(f"{'page':40s} {'result':6s} {'formulas':>8s} {'width':>6s} {'height':>7s} {'clipped':>7s}")
    for r in results:
        print(f"{r.page:40s} {'ok' if r.ok else 'FAIL':6s} {r.formulas:8d} {r.width:6d} {r.height:7d} {r.clipped:7d}")
        for problem in r.problems:
            print(f"    {problem}")
        if args.verbose and r.details:
            for block in r.details.get("clipped", []):
                print(f"    clipped: {block['where'] or '-'}: {block['what']} {block['content']} px in {block['box']} px: {block['first']!r}")
    failed = [r.page for r in results if not r.ok]
    clipped = sum(r.clipped for r in results)
    print(f"[check-html] {len(results) - len(failed)} of {len(results)} pages pass; "
          f"{clipped} block(s) must be scrolled sideways{' (failures with --strict)' if args.strict else ' (--verbose lists them)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
