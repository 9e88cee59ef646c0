"""hmmrnn.tables: the same formatted strings as aligned text and as an HTML table."""

from __future__ import annotations

import configparser
import doctest
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hmmrnn import tables
from hmmrnn.tables import TABLE_CSS, Table

SANITIZE = Path(__file__).resolve().parent.parent / "book" / "nbval_sanitize.cfg"


class _Cells(HTMLParser):
    """The text of every th/td, row by row, and each row's class."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.classes: list[str | None] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
            self.classes.append(dict(attrs).get("class"))
        elif tag in ("th", "td"):
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data


def test_doctest() -> None:
    assert doctest.testmod(tables).failed == 0


def test_text_is_aligned_exactly() -> None:
    t = Table(["net", "out", "rate"], [["linear2", "0", "0.0320"], ["cyclic4", "12", "0.1"]],
              title="hazards", notes=["rate: per step"], flagged=[1])
    assert repr(t) == (
        "hazards\n"
        "net      out    rate\n"
        "linear2    0  0.0320\n"
        "cyclic4   12     0.1 *\n"
        "rate: per step"
    )
    assert t.widths() == (7, 3, 6)


def test_left_alignment_and_no_trailing_spaces() -> None:
    t = Table(["a", "b"], [["x", "long text"], ["yy", "z"]], align="ll")
    assert repr(t).splitlines() == ["a   b", "x   long text", "yy  z"]


def test_html_holds_the_same_cells_escaped_and_marks_flagged_rows() -> None:
    rows = [["a < b", "1.0"], ["c & d", "2.0"], ["e", "3.0"]]
    t = Table(["name", "value"], rows, title="T <1>", notes=["x & y"], flagged=[0, 2])
    page = t._repr_html_()
    assert page == Table(["name", "value"], rows, title="T <1>", notes=["x & y"], flagged=[0, 2])._repr_html_()
    assert page.startswith(f"<style>{TABLE_CSS}</style>")
    assert "<caption>T &lt;1&gt;</caption>" in page and "x &amp; y" in page
    parser = _Cells()
    parser.feed(page)
    assert parser.rows == [["name", "value"]] + rows
    assert parser.classes == [None, "flagged", None, "flagged"]


def test_rows_and_columns_may_be_any_sequence() -> None:
    t = Table(("a",), (("1",), ("2",)), notes="one note")
    assert t.rows == (("1",), ("2",)) and t.notes == ("one note",)
    assert repr(t) == "a\n1\n2\none note"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(columns=["a", "b"], rows=[["1"]]), ValueError, "row 0 has 1 cells, the table has 2 columns"),
        (dict(columns=["a"], rows=[[1.5]]), TypeError, "formatted string, got float 1.5"),
        (dict(columns=[3], rows=[]), TypeError, "column header"),
        (dict(columns=[], rows=[]), ValueError, "at least one column"),
        (dict(columns=["a", "b"], rows=[], align="lx"), ValueError, "align must be 2 letters"),
        (dict(columns=["a", "b"], rows=[], align="l"), ValueError, "align must be 2 letters"),
        (dict(columns=["a"], rows=[["1"]], flagged=[1]), ValueError, r"flagged rows \[1\] out of range"),
        (dict(columns=["a"], rows=[["1"]], notes=[None]), TypeError, "note"),
        (dict(columns=["a"], rows=[["1"]], wrap=[1]), ValueError, r"wrapped columns \[1\] out of range"),
    ],
)
def test_bad_input_is_named(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        Table(**kwargs)


def test_nbval_sanitizer_replaces_the_style_block_whole() -> None:
    """The book's sanitizer drops a table's CSS (presentation) and nothing of its cells."""
    cfg = configparser.ConfigParser()
    cfg.read(SANITIZE)
    section = cfg["style blocks"]
    page = Table(["a"], [["0.123"]])._repr_html_()
    cleaned = re.sub(section["regex"], section["replace"], page)
    assert TABLE_CSS not in cleaned and cleaned.startswith("<style>STYLE</style>")
    assert "0.123" in cleaned


def test_wrapped_columns_wrap_in_html_only() -> None:
    t = Table(["key", "reason"], [["a", "a long reason"]], wrap=[1])
    assert '<td class="l">a</td><td class="r w">a long reason</td>' in t._repr_html_()
    assert "td.w{white-space:normal" in TABLE_CSS
    assert repr(t) == "key         reason\na    a long reason"
