"""Result tables for the book: an HTML table on a page, aligned text everywhere else.

A chapter that has a table of results builds a :class:`Table` from rows of strings it has
already formatted (numbers at the precision they carry, :mod:`hmmrnn.precision`) and shows it
as the cell's value (or with ``IPython.display.display``). Jupyter and the book render
``_repr_html_``: a compact table whose header wraps and whose numbers never do, with flagged
rows on red, inside a block that scrolls sideways only when a window is too narrow. nbval and
a terminal see ``repr``: the same strings as aligned fixed-width text. Both texts are
deterministic (no random ids), so that nbval can compare them between machines, and neither
rounds anything itself: what a cell prints is what its author formatted.

    >>> t = Table(["network", "rate"], [["linear2", "0.025"], ["linear3", "0.053"]], title="switching rates")
    >>> print(repr(t))
    switching rates
    network   rate
    linear2  0.025
    linear3  0.053
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["TABLE_CSS", "Table"]

TABLE_CSS = (
    "div.hmmrnn-table-wrap{overflow-x:auto;max-width:100%;margin:0.4em 0 0.8em 0}"
    "table.hmmrnn-table{border-collapse:collapse;font-size:85%;line-height:1.3}"
    "table.hmmrnn-table caption{caption-side:top;text-align:left;font-weight:bold;padding:2px 0}"
    "table.hmmrnn-table th{white-space:normal;vertical-align:bottom;padding:2px 6px;"
    "border-bottom:1px solid #57606a;font-weight:bold}"
    "table.hmmrnn-table td{white-space:nowrap;padding:1px 6px;border-bottom:1px solid #e6e8eb;"
    "font-variant-numeric:tabular-nums}"
    "table.hmmrnn-table .l{text-align:left}table.hmmrnn-table .r{text-align:right}"
    "table.hmmrnn-table td.w{white-space:normal;min-width:16em}"
    "table.hmmrnn-table tr.flagged td{background:#ffebe9}"
    "p.hmmrnn-table-notes{font-size:85%;margin:0.2em 0 0.8em 0;color:#424a53}"
)
"""The tables' style: header cells wrap, data cells do not, flagged rows on red."""


@dataclass(frozen=True)
class Table:
    """A table of formatted results; ``_repr_html_`` for pages, ``repr`` for text.

    Attributes:
        columns: the column headers, ``(n_columns,)``.
        rows: the cells, ``(n_rows, n_columns)``, each a string as it is to be shown.
        title: a line above the table (the caption), e.g. what the numbers are.
        notes: lines below the table (units, what a symbol means, where a value comes from).
        align: one letter per column, ``"l"`` (left) or ``"r"`` (right); default: the first
            column left, the others right (labels, then numbers).
        flagged: indices of rows to mark (e.g. a failed check), on red in HTML and with a
            ``*`` after the row in text.
        wrap: indices of columns of prose (a reason, a note) whose cells wrap in HTML; numbers
            and labels never do.

    Raises:
        TypeError: a header or cell that is not a string (format numbers before, so that what
            is shown does not depend on a default float format).
        ValueError: a row whose length is not the number of columns, an ``align`` of the wrong
            length or with a letter other than l/r, a flagged row or wrapped column out of range.
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    title: str = ""
    notes: Sequence[str] = ()
    align: str | None = None
    flagged: Sequence[int] = field(default=())
    wrap: Sequence[int] = field(default=())

    def __post_init__(self) -> None:
        columns = tuple(self.columns)
        rows = tuple(tuple(r) for r in self.rows)
        notes = (self.notes,) if isinstance(self.notes, str) else tuple(self.notes)
        n = len(columns)
        if n == 0:
            raise ValueError("a table needs at least one column")
        for what, values in [("column header", columns), ("note", notes)] + [(f"cell of row {i}", r) for i, r in enumerate(rows)]:
            for v in values:
                if not isinstance(v, str):
                    raise TypeError(f"every {what} must be a formatted string, got {type(v).__name__} {v!r}")
        for i, r in enumerate(rows):
            if len(r) != n:
                raise ValueError(f"row {i} has {len(r)} cells, the table has {n} columns ({', '.join(columns)})")
        align = self.align if self.align is not None else "l" + "r" * (n - 1)
        if len(align) != n or set(align) - {"l", "r"}:
            raise ValueError(f"align must be {n} letters l or r (one per column), got {align!r}")
        flagged = tuple(int(i) for i in self.flagged)
        bad = [i for i in flagged if not 0 <= i < len(rows)]
        if bad:
            raise ValueError(f"flagged rows {bad} out of range for {len(rows)} rows")
        wrap = tuple(int(j) for j in self.wrap)
        bad = [j for j in wrap if not 0 <= j < n]
        if bad:
            raise ValueError(f"wrapped columns {bad} out of range for {n} columns")
        for name, value in (("columns", columns), ("rows", rows), ("notes", notes), ("align", align), ("flagged", flagged),
                            ("wrap", wrap)):
            object.__setattr__(self, name, value)

    def widths(self) -> tuple[int, ...]:
        """Characters per column of the text form, ``(n_columns,)``."""
        return tuple(max([len(h)] + [len(r[j]) for r in self.rows]) for j, h in enumerate(self.columns))

    def __repr__(self) -> str:
        widths = self.widths()

        def line(cells: Sequence[str]) -> str:
            parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, self.align)]
            return "  ".join(parts).rstrip()

        out = [self.title] if self.title else []
        out.append(line(self.columns))
        flagged = set(self.flagged)
        out += [line(r) + (" *" if i in flagged else "") for i, r in enumerate(self.rows)]
        out += list(self.notes)
        return "\n".join(out)

    def _repr_html_(self) -> str:
        esc = html.escape
        out = [f"<style>{TABLE_CSS}</style>", '<div class="hmmrnn-table-wrap"><table class="hmmrnn-table">']
        if self.title:
            out.append(f"<caption>{esc(self.title)}</caption>")
        out.append("<thead><tr>" + "".join(f'<th class="{a}">{esc(h)}</th>' for h, a in zip(self.columns, self.align)) + "</tr></thead>")
        out.append("<tbody>")
        flagged, wrap = set(self.flagged), set(self.wrap)
        for i, r in enumerate(self.rows):
            cls = ' class="flagged"' if i in flagged else ""
            tds = (f'<td class="{a}{" w" if j in wrap else ""}">{esc(c)}</td>' for j, (c, a) in enumerate(zip(r, self.align)))
            out.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
        out += ["</tbody>", "</table></div>"]
        if self.notes:
            out.append('<p class="hmmrnn-table-notes">' + "<br>".join(esc(n) for n in self.notes) + "</p>")
        return "\n".join(out)
