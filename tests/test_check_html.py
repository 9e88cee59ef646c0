"""scripts/check_html.py: the verdict on what Chromium found, and (when Chromium is installed) a real probe."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_html", REPO / "scripts" / "check_html.py")
check_html = importlib.util.module_from_spec(_spec)
sys.modules["check_html"] = check_html
_spec.loader.exec_module(check_html)

GOOD = {"formulas": 3, "math_errors": [], "raw_tex": [], "client_width": 1265, "scroll_width": 1265, "height": 900,
        "wide": [], "clipped": [{"where": "summary", "what": "pre", "content": 900, "box": 600, "first": "| claim"}]}


def test_judge_passes_a_typeset_page_that_fits():
    r = check_html.judge("a.html", GOOD, strict=False)
    assert r.ok and r.formulas == 3 and r.width == 1265 and r.clipped == 1 and r.problems == ()
    assert not check_html.judge("a.html", GOOD, strict=True).ok  # a clipped block fails only with --strict


@pytest.mark.parametrize("change, words", [
    ({"raw_tex": ["x \\(h_t\\) y"]}, "raw TeX"),
    ({"math_errors": ["Undefined control sequence in \\foo"]}, "MathJax error"),
    ({"scroll_width": 1400, "wide": ["table right=1400"]}, "1400 px wide"),
])
def test_judge_fails_raw_tex_errors_and_wide_pages(change, words):
    r = check_html.judge("a.html", {**GOOD, **change}, strict=False)
    assert not r.ok and any(words in p for p in r.problems)


def test_judge_fails_a_page_that_did_not_load():
    assert not check_html.judge("a.html", None, strict=False).ok


def test_pages_of_skips_sphinx_folders(tmp_path):
    for name in ("index.html", "book/a.html", "_static/x.html", "_sources/y.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("<html></html>")
    assert [p.relative_to(tmp_path).as_posix() for p in check_html.pages_of(tmp_path)] == ["book/a.html", "index.html"]


def test_no_chromium_skips_with_a_message(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(check_html, "find_chromium", lambda: None)
    assert check_html.main([str(tmp_path)]) == 0
    assert "skipped: no Chromium" in capsys.readouterr().out


@pytest.mark.skipif(check_html.find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_probe_in_chromium_sees_raw_tex_and_a_wide_page(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>raw \\(x^2\\) here</p><div style='width:3000px'>wide</div>"
                    "<pre style='overflow-x:auto;width:100px'>a long line that does not fit in one hundred pixels</pre>"
                    "</body></html>")
    found = check_html.probe(check_html.find_chromium(), page)
    assert found["raw_tex"] and "\\(x^2" in found["raw_tex"][0]
    assert found["scroll_width"] > found["client_width"]
    assert len(found["clipped"]) == 1
    r = check_html.judge("page.html", found, strict=False)
    assert not r.ok and len(r.problems) == 2
