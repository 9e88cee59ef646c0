"""A chapter's parameters, checked before anything uses them.

Every chapter has one cell tagged ``parameters`` (literal assignments only); papermill puts
its overrides in a cell of its own right after it (``papermill ... -p seed 1`` writes
``# Parameters`` / ``seed = 1``). papermill only warns about a name the chapter does not
define and then runs on with the default, and a value of the wrong type or range fails deep
inside the chapter, if at all. So the cell after the parameters cell calls
:func:`check_parameters` with one rule per parameter::

    chapter.check_parameters(globals(), {
        "seed": chapter.Int(ge=0),
        "model_name": chapter.Checkpoint(),
        "noise_scales": chapter.ListOf(chapter.Float(gt=0)),
    }, rules=["burn_in < n_steps"])

It fails at once with :class:`ParameterError`, naming the parameter: an overridden name the
chapter does not have, a value of the wrong type (``True`` is no integer, ``"1"`` no number)
or out of its range, a relation between parameters that does not hold, or a parameter of
the parameters cell that the check does not know (the check and the cell must list the
same names).

Inside a kernel the cells run so far are IPython's ``In`` (``In[-1]`` is the running cell);
the papermill cell, if any, is the one before it, and the parameters cell the one before
that. Outside a kernel pass ``history`` (the sources of the cells run so far, the checking
cell last).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "ParameterError",
    "Int",
    "Float",
    "Bool",
    "Str",
    "Choice",
    "Device",
    "Checkpoint",
    "Optional",
    "ListOf",
    "check_parameters",
    "assigned_names",
    "literal_assignments",
]

PAPERMILL_HEADER = "# Parameters"


class ParameterError(ValueError):
    """A chapter parameter that is unknown, of the wrong type or out of range (named in the message)."""


def _is_int(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    import numpy as np

    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)))


def _bounds_text(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> str:
    parts = [f">= {ge:g}" if ge is not None else "", f"> {gt:g}" if gt is not None else "",
             f"<= {le:g}" if le is not None else "", f"< {lt:g}" if lt is not None else ""]
    return " and ".join(p for p in parts if p)


def _in_bounds(value: float, ge: float | None, gt: float | None, le: float | None, lt: float | None) -> bool:
    return ((ge is None or value >= ge) and (gt is None or value > gt)
            and (le is None or value <= le) and (lt is None or value < lt))


class Kind:
    """A rule for one parameter value: :meth:`problem` says what is wrong (None: fine)."""

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Kind):
    """An integer (not a bool) with optional bounds ``ge``/``gt``/``le``/``lt``."""

    ge: int | None = None
    gt: int | None = None
    le: int | None = None
    lt: int | None = None

    def describe(self) -> str:
        bounds = _bounds_text(self.ge, self.gt, self.le, self.lt)
        return "an integer" + (f" {bounds}" if bounds else "")

    def problem(self, value: Any) -> str | None:
        if not _is_int(value) or not _in_bounds(value, self.ge, self.gt, self.le, self.lt):
            return f"must be {self.describe()}"
        return None


@dataclass(frozen=True)
class Float(Kind):
    """A finite number (an int is fine, a bool is not) with optional bounds."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        bounds = _bounds_text(self.ge, self.gt, self.le, self.lt)
        return "a finite number" + (f" {bounds}" if bounds else "")

    def problem(self, value: Any) -> str | None:
        if not _is_number(value) or not math.isfinite(float(value)) or not _in_bounds(float(value), self.ge, self.gt, self.le, self.lt):
            return f"must be {self.describe()}"
        return None


@dataclass(frozen=True)
class Bool(Kind):
    """True or False."""

    def describe(self) -> str:
        return "True or False"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be {self.describe()}"


@dataclass(frozen=True)
class Str(Kind):
    """A string (``empty=False``: a non-empty one)."""

    empty: bool = True

    def describe(self) -> str:
        return "a string" if self.empty else "a non-empty string"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or (not self.empty and not value):
            return f"must be {self.describe()}"
        return None


@dataclass(frozen=True)
class Choice(Kind):
    """One of the given strings."""

    options: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) and value in self.options else f"must be {self.describe()}"


@dataclass(frozen=True)
class Device(Kind):
    """A torch device name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (its presence is
    checked where it is used: :func:`hmmrnn.train.resolve_device`)."""

    def describe(self) -> str:
        return "'auto', 'cpu', 'cuda' or 'cuda:N'"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str) and (value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value)):
            return None
        return f"must be {self.describe()}"


@dataclass(frozen=True)
class Checkpoint(Kind):
    """A shipped checkpoint name or a folder holding a ``config.json``."""

    def describe(self) -> str:
        return "a shipped checkpoint name or a checkpoint folder"

    def problem(self, value: Any) -> str | None:
        from .checkpoints import shipped_names

        if not isinstance(value, str) or not value:
            return f"must be {self.describe()}"
        if value in shipped_names() or (Path(value) / "config.json").is_file():
            return None
        return f"must be {self.describe()} (shipped: {', '.join(shipped_names()) or 'none'})"


@dataclass(frozen=True)
class Optional(Kind):
    """None, or a value of ``kind``."""

    kind: Kind

    def describe(self) -> str:
        return f"None or {self.kind.describe()}"

    def problem(self, value: Any) -> str | None:
        if value is None or self.kind.problem(value) is None:
            return None
        return f"must be {self.describe()}"


@dataclass(frozen=True)
class ListOf(Kind):
    """A list (or tuple) of at least ``min_len`` items of ``item``; ``increasing``: strictly."""

    item: Kind
    min_len: int = 1
    increasing: bool = False
    unique: bool = False

    def describe(self) -> str:
        extra = ", strictly increasing" if self.increasing else (", without repeats" if self.unique else "")
        return f"a list of at least {self.min_len} item(s), each {self.item.describe()}{extra}"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            return f"must be {self.describe()}"
        for index, item in enumerate(value):
            issue = self.item.problem(item)
            if issue is not None:
                return f"item {index} ({item!r}) {issue}"
        if self.increasing and any(b <= a for a, b in zip(value, value[1:])):
            return f"must be {self.describe()}"
        if self.unique and len(set(value)) != len(value):
            return f"must be {self.describe()}"
        return None


# --------------------------------------------------------------------------- the check

def assigned_names(source: str) -> list[str] | None:
    """Names assigned at the top level of a cell, in order (None if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                names.append(target.id)
    return names


def literal_assignments(source: str) -> list[str] | None:
    """The names a cell assigns if it holds only assignments of literals (a parameters cell), else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: list[str] = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            return None
        try:
            ast.literal_eval(node.value)
        except ValueError:
            return None
        names.append(node.targets[0].id)
    return names


def _earlier_cells(namespace: Mapping[str, Any], history: Sequence[str] | None) -> tuple[str | None, str | None]:
    """(the papermill cell or None, the parameters cell or None) among the cells run so far.

    The cell before the checking one (before papermill's, if any) counts as the parameters
    cell only if it holds nothing but literal assignments (cells run out of order are not
    mistaken for it).
    """
    inputs = list(history) if history is not None else list(namespace.get("In") or [])
    before = [s for s in inputs[:-1] if s.strip()]  # inputs[-1] is the checking cell itself
    injected = None
    if before and before[-1].lstrip().startswith(PAPERMILL_HEADER):
        injected = before.pop()
    parameters = before[-1] if before and literal_assignments(before[-1]) else None
    return injected, parameters


def check_parameters(namespace: Mapping[str, Any], spec: Mapping[str, Kind], *, rules: Iterable[str] = (),
                     history: Sequence[str] | None = None) -> None:
    """Check a chapter's parameters; raise :class:`ParameterError` naming the first bad one.

    Args:
        namespace: where the parameters live (a chapter passes ``globals()``).
        spec: parameter name -> its rule (:class:`Int`, :class:`Float`, :class:`Bool`,
            :class:`Str`, :class:`Choice`, :class:`Device`, :class:`Checkpoint`,
            :class:`Optional`, :class:`ListOf`); exactly the names of the parameters cell.
        rules: relations between parameters, as Python expressions over their names (e.g.
            ``"burn_in < n_steps"``), checked once every value has its type.
        history: the sources of the cells run so far, the checking cell last (default: the
            kernel's ``In``).
    """
    injected, parameters_cell = _earlier_cells(namespace, history)
    if injected is not None:
        unknown = [n for n in (assigned_names(injected) or []) if n not in spec]
        if unknown:
            raise ParameterError(f"unknown parameter(s) {', '.join(repr(n) for n in unknown)}: this chapter's parameters "
                                 f"are {', '.join(sorted(spec))}")
    if parameters_cell is not None:
        defined = literal_assignments(parameters_cell) or []
        if set(defined) & set(spec) and set(defined) != set(spec):
            extra, lacking = sorted(set(defined) - set(spec)), sorted(set(spec) - set(defined))
            raise ParameterError(
                "the parameters cell and its check disagree: "
                + (f"not checked: {', '.join(extra)} (add them to the check_parameters call)" if extra else "")
                + ("; " if extra and lacking else "")
                + (f"checked but not in the parameters cell: {', '.join(lacking)}" if lacking else ""))
    for name, kind in spec.items():
        if name not in namespace:
            raise ParameterError(f"parameter {name!r} is not defined (the parameters cell must assign it)")
        issue = kind.problem(namespace[name])
        if issue is not None:
            raise ParameterError(f"parameter {name!r} {issue}, got {namespace[name]!r}")
    values = {name: namespace[name] for name in spec}
    for rule in rules:
        # the values are globals of the expression, not locals: a comprehension in a rule
        # (its own scope before Python 3.12) sees only globals
        scope = {"__builtins__": {"len": len, "min": min, "max": max, "set": set}, **values}
        if not eval(rule, scope):  # noqa: S307 - the chapter's own literal
            shown = ", ".join(f"{n}={values[n]!r}" for n in values if re.search(rf"\b{re.escape(n)}\b", rule))
            raise ParameterError(f"parameters must satisfy {rule}, got {shown}")
