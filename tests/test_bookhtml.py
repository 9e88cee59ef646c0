"""The built book loads nothing from another host (hmmrnn.bookhtml): config, scanner, copy, pages."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from hmmrnn import bookhtml

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "_build" / "html"


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def test_config_serves_mathjax_from_the_book() -> None:
    sphinx = _config()["sphinx"]
    assert "hmmrnn.bookhtml" in sphinx["extra_extensions"]
    path = sphinx["config"]["mathjax_path"]
    assert path == f"{bookhtml.MATHJAX_FOLDER}/{bookhtml.MATHJAX_ENTRY}"
    assert not bookhtml.is_external(path)


def test_book_extra_installs_mathjax() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("django-static-mathjax") for dep in extras["book"])


def test_installed_mathjax_has_entry_and_fonts() -> None:
    es5 = bookhtml.mathjax_source()
    assert (es5 / bookhtml.MATHJAX_ENTRY).is_file()
    fonts = list((es5 / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) > 10  # MathJax's TeX fonts, served locally too


def test_is_external() -> None:
    assert bookhtml.is_external("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    assert bookhtml.is_external("http://example.org/a.js")
    assert bookhtml.is_external("//fonts.googleapis.com/css")
    assert not bookhtml.is_external("../_static/mathjax/tex-mml-chtml.js")
    assert not bookhtml.is_external("_static/x.css")
    assert not bookhtml.is_external("data:image/png;base64,AAAA")


def test_scanner_finds_loads_not_links() -> None:
    page = """<html><head>
    <script src="https://cdn.example.org/mathjax.js"></script>
    <script src="../_static/local.js"></script>
    <link rel="stylesheet" href="//fonts.example.org/css?family=Lato">
    <link rel="next" href="https://example.org/next.html">
    <link rel="preload" as="font" href="https://fonts.example.org/f.woff2">
    <style>@import "https://example.org/a.css"; .x { background: url('https://e.org/b.png') }</style>
    </head><body>
    <a href="https://papermill.readthedocs.io">papermill</a>
    <img src="data:image/png;base64,AAAA"><img src="../_images/fig.png">
    <img srcset="../a.png 1x, https://e.org/c.png 2x">
    <div style="background-image: url(http://e.org/d.png)"></div>
    <iframe src="https://e.org/frame"></iframe>
    </body></html>"""
    assert bookhtml.external_resources(page) == [
        "<script> https://cdn.example.org/mathjax.js",
        "<link> //fonts.example.org/css?family=Lato",
        "<link> https://fonts.example.org/f.woff2",
        "<style> https://example.org/a.css",
        "<style> https://e.org/b.png",
        "<img> https://e.org/c.png",
        "<div> http://e.org/d.png",
        "<iframe> https://e.org/frame",
    ]


def test_scan_site_and_copy(tmp_path: Path) -> None:
    site = tmp_path / "html"
    (site / "book").mkdir(parents=True)
    (site / "_static").mkdir()
    (site / "book" / "ok.html").write_text('<script src="../_static/mathjax/tex-mml-chtml.js"></script>')
    (site / "book" / "bad.html").write_text('<script src="https://cdn.jsdelivr.net/npm/mathjax@3"></script>')
    (site / "_static" / "theme.css").write_text("@font-face { src: url(https://fonts.example.org/x.woff2) }")
    assert bookhtml.scan_site(site) == {
        "_static/theme.css": ["css https://fonts.example.org/x.woff2"],
        "book/bad.html": ["<script> https://cdn.jsdelivr.net/npm/mathjax@3"],
    }
    # a fake MathJax: the copy goes to _static/mathjax and is not scanned itself
    src = tmp_path / "es5"
    (src / "output").mkdir(parents=True)
    (src / bookhtml.MATHJAX_ENTRY).write_text("/* see https://www.mathjax.org */")
    (src / "output" / "chtml.css").write_text("@import 'https://example.org/x.css';")
    entry = bookhtml.copy_mathjax(site / "_static", source=src)
    assert entry == site / "_static" / "mathjax" / bookhtml.MATHJAX_ENTRY and entry.is_file()
    assert set(bookhtml.scan_site(site)) == {"_static/theme.css", "book/bad.html"}


def test_extension_refuses_a_cdn_mathjax_path() -> None:
    from sphinx.errors import ConfigError

    with pytest.raises(ConfigError, match="another host"):
        bookhtml._check_config(None, SimpleNamespace(mathjax_path="https://cdn.jsdelivr.net/x.js"))
    bookhtml._check_config(None, SimpleNamespace(mathjax_path="mathjax/tex-mml-chtml.js"))


@pytest.mark.skipif(not BUILT.is_dir(), reason="no built book in _build/html (run `make book`)")
def test_built_book_is_self_contained() -> None:
    pages = sorted(BUILT.rglob("*.html"))
    assert pages
    assert bookhtml.scan_site(BUILT) == {}
    # every page with formulas loads the local copy of MathJax, and that copy is there
    with_math = [p for p in pages if "mathjax" in p.read_text(encoding="utf-8").lower()]
    assert (BUILT / "_static" / "mathjax" / bookhtml.MATHJAX_ENTRY).is_file()
    for page in with_math:
        text = page.read_text(encoding="utf-8")
        if "tex-mml-chtml.js" in text:
            assert "_static/mathjax/tex-mml-chtml.js" in text, page
