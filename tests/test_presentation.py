"""How the chapters read (issue 20): the code a reader sees stays short, and each chapter's
summary of claims renders as a table.

Visible code is what a code cell shows on the page: cells tagged ``hide-input``,
``remove-input``, ``hide-cell`` or ``remove-cell`` are folded or removed by Jupyter Book.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hmmrnn.report import SUMMARY_CSS

BOOK = Path(__file__).resolve().parent.parent / "book"
HIDDEN = {"hide-input", "remove-input", "hide-cell", "remove-cell"}

# at most half of the visible code lines each chapter had before issue 20
LIMITS = {
    "hmm_targets": 92,  # was 150
    "training": 107,  # was 182
    "grid": 30,  # new after issue 20: imports, parameters and the summary only
    "global_dynamics": 127,  # was 203
    "local_regions": 107,  # was 267
    "kick_neurons": 194,  # was 313
    "compositionality": 180,  # was 357
    "stochastic_resonance": 250,  # was 472
    "hmm_emulation": 85,  # was 171
    "switching_rates": 120,  # was 241
}


def _notebook(name: str) -> dict:
    return json.loads((BOOK / f"{name}.ipynb").read_text())


def visible_code_lines(notebook: dict) -> int:
    """Lines of code a reader sees on the chapter's page (blank lines and comments included)."""
    count = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code" or HIDDEN & set(cell.get("metadata", {}).get("tags", [])):
            continue
        count += len("".join(cell["source"]).splitlines())
    return count


def test_every_chapter_has_a_limit():
    chapters = {p.stem for p in BOOK.glob("*.ipynb")} - {"reproduction_report"}
    assert chapters == set(LIMITS)


def _summary_problem(name: str) -> str:
    """Why the chapter's summary of claims is not a displayed table ("" if it is)."""
    cells = [c for c in _notebook(name)["cells"] if c["cell_type"] == "code"]
    shows = [c for c in cells if "".join(c["source"]).rstrip().endswith(".summary()")]
    if len(shows) != 1:
        return f"{name}: expected one cell ending with recorder.summary(), found {len(shows)}"
    if any(".table()" in "".join(c["source"]) for c in cells):
        return f"{name}: still prints the fixed-width recorder.table()"
    html = ["".join(o["data"]["text/html"]) for o in shows[0]["outputs"] if "text/html" in o.get("data", {})]
    if len(html) != 1 or '<table class="hmmrnn-summary">' not in html[0]:
        return f"{name}: the summary cell's output is not the HTML table (re-execute the chapter)"
    if not html[0].startswith(f"<style>{SUMMARY_CSS}</style>"):
        return f"{name}: the summary table's stored style is not hmmrnn.report.SUMMARY_CSS (re-execute the chapter)"
    return ""


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_visible_code_stays_short(name):
    lines = visible_code_lines(_notebook(name))
    assert lines <= LIMITS[name], f"{name}: {lines} visible code lines, limit {LIMITS[name]}"


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_the_summary_of_claims_is_a_table(name):
    problem = _summary_problem(name)
    assert not problem, problem


def test_the_training_run_folder_is_anchored_to_the_repository():
    source = "\n".join("".join(c["source"]) for c in _notebook("training")["cells"] if c["cell_type"] == "code")
    assert 'out_dir = "runs/training-chapter"' in source and "../runs" not in source
    assert "repository_root()" in source
