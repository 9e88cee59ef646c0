#!/usr/bin/env python
"""Execute the book's chapters in order: the documented way to rerun the book.

Usage (from the repository root)::

    python scripts/run_chapters.py                          # every chapter, default parameters
    python scripts/run_chapters.py --params book/params/tiny.yaml --out out/tiny
    python scripts/run_chapters.py --only hmm_targets reproduction_report
    python scripts/run_chapters.py --inplace                # re-execute the committed notebooks

Every notebook listed in ``_toc.yml`` is executed in toc order (Markdown pages are skipped)
with kernel ``python3`` and ``book/`` as the working directory, as Jupyter Book does.

* Default mode: papermill writes the executed notebooks to ``--out`` (default ``out/``),
  with the parameters of ``--params``: a YAML file whose top-level keys are notebook stems
  (``hmm_targets: {seed: 1}``), plus an optional ``all`` key merged into every chapter
  (a chapter's own keys win). A parameter that a chapter's ``parameters`` cell does not
  define is an error (papermill would only warn). The chapters' claims go to
  ``<out>/claims`` (``$HMMRNN_CLAIMS_DIR``), so that such a run never overwrites the
  book's ``book/claims``; ``--claims-dir`` chooses another folder.
* ``--inplace``: executes the committed notebooks themselves with their default
  parameters (nbclient, no papermill metadata), so that they are committed executed
  top to bottom; the claims go to ``book/claims``. ``--params`` is refused here.

Prints a table chapter | status | seconds; the exit code is 1 if any chapter failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without an install, too

KERNEL = "python3"


def load_parameters(path: Path | None, stems: list[str]) -> dict[str, dict]:
    """Per-chapter parameters from the YAML file (``all`` merged into each chapter)."""
    if path is None:
        return {stem: {} for stem in stems}
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of chapter names to parameters")
    unknown = sorted(set(data) - set(stems) - {"all"})
    if unknown:
        raise SystemExit(f"{path}: unknown chapters {unknown}; chapters are {stems} (and 'all')")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise SystemExit(f"{path}: '{key}' must map parameter names to values")
    common = data.get("all") or {}
    return {stem: {**common, **(data.get(stem) or {})} for stem in stems}


def check_parameters(notebook: Path, parameters: dict) -> None:
    """Refuse parameters that the notebook's ``parameters`` cell does not define."""
    import papermill

    known = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} (the notebook defines {sorted(known)})")


def run_papermill(notebook: Path, output: Path, parameters: dict, timeout: int) -> None:
    import papermill

    check_parameters(notebook, parameters)
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        kernel_name=KERNEL,
        cwd=str(notebook.parent),
        progress_bar=False,
        log_output=False,
        request_save_on_cell_execute=False,
        execution_timeout=timeout,
    )


def run_inplace(notebook: Path, timeout: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(notebook.parent)}}
    )
    client.execute()
    nbformat.write(nb, notebook)


def short_error(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(err).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, help="YAML file: {chapter: {name: value}, all: {...}}")
    parser.add_argument("--out", type=Path, default=REPO / "out", help="folder for the executed notebooks (default out/)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these chapters (notebook stems), in toc order")
    parser.add_argument("--claims-dir", type=Path, help="where chapters save their claims (default <out>/claims)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--inplace", action="store_true", help="re-execute the committed notebooks in place (default parameters)")
    args = parser.parse_args(argv)

    from hmmrnn.report import book_chapters

    notebooks = [p for p in book_chapters(REPO) if p.suffix == ".ipynb"]
    stems = [p.stem for p in notebooks]
    if args.only:
        missing = sorted(set(args.only) - set(stems))
        if missing:
            parser.error(f"unknown chapters {missing}; chapters are {stems}")
        notebooks = [p for p in notebooks if p.stem in args.only]
    if args.inplace and args.params:
        parser.error("--inplace runs the committed notebooks with their default parameters; drop --params")
    parameters = load_parameters(args.params, stems)

    if args.inplace:
        claims_dir = args.claims_dir  # None: the chapters' default, the repository's book/claims
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        claims_dir = args.claims_dir or args.out / "claims"
    if claims_dir is not None:
        os.environ["HMMRNN_CLAIMS_DIR"] = str(Path(claims_dir).resolve())  # inherited by the kernels

    results = []
    for notebook in notebooks:
        start = time.perf_counter()
        try:
            if args.inplace:
                run_inplace(notebook, args.timeout)
            else:
                run_papermill(notebook, args.out / notebook.name, parameters[notebook.stem], args.timeout)
            status = "ok"
        except Exception as err:  # report every chapter, then fail
            status = f"FAILED: {short_error(err)}"
            if os.environ.get("HMMRNN_RUNNER_TRACEBACK"):
                traceback.print_exc()
        seconds = time.perf_counter() - start
        results.append((notebook.stem, status, seconds))
        print(f"{notebook.stem}: {status} ({seconds:.1f} s)", file=sys.stderr, flush=True)

    width = max([len("chapter")] + [len(r[0]) for r in results])
    swidth = max([len("status")] + [len(r[1]) for r in results])
    print(f"\n| {'chapter'.ljust(width)} | {'status'.ljust(swidth)} | seconds |")
    print(f"|{'-' * (width + 2)}|{'-' * (swidth + 2)}|---------|")
    for stem, status, seconds in results:
        print(f"| {stem.ljust(width)} | {status.ljust(swidth)} | {seconds:7.1f} |")
    failed = [r for r in results if r[1] != "ok"]
    print(f"\n{len(results) - len(failed)} of {len(results)} chapters ran without error.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
