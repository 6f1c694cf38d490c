r"""Gradient flow of an edge loss: θ̇_b = −η_b ∂L/∂θ_b, derived for one generic edge.

For an edge e = (i, c) with weight p_e the force on block b is F_b(e) = −∂ℓ/∂θ_b with
every sg(·) held fixed; the assembled flow is ẋ_i = η_x Σ_c P_ic F_x(i, c),
ẏ_c = η_y Σ_i P_ic F_y(i, c), θ̇ = η_θ Σ_e p_e F_θ(e) (times the loss scale s).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy as sp

from . import polydiff
from .loss import EdgeLoss
from .stopgrad import has_stop_gradient, stop_gradient


@dataclass(frozen=True)
class EdgeFlow:
    """The derived per-edge forces of a loss (sg removed after differentiation)."""

    loss: EdgeLoss
    forces: tuple  # ((block, ImmutableMatrix F_b of the block's shape), …) learned blocks only
    forces_with_sg: tuple  # the same before sg was removed (for printing)

    def force(self, block: str) -> sp.ImmutableMatrix:
        """F_b = −∂ℓ/∂θ_b (zero matrix for a frozen block)."""
        f = dict(self.forces).get(block)
        if f is None:
            m = self.loss.block(block)
            return sp.ImmutableMatrix.zeros(*m.shape)
        return f

    @property
    def learned(self) -> tuple[str, ...]:
        return tuple(b for b in self.loss.blocks if b in self.loss.learned and len(self.loss.block(b)))

    @cached_property
    def uses_stop_gradient(self) -> bool:
        return has_stop_gradient(self.loss.expr)

    @cached_property
    def edge_jacobian(self) -> dict:
        """Sparse ∂F_b/∂θ_b' per edge for learned blocks: {(b, b'): ((row, col, expr), …)}."""
        out = {}
        for b in self.learned:
            fb = list(self.force(b))
            for b2 in self.learned:
                out[(b, b2)] = sparse_jacobian(fb, list(self.loss.block(b2)))
        return out


def sparse_jacobian(exprs, symbols) -> tuple:
    """Non-zero entries (row, col, ∂e_row/∂s_col), differentiated term by term."""
    index = {s: k for k, s in enumerate(symbols)}
    out = []
    for r, e in enumerate(exprs):
        present = sorted((s for s in e.free_symbols if s in index), key=index.get)
        for s, de in polydiff.gradient(e, present).items():
            if de != 0:
                out.append((r, index[s], de))
    return tuple(out)


def _gradient(expr: sp.Expr, symbols: sp.ImmutableMatrix, keep_sg: bool = False) -> sp.ImmutableMatrix:
    """∂expr/∂symbols with the shape of ``symbols``; each sg(a) is held fixed while differentiating.

    The result has sg(a) replaced by a (its value), or kept as sg(a) with ``keep_sg``.
    """
    held = {}

    def hold(e):
        d = sp.Dummy(f"sg{len(held)}")
        held[d] = e
        return d

    body = sp.expand(sp.sympify(expr).replace(lambda e: isinstance(e, stop_gradient), hold))
    back = {d: (e if keep_sg else e.args[0]) for d, e in held.items()}
    syms = list(symbols)
    grads = polydiff.gradient(body, syms)
    vals = [sp.expand(grads[s].xreplace(back)) for s in syms]
    return sp.ImmutableMatrix(symbols.shape[0], symbols.shape[1], vals)


def derive_flow(loss: EdgeLoss) -> EdgeFlow:
    """Derive F_b = −∂ℓ/∂θ_b for every learned block b (one edge; cost independent of N)."""
    forces, forces_sg = [], []
    for b in loss.blocks:
        sym = loss.block(b)
        if b not in loss.learned or not len(sym):
            continue
        forces_sg.append((b, -_gradient(loss.expr, sym, keep_sg=True)))
        forces.append((b, -_gradient(loss.expr, sym)))
    return EdgeFlow(loss, tuple(forces), tuple(forces_sg))


def gradient_of_value(loss: EdgeLoss, block: str) -> sp.ImmutableMatrix:
    """∂ℓ/∂θ_b of the loss *value* (sg removed first): the full gradient, no stop-gradient."""
    return _gradient(loss.value(), loss.block(block))
