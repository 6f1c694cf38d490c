r"""Conserved quantities of a symbolic flow θ̇ = f(θ).

Linear invariants: all c with c·f(θ) ≡ 0 (found by matching the coefficients of every
monomial of c·f to zero and taking the null space). A proposed invariant I is verified
by simplifying dI/dt = ∇I·f to zero.
"""
from __future__ import annotations

import sympy as sp

from . import polydiff
from .assemble import SymbolicSystem


def linear_invariants(system: SymbolicSystem) -> list[sp.ImmutableMatrix]:
    """A basis of {c : c·f ≡ 0}: each c (column, entries in the rate symbols) gives I = c·θ."""
    state = list(system.state)
    sset = set(state)
    n = len(state)
    rows = {}
    for k, f in enumerate(system.flow):
        for t in polydiff.terms(f):
            split = polydiff.split_monomial(t, sset)
            if split is None:
                raise ValueError("linear_invariants needs a flow polynomial in the state")
            coeff, mono = split
            key = tuple(sorted(map(str, mono)))
            rows.setdefault(key, [sp.S.Zero] * n)[k] += coeff
    if not rows:
        return [sp.ImmutableMatrix(sp.eye(n)[:, k]) for k in range(n)]
    M = sp.Matrix([r for r in rows.values()])
    return [sp.ImmutableMatrix(sp.simplify(v)) for v in M.nullspace(simplify=True)]


def invariant_rate(expr, system: SymbolicSystem) -> sp.Expr:
    """dI/dt = ∇I·f along the flow (simplified)."""
    return sp.simplify(system.time_derivative(expr))


def verify_invariant(expr, system: SymbolicSystem) -> bool:
    """True if dI/dt simplifies to 0 identically."""
    return invariant_rate(expr, system) == 0
