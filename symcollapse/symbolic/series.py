r"""Roots of a sector's characteristic polynomial: perturbative series and singular limits.

- Regular perturbation: a simple root r₀ of p(r; 0) continues as r = r₀ + Σ_k c_k ε^k; order
  by order, [ε^k] p(r(ε); ε) = c_k ∂_r p(r₀; 0) + (known) = 0.
- Fast labels (η_y → ∞): p = p₀ + η_y p₁ with p₁ quadratic in r; the finite roots tend to those
  of p₁ (the reduced quadratic), the third diverges like η_y.
- The balanced ensemble in the frustration fraction ε = m/N, m = μK(K−1)/2, N = Kn + m.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import DerivationCheckError, InvalidParameterError


def perturbative_root(poly: sp.Expr, r: sp.Symbol, eps: sp.Symbol, r0, order: int) -> sp.Expr:
    """r(ε) = r₀ + Σ_{k=1}^{order} c_k ε^k solving p(r(ε); ε) = 0 order by order (simple root r₀)."""
    if order < 1:
        raise InvalidParameterError(f"order must be an integer >= 1; got {order}")
    p0 = sp.expand(poly.subs(eps, 0))
    if sp.simplify(p0.subs(r, r0)) != 0:
        raise DerivationCheckError(f"r0 = {r0} is not a root of the unperturbed polynomial")
    slope = sp.simplify(sp.diff(p0, r).subs(r, r0))
    if slope == 0:
        raise DerivationCheckError("r0 is a multiple root: the regular perturbation series does not apply")
    coeffs = []
    for k in range(1, order + 1):
        ck = sp.Symbol(f"c_{k}")
        trial = r0 + sum(c * eps**j for j, c in enumerate(coeffs, start=1)) + ck * eps**k
        expanded = sp.expand(poly.subs(r, trial))
        at_k = sp.expand(sp.series(expanded, eps, 0, k + 1).removeO().coeff(eps, k))
        sol = sp.solve(at_k, ck)
        if len(sol) != 1:
            raise DerivationCheckError(f"order {k}: no unique coefficient ({sol})")
        coeffs.append(sp.factor(sol[0]))
    return r0 + sum(c * eps**j for j, c in enumerate(coeffs, start=1))


def fast_limit_polynomial(poly: sp.Expr, r: sp.Symbol, rate: sp.Symbol) -> sp.Expr:
    """p₁ in p = p₀ + rate·p₁ (p must be affine in the rate): its roots are the finite roots as rate → ∞."""
    P = sp.Poly(sp.expand(poly), rate)
    if P.degree() != 1:
        raise DerivationCheckError(f"the polynomial must be affine in {rate}; degree {P.degree()}")
    return sp.expand(P.all_coeffs()[0])


def frustration_substitution(n, mu, K, eps: sp.Symbol) -> dict:
    """{μ: μ(ε, n, K)} from ε = m/(Kn + m), m = μK(K−1)/2 (solved by SymPy)."""
    m = mu * K * (K - 1) / 2
    sol = sp.solve(sp.Eq(eps, m / (K * n + m)), mu)
    if len(sol) != 1:
        raise DerivationCheckError(f"cannot solve ε = m/N for μ uniquely: {sol}")
    return {mu: sol[0]}


def smallest_root(poly: sp.Expr, r: sp.Symbol, samples: list[dict]) -> sp.Expr:
    """The root of ``poly`` (solved in closed form) that is smallest at every sample point."""
    roots = sp.solve(poly, r)
    if not roots:
        raise DerivationCheckError("the polynomial has no closed-form roots")
    best = None
    for point in samples:
        vals = [complex(sp.N(rt.subs(point), 30)) for rt in roots]
        if any(abs(v.imag) > 1e-20 for v in vals):
            raise DerivationCheckError(f"complex root at {point}: rates must be real")
        k = min(range(len(roots)), key=lambda j: vals[j].real)
        if best is None:
            best = k
        elif best != k:
            raise DerivationCheckError("the smallest root changes branch between sample points")
    return sp.simplify(roots[best])


def _clean(expr: sp.Expr) -> sp.Expr:
    """Factor, with square roots of perfect squares taken (sqrt((K−1)²) = K − 1 for K ≥ 1)."""
    expr = sp.expand(expr).replace(lambda e: e.is_Pow and e.exp.is_Rational and e.exp.q == 2,
                                   lambda e: sp.Pow(sp.factor(e.base), e.exp))
    return sp.factor(sp.expand(expr))


@dataclass(frozen=True)
class SlowRateSeries:
    """Derived forms of the slow (collapse) rate of the balanced class-separation sector."""

    leading_mu: sp.Expr  # r_s ≈ c₁ μ (leading order in μ)
    fast_quadratic: sp.Expr  # reduced quadratic (η_y → ∞) in r, n, μ
    fast_quadratic_eps: sp.Expr  # the same in ε (numerator, n cancelled)
    fast_closed_form: sp.Expr  # its smaller root in ε
    fast_series: sp.Expr  # series of the closed form in ε
    eps: sp.Symbol
    order: int


def slow_rate_series(sector, omega=2, order: int = 3) -> SlowRateSeries:
    """Leading order in μ, and the fast-label closed form and series in ε, of the sector's slow root."""
    S = sector.symbols
    r, ex, ey, n, mu, K = (S[k] for k in ("r", "eta_x", "eta_y", "n", "mu", "K"))
    poly = sector.charpoly
    if "omega" in S and omega is not None:
        poly = sp.expand(poly.subs(S["omega"], omega))
    lead = perturbative_root(poly, r, mu, sp.S.Zero, 1)
    quad = fast_limit_polynomial(poly, r, ey)
    eps = sp.Symbol("epsilon", positive=True)
    q_eps = sp.factor(quad.subs(frustration_substitution(n, mu, K, eps)))
    num, _ = sp.fraction(sp.together(q_eps))
    num = sp.expand(num)
    # keep only the factor that contains r (n and constant prefactors drop out)
    factors = [f for f, _ in sp.factor_list(num)[1] if f.has(r)]
    if len(factors) != 1:
        raise DerivationCheckError(f"reduced quadratic does not factor as expected: {factors}")
    q_r = sp.expand(factors[0])
    samples = [{K: 2, eps: sp.Rational(1, 10), ex: 1}, {K: 3, eps: sp.Rational(3, 10), ex: 2},
               {K: 10, eps: sp.Rational(1, 2), ex: sp.Rational(1, 3)}]
    closed = smallest_root(q_r, r, samples)
    ser = sp.expand(sp.series(closed, eps, 0, order + 1).removeO())
    ser = sp.Add(*[_clean(ser.coeff(eps, k)) * eps**k for k in range(order + 1)])
    return SlowRateSeries(sp.factor(lead), quad, q_r, closed, ser, eps, order)
