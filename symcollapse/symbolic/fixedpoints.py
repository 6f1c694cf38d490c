r"""Fixed points of a linear symbolic flow θ̇ = J θ, and the end state selected by its invariants.

Fixed points: the null space of J (solved with SymPy). For a flow whose non-zero rates are all
decay rates, θ(∞) is the fixed point with the initial state's linear invariants c·θ:
θ* = Σ_j α_j n_j with c_k·θ* = c_k·θ(0) for every invariant c_k.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import DerivationCheckError
from .assemble import SymbolicSystem
from .invariants import linear_invariants


@dataclass(frozen=True)
class FixedPointSet:
    """θ* = Σ_j α_j basis[j]: the solutions of J θ = 0."""

    state: tuple
    jacobian: sp.ImmutableMatrix
    basis: tuple  # null-space vectors (columns)

    @property
    def dimension(self) -> int:
        return len(self.basis)

    def general(self, prefix: str = "alpha") -> tuple:
        """(Σ_j α_j n_j, (α_j)) with fresh symbols α_j."""
        alphas = tuple(sp.Dummy(f"{prefix}{j}") for j in range(self.dimension))
        out = sp.zeros(len(self.state), 1)
        for a, v in zip(alphas, self.basis):
            out += a * sp.Matrix(v)
        return sp.ImmutableMatrix(out), alphas


def linear_flow_matrix(system: SymbolicSystem) -> sp.ImmutableMatrix:
    """J with θ̇ = J θ; refuses a flow that is not linear and homogeneous in the state."""
    state = list(system.state)
    f = sp.Matrix(system.flow)
    J = f.jacobian(state)
    sset = set(state)
    if any(e.free_symbols & sset for e in J):
        raise DerivationCheckError("the flow is not linear in the state: fixed points are not a null space")
    if any(sp.expand(e) != 0 for e in f.xreplace({s: 0 for s in state})):
        raise DerivationCheckError("the flow has a constant term: not homogeneous")
    return sp.ImmutableMatrix(J)


def linear_fixed_points(system: SymbolicSystem) -> FixedPointSet:
    """All fixed points of a linear flow: the null space of J (rates kept symbolic)."""
    J = linear_flow_matrix(system)
    basis = tuple(sp.ImmutableMatrix(sp.simplify(v)) for v in sp.Matrix(J).nullspace(simplify=True))
    return FixedPointSet(system.state, J, basis)


def end_state(system: SymbolicSystem, initial: dict | None = None) -> dict:
    """θ(∞) as a function of θ(0): the fixed point carrying the initial invariants.

    ``initial`` maps each state symbol to its initial value (default: the symbol with suffix
    ``^0``: x0_0 -> the symbol 'x0_0^0', printed x^{0}_{0 0}).
    """
    fps = linear_fixed_points(system)
    invs = linear_invariants(system)
    if len(invs) != fps.dimension:
        raise DerivationCheckError(
            f"{len(invs)} invariants for a {fps.dimension}-dimensional fixed-point set: end state not unique")
    if initial is None:
        initial = {s: sp.Symbol(f"{s.name}^0", real=True) for s in system.state}
    z0 = sp.Matrix([initial[s] for s in system.state])
    zstar, alphas = fps.general()
    eqs = [sp.expand((sp.Matrix(c).T * (sp.Matrix(zstar) - z0))[0, 0]) for c in invs]
    sol = sp.solve(eqs, alphas, dict=True)
    if len(sol) != 1:
        raise DerivationCheckError(f"the invariants do not fix the end state uniquely: {sol}")
    final = sp.Matrix(zstar).xreplace(sol[0])
    return {s: sp.factor(sp.simplify(e)) for s, e in zip(system.state, final)}
