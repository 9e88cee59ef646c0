"""Checks of the book's notebooks: the chapter skeleton, committed executed, and rerunnable.

Static checks (fast) of every notebook listed in ``_toc.yml``:

* kernel ``python3``;
* exactly one cell tagged ``parameters``, holding only assignments of literals;
* executed top to bottom: execution counts 1, 2, 3, ... in every code cell;
* no error outputs and nothing written to stderr;
* a title first, then an ``Overview`` section; a ``Summary`` section.

The slow test runs ``scripts/run_chapters.py`` with ``book/params/tiny.yaml`` (the papermill
path with non-default parameters). The outputs themselves are checked by nbval:
``pytest --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg book/*.ipynb``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from hmmrnn.report import book_chapters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = [p for p in book_chapters(REPO) if p.suffix == ".ipynb"]
TINY = REPO / "book" / "params" / "tiny.yaml"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def parameter_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def literal_parameters(source: str) -> dict:
    """Names and values of a parameters cell; raises AssertionError if it holds anything else."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), ast.unparse(node)
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
            target, value = node.target.id, node.value
        else:
            raise AssertionError(f"not a literal assignment: {ast.unparse(node)}")
        try:
            values[target] = ast.literal_eval(value)
        except ValueError:
            raise AssertionError(f"{target} is not assigned a literal: {ast.unparse(value)}") from None
    return values


def headings(nb: nbformat.NotebookNode) -> list[str]:
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines += [line.strip() for line in cell.source.splitlines() if re.match(r"^#{1,6} ", line)]
    return lines


def test_the_toc_lists_notebooks():
    assert NOTEBOOKS, "no notebook in _toc.yml"
    assert NOTEBOOKS[-1].stem == "reproduction_report"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
class TestNotebook:
    def test_kernel_is_python3(self, path):
        assert read(path).metadata.kernelspec.name == "python3"

    def test_one_parameters_cell_of_literals(self, path):
        nb = read(path)
        cells = parameter_cells(nb)
        assert len(cells) == 1, f"{len(cells)} cells tagged 'parameters'"
        assert cells[0].cell_type == "code"
        assert literal_parameters(cells[0].source), "the parameters cell defines nothing"
        # the imports cell, then the parameters (derived values come after it)
        assert code_cells(nb).index(cells[0]) <= 1

    def test_executed_top_to_bottom(self, path):
        counts = [c.execution_count for c in code_cells(read(path))]
        assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}"

    def test_no_errors_and_no_stderr(self, path):
        for i, cell in enumerate(code_cells(read(path))):
            for output in cell.outputs:
                assert output.output_type != "error", f"code cell {i}: {output.get('ename')}"
                assert not (output.output_type == "stream" and output.name == "stderr"), f"code cell {i} wrote to stderr: {output.text[:200]}"

    def test_chapters_show_figures(self, path):
        # a chapter executed with a non-inline matplotlib backend (e.g. MPLBACKEND=Agg) has no
        # figures at all; every chapter but the report page draws some
        if path.stem == "reproduction_report":
            return
        images = sum("image/png" in output.get("data", {}) for cell in code_cells(read(path)) for output in cell.outputs)
        assert images >= 1, "no figure in the executed notebook"

    def test_title_overview_summary(self, path):
        nb = read(path)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# "), "the first cell must be the title"
        found = headings(nb)
        assert found[0].startswith("# ") and sum(h.startswith("# ") for h in found) == 1, "exactly one title"
        assert found[1] == "## Overview", f"the section after the title is {found[1]!r}"
        assert "## Summary" in found

    def test_papermill_sees_every_parameter(self, path):
        # papermill parses the parameters cell itself (e.g. an "=" inside a comment hides a
        # line from it): every literal must be overridable with -p
        import papermill

        defined = literal_parameters(parameter_cells(read(path))[0].source)
        seen = set(papermill.inspect_notebook(str(path)))
        assert set(defined) <= seen, f"papermill cannot parse {sorted(set(defined) - seen)}"

    def test_tiny_parameters_exist_in_the_notebook(self, path):
        tiny = yaml.safe_load(TINY.read_text()) or {}
        defined = literal_parameters(parameter_cells(read(path))[0].source)
        given = {**(tiny.get("all") or {}), **(tiny.get(path.stem) or {})}
        assert set(given) <= set(defined), f"unknown parameters {sorted(set(given) - set(defined))}"


def run_runner(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_chapters.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=1800,
    )


def test_runner_refuses_unknown_chapters(tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("no_such_chapter: {seed: 1}\n")
    result = run_runner("--params", str(params), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "no_such_chapter" in result.stderr
    result = run_runner("--only", "no_such_chapter", "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "no_such_chapter" in result.stderr


def test_runner_reports_unknown_parameters(tmp_path):
    stem = NOTEBOOKS[0].stem
    params = tmp_path / "bad.yaml"
    params.write_text(f"{stem}: {{not_a_parameter: 1}}\n")
    result = run_runner("--params", str(params), "--out", str(tmp_path / "out"), "--only", stem)
    assert result.returncode == 1
    assert re.search(rf"\| {stem} +\| FAILED: unknown parameters \['not_a_parameter'\]", result.stdout), result.stdout


@pytest.mark.slow
def test_runner_executes_every_chapter_with_tiny_parameters(tmp_path):
    book_claims = REPO / "book" / "claims"
    before = {p.name: p.stat().st_mtime_ns for p in book_claims.glob("*.json")} if book_claims.is_dir() else {}
    env_before = os.environ.get("HMMRNN_CLAIMS_DIR")  # `make test` sets it to a scratch folder
    out = tmp_path / "out"
    result = run_runner("--params", str(TINY), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for path in NOTEBOOKS:
        assert re.search(rf"^\| {path.stem} +\| ok +\| +[0-9.]+ \|$", result.stdout, re.M), result.stdout
        executed = read(out / path.name)
        assert all(o.output_type != "error" for c in code_cells(executed) for o in c.outputs)
    # the claims of the run went to <out>/claims, with the tiny parameters; the book's are untouched
    tiny = yaml.safe_load(TINY.read_text())
    for path in NOTEBOOKS:
        saved = out / "claims" / f"{path.stem}.json"
        if saved.exists():
            params = json.loads(saved.read_text())["parameters"]
            assert all(params[k] == v for k, v in (tiny.get(path.stem) or {}).items() if k in params)
    assert (out / "claims" / "hmm_targets.json").exists()
    after = {p.name: p.stat().st_mtime_ns for p in book_claims.glob("*.json")} if book_claims.is_dir() else {}
    assert after == before
    assert os.environ.get("HMMRNN_CLAIMS_DIR") == env_before  # the runner leaves ours alone
