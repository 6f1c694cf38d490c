r"""Derived linear stability of the head model's fixed-point families on the balanced ensemble,
one head direction and one symmetry sector at a time (docs/model.md §3.1).

At a fixed point with a symmetric head W = Σ_i w_i e_i e_iᵀ (orthonormal e_i, kept modes
Z = Σ_{j∈S} φ_j ℓ_j e_jᵀ, w_j = ν_j) the linearised stop-gradient flow splits into d blocks, one
per head direction i: the column u = δZ e_i and the row entries ω_j = δW_ij (j ∈ S),
    u̇ = −w_i H [ (w_i D − A) u + D Σ_{j∈S} φ_j ℓ_j ω_j ],
    ω̇_j = −η_W ℓ_j [ (w_i − ν_j) φ_jᵀ D u + ℓ_j ω_j ],
plus d − |S| free-head zero modes (δW_ij, j ∉ S). On the balanced ensemble u splits further into
the sectors that H, D and A leave invariant: the uniform (centre-of-mass) sector and K − 1 class-
separation patterns (coordinates X, F, Y: consistent samples, frustrated samples, labels), and the
one-coordinate deviation sectors (within a class, within a pair, the pair sector) where A u = 0.

Here the sector-reduced flow  Ȧ = −H_s D_s (A Wᵀ − M A) W,  Ẇ = −η_W (W AᵀGA − AᵀGMA)
(Z = U A, U the sector embedding; D⁻¹A U = U M, G = UᵀDU) is written in SymPy for one head
direction plus one direction per kept mode of the sector, its fixed point is verified, its
Jacobian is taken by SymPy, the (u, ω) subspace is proven invariant, and the block's
characteristic polynomial is reduced with ν² = ν_s² and divided by λ^{|κ|} (one gauge zero mode
per kept mode, proven). The remaining polynomial's Hurwitz conditions are the stability
conditions. Nothing here is numeric.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from ...errors import DerivationCheckError, InvalidParameterError
from .meanfield import eta_W, eta_x, eta_y
from .sector import K_, mu_, n_, omega_, separation_sector

w_ = sp.Symbol("w", real=True)  # head eigenvalue of the perturbed direction
nu_ = sp.Symbol("nu", real=True)  # |ν| of the sector's non-zero modes (ν² = the sector's ν²)
lam_ = sp.Symbol("lambda")
PARAMS = (K_, n_, mu_, omega_, eta_x, eta_y, eta_W)

#: sector kinds: 'uniform' (centre of mass; ν = ±1, 0), 'sep' (one class-separation pattern, K ≥ 3;
#: ν = ±ν_s, 0), 'sep2' (the K = 2 separation pattern: frustrated samples do not enter; ν = ±ν_s),
#: 'xdev' / 'fdev' (deviations of consistent / frustrated samples and the pair sector; ν = 0).
SECTORS = ("uniform", "sep", "sep2", "xdev", "fdev")


@dataclass(frozen=True)
class Sector:
    """A sector of the balanced ensemble: coordinates, D⁻¹A on them (M), the number of nodes ×
    pattern norm² (counts), degrees and rates of each coordinate, and ν² of its non-zero modes."""

    name: str
    coords: tuple
    M: sp.ImmutableMatrix
    counts: tuple
    degrees: tuple
    rates: tuple
    nu2: sp.Expr | None

    @property
    def G(self) -> sp.ImmutableMatrix:
        """UᵀDU = diag(count · degree): the D-metric on the sector coordinates."""
        return sp.ImmutableMatrix(sp.diag(*[c * g for c, g in zip(self.counts, self.degrees)]))

    def mode(self, sign: int) -> sp.ImmutableMatrix:
        r"""Eigenvector ψ of M for ν = sign·ν (sign ±1) or the deviation mode (sign 0, 1 coordinate):
        ψ = (1, M_FY, ν) for (X, F, Y), (1, ν) for (X, Y)."""
        if self.nu2 is None:
            if sign != 0:
                raise InvalidParameterError(f"sector {self.name} has only ν = 0 modes; got sign {sign}")
            return sp.ImmutableMatrix([1])
        if sign not in (1, -1):
            raise InvalidParameterError(f"sector {self.name}: kept modes have sign +1 or -1; got {sign}")
        v = sign * nu_
        if self.coords == ("X", "F", "Y"):
            return sp.ImmutableMatrix([1, self.M[1, 2], v])
        return sp.ImmutableMatrix([1, v])


def _degree_y():
    return n_ + (K_ - 1) * mu_ * omega_ / 2


@lru_cache(maxsize=None)
def sector(name: str) -> Sector:
    r"""The sector's D⁻¹A matrix by neighbour sums (the class-separation one is
    :func:`~symcollapse.models.head.sector.separation_sector`), checked: ν² from det(λ − M)."""
    if name not in SECTORS:
        raise InvalidParameterError(f"sector must be one of {SECTORS}; got {name!r}")
    dy = _degree_y()
    rates3 = (eta_x, eta_x, eta_y)
    if name == "uniform":
        # a consistent sample sees its label; a frustrated one its two labels (weight ω/2 each);
        # a label sees n consistent samples and μ(K−1) frustrated ones (weight ω/2)
        M = sp.ImmutableMatrix([[0, 0, 1], [0, 0, 1], [n_ / dy, (K_ - 1) * mu_ * omega_ / (2 * dy), 0]])
        sec = Sector(name, ("X", "F", "Y"), M, (K_ * n_, mu_ * K_ * (K_ - 1) / 2, K_), (1, omega_, dy), rates3, None)
    elif name == "sep":
        M, _ = separation_sector()
        sec = Sector(name, ("X", "F", "Y"), M, (n_, mu_ * (K_ - 2), 1), (1, omega_, dy), rates3, None)
    elif name == "sep2":
        M, _ = separation_sector()
        M2 = sp.ImmutableMatrix([[M[0, 0], M[0, 2]], [M[2, 0], M[2, 2]]])
        sec = Sector(name, ("X", "Y"), M2, (n_, 1), (1, dy), (eta_x, eta_y), None)
    elif name == "xdev":
        return Sector(name, ("X",), sp.ImmutableMatrix([[0]]), (1,), (1,), (eta_x,), None)
    else:
        return Sector(name, ("F",), sp.ImmutableMatrix([[0]]), (1,), (omega_,), (eta_x,), None)
    c = len(sec.coords)
    cp = sp.Poly(sp.expand(sp.cancel((lam_ * sp.eye(c) - sec.M).det())), lam_).all_coeffs()
    # det(λ − M) = λ^{c−2} (λ² − ν²): the odd/zero coefficients vanish
    if any(sp.cancel(cp[k]) != 0 for k in range(1, len(cp)) if k != 2):
        raise DerivationCheckError(f"sector {name}: det(λ − M) is not λ^{c - 2}(λ² − ν²): {cp}")
    nu2 = sp.factor(sp.cancel(-cp[2]))
    return Sector(sec.name, sec.coords, sec.M, sec.counts, sec.degrees, sec.rates, nu2)


def _reduce(expr, nu2):
    """expr as a rational function with ν² replaced by the sector's ν² (cancelled)."""
    e = sp.cancel(sp.together(expr))
    if nu2 is None or not e.has(nu_):
        return e
    num, den = sp.fraction(e)
    out = []
    for part in (num, den):
        p = sp.Poly(sp.expand(part), nu_)
        out.append(sum(c * nu2 ** (k // 2) * nu_ ** (k % 2) for (k,), c in p.terms()))
    return sp.cancel(out[0] / out[1])


# abstract sector constants: D⁻¹A entries, degrees g and counts c of the coordinates. The block is
# derived in these (polynomial arithmetic, fast); the sector's values are substituted afterwards.
m_FY, m_YX, r_F = sp.symbols("m_FY m_YX r_F", real=True)
G_Y = sp.Symbol("G_Y", positive=True)  # D-metric weight of the label coordinate
G_SYM = {c: sp.Symbol(f"g_{c}", positive=True) for c in "XFY"}  # degrees


def _abstract(sec: Sector):
    """(M, degrees, G, ν²) of the sector in abstract constants, all polynomial, and their values.
    G M is symmetric (G = diag(count·degree), the D-metric), which fixes G by M and the label weight
    G_Y: G_X = G_Y m_YX, G_F = G_Y r with m_YF = r m_FY; checked against the derived M and counts."""
    cs = sec.coords
    g = [G_SYM[c] for c in cs]
    if cs == ("X", "F", "Y"):
        M = sp.Matrix([[0, 0, 1], [0, 0, m_FY], [m_YX, r_F * m_FY, 0]])
        G = [G_Y * m_YX, G_Y * r_F, G_Y]
        nu2 = m_YX + r_F * m_FY ** 2
        values = {m_FY: sec.M[1, 2], m_YX: sec.M[2, 0], r_F: sp.cancel(sec.M[2, 1] / sec.M[1, 2])}
    elif cs == ("X", "Y"):
        M = sp.Matrix([[0, 1], [m_YX, 0]])
        G = [G_Y * m_YX, G_Y]
        nu2 = m_YX
        values = {m_YX: sec.M[1, 0]}
    else:
        M, G, nu2, values = sp.Matrix([[0]]), [G_Y], None, {}
    values.update({G_Y: sec.counts[-1] * sec.degrees[-1]})
    values.update({gs: v for gs, v in zip(g, sec.degrees)})
    weights = [c * dg for c, dg in zip(sec.counts, sec.degrees)]
    if any(sp.cancel(a - b) != 0 for a, b in zip(M.xreplace(values), sec.M)) or \
            any(sp.cancel(sp.sympify(a).xreplace(values) - b) != 0 for a, b in zip(G, weights)):
        raise DerivationCheckError(f"sector {sec.name}: D⁻¹A is not of the form {M} with G M symmetric")
    return M, g, G, nu2, values


def _poly_reduce(expr, nu2):
    """A polynomial with ν² replaced by the sector's ν² (a polynomial in the abstract constants)."""
    e = sp.expand(expr)
    if nu2 is None or not e.has(nu_):
        return e
    p = sp.Poly(e, nu_)
    return sp.expand(sum(c * nu2 ** (k // 2) * nu_ ** (k % 2) for (k,), c in p.terms()))


@dataclass(frozen=True)
class Block:
    r"""One head direction (eigenvalue w) × one sector with kept modes κ (signs of their ν; amplitude
    symbols α_j, node-space column α_j U ψ_j): the block matrix, λ^{|κ|}·p(λ) its characteristic
    polynomial, p's coefficients (ascending, leading 1) and its Hurwitz conditions (all > 0 ⟺ stable).
    Everything is written in the abstract sector constants (m_FY, m_YX, r_F, G_Y, degrees g_*) whose values
    are ``values`` (:meth:`in_parameters` substitutes them)."""

    sector: Sector
    kept: tuple
    alphas: tuple
    matrix: sp.ImmutableMatrix
    coefficients: tuple  # c_0 … c_{deg−1} of p(λ) = λ^deg + Σ c_k λ^k
    hurwitz: tuple  # expressions that must all be > 0 for every root of p to have Re < 0
    values: dict

    @property
    def degree(self) -> int:
        return len(self.coefficients)

    @property
    def constants(self) -> tuple:
        """The abstract sector constants the coefficients depend on (sorted by name)."""
        return tuple(sorted(self.values, key=str))

    def polynomial(self) -> sp.Expr:
        return lam_ ** self.degree + sum(c * lam_ ** k for k, c in enumerate(self.coefficients))

    def in_parameters(self, expr) -> sp.Expr:
        """expr with the sector constants written in K, n, μ, ω."""
        return sp.sympify(expr).xreplace(self.values)


def hurwitz_conditions(coeffs) -> tuple:
    r"""Routh–Hurwitz for λ^m + c_{m−1}λ^{m−1} + … + c_0, m ≤ 3: m = 1: c_0 > 0; m = 2: c_0, c_1 > 0;
    m = 3: c_2 > 0, c_0 > 0, c_2 c_1 − c_0 > 0."""
    c = list(coeffs)
    if len(c) == 1:
        return (c[0],)
    if len(c) == 2:
        return (c[0], c[1])
    if len(c) == 3:
        return (c[2], c[0], sp.expand(c[2] * c[1] - c[0]))
    raise InvalidParameterError(f"Hurwitz conditions are written out for degree ≤ 3; got {len(c)}")


@lru_cache(maxsize=None)
def derive_block(sector_name: str, kept: tuple = ()) -> Block:
    r"""The (u, ω) block of one head direction in one sector with kept modes ``kept`` (signs), derived
    from the SymPy Jacobian of the sector-reduced flow with q = 1 + |κ| head directions at its fixed
    point A = [0 | α_j ψ_j], W = diag(w, ν_j). Checks (DerivationCheckError on failure): the fixed
    point, the invariance of the (u, ω) subspace, and the λ^{|κ|} gauge factor."""
    sec = sector(sector_name)
    kept = tuple(int(s) for s in kept)
    if sec.nu2 is None and any(s != 0 for s in kept) or sec.nu2 is not None and any(s == 0 for s in kept):
        raise InvalidParameterError(f"kept modes of sector {sector_name} must have signs "
                                    f"{'0' if sec.nu2 is None else '±1'}; got {kept}")
    if len(set(kept)) != len(kept):
        raise InvalidParameterError(f"each mode of a sector is kept at most once per block; got {kept}")
    M, gs, Gd, nu2, values = _abstract(sec)
    c, q = len(sec.coords), 1 + len(kept)
    A = sp.Matrix(c, q, lambda r, s: sp.Symbol(f"a_{r}{s}"))
    W = sp.Matrix(q, q, lambda r, s: sp.Symbol(f"W_{r}{s}"))
    Hs = sp.diag(*sec.rates)
    Ds = sp.diag(*gs)
    G = sp.diag(*Gd)
    Adot = -Hs * Ds * (A * W.T - M * A) * W
    Wdot = -eta_W * (W * A.T * G * A - A.T * G * M * A)
    flow = sp.Matrix(list(Adot) + list(Wdot))  # row-major
    variables = list(A) + list(W)
    alphas = tuple(sp.Symbol(f"alpha_{j + 1}", positive=True) for j in range(len(kept)))
    nus = [s * nu_ if nu2 is not None else sp.S.Zero for s in kept]
    at = {A[r, 0]: 0 for r in range(c)}
    for j, s in enumerate(kept):
        psi = _abstract_mode(sec, s)
        at.update({A[r, j + 1]: alphas[j] * psi[r] for r in range(c)})
    at.update({W[r, s]: 0 for r in range(q) for s in range(q) if r != s})
    at.update({W[0, 0]: w_, **{W[j + 1, j + 1]: nus[j] for j in range(len(kept))}})
    if not all(_poly_reduce(e.xreplace(at), nu2) == 0 for e in flow):
        raise DerivationCheckError(f"sector {sector_name}, kept {kept}: the state is not a fixed point")
    blk = [r * q for r in range(c)] + [c * q + s for s in range(1, q)]  # u = A[:, 0], ω_j = W[0, j]
    Jac = flow.jacobian([variables[k] for k in blk]).xreplace(at)  # the columns of the (u, ω) variables
    other = [k for k in range(len(variables)) if k not in blk]
    if not all(_poly_reduce(Jac[r, a], nu2) == 0 for r in other for a in range(len(blk))):
        raise DerivationCheckError(f"sector {sector_name}, kept {kept}: the (u, ω) subspace of one "
                                   "head direction is not invariant under the Jacobian")
    Jb = sp.ImmutableMatrix(len(blk), len(blk), lambda a, b: _poly_reduce(Jac[blk[a], b], nu2))
    cp = [_poly_reduce(x, nu2) for x in Jb.charpoly(lam_).all_coeffs()[::-1]]  # ascending, monic
    z = len(kept)
    if not all(cp[k] == 0 for k in range(z)):
        raise DerivationCheckError(f"sector {sector_name}, kept {kept}: no λ^{z} gauge factor in the "
                                   "characteristic polynomial")
    if cp[-1] != 1:
        raise DerivationCheckError("characteristic polynomial is not monic")
    red = tuple(cp[z:-1])
    return Block(sec, kept, alphas, Jb, red, hurwitz_conditions(red), values)


def _abstract_mode(sec: Sector, sign: int):
    """ψ in abstract constants: (1, m_FY, ν), (1, ν) or (1,)."""
    if sec.nu2 is None:
        return [1]
    return [1, m_FY, sign * nu_] if len(sec.coords) == 3 else [1, sign * nu_]


def amplitude_norm2(sector_name: str, sign: int) -> sp.Expr:
    r"""ψᵀGψ: the squared D-norm of the node-space mode U ψ (ℓ_j = α_j √(ψᵀGψ))."""
    sec = sector(sector_name)
    psi = sp.Matrix(sec.mode(sign))
    return _reduce((psi.T * sp.Matrix(sec.G) * psi)[0], sec.nu2)


def invariant_weight(sector_name: str, sign: int) -> sp.Expr:
    r"""ψᵀ G_H ψ with G_H = UᵀH⁻¹U = diag(count / rate): the weight of α² in Σ_k ‖z_k‖²/η_k."""
    sec = sector(sector_name)
    psi = sp.Matrix(sec.mode(sign))
    GH = sp.diag(*[cnt / r for cnt, r in zip(sec.counts, sec.rates)])
    return _reduce((psi.T * GH * psi)[0], sec.nu2)
