"""The reproduction report: claims (our number beside the paper's), recorded by chapters.

Every chapter records what it found as :class:`Claim` objects through a
:class:`ClaimRecorder`, shows them in its Summary (:meth:`ClaimRecorder.summary`, an HTML
table; :meth:`ClaimRecorder.table` is the fixed-width text) and saves them as
``book/claims/<chapter>.json`` (:meth:`ClaimRecorder.save`). The last page of the
book reads every file (:func:`collect`), counts the paper's findings (:func:`headline`,
:func:`render_headline`) and renders the claims (:func:`render`).

Every claim has a **basis** (:data:`BASES`):

* ``"paper"`` -- a finding the paper reports, tested against the paper's own value. The
  value is never typed in a chapter: the claim names it by ``paper_ref``, a Python
  expression in the namespace of :mod:`hmmrnn.paper` (e.g. ``BEST_VAL_LOSS["linear2"]``),
  which is evaluated when the claim is recorded and again when it is read back; the
  claim's paper value *is* that value. Where our measure and the paper's differ in kind,
  the claim is recorded with ``not_comparable="<why>"``: shown, not judged, and counted as
  "not comparable", never as a pass. Claims of several chapters that measure one quantity
  share a ``quantity`` key and are counted once (:func:`headline`).
* ``"check"`` -- a check of this book's own code or networks, or true by construction; its
  reference is a paper value (``paper_ref``) or a value our code computes (``reference``).
* ``"beyond"`` -- a result the paper does not have; reported, never judged.

Only ``"paper"`` claims make the headline; checks and beyond-the-paper results are listed
separately. Every tolerance is named by a key of :data:`hmmrnn.tolerances.TOLERANCES`
(one table, each with its reason); a chapter never types a tolerance.

Pass rules (``rule`` field; :data:`RULES`), with ``tol`` the claim's tolerance:

* ``"number"`` -- the paper gives one number: passes when ``|ours - paper| <= tol``
  (a tolerance is required; it may be 0);
* ``"range"`` -- the paper gives a range ``(low, high)``: passes when
  ``low - tol <= ours <= high + tol`` (tolerance default 0);
* ``"vector"`` -- the paper gives several numbers (a row of a matrix, the marginals):
  passes when ``max_i |ours_i - paper_i| <= tol`` (same length; tolerance required);
  never inferred, ask for it with ``kind="vector"``;
* ``"equal"`` -- the paper gives a yes/no (bool) or a label (str): passes on equality
  (no tolerance);
* ``"beyond"`` -- ``paper=None``: a result the paper does not have ("beyond the paper");
  reported, never judged (``passed`` is None).

``passed`` is None also for a claim that is not comparable (see above).

Comparisons with a tolerance allow for float rounding (``1e-12`` plus ``1e-9`` of the
tolerance): an exact value 0.21425 is within 5e-5 of the paper's rounded 0.2143.
A non-finite ``ours`` (NaN, inf) in a numeric rule is recorded and fails; a malformed claim
(wrong types, a negative tolerance, ``low > high``, vectors of different lengths) raises
:class:`ClaimError` at once, so a chapter cannot save a claim that the report cannot judge.

Where the files go: ``HMMRNN_CLAIMS_DIR`` if that environment variable is set, otherwise
``book/claims`` of the checkout holding this package (found by its ``_toc.yml``), not of the
current directory: papermill and Jupyter Book run chapters with ``book/`` as the working
directory. ``scripts/run_chapters.py`` points ``HMMRNN_CLAIMS_DIR`` at its output folder, so
a run with non-default parameters never overwrites the book's claims.

This module is also a (tiny) Sphinx extension, listed in ``_config.yml``: it makes Jupyter
Book read and execute the report page last and on every build, so the page shows the
claims that the chapters executed in the same build have just written.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paper as _paper_module
from .checkpoints import atomic_write_bytes
from .tolerances import TOLERANCES, Tolerance

__all__ = [
    "BASES",
    "Claim",
    "ClaimError",
    "HeadlineRow",
    "headline",
    "render_headline",
    "resolve_paper_ref",
    "ClaimRecorder",
    "RULES",
    "KINDS",
    "FORMAT_VERSION",
    "make_claim",
    "format_value",
    "collect",
    "chapter_parameters",
    "counts",
    "render",
    "repository_root",
    "default_claims_folder",
    "book_chapters",
    "book_order",
]

FORMAT_VERSION = 2
"""Version of the JSON layout written by :meth:`ClaimRecorder.save` (2: basis, paper_ref, tolerance_key, quantity, not_comparable)."""

BASES: dict[str, str] = {
    "paper": "a finding the paper reports, tested against the paper's own value (hmmrnn.paper)",
    "check": "a check of this book's own code or networks, or true by construction",
    "beyond": "a result the paper does not have; reported, not judged",
}
"""The basis of a claim, in words."""

RULES: dict[str, str] = {
    "number": "|ours - paper| <= tolerance",
    "range": "low - tolerance <= ours <= high + tolerance",
    "vector": "max_i |ours_i - paper_i| <= tolerance",
    "equal": "ours == paper (yes/no or a label)",
    "beyond": "beyond the paper: no paper number, not judged",
}
"""The pass rule of each kind of claim, in words (shown on the report page)."""

KINDS = ("auto", *RULES)
"""Accepted values of ``kind``: ``"auto"`` infers the rule from ``paper`` (never ``"vector"``)."""

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
_CHAPTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_RESULT_TEXT = {True: "pass", False: "FAIL", None: "beyond the paper"}
_NOT_COMPARABLE = "not comparable"


class ClaimError(ValueError):
    """A claim that cannot be judged (bad types or values), or a malformed claims file."""


# --------------------------------------------------------------------------- values

def _is_real(value: Any) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _real(value: Any, what: str) -> float | int:
    """A Python int/float from a real number (numpy scalars and 0-d arrays included)."""
    if hasattr(value, "ndim") and getattr(value, "ndim") == 0 and hasattr(value, "item"):
        value = value.item()
    if not _is_real(value):
        raise ClaimError(f"{what} must be a real number, got {value!r} ({type(value).__name__})")
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def _scalar(value: Any, what: str) -> float | int | bool | str:
    """A JSON-ready scalar: bool, int, float or str."""
    if hasattr(value, "ndim") and getattr(value, "ndim") == 0 and hasattr(value, "item"):
        value = value.item()
    if _is_bool(value):
        return bool(value)
    if isinstance(value, str):
        return value
    return _real(value, what)


def _vector(value: Any, what: str) -> tuple[float | int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ClaimError(f"{what} must be a sequence of numbers, got {value!r}")
    if hasattr(value, "tolist"):
        value = value.tolist()
    items = tuple(_real(v, f"{what}[{i}]") for i, v in enumerate(value))
    if not items:
        raise ClaimError(f"{what} must not be empty")
    return items


def _finite(value: float | int) -> bool:
    return math.isfinite(value)


def _check_tolerance(tolerance: Any, rule: str, default: float | None) -> float | None:
    if rule in ("equal", "beyond"):
        if tolerance is not None:
            raise ClaimError(f"a {rule!r} claim takes no tolerance, got {tolerance!r}")
        return None
    if tolerance is None:
        if default is None:
            raise ClaimError(f"a {rule!r} claim needs a tolerance (it may be 0)")
        return default
    tol = float(_real(tolerance, "tolerance"))
    if not _finite(tol) or tol < 0:
        raise ClaimError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return tol


def _infer_rule(paper: Any) -> str:
    if paper is None:
        return "beyond"
    if _is_bool(paper) or isinstance(paper, str):
        return "equal"
    if _is_real(paper) or (hasattr(paper, "ndim") and getattr(paper, "ndim") == 0):
        return "number"
    if isinstance(paper, (tuple, list)) and len(paper) == 2:
        return "range"
    raise ClaimError(
        f"cannot infer the rule from paper={paper!r}: give a number, a (low, high) range, "
        f"a bool, a str or None; for several numbers compared one by one use kind='vector'"
    )


def _check_ref_syntax(node: Any, ref: str) -> None:
    import ast

    allowed = (ast.Expression, ast.Name, ast.Subscript, ast.Constant, ast.Tuple, ast.Load, ast.UnaryOp, ast.USub)
    for sub in ast.walk(node):
        if not isinstance(sub, allowed):
            raise ClaimError(
                f"paper_ref {ref!r}: only names of hmmrnn.paper, subscripts, constants and tuples are allowed "
                f"(found {type(sub).__name__})"
            )
        if isinstance(sub, ast.Constant) and not isinstance(sub.value, (int, float, str)):
            raise ClaimError(f"paper_ref {ref!r}: constant {sub.value!r} is not a number or a string")


def resolve_paper_ref(ref: str) -> Any:
    """The paper value that ``ref`` names: an expression in the namespace of :mod:`hmmrnn.paper`.

    Only names, subscripts, constants and tuples are allowed, e.g. ``BEST_VAL_LOSS["linear2"]``,
    ``PCA_VARIANCE["linear3"][0]``, ``(0.0, TRANSITION_ERROR_MAX)``.

    Raises:
        ClaimError: not such an expression, or it does not resolve (a missing name or key).
    """
    import ast

    if not isinstance(ref, str) or not ref.strip():
        raise ClaimError(f"paper_ref must be a non-empty string, got {ref!r}")
    try:
        tree = ast.parse(ref.strip(), mode="eval")
    except SyntaxError as err:
        raise ClaimError(f"paper_ref {ref!r} is not an expression: {err.msg}") from None
    _check_ref_syntax(tree, ref)
    namespace = {k: v for k, v in vars(_paper_module).items() if not k.startswith("_")}
    try:
        return eval(compile(tree, "<paper_ref>", "eval"), {"__builtins__": {}}, namespace)  # noqa: S307 - names and subscripts only
    except (NameError, KeyError, IndexError, TypeError) as err:
        raise ClaimError(f"paper_ref {ref!r} does not resolve in hmmrnn.paper: {type(err).__name__}: {err}") from None


def _within(distance: float, tol: float) -> bool:
    """``distance <= tol``, allowing float rounding (1e-12 + 1e-9 * tol)."""
    return distance <= tol + 1e-12 + 1e-9 * tol


def _judge(rule: str, ours: Any, paper: Any, tol: float | None) -> bool | None:
    """The pass rule (see the module docstring); inputs already normalised."""
    if rule == "beyond":
        return None
    if rule == "equal":
        return ours == paper
    if rule == "number":
        return bool(_finite(ours) and _within(abs(ours - paper), tol))
    if rule == "range":
        low, high = paper
        return bool(_finite(ours) and _within(max(low - ours, ours - high, 0.0), tol))
    if rule == "vector":
        return bool(all(_finite(o) and _within(abs(o - p), tol) for o, p in zip(ours, paper)))
    raise ClaimError(f"unknown rule {rule!r}")  # pragma: no cover - rules are checked earlier


@dataclass(frozen=True)
class Claim:
    """One finding of a chapter, with the paper's number beside ours.

    Attributes:
        chapter: notebook stem of the chapter that recorded it (e.g. ``"hmm_targets"``).
        id: short identifier, unique within the chapter (letters, digits, ``_ . : + -``).
        description: what is claimed, in words (shown in the tables; defaults to ``id``).
        ours: our value: a number, a tuple of numbers (``"vector"``), a bool or a str.
        paper: the paper's value: a number, a ``(low, high)`` tuple (``"range"``), a tuple of
            numbers (``"vector"``), a bool or a str (``"equal"``), or None (``"beyond"``).
        tolerance: allowed deviation (numeric rules), None for ``"equal"`` and ``"beyond"``.
        rule: one of :data:`RULES`.
        passed: the verdict of the rule; None for ``"beyond"`` and for a claim that is not comparable.
        note: anything a reader needs to judge it (caveats, how it was measured).
        basis: ``"paper"``, ``"check"`` or ``"beyond"`` (:data:`BASES`).
        paper_ref: the expression in :mod:`hmmrnn.paper` that gives ``paper`` (required for
            ``"paper"``; None where the reference is computed by our code or absent).
        tolerance_key: the key of :data:`hmmrnn.tolerances.TOLERANCES` that sets ``tolerance``
            (None for rules without a tolerance).
        quantity: a key shared by claims of several chapters that measure one quantity
            (counted once in the headline); None: the claim's own ``chapter:id``.
        not_comparable: why our measure and the paper's differ in kind; non-empty: not judged.
    """

    chapter: str
    id: str
    description: str
    ours: Any
    paper: Any
    tolerance: float | None
    rule: str
    passed: bool | None
    note: str = ""
    basis: str = "beyond"
    paper_ref: str | None = None
    tolerance_key: str | None = None
    quantity: str | None = None
    not_comparable: str = ""

    @property
    def result(self) -> str:
        """``"pass"``, ``"FAIL"``, ``"not comparable"`` or ``"beyond the paper"``."""
        if self.passed is None and self.not_comparable:
            return _NOT_COMPARABLE
        return _RESULT_TEXT[self.passed]

    @property
    def key(self) -> str:
        """The quantity this claim measures (``quantity``, or ``chapter:id``)."""
        return self.quantity or f"{self.chapter}:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists; non-finite floats become ``{"float": "nan"}``)."""
        return {key: _encode(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Claim":
        """Inverse of :meth:`to_dict`; the verdict is recomputed and must match the stored one."""
        if not isinstance(data, dict):
            raise ClaimError(f"a claim must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("chapter", "id", "ours", "paper", "rule", "passed") if k not in data]
        if missing:
            raise ClaimError(f"claim {data.get('id', '?')!r} lacks the fields {missing}")
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ClaimError(f"claim {data.get('id', '?')!r} has unknown fields {unknown}")
        if "basis" not in data:
            raise ClaimError(f"claim {data.get('id', '?')!r} has no basis (paper, check or beyond)")
        claim = make_claim(
            data["chapter"],
            data["id"],
            _decode(data["ours"]),
            _decode(data["paper"]),
            tolerance=data.get("tolerance"),
            description=data.get("description", ""),
            note=data.get("note", ""),
            kind=data["rule"],
            basis=data["basis"],
            paper_ref=data.get("paper_ref"),
            tolerance_key=data.get("tolerance_key"),
            quantity=data.get("quantity"),
            not_comparable=data.get("not_comparable", ""),
        )
        if claim.passed != data["passed"]:
            raise ClaimError(
                f"claim {claim.chapter}/{claim.id}: stored verdict {data['passed']!r} disagrees "
                f"with the rule's verdict {claim.passed!r} (edited by hand?)"
            )
        return claim


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"float"} or value["float"] not in ("nan", "inf", "-inf"):
            raise ClaimError(f"unexpected object {value!r} in a claim")
        return float(value["float"])
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def make_claim(
    chapter: str,
    id: str,
    ours: Any,
    paper: Any,
    tolerance: float | None = None,
    *,
    description: str = "",
    note: str = "",
    kind: str = "auto",
    basis: str,
    paper_ref: str | None = None,
    tolerance_key: str | None = None,
    quantity: str | None = None,
    not_comparable: str = "",
) -> Claim:
    """Validate, normalise and judge one claim (see the module docstring for the rules).

    Args:
        chapter: the chapter's notebook stem.
        id: identifier, unique within the chapter.
        ours: our value (numpy scalars and arrays are converted to Python values).
        paper: the reference value; its type selects the rule when ``kind="auto"``. With
            ``paper_ref`` it may be omitted (None); if given it must equal the resolved value.
        tolerance: allowed deviation; required for ``"number"`` and ``"vector"``, default 0
            for ``"range"``, must be None for ``"equal"`` and ``"beyond"``. With a fixed
            ``tolerance_key`` it may be omitted; if given it must equal the key's value.
        description: the claim in words (default: ``id``).
        note: a remark shown with the claim.
        kind: ``"auto"`` or one of :data:`RULES`.
        basis: ``"paper"``, ``"check"`` or ``"beyond"`` (:data:`BASES`).
        paper_ref: expression in :mod:`hmmrnn.paper` giving the paper value (required for
            ``"paper"``, optional for ``"check"``, not allowed for ``"beyond"``).
        tolerance_key: key of :data:`hmmrnn.tolerances.TOLERANCES` (required for a
            ``"paper"`` claim with a numeric rule).
        quantity: key shared by claims that measure one quantity (``"paper"`` and ``"check"``).
        not_comparable: why our measure and the paper's differ in kind (``"paper"`` only);
            the claim is then not judged.

    Raises:
        ClaimError: for anything the rules cannot judge, a basis without what it needs, a
            ``paper_ref`` that does not resolve or disagrees with ``paper``.
    """
    if basis not in BASES:
        raise ClaimError(f"basis must be one of {tuple(BASES)}, got {basis!r}")
    if not isinstance(not_comparable, str):
        raise ClaimError("not_comparable must be a string (the reason)")
    if quantity is not None and (not isinstance(quantity, str) or not _ID_RE.match(quantity.replace(":", "."))):
        raise ClaimError(f"quantity must be an identifier (letters, digits, _ . : + -), got {quantity!r}")
    if basis == "beyond":
        if paper_ref is not None or paper is not None:
            raise ClaimError(f"claim {id!r}: a 'beyond' claim has no paper value or paper_ref")
        if not_comparable or quantity is not None:
            raise ClaimError(f"claim {id!r}: a 'beyond' claim is neither 'not comparable' nor a shared quantity")
    else:
        if basis == "paper" and paper_ref is None:
            raise ClaimError(f"claim {id!r}: a 'paper' claim names its value by paper_ref (an expression in hmmrnn.paper)")
        if basis == "check" and not_comparable:
            raise ClaimError(f"claim {id!r}: only a 'paper' claim can be 'not comparable'")
        if paper_ref is not None:
            resolved = resolve_paper_ref(paper_ref)
            if paper is not None and not _same_value(paper, resolved):
                raise ClaimError(
                    f"claim {id!r}: paper value {paper!r} is not the value of paper_ref {paper_ref!r} ({resolved!r})"
                )
            paper = resolved
        if paper is None:
            raise ClaimError(f"claim {id!r}: a {basis!r} claim needs a reference value (paper_ref or a reference)")
    if tolerance_key is not None:
        if tolerance_key not in TOLERANCES:
            raise ClaimError(f"claim {id!r}: no tolerance {tolerance_key!r} in hmmrnn.tolerances")
        fixed = TOLERANCES[tolerance_key].value
        if fixed is not None:
            if tolerance is not None and float(_real(tolerance, "tolerance")) != fixed:
                raise ClaimError(f"claim {id!r}: tolerance {tolerance!r} is not {tolerance_key!r} = {fixed!r}")
            tolerance = fixed
        elif tolerance is None:
            raise ClaimError(f"claim {id!r}: tolerance {tolerance_key!r} is computed: give its size")
    if not isinstance(chapter, str) or not _CHAPTER_RE.match(chapter):
        raise ClaimError(f"chapter must be a notebook stem (letters, digits, _ -), got {chapter!r}")
    if not isinstance(id, str) or not _ID_RE.match(id):
        raise ClaimError(f"claim id must be letters, digits and _ . : + - (no spaces), got {id!r}")
    if not isinstance(description, str) or not isinstance(note, str):
        raise ClaimError("description and note must be strings")
    if kind not in KINDS:
        raise ClaimError(f"kind must be one of {KINDS}, got {kind!r}")
    rule = _infer_rule(paper) if kind == "auto" else kind

    if rule == "beyond":
        if paper is not None:
            raise ClaimError(f"a 'beyond' claim has no paper value, got paper={paper!r}")
        if isinstance(ours, (tuple, list)) or (hasattr(ours, "ndim") and getattr(ours, "ndim") > 0):
            ours = _vector(ours, "ours")
        else:
            ours = _scalar(ours, "ours")
        tol = _check_tolerance(tolerance, rule, None)
    elif rule == "equal":
        paper = _scalar(paper, "paper")
        ours = _scalar(ours, "ours")
        if not (isinstance(paper, (bool, str))):
            raise ClaimError(f"an 'equal' claim compares a bool or a str, got paper={paper!r}")
        if type(ours) is not type(paper):
            raise ClaimError(f"ours ({type(ours).__name__}) and paper ({type(paper).__name__}) must have the same type")
        tol = _check_tolerance(tolerance, rule, None)
    elif rule == "number":
        paper = _real(paper, "paper")
        if not _finite(paper):
            raise ClaimError(f"the paper's number must be finite, got {paper!r}")
        ours = _real(ours, "ours")
        tol = _check_tolerance(tolerance, rule, None)
    elif rule == "range":
        if isinstance(paper, (str, bytes)) or not hasattr(paper, "__len__") or len(paper) != 2:
            raise ClaimError(f"a 'range' claim needs paper=(low, high), got {paper!r}")
        low, high = _real(paper[0], "paper low"), _real(paper[1], "paper high")
        if not (_finite(low) and _finite(high)) or low > high:
            raise ClaimError(f"the paper's range must be finite with low <= high, got {paper!r}")
        paper = (low, high)
        ours = _real(ours, "ours")
        tol = _check_tolerance(tolerance, rule, 0.0)
    else:  # vector
        paper = _vector(paper, "paper")
        if not all(_finite(p) for p in paper):
            raise ClaimError(f"the paper's numbers must be finite, got {paper!r}")
        ours = _vector(ours, "ours")
        if len(ours) != len(paper):
            raise ClaimError(f"ours has {len(ours)} numbers but paper has {len(paper)}")
        tol = _check_tolerance(tolerance, rule, None)

    if basis != "beyond" and rule == "beyond":
        raise ClaimError(f"claim {id!r}: a {basis!r} claim cannot use the rule 'beyond'")
    if tol is None and tolerance_key is not None:
        raise ClaimError(f"claim {id!r}: a {rule!r} claim takes no tolerance, got the key {tolerance_key!r}")
    if basis == "paper" and tol is not None and tolerance_key is None:
        raise ClaimError(f"claim {id!r}: a 'paper' claim names its tolerance by a key of hmmrnn.tolerances")
    return Claim(
        chapter=chapter,
        id=id,
        description=description or id,
        ours=ours,
        paper=paper,
        tolerance=tol,
        rule=rule,
        passed=None if not_comparable else _judge(rule, ours, paper, tol),
        note=note,
        basis=basis,
        paper_ref=paper_ref,
        tolerance_key=tolerance_key,
        quantity=quantity,
        not_comparable=not_comparable,
    )


def _same_value(a: Any, b: Any) -> bool:
    """Equality of two reference values after JSON-like normalisation (tuples/lists, numpy scalars)."""
    def norm(v: Any) -> Any:
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, (tuple, list)):
            return tuple(norm(x) for x in v)
        return v

    return norm(a) == norm(b)


# --------------------------------------------------------------------------- formatting

def format_value(value: Any, digits: int = 4) -> str:
    """Stable short text for a value: numbers to ``digits`` significant digits.

    The paper quotes up to four significant digits (0.2562, 0.9405), hence the default.
    The value is first rounded to 12 significant digits, so that the text is the same on
    every machine even for exact values on a rounding boundary.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v, digits) for v in value) + "]"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    # canonical double first: float noise below 12 significant digits (which differs between
    # machines) must not decide a rounding boundary such as 0.068805 -> 0.06880 / 0.06881
    value = float(f"{value:.12g}")
    text = format(value, f".{digits}g")
    return "0" if text == "-0" else text


def _format_paper(claim: Claim, digits: int) -> str:
    if claim.rule == "range":
        low, high = claim.paper
        return f"{format_value(low, digits)} to {format_value(high, digits)}"
    if claim.rule == "beyond":
        return "-"
    return format_value(claim.paper, digits)


def _format_tolerance(claim: Claim) -> str:
    return "-" if claim.tolerance is None else format_value(claim.tolerance, 2)


def _rows(claims: Sequence[Claim], digits: int, with_chapter: bool) -> list[list[str]]:
    rows = []
    for c in claims:
        row = [c.description, c.basis, _format_paper(c, digits), format_value(c.ours, digits), _format_tolerance(c), c.result]
        rows.append(([c.chapter] if with_chapter else []) + row)
    return rows


def _title(claim: Claim) -> str:
    """The hover text of a claim: its note, paper_ref, tolerance reason and why it is not comparable."""
    parts = []
    if claim.not_comparable:
        parts.append(f"not comparable: {claim.not_comparable}")
    if claim.note:
        parts.append(claim.note)
    if claim.paper_ref:
        parts.append(f"paper value: hmmrnn.paper.{claim.paper_ref}")
    if claim.tolerance_key:
        parts.append(f"tolerance {claim.tolerance_key}: {TOLERANCES[claim.tolerance_key].reason}")
    return " | ".join(parts)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    cells = [header] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def counts(claims: Iterable[Claim]) -> dict[str, int]:
    """``{"total", "passed", "failed", "not_comparable", "beyond"}`` counts of a list of claims (every claim once)."""
    claims = list(claims)
    return {
        "total": len(claims),
        "passed": sum(c.passed is True for c in claims),
        "failed": sum(c.passed is False for c in claims),
        "not_comparable": sum(c.result == _NOT_COMPARABLE for c in claims),
        "beyond": sum(c.rule == "beyond" for c in claims),
    }


def _count_line(claims: Sequence[Claim], skip_empty: bool = False) -> str:
    """``paper: .. pass, .. fail, .. not comparable; checks: .. of .. pass; .. beyond the paper (not judged).``

    Counts claims, not quantities (the headline, :func:`headline`, counts each quantity once).
    With ``skip_empty`` a basis without claims is left out of the line.
    """
    paper_n = counts(c for c in claims if c.basis == "paper")
    check_n = counts(c for c in claims if c.basis == "check")
    n_beyond = sum(c.basis == "beyond" for c in claims)
    parts = []
    if paper_n["total"] or not skip_empty:
        parts.append(f"paper: {paper_n['passed']} pass, {paper_n['failed']} fail, {paper_n['not_comparable']} not comparable")
    if check_n["total"] or not skip_empty:
        parts.append(f"checks: {check_n['passed']} of {check_n['total']} pass")
    if n_beyond or not skip_empty:
        parts.append(f"{n_beyond} beyond the paper (not judged)")
    return "; ".join(parts) + "."


@dataclass(frozen=True)
class HeadlineRow:
    """The paper's findings that one chapter tests, each quantity once.

    Attributes:
        chapter: the chapter (a quantity measured in several chapters belongs to the first, in book order).
        passed, failed, not_comparable: quantities with that verdict (a quantity measured by
            several claims passes only if every one passes, fails if any fails).
        quantities: the quantity keys counted here, in order.
    """

    chapter: str
    passed: int
    failed: int
    not_comparable: int
    quantities: tuple[str, ...]

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.not_comparable


def headline(claims: Sequence[Claim]) -> list[HeadlineRow]:
    """The headline: per chapter, the paper's findings that pass, fail or are not comparable.

    Only ``"paper"`` claims count, each quantity (:attr:`Claim.key`) once, in the chapter where
    it first appears (``claims`` in book order, as :func:`collect` returns them). A quantity
    measured by several claims passes if all pass, fails if any fails, and is not comparable
    if none is judged.

    Raises:
        ClaimError: claims of one quantity that name different paper values.
    """
    groups: dict[str, list[Claim]] = {}
    for c in claims:
        if c.basis == "paper":
            groups.setdefault(c.key, []).append(c)
    per_chapter: dict[str, dict[str, list[str]]] = {}
    for key, group in groups.items():
        refs = {_canonical_ref(c.paper_ref) for c in group}
        if len(refs) > 1:
            raise ClaimError(f"quantity {key!r} is claimed against different paper values: {sorted(r or '' for r in refs)}")
        verdicts = [c.passed for c in group]
        if any(v is False for v in verdicts):
            verdict = "failed"
        elif all(v is True for v in verdicts):
            verdict = "passed"
        elif all(v is None for v in verdicts):
            verdict = "not_comparable"
        else:  # some pass, some not comparable: the judged ones decide
            verdict = "passed"
        chapter = group[0].chapter
        per_chapter.setdefault(chapter, {"passed": [], "failed": [], "not_comparable": []})[verdict].append(key)
    rows = []
    for chapter, by in per_chapter.items():
        keys = tuple(k for v in ("passed", "failed", "not_comparable") for k in by[v])
        rows.append(HeadlineRow(chapter, len(by["passed"]), len(by["failed"]), len(by["not_comparable"]), keys))
    return rows


def _canonical_ref(ref: str | None) -> str | None:
    return None if ref is None else "".join(ref.split()).replace("'", '"')


def render_headline(claims: Sequence[Claim], fmt: str = "markdown") -> str:
    """The headline (:func:`headline`) as a table: chapter | pass | fail | not comparable | findings, and a total row."""
    rows = headline(claims)
    header = ["chapter", "pass", "fail", "not comparable", "findings"]
    body = [[r.chapter, str(r.passed), str(r.failed), str(r.not_comparable), str(r.total)] for r in rows]
    body.append(["all chapters", *(str(sum(getattr(r, a) for r in rows)) for a in ("passed", "failed", "not_comparable", "total"))])
    if fmt == "markdown":
        return _markdown_table(header, body)
    if fmt != "html":
        raise ValueError(f"fmt must be 'html' or 'markdown', got {fmt!r}")
    out = ['<table class="hmmrnn-headline">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for i, row in enumerate(body):
        cells = [html.escape(v) for v in row]
        if i == len(body) - 1:
            cells = [f"<b>{c}</b>" for c in cells]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


# --------------------------------------------------------------------------- where files live

def repository_root() -> Path | None:
    """The checkout holding this package (a folder with ``_toc.yml``), or None if installed elsewhere.

    Tried in order: the parent of the package folder (an editable install), then the
    current directory and its parents.
    """
    candidates = [Path(__file__).resolve().parent.parent]
    cwd = Path.cwd().resolve()
    candidates += [cwd, *cwd.parents]
    for base in candidates:
        if (base / "_toc.yml").is_file() and (base / "book").is_dir():
            return base
    return None


def default_claims_folder() -> Path:
    """``$HMMRNN_CLAIMS_DIR`` if set, else ``<repository>/book/claims``, else ``./claims``."""
    env = os.environ.get("HMMRNN_CLAIMS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = repository_root()
    return (root / "book" / "claims") if root is not None else Path.cwd().resolve() / "claims"


def book_chapters(root: str | Path | None = None) -> list[Path]:
    """Files of the book in ``_toc.yml`` order (root page first), as absolute paths with suffix.

    Each toc entry ``file: book/x`` is resolved to the existing ``book/x.ipynb`` or ``book/x.md``.

    Raises:
        FileNotFoundError: no ``_toc.yml``, or an entry with no file behind it.
    """
    import yaml

    root = Path(root) if root is not None else repository_root()
    if root is None or not (Path(root) / "_toc.yml").is_file():
        raise FileNotFoundError(f"no _toc.yml found (root={root})")
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    entries: list[str] = [toc["root"]]

    def walk(items: list[dict] | None) -> None:
        for item in items or []:
            if "file" in item:
                entries.append(item["file"])
            walk(item.get("sections"))
            for part in item.get("parts", []) if isinstance(item, dict) else []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    paths = []
    for entry in entries:
        base = Path(root) / entry
        found = [base.with_name(base.name + s) for s in (".ipynb", ".md") if base.with_name(base.name + s).is_file()]
        if not found:
            raise FileNotFoundError(f"_toc.yml lists {entry!r} but neither {entry}.ipynb nor {entry}.md exists")
        paths.append(found[0].resolve())
    return paths


def book_order(root: str | Path | None = None) -> list[str]:
    """The stems of the book's notebooks in ``_toc.yml`` order (the order of :func:`collect`'s ``order``)."""
    return [path.stem for path in book_chapters(root) if path.suffix == ".ipynb"]


# --------------------------------------------------------------------------- recording and collecting

@dataclass
class ClaimRecorder:
    """Collects a chapter's claims, prints them and saves them.

    Args:
        chapter: the chapter's notebook stem (the JSON file is ``<chapter>.json``).
        parameters: the chapter's parameters (saved with the claims so that the report can
            tell which run produced them); JSON-ready values only.
    """

    chapter: str
    parameters: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.chapter, str) or not _CHAPTER_RE.match(self.chapter):
            raise ClaimError(f"chapter must be a notebook stem (letters, digits, _ -), got {self.chapter!r}")
        try:
            json.dumps(self.parameters, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ClaimError(f"parameters must be JSON-ready: {err}") from None

    def claim(
        self,
        id: str,
        ours: Any,
        *,
        basis: str,
        paper_ref: str | None = None,
        reference: Any = None,
        tolerance: str | Tolerance | None = None,
        kind: str = "auto",
        description: str = "",
        note: str = "",
        quantity: str | None = None,
        not_comparable: str = "",
    ) -> Claim:
        """Record one claim and return it (the rules: :func:`make_claim`).

        Args:
            id: identifier, unique within the chapter.
            ours: our value.
            basis: ``"paper"``, ``"check"`` or ``"beyond"``.
            paper_ref: for ``"paper"`` (required) and ``"check"``: the expression in
                :mod:`hmmrnn.paper` whose value is the reference, e.g. ``'LABILITY["linear2"]'``.
            reference: for ``"check"`` only, instead of ``paper_ref``: a reference value
                computed by this book's code (an exact statistic, True for a property).
            tolerance: a key of :data:`hmmrnn.tolerances.TOLERANCES` (``"epoch"``), or a
                computed one (``tolerances.computed("ci95", half_width)``); never a bare number.
            kind, description, note, quantity, not_comparable: as :func:`make_claim`.

        Recording an ``id`` again replaces the earlier claim (re-running a notebook cell).

        Raises:
            ClaimError: a bare number as tolerance, a ``reference`` on a claim that is not a
                check, and everything :func:`make_claim` refuses.
        """
        if reference is not None and basis != "check":
            raise ClaimError(f"claim {id!r}: only a 'check' claim takes a reference computed by our code; "
                             "a paper value is named by paper_ref")
        if reference is not None and paper_ref is not None:
            raise ClaimError(f"claim {id!r}: give paper_ref or reference, not both")
        if isinstance(tolerance, Tolerance):
            key, size = tolerance.key, tolerance.value
        elif tolerance is None or isinstance(tolerance, str):
            key, size = tolerance, None
        else:
            raise ClaimError(f"claim {id!r}: name the tolerance by a key of hmmrnn.tolerances (got {tolerance!r})")
        new = make_claim(
            self.chapter, id, ours, reference, size, description=description, note=note, kind=kind, basis=basis,
            paper_ref=paper_ref, tolerance_key=key, quantity=quantity, not_comparable=not_comparable,
        )
        self.claims = [c for c in self.claims if c.id != id] + [new]
        return new

    def __len__(self) -> int:
        return len(self.claims)

    def table(self, digits: int = 4) -> str:
        """A fixed-width markdown table (claim, paper, ours, tolerance, result) and a count line.

        Numbers are printed to ``digits`` significant digits so that the text is stable
        between machines (nbval compares it).
        """
        if not self.claims:
            return "(no claims recorded)"
        header = ["claim", "basis", "paper", "ours", "tolerance", "result"]
        return _markdown_table(header, _rows(self.claims, digits, False)) + "\n\n" + _count_line(self.claims)

    def summary(self, digits: int = 4) -> "ClaimSummary":
        """The chapter's claims as a table that notebooks display (HTML) and nbval compares (text).

        End a cell with ``recorder.summary()``: the page shows an HTML table (long text wrapped,
        at most 1280 px wide, failing rows marked); the plain text is one short line per claim.
        Numbers have ``digits`` significant digits, as in :meth:`table`.
        """
        return ClaimSummary(tuple(self.claims), digits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "chapter": self.chapter,
            "parameters": self.parameters,
            "claims": [c.to_dict() for c in self.claims],
        }

    def save(self, folder: str | Path | None = None) -> Path:
        """Write ``<folder>/<chapter>.json`` atomically and return its path.

        ``folder`` defaults to :func:`default_claims_folder` (the repository's ``book/claims``,
        whatever the working directory; ``$HMMRNN_CLAIMS_DIR`` overrides it).
        """
        folder = Path(folder) if folder is not None else default_claims_folder()
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        path = folder / f"{self.chapter}.json"
        atomic_write_bytes(path, text.encode())
        return path


SUMMARY_CSS = (
    "table.hmmrnn-summary{width:100%;max-width:1280px;table-layout:fixed;border-collapse:collapse;font-size:90%}"
    "table.hmmrnn-summary th,table.hmmrnn-summary td{white-space:normal;overflow-wrap:break-word;hyphens:none;"
    "vertical-align:top;text-align:left;padding:2px 6px;border-bottom:1px solid #d0d7de}"
    "table.hmmrnn-summary col.claim{width:33%}table.hmmrnn-summary col.basis{width:11%}"
    "table.hmmrnn-summary col.paper,table.hmmrnn-summary col.ours{width:14%}"
    "table.hmmrnn-summary col.tolerance{width:12%}table.hmmrnn-summary col.result{width:16%}"
    "table.hmmrnn-summary tr.claim-fail td{background:#ffebe9}"
    "table.hmmrnn-summary tr.claim-fail td.result{color:#cf222e;font-weight:bold}"
)
"""The summary table's style: fixed layout within 1280 px, wrapped text, failing rows on red."""

_ROW_CLASS = {"pass": "claim-pass", "FAIL": "claim-fail", "beyond the paper": "claim-beyond", _NOT_COMPARABLE: "claim-incomparable"}


@dataclass(frozen=True)
class ClaimSummary:
    """A chapter's claims for display: ``_repr_html_`` a table, ``repr`` one line per claim.

    Both texts are deterministic (no random ids, numbers to ``digits`` significant digits),
    so that nbval can compare them between machines.

    Attributes:
        claims: the claims, in the order they were recorded.
        digits: significant digits of the numbers.
    """

    claims: tuple[Claim, ...]
    digits: int = 4

    def __repr__(self) -> str:
        if not self.claims:
            return "(no claims recorded)"
        lines = []
        for c in self.claims:
            line = f"{c.result}: {c.id} = {format_value(c.ours, self.digits)}"
            if c.rule != "beyond":
                line += f" (paper {_format_paper(c, self.digits)}, tolerance {_format_tolerance(c)})"
            lines.append(line)
        return "\n".join(lines + ["", _count_line(self.claims)])

    def _repr_html_(self) -> str:
        if not self.claims:
            return "<p>(no claims recorded)</p>"
        header = ["claim", "basis", "paper", "ours", "tolerance", "result"]
        out = [f"<style>{SUMMARY_CSS}</style>", '<table class="hmmrnn-summary">',
               "<colgroup>" + "".join(f'<col class="{h}">' for h in header) + "</colgroup>",
               "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>", "<tbody>"]
        for claim, row in zip(self.claims, _rows(self.claims, self.digits, False)):
            cells = [html.escape(v) for v in row]
            text = _title(claim)
            title = f' title="{html.escape(text, quote=True)}"' if text else ""
            cells[0] = f"<span{title}>{cells[0] or html.escape(claim.id)}</span>"
            tds = "".join(f'<td class="{h}">{c}</td>' for h, c in zip(header, cells))
            out.append(f'<tr class="{_ROW_CLASS[claim.result]}">{tds}</tr>')
        out += ["</tbody>", "</table>", f"<p>{html.escape(_count_line(self.claims))}</p>"]
        return "\n".join(out)


def _load_file(path: Path) -> tuple[dict[str, Any], list[Claim]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ClaimError(f"{path.name}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or not isinstance(data.get("claims"), list):
        raise ClaimError(f"{path.name}: not a claims file of format {FORMAT_VERSION}")
    chapter = data.get("chapter")
    if chapter != path.stem:
        raise ClaimError(f"{path.name}: names chapter {chapter!r}, expected {path.stem!r}")
    claims = []
    for item in data["claims"]:
        try:
            claim = Claim.from_dict(item)
        except ClaimError as err:
            raise ClaimError(f"{path.name}: {err}") from None
        if claim.chapter != chapter:
            raise ClaimError(f"{path.name}: claim {claim.id!r} belongs to chapter {claim.chapter!r}")
        claims.append(claim)
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ClaimError(f"{path.name}: duplicate claim ids")
    return data, claims


def collect(folder: str | Path | None = None, order: Sequence[str] | None = None) -> list[Claim]:
    """All claims saved in ``folder`` (default :func:`default_claims_folder`).

    Args:
        folder: where the ``<chapter>.json`` files are; a missing folder gives no claims.
        order: chapter stems in book order; chapters listed there come first in that order,
            the others after them alphabetically. Default: alphabetical.

    Raises:
        ClaimError: a file that is not a valid claims file (named in the message).
    """
    folder = Path(folder) if folder is not None else default_claims_folder()
    if not folder.is_dir():
        return []
    rank = {name: i for i, name in enumerate(order or [])}
    files = sorted(folder.glob("*.json"), key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    claims: list[Claim] = []
    for path in files:
        claims += _load_file(path)[1]
    return claims


def chapter_parameters(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Chapter stem -> the parameters its saved claims were computed with (see :func:`collect`)."""
    folder = Path(folder) if folder is not None else default_claims_folder()
    if not folder.is_dir():
        return {}
    return {path.stem: _load_file(path)[0].get("parameters", {}) for path in sorted(folder.glob("*.json"))}


def render(claims: Sequence[Claim], fmt: str = "html", digits: int = 4) -> str:
    """One table of all claims: chapter, claim, paper, ours, tolerance, result; and a count line.

    Args:
        claims: e.g. :func:`collect`'s result.
        fmt: ``"html"`` (a ``<table>``, for the report page) or ``"markdown"``.
        digits: significant digits of the numbers.
    """
    header = ["chapter", "claim", "basis", "paper", "ours", "tolerance", "result"]
    rows = _rows(claims, digits, True)
    if fmt == "markdown":
        if not rows:
            return "(no claims found)"
        return _markdown_table(header, rows) + "\n\n" + _count_line(claims, skip_empty=True)
    if fmt != "html":
        raise ValueError(f"fmt must be 'html' or 'markdown', got {fmt!r}")
    if not rows:
        return "<p>(no claims found)</p>"
    css = {"pass": "claim-pass", "FAIL": "claim-fail", "beyond the paper": "claim-beyond", _NOT_COMPARABLE: "claim-incomparable"}
    colour = {"pass": "#1a7f37", "FAIL": "#cf222e", "beyond the paper": "#57606a", _NOT_COMPARABLE: "#9a6700"}
    out = ['<table class="hmmrnn-claims">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for claim, row in zip(claims, rows):
        cells = [html.escape(v) for v in row]
        text = _title(claim)
        title = f' title="{html.escape(text, quote=True)}"' if text else ""
        cells[1] = f"<span{title}>{cells[1]}</span>"
        result = row[-1]
        cells[-1] = f'<span class="{css[result]}" style="color:{colour[result]};font-weight:bold">{cells[-1]}</span>'
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out += ["</tbody>", "</table>", f"<p>{html.escape(_count_line(claims, skip_empty=True))}</p>"]
    return "\n".join(out)


# --------------------------------------------------------------------------- Sphinx extension

def _report_docnames(app: Any) -> list[str]:
    return [d for d in app.config.hmmrnn_report_docnames if d in app.env.found_docs]


def _always_outdated(app: Any, env: Any, added: set, changed: set, removed: set) -> list[str]:
    return [d for d in _report_docnames(app) if d not in added and d not in changed]


def _read_report_last(app: Any, env: Any, docnames: list[str]) -> None:
    last = [d for d in docnames if d in app.config.hmmrnn_report_docnames]
    docnames[:] = [d for d in docnames if d not in last] + last


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point: re-read (and so re-execute) the report pages on every build, last.

    The report notebooks should carry ``{"mystnb": {"execution_mode": "force"}}`` in their
    metadata so that the execution cache does not serve an old result.
    """
    app.add_config_value("hmmrnn_report_docnames", ["book/reproduction_report"], "env")
    app.connect("env-get-outdated", _always_outdated)
    app.connect("env-before-read-docs", _read_report_last)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
