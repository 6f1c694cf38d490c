r"""Model (d): an EMA target, BYOL-style (docs/model.md §6).

Each online embedding predicts the EMA target of its partner:
ℓ = ½(‖x − sg(ξ_y)‖² + ‖y − sg(ξ_x)‖²) (the gradient term), and the targets follow the online
embeddings, Ξ̇ = τ(Z − Ξ) (a relaxation term, not a gradient). Together
Ż = −H(DZ − AΞ), Ξ̇ = τ(Z − Ξ); per component Σ_C (z_k/η_k + D_kk ξ_k/τ) is conserved.

The whole model is this package plus one line in :mod:`symcollapse.models.registry`: the engine
derives and compiles the gradient term from the loss, :mod:`symcollapse.numerics.terms` adds the
relaxation term and checks both, :class:`symcollapse.models.base.Model` supplies flow, loss,
simulation.
"""
from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from ...numerics.kernels import compile_loss
from ...numerics.system import FlowSystem
from ...numerics.terms import BlockColumns, ComposedSystem, RelaxationTerm, verify_terms
from ...symbolic.assemble import SymbolicSystem, assemble_symbolic
from ...symbolic.flow import derive_flow
from ...symbolic.loss import EdgeLoss
from ...symbolic.stopgrad import sg
from ...symbolic.symbols import rate, sqnorm, vector
from ...symbolic.terms import add_relaxation
from ...validation import check_array, check_int, check_rate, check_real
from ..base import Model
from ..couplings import balanced_couplings
from ..graph_model import OnGraph, coupling_graph, model_latex

__all__ = ["EMATargetModel", "ema_loss", "ema_symbolic_system", "TAU"]

#: the EMA rate symbol τ
TAU = rate("tau")

BLOCKS = ("x", "y", "xi_x", "xi_y")


@lru_cache(maxsize=None)
def ema_loss(d: int) -> EdgeLoss:
    r"""ℓ = ½(‖x − sg(ξ_y)‖² + ‖y − sg(ξ_x)‖²): node variables (x, ξ_x) of a sample and (y, ξ_y)
    of a label, 2d components each (the targets get no force: they sit inside sg)."""
    d = check_int("d", d, 1)
    x, y = vector("x", d), vector("y", d)
    xi_x, xi_y = vector("xi_x", d), vector("xi_y", d)
    expr = sp.Rational(1, 2) * (sqnorm(x - sg(xi_y)) + sqnorm(y - sg(xi_x)))
    return EdgeLoss(expr, sp.Matrix.vstack(x, xi_x), sp.Matrix.vstack(y, xi_y), name=f"ema_d{d}")


def ema_symbolic_system(P, d: int = 1) -> SymbolicSystem:
    """The assembled symbolic flow on a small graph: gradient term + ξ̇ = τ(z − ξ)."""
    base = assemble_symbolic(derive_flow(ema_loss(d)), P)
    targets, sources = [], []
    for b in ("x", "y"):
        M = base.blocks[b]
        for r in range(M.rows):
            for k in range(d):
                sources.append(M[r, k])
                targets.append(M[r, d + k])
    return add_relaxation(base, targets, TAU, sources)


class EMATargetModel(OnGraph, Model):
    """Online embeddings Z and EMA targets Ξ on the graph of P: Ż = −s·H(DZ − AΞ), Ξ̇ = τ(Z − Ξ).

    State: the block dict {'x': N×d, 'y': K×d, 'xi_x': N×d, 'xi_y': K×d}.
    """

    def __init__(self, P, d: int = 2, eta_x: float = 1.0, eta_y: float = 1.0, tau: float = 1.0, *,
                 scale: float = 1.0):
        self.graph = coupling_graph(P)
        self.d = check_int("d", d, 1)
        self.eta_x = check_rate("eta_x", eta_x)
        self.eta_y = check_rate("eta_y", eta_y)
        self.tau = check_rate("tau", tau)
        self.scale = check_real("scale", scale, 0.0, None, strict_min=True)

    @classmethod
    def example(cls) -> "EMATargetModel":
        """B(K=2, n=2, μ=1), d = 2, τ = 0.5 (conformance test)."""
        return cls(balanced_couplings(2, 2, 1), d=2, eta_x=1.0, eta_y=0.7, tau=0.5)

    # --- engine objects ----------------------------------------------------------------------
    @property
    def edge_loss(self) -> EdgeLoss:
        return ema_loss(self.d)

    @cached_property
    def gradient_system(self) -> FlowSystem:
        return FlowSystem(compile_loss(self.edge_loss), self.graph, scale=self.scale,
                          rates={"x": self.eta_x, "y": self.eta_y})

    @cached_property
    def system(self) -> ComposedSystem:
        g, d = self.gradient_system, self.d
        views = {"x": BlockColumns("x", 0, d), "y": BlockColumns("y", 0, d),
                 "xi_x": BlockColumns("x", d, 2 * d), "xi_y": BlockColumns("y", d, 2 * d)}
        terms = [RelaxationTerm(g.layout, BlockColumns(b, d, 2 * d), self.tau, BlockColumns(b, 0, d),
                                name=f"EMA target of {b}") for b in ("x", "y")]
        return ComposedSystem(g, terms, views)

    def verify(self, seed: int = 0, tol: float = 1e-6) -> dict:
        """Self-check of every term at a random state (see numerics.terms.verify_terms)."""
        rng = np.random.default_rng(check_int("seed", seed, 0))
        return verify_terms(self.system, rng.normal(size=self.system.size), tol)

    def _repr_latex_(self) -> str:
        return model_latex("EMATargetModel", self.edge_loss, N=self.N, K=self.K, d=self.d,
                           eta_x=self.eta_x, eta_y=self.eta_y, tau=self.tau)

    # --- state ------------------------------------------------------------------------------
    def blocks(self, state) -> dict:
        st = super().blocks(state)
        shapes = {"x": (self.N, self.d), "y": (self.K, self.d), "xi_x": (self.N, self.d), "xi_y": (self.K, self.d)}
        return {b: check_array(b, st.get(b), shape=shapes[b]) for b in BLOCKS}

    def initial_state(self, seed: int = 0) -> dict:
        """x_i ~ 0.1·N(0, I_d), y_c ~ N(0, I_d) (docs/model.md §1) and Ξ(0) = Z(0)."""
        rng = np.random.default_rng(check_int("seed", seed, 0))
        X = 0.1 * rng.standard_normal((self.N, self.d))
        Y = rng.standard_normal((self.K, self.d))
        return {"x": X, "y": Y, "xi_x": X.copy(), "xi_y": Y.copy()}

    @cached_property
    def eta(self) -> np.ndarray:
        """s·η_k of every node (samples first)."""
        return self.scale * np.concatenate([np.full(self.N, self.eta_x), np.full(self.K, self.eta_y)])

    def invariants(self, state) -> np.ndarray:
        r"""Σ_{k∈C} (z_k/(sη_k) + D_kk ξ_k/τ) for each connected component C: (n_components, d)."""
        st = self.blocks(state)
        Z = np.vstack([st["x"], st["y"]])
        Xi = np.vstack([st["xi_x"], st["xi_y"]])
        n, lab = self.graph.components
        out = np.zeros((n, self.d))
        np.add.at(out, lab, Z / self.eta[:, None] + self.graph.degree[:, None] * Xi / self.tau)
        return out

    def decay_rates(self) -> np.ndarray:
        """Eigenvalues of −J (J the assembled Jacobian, d = 1 columns), sorted by real part."""
        m = self if self.d == 1 else EMATargetModel(self.graph, 1, self.eta_x, self.eta_y, self.tau,
                                                     scale=self.scale)
        J = m.system.jacobian(np.zeros(m.system.size)).toarray()
        ev = np.linalg.eigvals(-J)
        return ev[np.argsort(ev.real)]
