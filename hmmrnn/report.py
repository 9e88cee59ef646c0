"""The reproduction report: claims (our number beside the paper's), recorded by chapters.

Every chapter records what it found as :class:`Claim` objects through a
:class:`ClaimRecorder`, prints them in its Summary (:meth:`ClaimRecorder.table`) and saves
them as ``book/claims/<chapter>.json`` (:meth:`ClaimRecorder.save`). The last page of the
book reads every file (:func:`collect`) and renders one table (:func:`render`).

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

from .checkpoints import atomic_write_bytes

__all__ = [
    "Claim",
    "ClaimError",
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
]

FORMAT_VERSION = 1
"""Version of the JSON layout written by :meth:`ClaimRecorder.save`."""

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
        passed: the verdict of the rule; None for ``"beyond"``.
        note: anything a reader needs to judge it (how the tolerance was chosen, caveats).
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

    @property
    def result(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"beyond the paper"``."""
        return _RESULT_TEXT[self.passed]

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
        claim = make_claim(
            data["chapter"],
            data["id"],
            _decode(data["ours"]),
            _decode(data["paper"]),
            tolerance=data.get("tolerance"),
            description=data.get("description", ""),
            note=data.get("note", ""),
            kind=data["rule"],
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
) -> Claim:
    """Validate, normalise and judge one claim (see the module docstring for the rules).

    Args:
        chapter: the chapter's notebook stem.
        id: identifier, unique within the chapter.
        ours: our value (numpy scalars and arrays are converted to Python values).
        paper: the paper's value; its type selects the rule when ``kind="auto"``.
        tolerance: allowed deviation; required for ``"number"`` and ``"vector"``, default 0
            for ``"range"``, must be None for ``"equal"`` and ``"beyond"``.
        description: the claim in words (default: ``id``).
        note: a remark shown with the claim.
        kind: ``"auto"`` or one of :data:`RULES`.

    Raises:
        ClaimError: for anything the rules cannot judge.
    """
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

    return Claim(
        chapter=chapter,
        id=id,
        description=description or id,
        ours=ours,
        paper=paper,
        tolerance=tol,
        rule=rule,
        passed=_judge(rule, ours, paper, tol),
        note=note,
    )


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
        row = [c.description, _format_paper(c, digits), format_value(c.ours, digits), _format_tolerance(c), c.result]
        rows.append(([c.chapter] if with_chapter else []) + row)
    return rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    cells = [header] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def counts(claims: Iterable[Claim]) -> dict[str, int]:
    """``{"total", "passed", "failed", "beyond"}`` counts of a list of claims."""
    claims = list(claims)
    return {
        "total": len(claims),
        "passed": sum(c.passed is True for c in claims),
        "failed": sum(c.passed is False for c in claims),
        "beyond": sum(c.passed is None for c in claims),
    }


def _count_line(claims: Sequence[Claim]) -> str:
    n = counts(claims)
    judged = n["passed"] + n["failed"]
    return f"{n['passed']} of {judged} claims pass; {n['beyond']} beyond the paper (not judged)."


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
        paper: Any,
        tolerance: float | None = None,
        *,
        description: str = "",
        note: str = "",
        kind: str = "auto",
    ) -> Claim:
        """Record one claim (arguments as :func:`make_claim`) and return it.

        Recording an ``id`` again replaces the earlier claim (re-running a notebook cell).
        """
        new = make_claim(self.chapter, id, ours, paper, tolerance, description=description, note=note, kind=kind)
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
        header = ["claim", "paper", "ours", "tolerance", "result"]
        return _markdown_table(header, _rows(self.claims, digits, False)) + "\n\n" + _count_line(self.claims)

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
    header = ["chapter", "claim", "paper", "ours", "tolerance", "result"]
    rows = _rows(claims, digits, True)
    if fmt == "markdown":
        if not rows:
            return "(no claims found)"
        return _markdown_table(header, rows) + "\n\n" + _count_line(claims)
    if fmt != "html":
        raise ValueError(f"fmt must be 'html' or 'markdown', got {fmt!r}")
    if not rows:
        return "<p>(no claims found)</p>"
    css = {"pass": "claim-pass", "FAIL": "claim-fail", "beyond the paper": "claim-beyond"}
    colour = {"pass": "#1a7f37", "FAIL": "#cf222e", "beyond the paper": "#57606a"}
    out = ['<table class="hmmrnn-claims">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for claim, row in zip(claims, rows):
        cells = [html.escape(v) for v in row]
        title = f' title="{html.escape(claim.note, quote=True)}"' if claim.note else ""
        cells[1] = f"<span{title}>{cells[1]}</span>"
        result = row[-1]
        cells[-1] = f'<span class="{css[result]}" style="color:{colour[result]};font-weight:bold">{cells[-1]}</span>'
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out += ["</tbody>", "</table>", f"<p>{html.escape(_count_line(claims))}</p>"]
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
