r"""Gradient flow of an edge loss: θ̇_b = −η_b ∂L/∂θ_b, derived for one generic edge.

For an edge e = (i, c) with weight p_e the force on block b is F_b(e) = −∂ℓ/∂θ_b with
every sg(·) held fixed; the assembled flow is ẋ_i = η_x Σ_c P_ic F_x(i, c),
ẏ_c = η_y Σ_i P_ic F_y(i, c), θ̇ = η_θ Σ_e p_e F_θ(e) (times the loss scale s).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy as sp
from sympy.core.sorting import default_sort_key

from ..errors import InvalidParameterError
from . import polydiff
from .loss import EdgeLoss
from .stopgrad import has_stop_gradient, normalize_stop_gradient, stop_gradient


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

    def _repr_latex_(self) -> str:
        """Notebook display: F_b = −∂ℓ/∂θ_b per learned block, sg kept where it acted."""
        rows = [f"F_{{{b}}} &= {sp.latex(f)}" for b, f in self.forces_with_sg]
        return "$\\begin{aligned}" + " \\\\ ".join(rows) + "\\end{aligned}$"


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


def _hold_stop_gradients(expr):
    """Replace each sg(a) by a fresh symbol: (body, {symbol: sg(a)})."""
    held = {}

    def hold(e):
        d = sp.Dummy(f"sg{len(held)}")
        held[d] = e
        return d

    body = normalize_stop_gradient(expr).replace(lambda e: isinstance(e, stop_gradient), hold)
    return body, held


def _ring_gradients(expr, blocks):
    """Fast path: [(−∂ℓ/∂θ_b with sg kept, with sg removed) for each block], computed in a
    sparse polynomial ring with each sg(a) as an independent generator; None if ℓ is not a
    polynomial with rational coefficients (then the general path is used)."""
    body, held = _hold_stop_gradients(expr)
    args = {d: e.args[0] for d, e in held.items()}
    if any(a.free_symbols & set(held) for a in args.values()):
        return None  # nested sg: general path
    gens = set(body.free_symbols)
    for a in args.values():
        gens |= a.free_symbols
    for b in blocks:
        gens |= set(b)
    gens = sorted(gens, key=default_sort_key)
    rp = polydiff.sparse_poly(body, gens)
    if rp is None:
        return None
    R, p = rp
    pos = {g: k for k, g in enumerate(R.symbols)}
    subs = []
    for d, a in args.items():
        ra = polydiff.sparse_poly(a, gens) if a.free_symbols else None
        if ra is None and a.free_symbols:
            return None
        subs.append((R.gens[pos[d]], ra[1] if ra is not None else R(a)))
    keep = {d: stop_gradient(polydiff.expand(a)) for d, a in args.items()}
    out = []
    for b in blocks:
        grads = [p.diff(R.gens[pos[s]]) for s in b]
        with_sg = [polydiff.as_expr(-g) for g in grads]
        if held:
            with_sg = [e.xreplace(keep) for e in with_sg]
        value = [polydiff.as_expr(-g.compose(subs)) for g in grads] if subs else with_sg
        out.append((sp.ImmutableMatrix(b.shape[0], b.shape[1], with_sg),
                    sp.ImmutableMatrix(b.shape[0], b.shape[1], value)))
    return out


def _gradient(expr: sp.Expr, symbols: sp.ImmutableMatrix, keep_sg: bool = False) -> sp.ImmutableMatrix:
    """∂expr/∂symbols with the shape of ``symbols``; each sg(a) is held fixed while differentiating.

    The result has sg(a) replaced by a (its value), or kept as sg(a) with ``keep_sg``.
    """
    fast = _ring_gradients(expr, [symbols])
    if fast is not None:
        return -fast[0][0 if keep_sg else 1]
    body, held = _hold_stop_gradients(expr)
    body = sp.expand(body)
    back = {d: (e if keep_sg else e.args[0]) for d, e in held.items()}
    syms = list(symbols)
    grads = polydiff.gradient(body, syms)
    vals = [sp.expand(grads[s].xreplace(back)) for s in syms]
    return sp.ImmutableMatrix(symbols.shape[0], symbols.shape[1], vals)


def derive_flow(loss: EdgeLoss) -> EdgeFlow:
    """Derive F_b = −∂ℓ/∂θ_b for every learned block b (one edge; cost independent of N)."""
    if not isinstance(loss, EdgeLoss):
        raise InvalidParameterError(f"loss must be an EdgeLoss; got {type(loss).__name__}")
    names = [b for b in loss.blocks if b in loss.learned and len(loss.block(b))]
    fast = _ring_gradients(loss.expr, [loss.block(b) for b in names])
    if fast is not None:
        forces_sg = [(b, f_sg) for b, (f_sg, _) in zip(names, fast)]
        forces = [(b, f) for b, (_, f) in zip(names, fast)]
    else:
        forces_sg = [(b, -_gradient(loss.expr, loss.block(b), keep_sg=True)) for b in names]
        forces = [(b, -_gradient(loss.expr, loss.block(b))) for b in names]
    return EdgeFlow(loss, tuple(forces), tuple(forces_sg))


def gradient_of_value(loss: EdgeLoss, block: str) -> sp.ImmutableMatrix:
    """∂ℓ/∂θ_b of the loss *value* (sg removed first): the full gradient, no stop-gradient."""
    return _gradient(loss.value(), loss.block(block))
