"""The built book loads nothing from outside ``_build/html``: MathJax served with the book.

Readers open the book on a projector or a laptop without a network. Sphinx's default
``mathjax_path`` is a CDN address, so offline every formula would show as raw TeX. This
module is a (tiny) Sphinx extension, listed in ``_config.yml``:

* MathJax 3 comes from PyPI (the package ``django-static-mathjax``, installed with the
  ``book`` extra by ``scripts/setup.sh``; it ships MathJax's ``es5`` build, fonts included,
  and has no dependencies). :func:`mathjax_source` finds it.
* At the end of an HTML build the extension copies that ``es5`` folder to
  ``_build/html/_static/mathjax`` (:func:`copy_mathjax`); ``_config.yml`` points
  ``mathjax_path`` at ``mathjax/tex-mml-chtml.js``, which Sphinx resolves inside ``_static``.
* It then scans every built page (:func:`external_resources`) and fails the build if a page
  loads a script, stylesheet, font, image or frame from another host, or if ``mathjax_path``
  is not a local path. Links (``<a href>``) to other sites are fine: they load nothing.

``tests/test_bookhtml.py`` checks the configuration, the scanner on hand-written HTML, the copy,
and every page of ``_build/html`` when a built book is there. ``scripts/check_html.py`` checks
the pages as a browser renders them (formulas typeset, nothing wider than the window).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

#: MathJax's combined component that Sphinx loads by default (TeX and MathML in, CommonHTML out)
MATHJAX_ENTRY = "tex-mml-chtml.js"
#: where the copy lives inside the built site, relative to ``_static``
MATHJAX_FOLDER = "mathjax"

# tags whose attribute *loads* something when the page is shown (a plain <a href> does not)
_LOADING_ATTRS: dict[str, tuple[str, ...]] = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "audio": ("src",),
    "video": ("src", "poster"),
    "track": ("src",),
    "input": ("src",),
}
# <link rel=...> kinds that load nothing (hyperlinks between pages)
_LINK_NAVIGATION = {"next", "prev", "previous", "index", "search", "canonical", "alternate",
                    "author", "help", "license", "home", "up", "first", "last", "copyright"}
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)


def is_external(url: str) -> bool:
    """True for an address on another host: ``http://``, ``https://`` or ``//host/...``."""
    u = url.strip().lower()
    return u.startswith(("http://", "https://", "//"))


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        urls: list[str] = []
        if tag == "link":
            rels = set(a.get("rel", "").lower().split())
            if not rels or not rels <= _LINK_NAVIGATION:
                urls.append(a.get("href", ""))
        for attr in _LOADING_ATTRS.get(tag, ()):
            value = a.get(attr, "")
            # srcset: "url 1x, url 2x"
            urls += [part.strip().split(" ")[0] for part in value.split(",")] if "srcset" in attr else [value]
        if "style" in a:
            urls += _CSS_URL.findall(a["style"])
        self.found += [f"<{tag}> {u}" for u in urls if u and is_external(u)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += [f"<style> {u}" for u in _CSS_URL.findall(data)]


def external_resources(html_text: str) -> list[str]:
    """What a page would load from another host, as ``"<tag> url"`` strings (empty: none).

    Looks at every tag that loads something when shown (``script``, ``img``, ``iframe``,
    ``link`` other than page-to-page links, ``source``, ...) and at ``url(...)`` /
    ``@import`` in ``<style>`` blocks and ``style`` attributes. Links a reader clicks
    (``<a href>``) are not resources and are not reported.
    """
    scanner = _Scanner()
    scanner.feed(html_text)
    scanner.close()
    return scanner.found


def external_css_urls(css_text: str) -> list[str]:
    """``url(...)`` and ``@import`` addresses on another host in a stylesheet (fonts!)."""
    return _CSS_URL.findall(css_text)


def scan_site(root: str | Path) -> dict[str, list[str]]:
    """Every ``.html`` and ``.css`` file under ``root`` that loads something from another host.

    Returns ``{path relative to root: [what it loads]}``; empty when the site is self-contained.
    The copy of MathJax itself is skipped (its sources mention addresses in comments and
    in its optional "explorer" settings, which the book does not turn on).
    """
    root = Path(root)
    bad: dict[str, list[str]] = {}
    skip = root / "_static" / MATHJAX_FOLDER
    for path in sorted(root.rglob("*")):
        if not path.is_file() or skip in path.parents:
            continue
        if path.suffix == ".html":
            found = external_resources(path.read_text(encoding="utf-8", errors="replace"))
        elif path.suffix == ".css":
            found = [f"css {u}" for u in external_css_urls(path.read_text(encoding="utf-8", errors="replace"))]
        else:
            continue
        if found:
            bad[str(path.relative_to(root))] = found
    return bad


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax 3 (from the PyPI package ``django-static-mathjax``).

    Raises ``FileNotFoundError`` naming the fix when it is not installed.
    """
    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            es5 = Path(base) / "static" / "mathjax" / "es5"
            if (es5 / MATHJAX_ENTRY).is_file():
                return es5
    raise FileNotFoundError(
        "MathJax is not installed: the book serves its own copy so that formulas render "
        "offline. Run `make setup` (or pip install -e \".[book]\", which installs "
        "django-static-mathjax).")


def copy_mathjax(static_dir: str | Path, source: str | Path | None = None) -> Path:
    """Copy MathJax's ``es5`` build to ``static_dir/mathjax``; return the entry script's path."""
    src = Path(source) if source is not None else mathjax_source()
    dest = Path(static_dir) / MATHJAX_FOLDER
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest / MATHJAX_ENTRY


# --------------------------------------------------------------------------- Sphinx extension

def _check_config(app: Any, config: Any) -> None:
    from sphinx.errors import ConfigError

    path = str(config.mathjax_path or "")
    if is_external(path):
        raise ConfigError(
            f"mathjax_path is {path!r}, an address on another host: the book must render "
            f"offline; set `sphinx: config: mathjax_path: {MATHJAX_FOLDER}/{MATHJAX_ENTRY}` "
            "in _config.yml")
    mathjax_source()  # fail early, before hours of execution, when MathJax is missing


def _finish(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.errors import ExtensionError

    out = Path(app.outdir)
    copy_mathjax(out / "_static")
    bad = scan_site(out)
    if bad:
        lines = [f"  {page}: {', '.join(urls)}" for page, urls in bad.items()]
        raise ExtensionError("pages load resources from outside the book (they fail "
                             "offline):\n" + "\n".join(lines))


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point: check ``mathjax_path``, copy MathJax into the build, scan the pages."""
    app.connect("config-inited", _check_config)
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
