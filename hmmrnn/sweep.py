"""Sweeps: many training runs as tasks on ``dask.distributed``, resumable, tabulated.

A sweep is a YAML spec (``python -m hmmrnn sweep SPEC.yaml``; examples in ``sweeps/``)::

    out: runs/grid-cpu-slice          # sweep folder (relative to the current directory)
    train: {val_every: 5}             # any TrainConfig field but hmm/hidden_size/input_size/seed
    stop: {no_bifurcation_by: 400}    # BifurcationRule fields (early, final_count, drop, n_traj, ...)
    evaluate: {n: 5000, seed: 0}      # metrics.evaluate: n, length (null: the paper's), seed, matched
    grid:                             # cross products (a mapping, or a list of them)
      - {target: linear3, hidden: 150, input: [1, 10, 100, 200], seed: [0, 1, 2]}
    runs:                             # explicit runs
      - {target: linear3, hidden: 50, input: 100, seed: 7, train: {epochs: 100}}
    search:                           # seed searches: seeds in order until K runs succeed
      - {target: linear5, hidden: 150, input: 100, successes: 1, max_tries: 20,
         first_seed: 0, in_flight: 1, stop: {no_bifurcation_by: 500}}
    done_in: [runs/campaign]          # other sweep folders: a run finished there is not trained again

Every entry may carry its own ``train``/``stop``/``evaluate`` settings over the shared
ones. Unless set, ``epochs`` and ``grad_clip`` are the paper's for the target
(``hmmrnn.paper.EPOCHS``, ``GRAD_CLIP``) and the sequence length is the target's.

Each run trains in its own folder ``<out>/<target>-h<H>-d<D>-s<seed>/`` (a run folder of
:func:`hmmrnn.train.train`, owned by the run while it trains; ``result.json``, the run's
settings and its row of the table, is added when it has finished). The sweep's own files
are ``<out>/sweep/<name>.json`` (the settings of the latest start of a run) and
``<out>/sweep/<name>.log`` (its training log). A sweep killed and restarted skips the runs
whose ``result.json`` holds the current settings and resumes the others from their resume
file; a run of other settings in a folder is refused (only a larger ``epochs`` is allowed:
the run is continued). A run that another sweep folder named in ``done_in`` has finished
with the same recipe (the same settings but how often snapshots were saved) is not trained
again: the sweep reports it as done there, and its row stays in that folder's table. Every run is watched for its training bifurcation
(:class:`hmmrnn.search.BifurcationRule`; it stops a run only when ``stop`` sets
``no_bifurcation_by``). After each finished run the table ``<out>/results.csv`` is rebuilt
from the run folders and written atomically: one row per run (:data:`COLUMNS`).

Tasks run in worker processes (one torch thread each by default); the driver only submits,
collects and prints a line per finished run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import paper
from .campaign import truth
from .checkpoints import atomic_write_bytes
from .hmm import TARGET_NAMES
from .metrics import secondary_drop_epoch
from .search import BifurcationRule
from .train import TrainConfig

__all__ = [
    "COLUMNS", "SpecError", "RunSpec", "SearchSpec", "SweepSpec", "load_spec", "parse_spec", "run_name", "select",
    "RunInterrupted", "SweepOutcome", "run_one", "run_state", "done_elsewhere", "sweep_state", "run_sweep", "collect", "write_table",
    "search_progress", "search_tallies", "make_client", "default_workers", "dashboard_link",
]

RESULT_FILE = "result.json"
SWEEP_FOLDER = "sweep"  # <out>/sweep/<name>.json (settings) and <name>.log
TABLE_FILE = "results.csv"

#: Columns of ``results.csv`` in order (``marginal_<k>`` and ``marginal_hmm_<k>`` follow
#: ``max_sq_transition_error`` for every output k of the widest target in the table).
COLUMNS = (
    "name",  # run folder: <target>-h<H>-d<D>-s<seed>
    "target", "hidden", "input", "seed", "seq_len",
    "epochs",  # planned epochs
    "epochs_run",  # last epoch trained
    "stop_reason",  # "completed", the rule's reason ("no bifurcation by epoch E") or "non-finite loss"
    "best_val_loss", "best_epoch", "final_val_loss",
    "bifurcated",  # the transition rate fell below half its early plateau (hmmrnn.search; silent checks left out)
    "bifurcation_epoch",  # midpoint rule; empty when not bifurcated
    "loss_drop_epoch",  # a search try's validation-loss secondary drop (metrics.secondary_drop_epoch); empty when none or no search try
    "rate_early", "rate_final",  # transition-rate levels of the rule
    "plateau_from",  # first epoch of the plateau window (later than the rule's when its window never flickered)
    "plateau_moved",  # the rule moved its plateau window (no check of its early window flickered)
    "max_sq_transition_error",  # largest squared entry of the output transition-matrix error
    "lability", "lability_hmm", "rare_frequency", "rare_frequency_hmm",
    "matched_distance", "matched_distance_baseline",  # argmax reading (the paper's baselines)
    "matched_distance_plan", "matched_distance_plan_baseline",  # plan reading
    "fit_passes",  # the fit bar of hmmrnn.metrics
    "eval_n", "eval_length",
    "search",  # search cell (<target>-h<H>-d<D>) or empty
    "search_try",  # 1-based position of this seed in its search
    "search_success",  # the try counts as a success: bifurcated, and its validation loss dropped (loss_drop_epoch)
    "device", "resumed_from",  # epoch the finishing task resumed from (0: trained from scratch)
    "train_s", "eval_s", "wall_s",  # seconds of the finishing task (training, evaluation, all)
    "finished_at",  # UTC
)

_RUN_KEYS = ("target", "hidden", "input", "seed")
_CELL_KEYS = ("target", "hidden", "input")
_SECTION_KEYS = ("train", "stop", "evaluate")
_SEARCH_KEYS = ("successes", "max_tries", "first_seed", "in_flight")
_TOP_KEYS = ("out", *_SECTION_KEYS, "grid", "runs", "search", "done_in")
#: Settings that do not change what a run trains: a run finished elsewhere with other values is the same run.
_RECORDING_ONLY = ("config.snapshot_every", "config.snapshot_until")
_SET_BY_RUN = ("hmm", "hidden_size", "input_size", "seed")
_EVAL_DEFAULTS: dict[str, Any] = {"n": 5000, "length": None, "seed": 0, "matched": True}


class SpecError(ValueError):
    """A sweep spec that cannot be run; the message names the problem and where it is."""


class RunInterrupted(RuntimeError):
    """A task ended by ``stop_after`` (as if killed); the run is left resumable."""


def run_name(target: str, hidden: int, input_size: int, seed: int) -> str:
    """The folder name of a run: ``<target>-h<H>-d<D>-s<seed>``."""
    return f"{target}-h{hidden}-d{input_size}-s{seed}"


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep (plain data: it travels to the workers).

    Attributes:
        name: its folder name (:func:`run_name`).
        config: every :class:`~hmmrnn.train.TrainConfig` field (``betas``/``lr_milestones`` as lists).
        rule: the :class:`~hmmrnn.search.BifurcationRule` fields.
        evaluation: ``n``, ``length`` (None: the paper's), ``seed``, ``matched`` of
            :func:`hmmrnn.metrics.evaluate`.
        search: the search cell this run is a try of (None for a plain run).
        search_try: its 1-based position in that search.
    """

    name: str
    config: dict[str, Any]
    rule: dict[str, Any]
    evaluation: dict[str, Any]
    search: str | None = None
    search_try: int | None = None

    def settings(self) -> dict[str, Any]:
        """What a run folder must agree with to be resumed or skipped."""
        config = {k: v for k, v in self.config.items() if k not in ("device", "compile")}
        return {"config": config, "rule": self.rule, "evaluation": self.evaluation}


@dataclass(frozen=True)
class SearchSpec:
    """A seed search for one (target, |h|, d) cell: seeds ``first_seed, first_seed + 1, ...``
    until ``successes`` runs succeed (:func:`rule_fields`) or ``max_tries`` seeds were tried; ``in_flight`` tries
    run at once (tries past the K-th success that were already running are kept and recorded)."""

    cell: str
    template: RunSpec  # its seed is replaced by each try's
    successes: int = 1
    max_tries: int = 20
    first_seed: int = 0
    in_flight: int = 1

    def attempt(self, index: int) -> RunSpec:
        """The ``index``-th try (0-based)."""
        seed = self.first_seed + index
        config = dict(self.template.config, seed=seed)
        return dataclasses.replace(self.template, name=run_name(config["hmm"], config["hidden_size"], config["input_size"], seed),
                                   config=config, search=self.cell, search_try=index + 1)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec: the output folder, the plain runs, the searches and the other sweep
    folders whose finished runs count as done (``done_in``)."""

    out: Path
    runs: tuple[RunSpec, ...] = ()
    searches: tuple[SearchSpec, ...] = ()
    done_in: tuple[Path, ...] = ()


# --------------------------------------------------------------------------- the spec

def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _check_keys(d: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")


def _train_settings(d: dict[str, Any], where: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(_SET_BY_RUN)
    _check_keys(d, fields, f"{where}.train")
    return d


def _build_run(entry: dict[str, Any], shared: dict[str, dict[str, Any]], where: str, device: str | None) -> RunSpec:
    """A RunSpec from an entry with scalar target/hidden/input/seed and optional sections."""
    for key in _RUN_KEYS:
        if key not in entry:
            raise SpecError(f"{where}: missing {key!r}")
    target = entry["target"]
    if target not in TARGET_NAMES:
        raise SpecError(f"{where}: unknown target {target!r}; known: {list(TARGET_NAMES)}")
    sizes = {}
    for key, minimum in (("hidden", 1), ("input", 1), ("seed", 0)):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
        sizes[key] = value
    sections = {s: {**shared[s], **_mapping(entry.get(s), f"{where}.{s}")} for s in _SECTION_KEYS}
    train = _train_settings(sections["train"], where)
    values: dict[str, Any] = {"epochs": paper.EPOCHS[target], "grad_clip": paper.GRAD_CLIP[target], **train}
    if device is not None:
        values["device"] = device
    for key in ("betas", "lr_milestones"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        config = TrainConfig(hmm=target, hidden_size=sizes["hidden"], input_size=sizes["input"], seed=sizes["seed"], **values).validate()
    except (TypeError, ValueError, KeyError) as exc:
        raise SpecError(f"{where}: bad training settings: {exc}") from None
    try:
        rule = BifurcationRule.from_dict(sections["stop"])
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}.stop: {exc}") from None
    _check_keys(sections["evaluate"], _EVAL_DEFAULTS, f"{where}.evaluate")
    evaluation = {**_EVAL_DEFAULTS, **sections["evaluate"]}
    n, length = evaluation["n"], evaluation["length"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (length is not None and (not isinstance(length, int) or length < 2)):
        raise SpecError(f"{where}.evaluate: n must be a positive integer and length None or an integer >= 2, got {n!r}, {length!r}")
    if isinstance(evaluation["seed"], bool) or not isinstance(evaluation["seed"], int) or evaluation["seed"] < 0 \
            or not isinstance(evaluation["matched"], bool):
        raise SpecError(f"{where}.evaluate: seed must be an integer >= 0 and matched true or false, "
                        f"got {evaluation['seed']!r}, {evaluation['matched']!r}")
    return RunSpec(run_name(target, sizes["hidden"], sizes["input"], sizes["seed"]), config.as_dict(), rule.as_dict(), evaluation)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_spec(spec: dict[str, Any], out: str | Path | None = None, device: str | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from a spec mapping (the parsed YAML; see the module docstring).

    Args:
        out: the sweep folder (overrides the spec's ``out``).
        device: the training device of every run (overrides the spec's ``train.device``).

    Raises:
        SpecError: naming the first problem (unknown key, missing field, bad value, two
            entries that make one run folder with different settings).
    """
    spec = _mapping(spec, "the spec")
    _check_keys(spec, _TOP_KEYS, "the spec")
    folder = out if out is not None else spec.get("out")
    if not folder:
        raise SpecError("the spec names no output folder: set 'out' (or pass --out)")
    shared = {s: _mapping(spec.get(s), s) for s in _SECTION_KEYS}
    done_in = spec.get("done_in") or []
    if not isinstance(done_in, list) or not all(isinstance(f, str) and f for f in done_in):
        raise SpecError(f"done_in must be a list of sweep folders, got {done_in!r}")
    if any(Path(f) == Path(folder) for f in done_in):
        raise SpecError(f"done_in names the sweep's own folder {folder!r}")
    runs: dict[str, RunSpec] = {}

    def add(run: RunSpec, where: str) -> None:
        if run.name in runs and runs[run.name].settings() != run.settings():
            raise SpecError(f"{where}: run {run.name} is also defined with other settings")
        runs.setdefault(run.name, run)

    grids = spec.get("grid") or []
    for i, block in enumerate(grids if isinstance(grids, list) else [grids]):
        where = f"grid[{i}]"
        block = _mapping(block, where)
        _check_keys(block, (*_RUN_KEYS, *_SECTION_KEYS), where)
        axes = [_as_list(block.get(key)) if key in block else [] for key in _RUN_KEYS]
        for key, axis in zip(_RUN_KEYS, axes):
            if not axis:
                raise SpecError(f"{where}: missing {key!r} (a value or a list)")
        for combo in itertools.product(*axes):
            entry = {**dict(zip(_RUN_KEYS, combo)), **{s: block[s] for s in _SECTION_KEYS if s in block}}
            add(_build_run(entry, shared, where, device), where)
    for i, entry in enumerate(spec.get("runs") or []):
        where = f"runs[{i}]"
        entry = _mapping(entry, where)
        _check_keys(entry, (*_RUN_KEYS, *_SECTION_KEYS), where)
        add(_build_run(entry, shared, where, device), where)
    searches = []
    for i, entry in enumerate(spec.get("search") or []):
        where = f"search[{i}]"
        entry = _mapping(entry, where)
        _check_keys(entry, (*_CELL_KEYS, *_SEARCH_KEYS, *_SECTION_KEYS), where)
        options = {"successes": 1, "max_tries": 20, "first_seed": 0, "in_flight": 1, **{k: entry[k] for k in _SEARCH_KEYS if k in entry}}
        for key, value in options.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "first_seed" else 1):
                raise SpecError(f"{where}: {key} must be an integer >= {0 if key == 'first_seed' else 1}, got {value!r}")
        if options["successes"] > options["max_tries"]:
            raise SpecError(f"{where}: successes ({options['successes']}) cannot exceed max_tries ({options['max_tries']})")
        template = _build_run({**entry, "seed": options["first_seed"]}, shared, where, device)
        cell = f"{entry['target']}-h{entry['hidden']}-d{entry['input']}"
        search = SearchSpec(cell, template, **options)
        if any(s.cell == cell for s in searches):
            raise SpecError(f"{where}: a second search of cell {cell}")
        for j in range(search.max_tries):  # a try's folder must not be a plain run with other settings
            attempt = search.attempt(j)
            if attempt.name in runs and runs[attempt.name].settings() != attempt.settings():
                raise SpecError(f"{where}: try {attempt.name} is also a run of the spec with other settings")
        searches.append(search)
    if not runs and not searches:
        raise SpecError("the spec defines no runs: give 'grid', 'runs' or 'search'")
    return SweepSpec(Path(folder), tuple(runs.values()), tuple(searches), tuple(Path(f) for f in done_in))


def load_spec(path: str | Path, out: str | Path | None = None, device: str | None = None) -> SweepSpec:
    """Read a YAML spec file and :func:`parse_spec` it (errors name the file)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read the sweep spec {path}: {exc}") from None
    try:
        return parse_spec(data, out=out, device=device)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def select(spec: SweepSpec, patterns: Sequence[str]) -> SweepSpec:
    """The part of ``spec`` whose run names (or search cells) match one of ``patterns``.

    Patterns are shell-style (:func:`fnmatch.fnmatchcase`), e.g. ``linear3-h50-*`` or
    ``*-s0``: two parts of one spec can run side by side, each with one worker (they write
    to the same folder and table, which is rebuilt from the run folders).

    Raises:
        SpecError: a pattern that matches nothing (a typo would otherwise run nothing).
    """
    import fnmatch

    if not patterns:
        return spec
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(r.name, pattern) for r in spec.runs) and not any(
                fnmatch.fnmatchcase(s.cell, pattern) for s in spec.searches):
            raise SpecError(f"--only {pattern!r} matches no run or search of the spec")
    return SweepSpec(spec.out,
                     tuple(r for r in spec.runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)),
                     tuple(s for s in spec.searches if any(fnmatch.fnmatchcase(s.cell, p) for p in patterns)),
                     spec.done_in)


# --------------------------------------------------------------------------- one run

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    diffs: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs[prefix + key] = (a, b)
    return diffs


def _check_settings(out: Path, run: RunSpec) -> dict[str, tuple[Any, Any]]:
    """Differences between the saved settings of ``run``'s folder in ``out`` and ``run``'s, but a larger ``epochs``.

    Raises:
        ValueError: the folder holds a run with other settings (naming them).
    """
    folder = out / run.name
    saved = _read_json(out / SWEEP_FOLDER / f"{run.name}.json") or _read_json(folder / RESULT_FILE)
    if saved is None:
        return {}
    diffs = _differences(saved["settings"], run.settings())
    grown = {k: v for k, v in diffs.items() if k == "config.epochs" and v[1] > v[0]}
    other = {k: v for k, v in diffs.items() if k not in grown}
    if other:
        raise ValueError(f"{folder} holds a run with other settings (saved, now): {other}; "
                         "use another sweep folder or remove that run folder")
    return grown


def run_state(out: str | Path, run: RunSpec) -> tuple[str, dict[str, Any] | None]:
    """The state of ``run`` in sweep folder ``out``: ``("done", row)``, ``("partial", None)``
    (a resume file exists, or the planned epochs grew) or ``("new", None)``.

    Raises:
        ValueError: the run folder holds a run with other settings.
    """
    from .runfolder import resume_path

    folder = Path(out) / run.name
    _check_settings(Path(out), run)
    result = _read_json(folder / RESULT_FILE)
    if result is not None and result["settings"] == run.settings():
        return "done", current_row(folder, result)
    return ("partial" if resume_path(folder) is not None else "new"), None


def done_elsewhere(folders: Sequence[str | Path], run: RunSpec) -> tuple[Path, dict[str, Any]] | None:
    """The first of ``folders`` (other sweep folders) that holds ``run`` finished with the same
    recipe, and the run's row there; None when none does.

    The same recipe: the saved settings equal ``run.settings()`` but for how often snapshots
    were saved (:data:`_RECORDING_ONLY`), which changes what a run folder keeps, not what it
    trains. A run of other settings there (other epochs, another rule) does not count.
    """
    for folder in folders:
        result = _read_json(Path(folder) / run.name / RESULT_FILE)
        if result is None:
            continue
        diffs = _differences(result["settings"], run.settings())
        if all(key in _RECORDING_ONLY for key in diffs):
            return Path(folder), current_row(Path(folder) / run.name, result)
    return None


def sweep_state(out: str | Path, done_in: Sequence[str | Path], run: RunSpec) -> tuple[str, dict[str, Any] | None, Path | None]:
    """:func:`run_state` of ``run`` in ``out``, or ``"done"`` with its row when one of the
    ``done_in`` folders finished it with the same recipe (:func:`done_elsewhere`); the third
    item is that folder (None when the state is ``out``'s own)."""
    status, row = run_state(out, run)
    elsewhere = done_elsewhere(done_in, run) if status != "done" else None
    if elsewhere is not None:
        return "done", elsewhere[1], elsewhere[0]
    return status, row, None


def rule_fields(history: dict[str, list], rule: BifurcationRule, search: bool) -> dict[str, Any]:
    """The row's verdict of ``rule`` on a run's recorded checks (``history["check_epoch"]``,
    ``history["check_rate"]``): ``bifurcated``, ``bifurcation_epoch``, ``rate_early``,
    ``rate_final``, ``plateau_from``, ``plateau_moved``; the secondary drop of its validation
    loss (``history["val_epoch"]``, ``history["val_loss"]``; :func:`hmmrnn.metrics.secondary_drop_epoch`):
    ``loss_drop_epoch``; and ``search_success`` (None for a run that is no search try).

    A search try succeeds when the rule finds the bifurcation *and* its validation loss has a
    secondary drop (anywhere in the run; ``loss_drop_epoch`` is computed for search tries
    only, empty for other runs): the paper's training bifurcation is both (the switching rate
    drops abruptly and the loss shows a secondary drop). The loss condition was added after ``linear5`` seed 8 (the
    search's sixth try) was seen: its rate's last five checks (0.006-0.48) had a median below
    half its plateau, so the rule counted a bifurcation, while its loss never left the
    plateau (best 9.90 against the successful seed 3's 7.61). See :mod:`hmmrnn.search`.
    """
    status = rule.bifurcation(history.get("check_epoch", []), history.get("check_rate", []))
    drop = _loss_drop_epoch(history) if search else None
    return dict(bifurcated=status.found, bifurcation_epoch=_number(status.epoch), rate_early=_number(status.early_level),
                rate_final=_number(status.final_level), plateau_from=_number(status.plateau_from),
                plateau_moved=status.plateau_moved, loss_drop_epoch=drop,
                search_success=(status.found and drop is not None) if search else None)


LOSS_DROP_SKIP_EPOCHS = 50  # the loss-drop rule's skip of the fast initial fall, in epochs (10 points at val_every 5)


def _loss_drop_epoch(history: Mapping[str, Sequence[float]]) -> int | None:
    """The secondary drop of a run's validation loss (None: no drop, or fewer than 2 validations).

    :func:`hmmrnn.metrics.secondary_drop_epoch` on ``history["val_epoch"]`` and
    ``history["val_loss"]``, its ``skip`` set to the points of the first
    :data:`LOSS_DROP_SKIP_EPOCHS` epochs (so the verdict does not depend on ``val_every``).
    That skip leaves out the fast initial fall of ``linear5`` (on the per-epoch training loss,
    a skip of 10 epochs "found" drops at epochs 13-22 in tries that never left the plateau),
    and it misses a drop inside those epochs: the test suits searches whose bifurcation comes
    later (``linear5``: seed 3 at epochs 260-285, the paper's 330-350); a chain that bifurcates
    within 50 epochs (campaign ``linear3`` seed 1: epoch 40) would need another setting.

    Raises:
        ValueError: epochs and losses of different lengths, or a validation loss that is not
            finite (named by its epochs).
    """
    epochs = np.asarray(history.get("val_epoch", []), dtype=np.float64)
    losses = np.asarray(history.get("val_loss", []), dtype=np.float64)  # a None is NaN here
    if epochs.shape != losses.shape:
        raise ValueError(f"history has {epochs.size} validation epochs but {losses.size} validation losses")
    bad = ~np.isfinite(losses)
    if bad.any():
        raise ValueError(f"the validation loss is not finite at epoch(s) {epochs[bad].astype(int).tolist()}")
    if epochs.size < 2:
        return None
    skip = max(1, round(LOSS_DROP_SKIP_EPOCHS / float(np.median(np.diff(epochs)))))
    return secondary_drop_epoch(epochs.astype(int), losses, skip=skip)


def current_row(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """A finished run's row (``result.json``), its verdict re-derived by today's rule.

    The rule's verdict is a function of the rates the run recorded (its ``config.json``
    history) and the rule's settings (``result["settings"]["rule"]``), so a change of the
    rule's code reaches runs finished before it without retraining. A run without a
    checkpoint (a non-finite loss) keeps its stored row.
    """
    row = dict(result["row"])
    config = _read_json(folder / "config.json")
    if config is None or row.get("stop_reason") == "non-finite loss":
        return row
    rule = BifurcationRule.from_dict(result["settings"]["rule"])
    try:
        row.update(rule_fields(config.get("history", {}), rule, bool(row.get("search"))))
    except ValueError as error:
        raise ValueError(f"{folder}: {error}") from error
    return row


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, allow_nan=True) + "\n").encode()


def _number(value: Any) -> Any:
    """A float for the table (None when not finite)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_one(run: RunSpec, out: str, threads: int = 1, stop_after: int | None = None) -> dict[str, Any]:
    """Train, evaluate and tabulate one run in its folder ``<out>/<run.name>/`` (the Dask task).

    Skips a finished run (returns its stored row), resumes a partial one. A run whose loss
    becomes non-finite is a finished run with ``stop_reason = "non-finite loss"`` (the same
    seed fails the same way); any other error propagates and leaves the run resumable.

    Args:
        run: the run.
        out: the sweep folder (on a cluster: a path every worker sees).
        threads: torch threads of this task.
        stop_after: end the training (as if killed) after this many epochs — for tests.

    Returns:
        The run's row (:data:`COLUMNS`), plus ``"status"``: ``"skipped"`` or ``"ran"``.
    """
    import torch

    from .metrics import evaluate

    folder = Path(out) / run.name
    state, row = run_state(out, run)
    if state == "done":
        return {**row, "status": "skipped"}
    torch.set_num_threads(int(threads))
    started = time.perf_counter()
    records = Path(out) / SWEEP_FOLDER
    atomic_write_bytes(records / f"{run.name}.json", _json_bytes({"name": run.name, "settings": run.settings()}))
    config_values = dict(run.config)
    for key in ("betas", "lr_milestones"):
        config_values[key] = tuple(config_values[key])
    config = TrainConfig(**config_values)
    rule = BifurcationRule.from_dict(run.rule)
    resumed_from = [0]

    def log(message: str) -> None:
        match = re.match(r"resumed .* at epoch (\d+)", message)
        if match:
            resumed_from[0] = int(match.group(1))
        with open(records / f"{run.name}.log", "a") as f:
            f.write(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}  {message}\n")

    from .train import train

    try:
        checkpoint = train(config, folder, resume=True, progress=False, log=log, stop_after=stop_after, check=rule)
    except KeyboardInterrupt as exc:
        if stop_after is None:
            raise
        raise RunInterrupted(f"{run.name}: {exc}") from None
    except FloatingPointError as exc:
        log(f"non-finite loss: {exc}")
        checkpoint = None
    trained = time.perf_counter()
    row: dict[str, Any] = {
        "name": run.name, "target": config.hmm, "hidden": config.hidden_size, "input": config.input_size, "seed": config.seed,
        "seq_len": int(config.target().seq_len or 100), "epochs": config.epochs,
        "search": run.search, "search_try": run.search_try, "resumed_from": resumed_from[0],
    }
    if checkpoint is None:
        row.update(stop_reason="non-finite loss", bifurcated=False, search_success=False if run.search else None)
    else:
        results, history = checkpoint.results, checkpoint.history
        ev = run.evaluation
        fit = evaluate(checkpoint, n=ev["n"], length=ev["length"], seed=ev["seed"], device=str(checkpoint.training["device"]),
                       matched=bool(ev["matched"]))
        row.update(
            epochs_run=int(results["final_epoch"]), stop_reason=results.get("stop_reason", "completed"),
            best_val_loss=_number(results["best_val_loss"]), best_epoch=int(results["best_epoch"]),
            final_val_loss=_number(results["final_val_loss"]), **rule_fields(history, rule, bool(run.search)),
            max_sq_transition_error=_number(fit.max_transition_error),
            lability=_number(fit.rnn.lability), lability_hmm=_number(fit.hmm_exact.lability),
            rare_frequency=_number(fit.rnn.rare_frequency), rare_frequency_hmm=_number(fit.hmm_exact.rare_frequency),
            matched_distance=_number(fit.matched_distance_argmax), matched_distance_baseline=_number(fit.matched_distance_baseline_argmax),
            matched_distance_plan=_number(fit.matched_distance), matched_distance_plan_baseline=_number(fit.matched_distance_baseline),
            fit_passes=fit.passes, eval_n=fit.n, eval_length=fit.length, device=str(checkpoint.training["device"]),
        )
        for k, (ours, exact) in enumerate(zip(fit.rnn.marginals, fit.hmm_exact.marginals)):
            row[f"marginal_{k}"] = _number(ours)
            row[f"marginal_hmm_{k}"] = _number(exact)
    done = time.perf_counter()
    row.update(train_s=round(trained - started, 2), eval_s=round(done - trained, 2), wall_s=round(done - started, 2),
               finished_at=f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
    atomic_write_bytes(folder / RESULT_FILE, _json_bytes({"name": run.name, "settings": run.settings(), "row": row}))
    return {**row, "status": "ran"}


# --------------------------------------------------------------------------- the table

def collect(out: str | Path) -> list[dict[str, Any]]:
    """Every finished run's row in sweep folder ``out`` (its ``*/result.json``), sorted by
    search cell, target, |h|, d, seed."""
    rows = []
    for path in sorted(Path(out).glob(f"*/{RESULT_FILE}")):
        rows.append(current_row(path.parent, json.loads(path.read_text())))
    return sorted(rows, key=lambda r: (r.get("search") or "", r["target"], r["hidden"], r["input"], r["seed"]))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".6g") if math.isfinite(value) else ""
    return str(value)


def write_table(out: str | Path) -> Path:
    """Rebuild ``<out>/results.csv`` from the run folders (:func:`collect`), atomically.

    One row per finished run, columns :data:`COLUMNS` with the per-output marginals after
    ``max_sq_transition_error``; numbers to 6 significant digits (``result.json`` keeps them
    all); an empty cell is a value that does not exist (no bifurcation, a run that is no
    search try, a non-finite number). Read it with ``pandas.read_csv``.
    """
    rows = collect(out)
    n_outputs = max((int(k.rsplit("_", 1)[1]) + 1 for r in rows for k in r if re.fullmatch(r"marginal_\d+", k)), default=0)
    marginals = [f"marginal_{k}" for k in range(n_outputs)] + [f"marginal_hmm_{k}" for k in range(n_outputs)]
    at = COLUMNS.index("max_sq_transition_error") + 1
    columns = [*COLUMNS[:at], *marginals, *COLUMNS[at:]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    path = Path(out) / TABLE_FILE
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


# --------------------------------------------------------------------------- the driver

def default_workers(device: str | None) -> int:
    """Workers of a local cluster: one per GPU when training on CUDA, else one per CPU core."""
    if device is not None and device.startswith("cuda"):
        import torch

        return max(torch.cuda.device_count(), 1)
    return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), 1)


def make_client(scheduler: str | None = None, workers: int | None = None, device: str | None = None,
                dashboard: bool = True):
    """A ``dask.distributed.Client``: of a running scheduler at ``scheduler``, or of a new
    ``LocalCluster`` of ``workers`` processes (default :func:`default_workers`) with one thread each.

    ``dashboard``: serve the Dask dashboard on port 8787 (another if taken; its pages need
    bokeh, see :func:`dashboard_link`).
    """
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    address = ":8787" if dashboard else ":0"  # off: the scheduler's HTTP server (status text only) on a free port
    n = workers or default_workers(device)
    # non-daemonic workers: torch.compile may start compiler subprocesses inside a task
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=address,
                               scheduler_kwargs={"dashboard": dashboard})
    return Client(cluster)


def dashboard_link(client) -> str | None:
    """The address of the cluster's Dask dashboard, or None when there is none to see
    (the dashboard's pages need bokeh; without it the scheduler serves only status text)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    return client.dashboard_link if "dashboard" in client.scheduler_info().get("services", {}) else None


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes:
        rows: the row of every run of the spec that finished (now or before), in finishing order.
        skipped: names of the runs found finished (not run again).
        failed: ``{name: error message}`` of runs whose task raised (they stay resumable).
        table: path of ``results.csv``.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    table: Path | None = None


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _describe(row: dict[str, Any]) -> str:
    """One line of a finished run's result."""
    if row.get("stop_reason") == "non-finite loss":
        return f"non-finite loss, {_fmt(row.get('wall_s'), '.0f')} s"
    bif = f"bifurcation @ {_fmt(row.get('bifurcation_epoch'), '.0f')}" if row.get("bifurcated") else "no bifurcation"
    if row.get("search"):  # a try's success needs the loss drop too
        bif += f", loss drop @ {row['loss_drop_epoch']}" if row.get("loss_drop_epoch") is not None else ", no loss drop"
    return (f"{row['epochs_run']} epochs ({row['stop_reason']}), best val {_fmt(row.get('best_val_loss'), '.3f')} @ {row['best_epoch']}, "
            f"{bif}, max sq err {_fmt(row.get('max_sq_transition_error'), '.4f')}, {_fmt(row.get('wall_s'), '.0f')} s")


class _SearchState:
    """The driver's bookkeeping of one seed search."""

    def __init__(self, search: SearchSpec):
        self.search = search
        self.next_index = 0
        self.in_flight = 0
        self.tries: dict[int, bool] = {}  # index -> success

    @property
    def successes(self) -> int:
        return sum(self.tries.values())

    def wants_more(self) -> bool:
        return self.successes < self.search.successes and self.next_index < self.search.max_tries

    def summary(self) -> str:
        n = len(self.tries)
        if not n:
            return f"search {self.search.cell}: no tries"
        seeds = [self.search.first_seed + i for i in sorted(self.tries)]
        won = [self.search.first_seed + i for i, ok in sorted(self.tries.items()) if ok]
        tried = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
        return (f"search {self.search.cell}: {self.successes} of {self.search.successes} successes in {n} "
                f"{'tries' if n > 1 else 'try'} ({tried}; successful: {won or 'none'}; failure rate {n - self.successes}/{n})")


def search_progress(spec: SweepSpec, records: Iterable[Mapping[str, Any]]) -> list[tuple[SearchSpec, bool, str]]:
    """Where every seed search of ``spec`` stands by the rows of a results table.

    The tries are counted in seed order, as the sweep driver counts them: up to the
    ``successes``-th success (a table may hold tries that ran past it) or the first try that
    has no row. A search is finished when it has its successes or used ``max_tries`` seeds.

    Args:
        spec: the parsed spec.
        records: the table's rows (``pandas.read_csv(...).to_dict("records")``).

    Returns:
        one ``(search, finished, summary line)`` per search of ``spec``, in the spec's order.
    """
    return [(state.search, not state.wants_more(), state.summary()) for state in _replayed(spec, records)]


def search_tallies(spec: SweepSpec, records: Iterable[Mapping[str, Any]]) -> list[tuple[SearchSpec, int, int]]:
    """``(search, successes, tries)`` of every seed search of ``spec``, counted from the rows of a
    results table as :func:`search_progress` counts them (in seed order, up to the
    ``successes``-th success or the first try with no row), in the spec's order."""
    return [(state.search, state.successes, len(state.tries)) for state in _replayed(spec, records)]


def _replayed(spec: SweepSpec, records: Iterable[Mapping[str, Any]]) -> list[_SearchState]:
    """The driver's state of every search of ``spec``, replayed from a table's rows."""
    rows = list(records)
    states = []
    for search in spec.searches:
        by_try = {int(r["search_try"]) - 1: truth(r.get("search_success")) is True for r in rows if r.get("search") == search.cell}
        state = _SearchState(search)
        while state.next_index in by_try and state.wants_more():
            state.tries[state.next_index] = by_try[state.next_index]
            state.next_index += 1
        states.append(state)
    return states


def run_sweep(spec: SweepSpec, client, threads: int = 1, echo: Callable[[str], None] = print,
              stop_after: int | None = None) -> SweepOutcome:
    """Run every run and search of ``spec`` on ``client``'s cluster; rebuild the table after each.

    Finished runs are skipped (read back, not submitted), partial ones resume. One line per
    finished run goes to ``echo``; a run whose task raised is reported and left resumable,
    and the other runs go on.

    Args:
        spec: the parsed spec.
        client: a ``dask.distributed.Client`` (:func:`make_client`); only used when a run
            needs to run.
        threads: torch threads per task.
        stop_after: passed to every task (each ends as if killed after that many epochs) — for tests.
    """
    from dask.distributed import as_completed

    out = spec.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    outcome = SweepOutcome()
    futures: list[Any] = []  # [as_completed] once a task is submitted (none: every run was finished)
    owner: dict[str, tuple[RunSpec, _SearchState | None, int | None]] = {}
    n_done = [0]
    for run in [*spec.runs, *(s.attempt(i) for s in spec.searches for i in range(s.max_tries))]:
        _check_settings(out, run)  # a folder of other settings fails the sweep before it starts

    def finished(run: RunSpec, row: dict[str, Any], state: _SearchState | None, index: int | None, skipped: bool) -> None:
        outcome.rows.append(row)
        if skipped:
            outcome.skipped.append(run.name)
        if state is None:
            n_done[0] += 1
        where = f"[{n_done[0]}/{len(spec.runs)}]" if state is None else f"[{state.search.cell} try {index + 1}]"
        verdict = "" if state is None else ("  -> success" if row.get("search_success") else "  -> failure")
        echo(f"{where} {run.name}: {'done before' if skipped else 'finished'}: {_describe(row)}{verdict}")
        if state is not None:
            state.tries[index] = bool(row.get("search_success"))

    def submit(run: RunSpec, state: _SearchState | None, index: int | None) -> None:
        status, row, where = sweep_state(out, spec.done_in, run)
        if where is not None:
            echo(f"{run.name}: finished in {where} with the same recipe, not trained here")
        if status == "done":
            finished(run, row, state, index, skipped=True)
            if state is not None:
                advance(state)
            return
        if status == "partial":
            echo(f"resuming {run.name}")
        future = client.submit(run_one, run, str(out), threads, stop_after, pure=False, key=f"{run.name}-{time.time_ns()}")
        owner[future.key] = (run, state, index)
        if state is not None:
            state.in_flight += 1
        if futures:
            futures[0].add(future)
        else:
            futures.append(as_completed([future]))

    def advance(state: _SearchState) -> None:
        while state.wants_more() and state.in_flight < state.search.in_flight:
            index = state.next_index
            state.next_index += 1
            submit(state.search.attempt(index), state, index)

    for run in spec.runs:
        submit(run, None, None)
    states = [_SearchState(s) for s in spec.searches]
    for state in states:
        advance(state)
    write_table(out)
    for future in futures[0] if futures else []:
        run, state, index = owner.pop(future.key)
        if state is not None:
            state.in_flight -= 1
        try:
            row = future.result()
        except BaseException as exc:  # noqa: BLE001 - a failed task is reported, the sweep goes on
            outcome.failed[run.name] = f"{type(exc).__name__}: {exc}"
            echo(f"FAILED {run.name}: {type(exc).__name__}: {exc} (resumable: rerun the sweep)")
            if state is not None:
                state.next_index = state.search.max_tries  # a broken try ends its search
            continue
        row.pop("status", None)
        finished(run, row, state, index, skipped=False)
        write_table(out)
        if state is not None:
            advance(state)
    outcome.table = write_table(out)
    for state in states:
        echo(state.summary())
    return outcome
