r"""Conserved quantities of a matrix-level flow, found for every d and every graph (docs/model.md §7).

Candidates are the block sums and Gram forms of the learned blocks (node blocks summed over
their nodes, shared blocks as they are):

    T = Σ_i x_i,  Σ_i x_i x_iᵀ,  Σ_c y_c,  Σ_c y_c y_cᵀ,  M,  M Mᵀ,  MᵀM   (M a shared block).

Along θ̇_b = η_b Σ_e p_e F_b(e) each derivative is an edge sum, e.g.
d/dt Σ_i x_i x_iᵀ = η_x Σ_e p_e (F_x x_eᵀ + x_e F_xᵀ) and d/dt M Mᵀ = η_M Σ_e p_e (F_M Mᵀ + M F_Mᵀ),
so I = Σ_k c_k T_k (candidates of one shape) is conserved on every graph when the per-edge chain
sum Σ_k c_k η_{b_k} D_k(F) vanishes identically. Every chain's coefficient is linear in the c_k:
the null space of that linear system is the space of matrix invariants, and dI/dt = 0 is then
re-proved by recomputing the chain sum (it is exactly empty). Trace-level invariants tr(Σ c_k T_k)
are found the same way after collecting chains equal up to rotation and transposition.

Each invariant is cross-checked against the component level (:func:`cross_check_invariants`):
written out at d = 1, 2, 3 on a small graph it must be conserved by the assembled component flow
(dI/dt simplified to 0) and lie in the span of the quadratic (or linear) invariants that the
component-level discovery finds there; a disagreement raises :class:`DerivationCheckError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ..errors import DerivationCheckError
from . import matcalc as mc
from .assemble import SymbolicSystem, assemble_symbolic
from .flow import derive_flow
from .invariants import linear_invariants, quadratic_invariants
from .loss import LABEL, SAMPLE
from .matrix_flow import MatrixFlow, _dim_sets

#: the small graph of the component cross-check: samples x₀, x₁, x₂ and labels y₀, y₁ (a path
#: x₀–y₀–x₁–y₁–x₂ with one frustrated sample x₁), the graph of the invariant-discovery demo
CHECK_GRAPH = ((1, 0), (1, 1), (0, 1))
CHECK_INPUTS = ((1, 0), (1, 1), (0, 1))
#: from this d on the component cross-check runs at exact rational rates (see cross_check_invariants)
NUMERIC_RATES_FROM = 3
_RATIONALS = ((3, 7), (5, 11), (13, 17), (2, 19), (23, 29), (31, 37), (41, 43), (47, 53))


@dataclass(frozen=True)
class Candidate:
    """One candidate term: ``form`` 'sum' (Σ n or M), 'gram' (Σ n nᵀ or M Mᵀ) or 'gramT' (MᵀM)."""

    block: str
    form: str
    shape: tuple  # symbolic shape of the term


@dataclass(frozen=True, eq=False)
class MatrixInvariant:
    r"""I = Σ_k c_k T_k, conserved by the flow on every graph; ``level`` 'matrix' (the matrix I
    itself) or 'trace' (only tr I)."""

    flow: MatrixFlow
    terms: tuple    # ((Candidate, coefficient), …), coefficients in the rates and parameters
    level: str

    def evaluate(self, blocks: dict):
        """I on explicit (SymPy or NumPy) blocks: {'x': N×d rows, 'y': K×d rows, shared: matrices}."""
        total = None
        for cand, c in self.terms:
            v = _term_value(cand, blocks[cand.block])
            if self.level == "trace":  # the terms may have different (square) shapes
                v = v.trace()
            total = c * v if total is None else total + c * v
        return total

    def latex(self) -> str:
        """LaTeX in matrix notation, e.g. Σ_i x_i x_iᵀ/η_x + Σ_c y_c y_cᵀ/η_y − WᵀW/η_W."""
        loss = self.flow.loss
        out = ""
        for n, (cand, c) in enumerate(self.terms):
            tex = _term_latex(cand, loss)
            c = sp.nsimplify(c)
            sign = "-" if sp.sympify(c).could_extract_minus_sign() else "+"
            mag = -c if sign == "-" else c
            num, den = sp.fraction(sp.factor(mag))
            if num == 1:
                body = tex if den == 1 else rf"\frac{{{tex}}}{{{sp.latex(den)}}}"
            else:
                body = rf"{sp.latex(mag)}\, {tex}"
            out += (("- " if sign == "-" else "") if n == 0 else f" {sign} ") + body
        return rf"\operatorname{{tr}}\left({out}\right)" if self.level == "trace" else out


def _term_value(cand: Candidate, arr):
    is_sym = isinstance(arr, sp.MatrixBase)
    A = arr if is_sym else np.asarray(arr, dtype=float)
    T = (lambda m: m.T)
    if cand.block in (SAMPLE, LABEL):  # rows are the node vectors
        if cand.form == "sum":
            ones = sp.ones(1, A.shape[0]) if is_sym else np.ones((1, A.shape[0]))
            return T(ones * A if is_sym else ones @ A)
        return T(A) * A if is_sym else A.T @ A
    if cand.form == "sum":
        return A
    if cand.form == "gram":
        return A * T(A) if is_sym else A @ A.T
    return T(A) * A if is_sym else A.T @ A


def _term_latex(cand: Candidate, loss) -> str:
    name = sp.latex(loss.block(cand.block))
    if cand.block in (SAMPLE, LABEL):
        idx = "i" if cand.block == SAMPLE else "c"
        v = f"{name}_{{{idx}}}"
        return rf"\sum_{{{idx}}} {v}" if cand.form == "sum" else rf"\sum_{{{idx}}} {v} {v}^{{T}}"
    if cand.form == "sum":
        return name
    return rf"{name} {name}^{{T}}" if cand.form == "gram" else rf"{name}^{{T}} {name}"


def _candidates(flow: MatrixFlow) -> list[Candidate]:
    loss = flow.loss
    out = []
    for b in flow.learned:
        r, c = loss.block(b).shape
        if b in (SAMPLE, LABEL):
            out += [Candidate(b, "sum", (r, 1)), Candidate(b, "gram", (r, r))]
        else:
            out += [Candidate(b, "sum", (r, c)), Candidate(b, "gram", (r, r)), Candidate(b, "gramT", (c, c))]
    return out


def candidate_rate(flow: MatrixFlow, cand: Candidate) -> dict:
    """d T/dt per edge (a chain sum, without the edge weight p_e), e.g. η_x (F_x xᵀ + x F_xᵀ)."""
    loss = flow.loss
    F = flow.forces[cand.block]
    eta = loss.rate(cand.block)
    n = {(mc.sym_letter(loss.block(cand.block).name),): sp.S.One}
    if cand.form == "sum":
        out = F
    elif cand.form == "gram":
        out = mc.add(mc.product(F, mc.transpose(n)), mc.product(n, mc.transpose(F)))
    else:
        out = mc.add(mc.product(mc.transpose(F), n), mc.product(mc.transpose(n), F))
    return mc.scale(out, eta)


def _null_space(rates: list[dict]) -> list[list]:
    """Coefficient vectors c with Σ_k c_k rates[k] ≡ 0 (every chain's coefficient zero)."""
    chains = sorted({ch for r in rates for ch in r}, key=repr)
    if not chains:
        return [[sp.S.One if j == k else sp.S.Zero for j in range(len(rates))] for k in range(len(rates))]
    M = sp.Matrix([[r.get(ch, sp.S.Zero) for r in rates] for ch in chains])
    return [list(v) for v in M.nullspace(simplify=True)]


def _normalised(v: list, cands: list, loss) -> list:
    k0 = next(k for k, c in enumerate(v) if c != 0)
    scale = 1 / (loss.rate(cands[k0].block) * v[k0])
    return [sp.factor(sp.simplify(c * scale)) for c in v]


@lru_cache(maxsize=None)
def matrix_invariants(flow: MatrixFlow, check: bool = True) -> tuple[MatrixInvariant, ...]:
    """A basis of the matrix invariants (per shape) and of the trace-level invariants that are
    not traces of matrix ones; each re-proved (dI/dt chain sum exactly empty) and, with
    ``check``, cross-checked against the component level at d = 1, 2, 3."""
    loss = flow.loss
    cands = _candidates(flow)
    rates = {c: candidate_rate(flow, c) for c in cands}
    found = []
    shapes = []
    for c in cands:
        if c.shape not in shapes:
            shapes.append(c.shape)
    for shape in shapes:
        group = [c for c in cands if c.shape == shape]
        for v in _null_space([rates[c] for c in group]):
            v = _normalised(v, group, loss)
            found.append(MatrixInvariant(flow, tuple((c, k) for c, k in zip(group, v) if k != 0), "matrix"))
    # trace level: square Gram candidates, chains collected up to rotation/transposition
    # (tr MᵀM = tr M Mᵀ: one Gram candidate per shared block)
    square = [c for c in cands if c.form != "gramT" and sp.sympify(c.shape[0] - c.shape[1]) == 0]
    traced = [mc.cyclic_canonical(rates[c]) for c in square]
    matrix_traces = [_as_trace(inv, square) for inv in found]
    matrix_traces = [t for t in matrix_traces if t is not None]
    basis = _null_space(traced)
    if len(basis) > len(matrix_traces):
        # keep the trace-level vectors not spanned by traces of the matrix invariants
        known = [t for t in matrix_traces]
        for v in basis:
            v = _normalised(v, square, loss)
            if sp.Matrix(known + [v]).rank(simplify=True) > len(known):
                known.append(v)
                found.append(MatrixInvariant(flow, tuple((c, k) for c, k in zip(square, v) if k != 0), "trace"))
    for inv in found:
        prove(inv)
    out = tuple(found)
    if check:
        cross_check_invariants(flow, out)
    return out


def _as_trace(inv: MatrixInvariant, square: list):
    """The coefficient vector of tr I over the trace candidates (MᵀM counted as M Mᵀ), or None."""
    out = [sp.S.Zero] * len(square)
    for c, k in inv.terms:
        if sp.sympify(c.shape[0] - c.shape[1]) != 0:
            return None
        key = Candidate(c.block, "gram", c.shape) if c.form == "gramT" else c
        key = next((j for j, s in enumerate(square) if (s.block, s.form) == (key.block, key.form)), None)
        if key is None:
            return None
        out[key] += k
    return out


def invariant_rate(inv: MatrixInvariant) -> dict:
    """dI/dt per edge as a chain sum (collected up to rotation for a trace-level invariant)."""
    total = mc.add(*[mc.scale(candidate_rate(inv.flow, c), k) for c, k in inv.terms])
    return mc.cyclic_canonical(total) if inv.level == "trace" else total


def prove(inv: MatrixInvariant) -> None:
    """dI/dt = Σ_k c_k dT_k/dt ≡ 0 by the trace calculus (the chain sum is exactly empty)."""
    rest = {ch: k for ch, k in invariant_rate(inv).items() if sp.simplify(k) != 0}
    if rest:
        raise DerivationCheckError(f"{inv.flow.loss.name}: matrix invariant {inv.latex()} is not conserved: "
                                   f"{len(rest)} chains of dI/dt do not cancel")


def cross_check_invariants(flow: MatrixFlow, invariants, sizes=(1, 2, 3)) -> dict:
    """See :func:`_cross_check` (the result is kept per flow, invariants and sizes in this process)."""
    return dict(_cross_check(flow, tuple(invariants), tuple(sizes)))


@lru_cache(maxsize=None)
def _cross_check(flow: MatrixFlow, invariants: tuple, sizes: tuple) -> dict:
    """Each invariant written out at the sizes ``sizes`` (d = 1, 2, 3; a second size D cycles so
    that it differs from d) on :data:`CHECK_GRAPH`: conserved by the
    assembled component flow, and in the span of the component-level invariants found there
    (linear invariants for block sums, quadratic ones for Gram forms); returns {d: count}.
    At d ≥ :data:`NUMERIC_RATES_FROM` the rates and parameters are fixed exact rationals (distinct,
    unrelated values: an identity in the rates holds there too, and the discovery's linear algebra
    runs over QQ instead of rational functions)."""
    loss = flow.loss
    report = {}
    for dims in _dim_sets(loss, sizes):
        d = dims.get("d", min(dims.values()))
        comp = loss.component(**dims)
        data = None
        if loss.data is not None:
            D = loss.shape("u", dims)[0]
            data = [[sp.Integer((i + k) % 3 - 1) for k in range(D)] for i in range(len(CHECK_GRAPH))]
        S = assemble_symbolic(derive_flow(comp), [list(r) for r in CHECK_GRAPH], data=data)
        at = {}
        if d >= NUMERIC_RATES_FROM:  # exact rational rates: the discovery then works over QQ
            symbols = sorted({r for r in dict(loss.rates).values() if isinstance(r, sp.Symbol)}
                             | set(loss.parameters), key=lambda t: t.name)
            at = {r: sp.Rational(p, q) for r, (p, q) in zip(symbols, _RATIONALS)}
            S = SymbolicSystem(S.state, sp.ImmutableMatrix(S.flow.xreplace(at)), S.blocks,
                               {b: sp.sympify(v).xreplace(at) for b, v in S.rates.items()})
        blocks = dict(S.blocks)
        lin = quad = None
        n = 0
        for inv in invariants:
            I = inv.evaluate(blocks)
            I = I.xreplace(at) if at else I
            entries = list(I) if isinstance(I, sp.MatrixBase) else [I]
            linear = all(c.form == "sum" for c, _ in inv.terms)
            if linear and lin is None:
                lin = [sp.Matrix(c).T * sp.Matrix(S.state) for c in linear_invariants(S)]
                lin = [e[0] for e in lin]
            if not linear and quad is None:
                quad = [q.expr for q in quadratic_invariants(S, "full" if d == 1 else "block")]
            space = lin if linear else quad
            for e in entries:
                e = sp.expand(e)
                if e == 0:
                    continue
                if sp.expand(S.time_derivative(e)) != 0:
                    raise DerivationCheckError(f"{loss.name}: matrix invariant {inv.latex()} is not conserved by "
                                               f"the component flow at d = {d}")
                if not _in_span(e, space, S.state):
                    raise DerivationCheckError(f"{loss.name}: matrix invariant {inv.latex()} at d = {d} is not "
                                               "among the invariants the component-level discovery finds")
                n += 1
        report[d] = n
    return report


def _in_span(expr, basis, state) -> bool:
    """expr = Σ a_j basis_j for constants a_j (in the rates), by matching monomials."""
    if not basis:
        return False
    a = sp.symbols(f"a0:{len(basis)}")
    resid = sp.expand(expr - sum(ai * b for ai, b in zip(a, basis)))
    eqs = sp.Poly(resid, *state).coeffs()
    return bool(sp.solve(eqs, a, dict=True)) or all(sp.simplify(e) == 0 for e in eqs)


__all__ = ["MatrixInvariant", "Candidate", "matrix_invariants", "cross_check_invariants", "prove",
           "candidate_rate", "invariant_rate", "CHECK_GRAPH"]
