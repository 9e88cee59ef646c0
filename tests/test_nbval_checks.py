"""The book's checked outputs still fail when a result really changes.

nbval (``--nbval-lax``) compares the text of every cell tagged ``nbval-check-output`` with the
committed output, after ``book/nbval_sanitize.cfg``. The chapters print their numbers at the
precision they carry (:mod:`hmmrnn.precision`) so that the text is the same on every CPU; the
sanitizer only absorbs what is not a result (the sign of a printed zero, memory addresses).
This test makes sure neither hides a real change: for every checked cell of every chapter it
runs nbval itself, with the book's sanitizer, on a cell that re-prints the committed output
(which must pass) and on one that re-prints it with one printed number moved by one unit of
its last digit (which must fail). Cells run in one kernel, as plain prints: a few seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from hmmrnn.report import book_chapters

REPO = Path(__file__).resolve().parent.parent
SANITIZE = REPO / "book" / "nbval_sanitize.cfg"
CHECK_TAG = "nbval-check-output"
_NUMBER = re.compile(r"(?<![\w.])(\d+)\.(\d+)(?![\w.])")


def checked_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """Code cells whose output nbval compares in lax mode."""
    return [
        c for c in nb.cells
        if c.cell_type == "code" and (CHECK_TAG in c.metadata.get("tags", []) or "NBVAL_CHECK_OUTPUT" in c.source)
    ]


def stdout_text(cell: nbformat.NotebookNode) -> str | None:
    """The cell's output if it is only text printed to stdout, else None."""
    if not cell.outputs or any(o.output_type != "stream" or o.name != "stdout" for o in cell.outputs):
        return None
    return "".join(o.text for o in cell.outputs)


def rich_result(cell: nbformat.NotebookNode) -> dict[str, str] | None:
    """The cell's output if it is one displayed value with only text and HTML (a summary table), else None."""
    if len(cell.outputs) != 1 or cell.outputs[0].output_type != "execute_result":
        return None
    data = cell.outputs[0].data
    return dict(data) if set(data) <= {"text/plain", "text/html"} and "text/plain" in data else None


def doctor(text: str) -> str | None:
    """``text`` with its last decimal number moved by one unit of its last digit (9 -> 8, else +1)."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    frac = m.group(2)
    last = int(frac[-1])
    new = f"{m.group(1)}.{frac[:-1]}{last - 1 if last == 9 else last + 1}"
    return text[: m.start()] + new + text[m.end():]


def replay_cell(stored: str, printed: str, label: str) -> nbformat.NotebookNode:
    """A checked cell that prints ``printed`` and holds ``stored`` as its committed output."""
    cell = nbformat.v4.new_code_cell(f"# {label}\nprint({printed!r}, end=\"\")")
    cell.metadata["tags"] = [CHECK_TAG]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    return cell


def replay_result(stored: dict[str, str], shown: dict[str, str], label: str) -> nbformat.NotebookNode:
    """A checked cell that displays ``shown`` and holds ``stored`` as its committed result."""
    cell = nbformat.v4.new_code_cell(f"# {label}\nfrom IPython.display import display\ndisplay({shown!r}, raw=True)")
    cell.metadata["tags"] = [CHECK_TAG]
    cell.outputs = [nbformat.v4.new_output("execute_result", data=stored, execution_count=1)]
    return cell


def run_nbval(path: Path, tmp_path: Path) -> dict[str, bool]:
    """Run nbval on ``path``; return {cell label: passed} from its JUnit report."""
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-sanitize-with", str(SANITIZE), f"--junitxml={report}", str(path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert report.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    nb = nbformat.read(path, as_version=4)
    labels = [c.source.splitlines()[0][2:] for c in nb.cells]
    results = {}
    cases = ET.parse(report).getroot().iter("testcase")
    for case in cases:
        index = int(re.search(r"Cell (\d+)", case.get("name")).group(1))
        results[labels[index]] = case.find("failure") is None and case.find("error") is None
    return results


@pytest.mark.slow
def test_a_changed_number_fails_every_checked_output(tmp_path):
    cells, expected = [], {}
    for path in book_chapters(REPO):
        if path.suffix != ".ipynb":
            continue
        for k, cell in enumerate(checked_cells(nbformat.read(path, as_version=4))):
            label = f"{path.stem}:{k}"
            stored = stdout_text(cell)
            result = rich_result(cell)
            if stored is not None and doctor(stored) is not None:
                cells.append(replay_cell(stored, stored, f"{label} same"))
                cells.append(replay_cell(stored, doctor(stored), f"{label} changed"))
            elif result is not None and doctor(result["text/plain"]) is not None:  # a summary table
                changed = {**result, "text/plain": doctor(result["text/plain"])}
                cells.append(replay_result(result, result, f"{label} same"))
                cells.append(replay_result(result, changed, f"{label} changed"))
            else:  # no printed number to move (or another kind of output)
                continue
            expected[f"{label} same"], expected[f"{label} changed"] = True, False
    assert len(expected) >= 40, "expected the book's checked cells with numbers"
    # what the sanitizer may absorb: the sign of a printed zero
    cells.append(replay_cell("rate 0.000, cut 0.00\n", "rate -0.000, cut +0.00\n", "signed zero"))
    expected["signed zero"] = True
    for count, cell in enumerate(cells, start=1):
        cell.execution_count = count  # nbval refuses stored outputs without one
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "replay.ipynb"
    nbformat.write(nb, path)
    results = run_nbval(path, tmp_path)
    wrong = {label: results.get(label) for label, ok in expected.items() if results.get(label) is not ok}
    assert not wrong, f"nbval verdicts not as expected (label: passed): {wrong}"


def test_doctor_moves_the_last_number_by_one_digit():
    assert doctor("cut -0.143 (reached: False); 12 neurons") == "cut -0.144 (reached: False); 12 neurons"
    assert doctor("PC1 59.8 %, PC2 12.9 %") == "PC1 59.8 %, PC2 12.8 %"
    assert doctor("points found: 1") is None
