r"""Basins of the head model's fixed-point families: integrate a seeded initial state until the
flow residual ‖θ̇‖_∞ / max(1, ‖θ‖_∞) ≤ tol, then read off the family it ended in (rank of the
mode amplitudes C_ℓ = Φ_ℓᵀ D Z in each ν-level, D-orthonormal basis of Aφ = νDφ) and its
derived stability (docs/model.md §3). Separation ρ = Δ_min(T)/Δ_min(0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_real
from . import families as fm
from .metrics import d_min


@dataclass(frozen=True)
class EndState:
    """A simulated end state: final (Z, W), time reached, flow residual, its family and stability."""

    Z: np.ndarray
    W: np.ndarray
    t: float
    residual: float
    family: fm.Family
    amplitudes: np.ndarray  # largest singular value of C_ℓ per level
    stability: fm.Stability | None
    separation: float  # Δ_min(T)/Δ_min(0)
    invariant_drift: float  # |I(T) − I(0)| / max(1, |I(0)|)


def residual(model, Z, W) -> float:
    r"""‖θ̇‖_∞ / max(1, ‖θ‖_∞) of the derived flow at (Z, W)."""
    v = model.pack(Z, W)
    return float(np.max(np.abs(model.system.flow_vector(v))) / max(1.0, float(np.max(np.abs(v)))))


def run_to_fixed_point(model, Z0, W0, *, tol: float = 1e-9, t_first: float = 500.0, t_max: float = 2e4,
                       method: str = "LSODA", rtol: float = 1e-10, atol: float = 1e-13):
    r"""Integrate in doubling chunks (t_first, 2t_first, …) until residual ≤ tol or t ≥ t_max; each
    chunk ends early once ‖θ̇‖_∞ ≤ tol·max(1, ‖θ‖_∞) (the integrator's ``stop_residual``).
    Returns (Z, W, t, residual)."""
    tol = check_real("tol", tol, 0.0, None, strict_min=True)
    Z, W, t = np.asarray(Z0, float), np.asarray(W0, float), 0.0
    chunk = float(t_first)
    res = residual(model, Z, W)
    while not res <= tol and t < t_max:
        step = min(chunk, t_max - t)
        scale = max(1.0, float(np.max(np.abs(model.pack(Z, W)))))
        tr = model.simulate(t_end=step, n_points=3, Z0=Z, W0=W, rtol=rtol, atol=atol, method=method,
                            use_jacobian=method in ("BDF", "Radau", "BDF-Schur", "auto"),
                            stop_residual=0.5 * tol * scale)
        Z, W = tr.Z, tr.W
        t += float(tr.extra.get("t_reached", step))
        res = residual(model, Z, W)
        chunk *= 2.0
    return Z, W, t, res


def end_state(model, seed: int, *, tol: float = 1e-9, t_max: float = 2e4, classify: bool = True,
              method: str = "LSODA") -> EndState:
    """Run the model's default initial state of ``seed`` to its fixed point and classify the end."""
    Z0, W0 = model.initial_state(seed)
    I0 = model.invariant(Z0, W0)
    Z, W, t, res = run_to_fixed_point(model, Z0, W0, tol=tol, t_max=t_max, method=method)
    fam, amp = fm.state_family(model.graph, Z)
    stab = None
    if classify and res <= 1e-7:
        stab = fm.classify_state(model, Z, W, residual_tol=1e-7)
    N = model.N
    sep = d_min(Z[N:]) / d_min(Z0[N:])
    drift = abs(model.invariant(Z, W) - I0) / max(1.0, abs(I0))
    return EndState(Z, W, t, res, fam, amp, stab, float(sep), float(drift))
