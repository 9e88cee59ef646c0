"""Numbers printed at the precision they carry, so that a printed result is the same on every CPU.

The book's tests (nbval) compare the text that chosen notebook cells print. A number printed
with more digits than it carries makes that text depend on the machine: PyTorch and OpenBLAS
pick different kernels on different CPUs (``ATEN_CPU_CAPABILITY``, ``OPENBLAS_CORETYPE``) and
with different thread counts, and their float rounding differs in the last bits. Those bits
reach the printed digits in three ways, each with its remedy here:

* a **roundoff-level** number (the distance of a fixed point from the origin, 5e-15; a
  difference that is zero in exact arithmetic) is all noise: print the bound it is under,
  :func:`format_bound` (``"< 1e-12"``), not its digits;
* a **Monte-Carlo** estimate is known only to its standard error: print it with its
  uncertainty at the precision of the uncertainty, :func:`format_uncertain`
  (``"0.487 ± 0.004"``), or its binomial standard error :func:`binomial_se`;
* a **chaotic** simulation (noise-driven trajectories whose roundoff differences grow until
  two CPUs produce different runs) gives a different sample of the same random result on
  each machine: report its spread over several seeds (:func:`spread`,
  :func:`format_spread`) and check the claim it supports, not one seed's digits.

A bound or a precision chosen here is still a check: a value above its bound prints its
digits (and so changes the checked text), and an estimate that moves by more than its
uncertainty changes its printed digits.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "Spread",
    "binomial_se",
    "decimals_for",
    "format_bound",
    "format_spread",
    "format_uncertain",
    "spread",
]


def _finite_float(value: float, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {x!r}")
    return x


def _canonical(x: float) -> float:
    """``x`` rounded to 12 significant digits: float noise must not decide a rounding boundary."""
    return float(f"{x:.12g}")


def decimals_for(uncertainty: float, sig: int = 1) -> int:
    """Decimal places at which ``uncertainty`` has ``sig`` significant digits (may be negative).

    ``decimals_for(0.0042) == 3``, ``decimals_for(0.0042, sig=2) == 4``, ``decimals_for(37) == -1``.

    Raises:
        ValueError: ``uncertainty`` not finite and > 0, or ``sig < 1``.
    """
    u = _finite_float(uncertainty, "uncertainty")
    if u <= 0:
        raise ValueError(f"uncertainty must be > 0, got {u!r}")
    if not isinstance(sig, int) or sig < 1:
        raise ValueError(f"sig must be an integer >= 1, got {sig!r}")
    u = _canonical(u)
    exponent = math.floor(math.log10(u))
    # 0.00996 at one digit rounds to 0.01: the decimal place is that of the rounded value
    if round(u, -exponent + sig - 1) >= 10.0 ** (exponent + 1):
        exponent += 1
    return sig - 1 - exponent


def _fixed(x: float, decimals: int) -> str:
    """``x`` rounded to ``decimals`` places (negative: tens, hundreds), no ``-0``."""
    x = _canonical(x)
    if decimals >= 0:
        text = f"{x:.{decimals}f}"
    else:
        text = f"{round(x, decimals):.0f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_uncertain(value: float, uncertainty: float, sig: int = 1, sep: str = " ± ") -> str:
    """``value`` and ``uncertainty``, both at the decimal place of the uncertainty's ``sig`` digits.

    ``format_uncertain(0.48712, 0.0042) == "0.487 ± 0.004"``;
    ``format_uncertain(-0.0763, 0.11) == "-0.1 ± 0.1"``; ``format_uncertain(1234.5, 37) == "1230 ± 40"``.

    Args:
        value: the estimate.
        uncertainty: its standard error (or another stated spread), > 0.
        sig: significant digits of the uncertainty (1 or 2 are usual).
        sep: text between the two.

    Raises:
        ValueError: a non-finite value, a non-finite or non-positive uncertainty.
    """
    x = _finite_float(value, "value")
    d = decimals_for(uncertainty, sig)
    return f"{_fixed(x, d)}{sep}{_fixed(float(uncertainty), d)}"


def format_bound(value: float, bound: float) -> str:
    """``"< bound"`` when ``|value| < bound``, else the value itself and the bound it breaks.

    For numbers that are zero in exact arithmetic and roundoff in floating point (a distance
    to the origin of 5e-15): their digits differ between CPUs, the bound does not. A value at
    or above the bound (or not finite) prints as ``"3.2e-05 (not below 1e-12)"``, so a
    checked output still changes when the result really changes.

    Raises:
        ValueError: ``bound`` not finite and > 0.
    """
    b = _finite_float(bound, "bound")
    if b <= 0:
        raise ValueError(f"bound must be > 0, got {b!r}")
    x = float(value)
    if math.isfinite(x) and abs(x) < b:
        return f"< {b:g}"
    return f"{x:.1e} (not below {b:g})"


def binomial_se(p: float, n: int) -> float:
    """Standard error ``sqrt(p (1 - p) / n)`` of a frequency ``p`` estimated from ``n`` independent draws.

    Raises:
        ValueError: ``p`` outside [0, 1] or ``n < 1``.
    """
    q = _finite_float(p, "p")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {q!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return math.sqrt(q * (1.0 - q) / int(n))


class Spread(NamedTuple):
    """A result over several seeds.

    Attributes:
        values: the per-seed values, in seed order, shape (n,).
        mean: their mean.
        sd: their standard deviation (``ddof=1``; 0 for one seed).
        low: the smallest value.
        high: the largest value.
    """

    values: np.ndarray
    mean: float
    sd: float
    low: float
    high: float

    @property
    def n(self) -> int:
        """Number of seeds."""
        return int(self.values.size)


def spread(values: Sequence[float] | np.ndarray) -> Spread:
    """Mean, standard deviation and range of a result over seeds.

    Raises:
        ValueError: no values, or a non-finite one (reported, never averaged away).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("spread needs at least one value")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"non-finite value(s) at position(s) {bad.tolist()}: {v[bad].tolist()}")
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Spread(values=v, mean=float(v.mean()), sd=sd, low=float(v.min()), high=float(v.max()))


def format_spread(s: Spread, sig: int = 1, unit: str = "seeds") -> str:
    """``"mean ± sd (low to high, n seeds)"``, all at the precision of the seed-to-seed sd.

    This is what a reader needs of a chaotic result; it is not a stable text for a checked
    output (another CPU draws other trajectories, so the mean moves by about sd / sqrt(n)):
    check the claim the result supports instead (e.g. "below 0.95 in every seed").
    With one seed, or seeds that agree exactly, the sd carries no precision: the mean is
    printed to 4 significant digits instead.
    """
    if s.sd > 0:
        d = decimals_for(s.sd, sig)
        return f"{_fixed(s.mean, d)} ± {_fixed(s.sd, d)} ({_fixed(s.low, d)} to {_fixed(s.high, d)}, {s.n} {unit})"
    return f"{_canonical(s.mean):.4g} ({s.n} {unit}, all equal)"
