r"""Samples as a learned linear map of fixed inputs: x_i = S u_i, with S ∈ R^{d×D} shared.

The edge loss stays written in the d symbols of x. The engine derives the map's Jacobian
∂x_m/∂S_kj = δ_mk u_j from x_k = Σ_j S_kj u_j on a small generic size D₀ and composes the
chain rule F_S = −∂ℓ/∂S = (∂x/∂S)ᵀ F_x = F_x uᵀ. Each Jacobian entry involves one index
pair (k, j) only, so the identity holds for every D; the numerics apply it in matrix form,
Ṡ = η_S F_Xᵀ U (F_X the assembled N×d sample force), hence Ẋ = U Ṡᵀ = η_S G F_X, G = UUᵀ.
Optionally the composite loss ℓ(S u, y; θ) is differentiated directly and compared.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import DerivationCheckError, InvalidParameterError
from .flow import EdgeFlow, derive_flow
from .loss import LABEL, SAMPLE, EdgeLoss
from .symbols import matrix


@dataclass(frozen=True)
class LinearMapFlow:
    """The derived flow of ℓ(x = S u, y; θ): base flow in x, the map and the composed S-force.

    base        -- the engine's flow of the loss written in x (F_x, F_y, F_θ)
    name        -- the map block's name (``"S"``)
    probe_dim   -- D₀, the generic input size of the symbolic statements
    S, u        -- d×D₀ and D₀×1 symbol matrices of the probe
    map_jacobian-- ∂(S u)/∂vec(S), d × dD₀ (vec row-major), derived
    force_S     -- F_S = (∂x/∂S)ᵀ F_x at x = S u, reshaped d×D₀ (the chain rule)
    composite   -- the engine's flow of the composite loss (if it was derived), else None
    """

    base: EdgeFlow
    name: str
    probe_dim: int
    S: sp.ImmutableMatrix
    u: sp.ImmutableMatrix
    map_jacobian: sp.ImmutableMatrix
    force_S: sp.ImmutableMatrix
    composite: EdgeFlow | None

    @property
    def rate(self) -> sp.Symbol:
        """η_S, the rate symbol of the map (the sample rate of the base loss)."""
        return self.base.loss.rate(SAMPLE)


def map_structure_difference(J: sp.Matrix, u: sp.Matrix, d: int) -> sp.Matrix:
    """J − (δ_mk u_j)_{m,(k,j)}: zero iff ∂x_m/∂S_kj = δ_mk u_j (the form valid for every D)."""
    D0 = len(u)
    ref = sp.Matrix(d, d * D0, lambda m, c: u[c % D0] if c // D0 == m else 0)
    return sp.expand(sp.Matrix(J) - ref)


def composite_loss(loss: EdgeLoss, S: sp.Matrix, u: sp.Matrix, name: str = "S") -> EdgeLoss:
    """ℓ(S u, y; θ) as an EdgeLoss with S a shared block and u per-sample data."""
    sub = dict(zip(loss.x, S * u))
    rates = [(name, loss.rate(SAMPLE)), (LABEL, loss.rate(LABEL))]
    rates += [(b, loss.rate(b)) for b in loss.shared_names]
    learned = {name} | (set(loss.learned) - {SAMPLE})
    return EdgeLoss(loss.expr.xreplace(sub), None, loss.y, shared=((name, S),) + tuple(loss.shared),
                    data=u, rates=tuple(rates), learned=frozenset(learned),
                    name=f"{loss.name}[x={name}u]")


def derive_linear_map(loss: EdgeLoss, name: str = "S", probe_dim: int = 2,
                      check_composite: bool = False) -> LinearMapFlow:
    """Derive the flow of ℓ(x = S u, …) by the chain rule through the linear map x = S u.

    The map Jacobian is derived from x = S u at D₀ = ``probe_dim`` and checked to have the
    D-independent form δ_mk u_j; with ``check_composite`` the composite loss is also
    differentiated directly and every force compared (exact, symbolic). Raises
    DerivationCheckError on any disagreement.
    """
    if not len(loss.x):
        raise InvalidParameterError("the loss must be written in a sample vector x (x must not be empty)")
    if loss.data is not None:
        raise InvalidParameterError("the loss already has per-sample data; a linear sample map needs data=None")
    if SAMPLE not in loss.learned:
        raise InvalidParameterError("the sample block 'x' must be learned for x = S u to move")
    if name in loss.blocks:
        raise InvalidParameterError(f"the map name must differ from the loss blocks {loss.blocks}; got {name!r}")
    if not isinstance(probe_dim, int) or probe_dim < 1:
        raise InvalidParameterError(f"probe_dim must be an integer >= 1; got {probe_dim!r}")
    d = len(loss.x)
    S = matrix(name, d, probe_dim) if (d, probe_dim) != (1, 1) else sp.ImmutableMatrix([[sp.Symbol(f"{name}_0_0", real=True)]])
    u = sp.ImmutableMatrix([sp.Symbol(f"u_{j}", real=True) for j in range(probe_dim)])
    taken = {s.name for s in loss.expr.free_symbols}
    clash = taken & {s.name for s in (*S, *u)}
    if clash:
        raise InvalidParameterError(f"the loss already uses the symbols {sorted(clash)}; choose another map name")
    xs = S * u
    J = xs.jacobian(list(S))
    if any(e != 0 for e in map_structure_difference(J, u, d)):
        raise DerivationCheckError(f"{loss.name}: ∂(Su)/∂S is not δ_mk u_j")
    base = derive_flow(loss)
    sub = dict(zip(loss.x, xs))
    Fx = sp.Matrix(base.force(SAMPLE)).xreplace(sub)
    FS = sp.ImmutableMatrix(d, probe_dim, list(sp.expand(J.T * Fx)))
    composite = None
    if check_composite:
        composite = derive_flow(composite_loss(loss, S, u, name))
        pairs = [(composite.force(name), FS, f"F_{name}")]
        pairs += [(composite.force(b), sp.Matrix(base.force(b)).xreplace(sub), f"F_{b}")
                  for b in base.learned if b != SAMPLE]
        for got, want, what in pairs:
            if any(e != 0 for e in sp.expand(sp.Matrix(got) - sp.Matrix(want))):
                raise DerivationCheckError(
                    f"{loss.name}: {what} of the composite loss ℓ(S u, …) differs from the chain rule")
    return LinearMapFlow(base, name, probe_dim, sp.ImmutableMatrix(S), u, sp.ImmutableMatrix(J), FS, composite)


def induced_sample_flow(lm: LinearMapFlow, U: sp.Matrix, FX: sp.Matrix) -> tuple[sp.Matrix, sp.Matrix]:
    """(Ẋ = U Ṡᵀ with Ṡ = η_S Σ_i F_X,i u_iᵀ, η_S G F_X) for an N×D₀ input matrix U and an
    N×d assembled sample force F_X: the two sides of the induced-flow identity."""
    U = sp.Matrix(U)
    FX = sp.Matrix(FX)
    eta = lm.rate
    Sdot = eta * FX.T * U
    return sp.expand(U * Sdot.T), sp.expand(eta * (U * U.T) * FX)
