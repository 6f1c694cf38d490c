r"""Symbolic assembly of a derived edge flow on a small concrete graph.

θ̇_b = s·η_b Σ_e p_e F_b(e) written out with one symbol per state entry; used for the
exact symbolic statements (invariants, fixed points, closure on small instances). The
numeric kernels never go through this: its size grows with N.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .flow import EdgeFlow
from .loss import LABEL, SAMPLE


@dataclass(frozen=True)
class SymbolicSystem:
    """state: symbols in state order; flow: column of their time derivatives; blocks: name ->
    matrix of state symbols (samples X as N×d, labels Y as K×d, shared blocks)."""

    state: tuple
    flow: sp.ImmutableMatrix
    blocks: dict
    rates: dict

    def time_derivative(self, expr) -> sp.Expr:
        """dI/dt = ∇I · θ̇ along the flow."""
        return sp.expand(sum(sp.diff(expr, s) * f for s, f in zip(self.state, self.flow)))


def assemble_symbolic(flow: EdgeFlow, P, *, data=None, scale=1, frozen: dict | None = None) -> SymbolicSystem:
    """Write out the flow on the graph of P (entries numbers or SymPy expressions).

    Samples get symbols x{i}_{k}, labels y{c}_{k}; shared blocks keep the loss's own symbols;
    frozen shared blocks are substituted by ``frozen[name]`` (a matrix) if given.
    """
    loss = flow.loss
    P = sp.Matrix(P)
    N, K = P.shape
    d = len(loss.y)
    dx = len(loss.x)
    X = sp.Matrix(N, dx, lambda i, k: sp.Symbol(f"x{i}_{k}", real=True)) if dx else None
    Y = sp.Matrix(K, d, lambda c, k: sp.Symbol(f"y{c}_{k}", real=True))
    subs_shared = {}
    for name in loss.shared_names:
        if name not in flow.learned and frozen and name in frozen:
            subs_shared.update(dict(zip(loss.block(name), sp.Matrix(frozen[name]))))
    blocks = {}
    if dx and SAMPLE in flow.learned:
        blocks[SAMPLE] = X
    if LABEL in flow.learned:
        blocks[LABEL] = Y
    for name in loss.shared_names:
        if name in flow.learned:
            blocks[name] = sp.Matrix(loss.block(name))
    out = {b: sp.zeros(*m.shape) for b, m in blocks.items()}
    for i in range(N):
        for c in range(K):
            p = P[i, c]
            if p == 0:
                continue
            sub = dict(subs_shared)
            if dx:
                sub.update(dict(zip(loss.x, X.row(i))))
            if data is not None:
                sub.update(dict(zip(loss.data_symbols, sp.Matrix(data).row(i))))
            sub.update(dict(zip(loss.y, Y.row(c))))
            for b in blocks:
                F = sp.Matrix(flow.force(b)).xreplace(sub)
                if b == SAMPLE:
                    out[b][i, :] += p * F.T
                elif b == LABEL:
                    out[b][c, :] += p * F.T
                else:
                    out[b] += p * F.reshape(*out[b].shape)
    state, fl = [], []
    rates = {b: loss.rate(b) for b in blocks}
    for b, m in blocks.items():
        state.extend(m)
        fl.extend(sp.expand(scale * rates[b] * e) for e in out[b])
    return SymbolicSystem(tuple(state), sp.ImmutableMatrix(fl), blocks, rates)
