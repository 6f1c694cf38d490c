r"""Conserved quantities of a symbolic flow θ̇ = f(θ).

Linear invariants: all c with c·f(θ) ≡ 0 (found by matching the coefficients of every
monomial of c·f to zero and taking the null space). A proposed invariant I is verified
by simplifying dI/dt = ∇I·f to zero.

Quadratic invariants: all symmetric Q with d(θᵀQθ)/dt ≡ 0, found the same way — dI/dt is
linear in the unknown entries Q_pq, so matching every monomial to zero is a linear system
whose null space (over the rate symbols) is the space of quadratic invariants.
"""
from __future__ import annotations

import sympy as sp

from ..deprecation import moved_names
from ..errors import InvalidParameterError
from ..verification import identity
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


# --- quadratic invariants ------------------------------------------------------------------
QUADRATIC_ANSATZ = ("diagonal", "block", "full")


class QuadraticInvariant:
    """I = θᵀ Q θ with Q symmetric (entries in the rate symbols) and dI/dt ≡ 0 on the flow."""

    __slots__ = ("Q", "state", "expr")

    def __init__(self, Q: sp.ImmutableMatrix, state: tuple):
        self.Q = sp.ImmutableMatrix(Q)
        self.state = tuple(state)
        v = sp.Matrix(self.state)
        self.expr = sp.expand((v.T * self.Q * v)[0, 0])

    def __repr__(self) -> str:
        return f"QuadraticInvariant({self.expr})"

    def _repr_latex_(self) -> str:
        return f"$I = {sp.latex(self.expr)}$"


def _pairs(system: SymbolicSystem, ansatz: str) -> list[tuple[int, int]]:
    """The (p, q), p ≤ q, allowed to carry a coefficient Q_pq under the chosen ansatz.

    diagonal: p = q; block: p, q in the same row of the same block (one node's vector, or one
    shared block); full: all pairs.
    """
    n = len(system.state)
    if ansatz == "diagonal":
        return [(p, p) for p in range(n)]
    if ansatz == "full":
        return [(p, q) for p in range(n) for q in range(p, n)]
    index = {s: k for k, s in enumerate(system.state)}
    groups = []
    for name, m in system.blocks.items():
        m = sp.Matrix(m)
        if name in ("x", "y"):
            groups.extend([index[s] for s in m.row(r)] for r in range(m.rows))
        else:
            groups.append([index[s] for s in m])
    return [(p, q) for g in groups for a, p in enumerate(sorted(g)) for q in sorted(g)[a:]]


def quadratic_invariants(system: SymbolicSystem, ansatz: str = "block") -> list[QuadraticInvariant]:
    """A basis of the quadratic forms I = θᵀQθ (Q symmetric, within ``ansatz``) with dI/dt ≡ 0.

    dI/dt = Σ_{p≤q} Q_pq (θ_q f_p + θ_p f_q) is linear in the unknown Q_pq; every monomial of
    the state must vanish, which gives a linear system whose null space (over the rate
    symbols) is returned. Unknowns forced to zero by a one-entry row are eliminated first, so
    the ansatz 'full' stays tractable on tiny systems. Products of linear invariants appear
    too when the flow has them (they are quadratic invariants as well).
    """
    if not isinstance(system, SymbolicSystem):
        raise InvalidParameterError(f"system must be a SymbolicSystem (assemble_symbolic); got {type(system).__name__}")
    if ansatz not in QUADRATIC_ANSATZ:
        raise InvalidParameterError(f"ansatz must be one of {QUADRATIC_ANSATZ}; got {ansatz!r}")
    state = list(system.state)
    sset = set(state)
    pairs = _pairs(system, ansatz)
    flow_terms = []
    for f in system.flow:
        split = []
        for t in polydiff.terms(f):
            s = polydiff.split_monomial(t, sset)
            if s is None:
                raise InvalidParameterError("system: quadratic_invariants needs a flow polynomial in the state")
            split.append(s)
        flow_terms.append(split)
    rows: dict = {}
    for u, (p, q) in enumerate(pairs):
        for a, b in ((p, q), (q, p)) if p != q else ((p, p),):
            mult = 2 if p == q else 1
            for coeff, mono in flow_terms[a]:
                key = tuple(sorted(map(str, mono + (state[b],))))
                row = rows.setdefault(key, {})
                row[u] = row.get(u, sp.S.Zero) + mult * coeff
    rows = [{u: c for u, c in ((u, sp.expand(c)) for u, c in r.items()) if c != 0} for r in rows.values()]
    rows = [r for r in rows if r]
    alive = set(range(len(pairs)))
    changed = True
    while changed:  # an equation with one unknown forces it to zero
        changed = False
        for r in rows:
            live = [u for u in r if u in alive]
            if len(live) == 1:
                alive.discard(live[0])
                changed = True
    cols = sorted(alive)
    if not cols:
        return []
    M = sp.Matrix([[r.get(u, sp.S.Zero) for u in cols] for r in rows
                   if any(u in alive for u in r)]) if rows else sp.zeros(0, len(cols))
    basis = M.nullspace(simplify=True) if M.rows else [sp.eye(len(cols))[:, k] for k in range(len(cols))]
    out = []
    n = len(state)
    for v in basis:
        v = _normalise(sp.Matrix(v), system, cols, pairs)
        Q = sp.zeros(n, n)
        for k, u in enumerate(cols):
            p, q = pairs[u]
            if p == q:
                Q[p, p] = v[k]
            else:
                Q[p, q] = Q[q, p] = v[k] / 2
        out.append(QuadraticInvariant(Q, tuple(state)))
    return out


def _normalise(v: sp.Matrix, system: SymbolicSystem, cols, pairs) -> sp.Matrix:
    """Scale a null vector so that its first non-zero coefficient (of θ_pθ_q) is 1/η_b when
    θ_p and θ_q belong to the same block b (so I reads Σ θ²/η_b …), else 1."""
    block_of = {}
    for name, m in system.blocks.items():
        for s in sp.Matrix(m):
            block_of[s] = name
    lead = next(k for k, e in enumerate(v) if e != 0)
    p, q = pairs[cols[lead]]
    bp, bq = block_of.get(system.state[p]), block_of.get(system.state[q])
    target = 1 / system.rates[bp] if bp == bq and bp in system.rates else sp.S.One
    scale = target / v[lead]
    return sp.Matrix([sp.factor(sp.simplify(e * scale)) for e in v])


def invariant_check(I, system: SymbolicSystem, *, model: str = "invariants", claim: str | None = None):
    """A verification row: dI/dt along the assembled flow simplifies to 0."""
    expr = I.expr if isinstance(I, QuadraticInvariant) else I
    return identity(model, claim or f"dI/dt = 0 for I = {expr}", system.time_derivative(expr),
                    "dI/dt = ∇I·θ̇ on the assembled flow")


# LaTeX of the invariants is an output (symcollapse.outputs.latex)
MOVED = {"invariants_latex": "symcollapse.outputs.latex"}
__getattr__ = moved_names(__name__, MOVED)
