"""Job 'engine': 30-digit mpmath re-checks of the derivation engine itself (no LaTeX, no figures).

Rows: F_b = −∂ℓ/∂θ_b (sg frozen) for the embedding and head losses, the stop-gradient
invariant per edge, the symmetric edge Jacobian of the gradient flow, and the balanced
slow rate as a root of the sector cubic.
"""
from __future__ import annotations

from pathlib import Path

MODEL = "engine"
ORDER = 0


def checks() -> list:
    """The verification rows of the engine (see symcollapse.symbolic.mpcheck.engine_checks)."""
    from ..symbolic.mpcheck import engine_checks

    return engine_checks()


def write_latex(folder) -> list[Path]:
    """The engine has no derivation document of its own."""
    return []


def write_figures(folder) -> list[Path]:
    """The engine has no figures."""
    return []
