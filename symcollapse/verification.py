"""The verification table: every derived claim next to the independent number it was checked with."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from .tolerance import within


@dataclass(frozen=True)
class Check:
    """One row: what was derived, what it was compared with, the relative error, pass/fail."""

    model: str
    claim: str
    derived: str
    compared_with: str
    rel_error: float
    tol: float

    @property
    def passed(self) -> bool:
        return within(self.rel_error, self.tol)


def rel_error(derived, reference) -> float:
    """max|a − b| / max(max|b|, 1e-300) over all entries (NaN anywhere gives inf)."""
    a = np.asarray(derived, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape and a.size != b.size:
        return float("inf")
    a, b = a.ravel(), b.ravel()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def close(model: str, claim: str, derived, reference, tol: float, *,
          derived_text: str | None = None, reference_text: str | None = None) -> Check:
    """A numeric comparison row."""
    return Check(model, claim, derived_text or _fmt(derived), reference_text or _fmt(reference),
                 rel_error(derived, reference), tol)


def identity(model: str, claim: str, difference, compared_with: str) -> Check:
    """A symbolic identity row: passes if ``simplify(difference) == 0`` (entrywise for matrices)."""
    diff = sp.sympify(difference)
    entries = list(diff) if isinstance(diff, sp.MatrixBase) else [diff]
    zero = all(sp.simplify(e) == 0 for e in entries)
    return Check(model, claim, "symbolic", compared_with, 0.0 if zero else float("inf"), 0.0)


def _fmt(x) -> str:
    a = np.asarray(x, dtype=float)
    if a.size == 1:
        return f"{float(a.ravel()[0]):.10g}"
    return f"array{a.shape}"


def format_table(checks: list[Check]) -> str:
    """A plain-text table, one row per check."""
    head = ("model", "claim", "derived", "compared with", "rel. error", "tol", "result")
    rows = [(c.model, c.claim, c.derived, c.compared_with, f"{c.rel_error:.2e}", f"{c.tol:.0e}",
             "pass" if c.passed else "FAIL") for c in checks]
    widths = [max(len(str(r[k])) for r in [head, *rows]) for k in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, rows)])
