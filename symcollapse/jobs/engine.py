"""Job 'engine': 30-digit mpmath re-checks of the derivation engine itself (no LaTeX, no figures).

Rows: F_b = −∂ℓ/∂θ_b (sg frozen) for the embedding and head losses, the stop-gradient
invariant per edge, the symmetric edge Jacobian of the gradient flow, and the balanced
slow rate as a root of the sector cubic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import sympy as sp

from ..models.couplings import balanced_couplings
from ..numerics.kernels import compile_loss
from ..numerics.system import FlowSystem
from ..symbolic import mpcheck as mpc
from ..symbolic.flow import derive_flow
from ..verification import Check

MODEL = "engine"
ORDER = 0


def checks() -> list:
    """The verification rows of the engine (:func:`engine_checks`)."""
    return engine_checks()


def balanced_slow_rate_engine(K: int, n: int, mu: int, eta_x: float, eta_y: float) -> float:
    """Smallest nonzero decay rate of the engine's embedding flow on B(K, n, μ, ω=2), d = 1."""
    sysm = FlowSystem(compile_loss(mpc.embedding_loss(1)), balanced_couplings(K, n, mu),
                      rates={"x": eta_x, "y": eta_y})
    J = sysm.jacobian(np.zeros(sysm.size)).toarray()
    rates = np.sort(np.linalg.eigvals(-J).real)
    return float(rates[rates > 1e-9 * max(1.0, rates[-1])][0])


def engine_checks(seed: int = 0) -> list[Check]:
    """The engine's 30-digit rows: forces of the embedding and head losses (with and without
    sg), the stop-gradient invariant, gradient-flow symmetry, and the balanced slow rate."""
    rows: list[Check] = []
    emb = mpc.embedding_loss(2)
    head_sg, head_nosg = mpc.head_loss(2, True), mpc.head_loss(2, False)
    flows = {loss.name: derive_flow(loss) for loss in (emb, head_sg, head_nosg)}
    for loss in (emb, head_sg, head_nosg):
        rows += mpc.check_forces(loss, model="engine", flow=flows[loss.name], seed=seed)
    f_sg = flows[head_sg.name]
    rows.append(mpc.check_edge_jacobian(f_sg, model="engine", seed=seed))
    rows.append(mpc.check_identity(
        "engine", "sg invariant: x.F_x + y.F_y - <W,F_W> = 0 per edge (dI/dt = 0)",
        mpc.invariant_rate(f_sg), seed=seed))
    rows.append(mpc.check_identity(
        "engine", "no sg: per-edge Jacobian symmetric (gradient flow)",
        mpc.edge_hessian_asymmetry(flows[head_nosg.name]), seed=seed))
    r = sp.Symbol("r")
    for K, n, mu, ex, ey in ((2, 1, 1, 1, 1), (3, 2, 1, sp.Rational(3, 4), sp.Rational(5, 4))):
        claimed = balanced_slow_rate_engine(K, n, mu, float(ex), float(ey))
        rows.append(mpc.check_root(
            "engine", f"slow rate r_s, B(K={K}, n={n}, mu={mu}), eta=({ex},{ey})",
            mpc.balanced_sector_cubic(r, K, n, mu, ex, ey), r, claimed, which="smallest_positive",
            compared_with="smallest root of the docs/model.md §2 sector cubic, 30 digits", tol=1e-9))
    return rows


def write_latex(folder) -> list[Path]:
    """The engine has no derivation document of its own."""
    return []


def write_figures(folder) -> list[Path]:
    """The engine has no figures."""
    return []
