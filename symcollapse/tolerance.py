r"""One rule for every self-check: an error passes only if it is a finite number ≤ tol.

``err > tol`` is False for err = NaN, so a check written that way passes when the compared
quantity is undefined. Every tolerance comparison in symcollapse goes through :func:`within`
(``not err <= tol`` style: NaN, ±inf, None and non-numbers fail), and :func:`require_within`
raises :class:`~symcollapse.errors.DerivationCheckError` when it does not hold.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import DerivationCheckError


def within(err, tol) -> bool:
    """True iff every entry of ``err`` is finite and ≤ ``tol`` (NaN/inf/None/empty fail).

    ``err`` may be a number (float, int, NumPy or mpmath scalar) or an array; ``tol`` must be
    a number (a NaN tolerance fails every check).
    """
    try:
        t = float(tol)
    except (TypeError, ValueError):
        return False
    if math.isnan(t):
        return False
    if err is None or isinstance(err, (str, bytes, bool)):
        return False
    if not isinstance(err, (np.ndarray, list, tuple)):
        try:
            e = float(err)
        except (TypeError, ValueError, OverflowError):
            return False
        return math.isfinite(e) and e <= t
    try:
        a = np.asarray(err, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return False
    return bool(a.size) and bool(np.all(np.isfinite(a))) and bool(np.all(a <= t))


def require_within(err, tol, what: str, error: type = DerivationCheckError) -> float:
    """Return ``err`` as a float if :func:`within` holds, else raise ``error`` naming ``what``."""
    if within(err, tol):
        return float(err)
    try:
        shown = f"{float(np.max(np.asarray(err, dtype=float))):.3e}"
    except (TypeError, ValueError, OverflowError):
        shown = repr(err)
    reason = "is not finite" if shown in ("nan", "inf", "-inf") else f"> {float(tol):g}"
    raise error(f"{what}: relative error {shown} {reason}")


def spectrum_counts(ev, thr: float, what: str = "spectrum") -> tuple[int, int, str]:
    r"""(n_unstable, n_degenerate, kind) of eigenvalues λ: unstable Re λ > thr, degenerate |Re λ| ≤ thr.

    kind is "saddle" if any is unstable, else "degenerate" if any is degenerate, else "stable". A
    non-finite eigenvalue (NaN/inf: neither count sees it) raises DerivationCheckError instead of
    being classified stable.
    """
    ev = np.asarray(ev, dtype=complex)
    if not np.all(np.isfinite(ev)):
        raise DerivationCheckError(f"{what}: {int(np.sum(~np.isfinite(ev)))} of {ev.size} eigenvalues are not "
                                   "finite; no stability verdict")
    n_uns = int(np.sum(ev.real > thr))
    n_deg = int(np.sum(np.abs(ev.real) <= thr))
    return n_uns, n_deg, "saddle" if n_uns else ("degenerate" if n_deg else "stable")
