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


TABLE_WIDTH = 100


def format_table(checks: list[Check], width: int = TABLE_WIDTH) -> str:
    """A plain-text table at most ``width`` columns wide: one section per model, one row per
    check (result, relative error, tolerance, then claim / derived / compared-with wrapped in
    columns that share the remaining width in proportion 45 : 20 : 35)."""
    import textwrap

    head = ("result", "rel.err", "tol", "claim", "derived", "compared with")
    fixed = [max(len(head[0]), 4), max(len(head[1]), 8), max(len(head[2]), 5)]
    cells = [(c.claim, c.derived, c.compared_with) for c in checks]
    natural = [max([len(head[3 + k])] + [len(r[k]) for r in cells]) for k in range(3)]
    room = max(width - 2 - sum(fixed) - 2 * 5, 30)  # indent 2, five 2-space gaps
    share = [room * 45 // 100, room * 20 // 100, room * 35 // 100]
    text_w = [min(n, s) for n, s in zip(natural, share)]
    spare = room - sum(text_w)  # give what a narrow column does not need to the others
    for k in range(3):
        extra = min(spare, natural[k] - text_w[k])
        text_w[k] += extra
        spare -= extra
    widths = fixed + text_w

    def lines_of(row):
        cols = [textwrap.wrap(str(v), w, break_long_words=True, break_on_hyphens=False) or [""]
                for v, w in zip(row, widths)]
        n = max(map(len, cols))
        return ["  " + "  ".join((col[j] if j < len(col) else "").ljust(w) for col, w in zip(cols, widths)).rstrip()
                for j in range(n)]

    out, model = [], None
    for c in checks:
        if c.model != model:
            model = c.model
            n = sum(1 for x in checks if x.model == model)
            out += ([""] if out else []) + [f"{model} ({n} check{'s' if n != 1 else ''})"]
            out += lines_of(head) + ["  " + "  ".join("-" * w for w in widths)]
        out += lines_of(("pass" if c.passed else "FAIL", f"{c.rel_error:.2e}", f"{c.tol:.0e}",
                         c.claim, c.derived, c.compared_with))
    return "\n".join(out)
