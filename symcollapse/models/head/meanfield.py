r"""Mean-field ("DMFT-style") reduction of the head model by ansatz substitution into the
DERIVED flow (docs/model.md §3), and the fixed-point statements it gives.

K = 2, d = 1, antisymmetric sector: class-0 samples x_i = X + s_i, class-1 samples −X − s_i
(Σ s_i = 0, mean s² = σ²), frustrated samples t_j (Σ t_j = 0, mean t² = τ²), labels ±Y, head w.
Sums over samples of a polynomial g of degree ≤ 2 are Σ_i g(s_i) = n g(0) + n σ²/2 g''(0):
closure needs every node force affine and every head force of degree ≤ 2 in the node variables,
which is checked, not assumed. The class-separation sector (±ν_sep) is in
:mod:`symcollapse.models.head.sector`; its names are re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from ...closed_forms import meanfield_reduced_rhs
from ...errors import DerivationCheckError
from ...symbolic.flow import derive_flow
from ...symbolic.losses import head_loss
from . import graph_modes
# the sector's symbols and statements are part of this reduction's symbol table
from .sector import K_, mu_, n_, omega_, separation_nu_squared, separation_sector  # noqa: F401

# symbols of the reductions
m_ = sp.Symbol("m", positive=True)
X_, Y_, w_ = sp.symbols("X Y w", real=True)
s2_, t2_ = sp.symbols("sigma^2 tau^2", nonnegative=True)
eta_x, eta_y, eta_W = sp.symbols("eta_x eta_y eta_W", positive=True)


# --- mean-field reduction --------------------------------------------------------------
@dataclass(frozen=True)
class MeanField:
    """Reduced flow d(X, Y, σ², τ², w)/dt = rhs, with the closure residuals that were proven zero."""

    variables: tuple
    rhs: sp.ImmutableMatrix
    omega: sp.Expr
    stop_gradient: object
    closure: tuple  # (statement, residual) pairs, every residual simplified to 0

    def as_dict(self) -> dict:
        return dict(zip(self.variables, self.rhs))


def _poly_deg(expr, sym) -> int:
    e = sp.expand(expr)
    return 0 if sym not in e.free_symbols else sp.Poly(e, sym).degree()


def _sum_over(g, s, count, second_moment, what):
    r"""Σ_j g(s_j) over ``count`` values with Σ s_j = 0 and mean s_j² = second_moment."""
    if _poly_deg(g, s) > 2:
        raise DerivationCheckError(f"mean-field ansatz is not closed: {what} has degree > 2 in the deviations")
    g0 = g.subs(s, 0)
    g2 = sp.diff(g, s, 2)
    return count * (g0 + second_moment * g2 / 2)


@lru_cache(maxsize=None)
def derive_meanfield(stop_gradient=True, omega=None) -> MeanField:
    r"""Substitute the K = 2 antisymmetric ansatz into the flow derived from the d = 1 head loss.

    Returns Ẋ, Ẏ, σ̇², τ̇², ẇ with m frustrated samples (m = μ for K = 2) of weight ω/2 per edge.
    """
    om = omega_ if omega is None else sp.nsimplify(omega)
    loss = head_loss(1, stop_gradient, True)
    flow = derive_flow(loss)
    x, y = loss.x[0], loss.y[0]
    W = loss.block("W")[0]
    Fx, Fy, FW = flow.force("x")[0], flow.force("y")[0], flow.force("W")[0]
    s, t = sp.symbols("s t", real=True)
    rx, ry, rW = loss.rate("x"), loss.rate("y"), loss.rate("W")

    def at(F, xv, yv):
        return sp.expand(F.xreplace({x: xv, y: yv, W: w_}))

    closure = []
    # consistent samples of class 0 (and the antisymmetric partner of class 1)
    xdot0 = rx * at(Fx, X_ + s, Y_)
    xdot1 = rx * at(Fx, -X_ - s, -Y_)
    closure.append(("class 1 mirrors class 0: x'(−X−s, −Y) = −x'(X+s, Y)", sp.expand(xdot1 + xdot0)))
    if _poly_deg(xdot0, s) > 1:
        raise DerivationCheckError("mean-field ansatz is not closed: the sample force is not affine")
    Xdot = xdot0.subs(s, 0)
    c_sigma = sp.diff(xdot0, s)
    closure.append(("deviation flow is linear: s' = c_σ s", sp.expand(xdot0 - Xdot - c_sigma * s)))
    # frustrated samples: edges to y_0 = Y and y_1 = −Y with weight ω/2
    tdot = rx * (om / 2) * (at(Fx, t, Y_) + at(Fx, t, -Y_))
    if _poly_deg(tdot, t) > 1:
        raise DerivationCheckError("mean-field ansatz is not closed: the frustrated-sample force is not affine")
    closure.append(("frustrated centre stays at 0: t'(t=0) = 0", sp.expand(tdot.subs(t, 0))))
    c_tau = sp.diff(tdot, t)
    # labels: n consistent edges (weight 1) and m frustrated edges (weight ω/2)
    ydot0 = ry * (_sum_over(at(Fy, X_ + s, Y_), s, n_, s2_, "label force")
                  + (om / 2) * _sum_over(at(Fy, t, Y_), t, m_, t2_, "label force"))
    ydot1 = ry * (_sum_over(at(Fy, -X_ - s, -Y_), s, n_, s2_, "label force")
                  + (om / 2) * _sum_over(at(Fy, t, -Y_), t, m_, t2_, "label force"))
    closure.append(("label 1 mirrors label 0: y_1' = −y_0'", sp.expand(ydot0 + ydot1)))
    # head: sum of the edge forces over all four edge classes
    wdot = rW * (_sum_over(at(FW, X_ + s, Y_), s, n_, s2_, "head force")
                 + _sum_over(at(FW, -X_ - s, -Y_), s, n_, s2_, "head force")
                 + (om / 2) * _sum_over(at(FW, t, Y_), t, m_, t2_, "head force")
                 + (om / 2) * _sum_over(at(FW, t, -Y_), t, m_, t2_, "head force"))
    rhs = [Xdot, sp.expand(ydot0), sp.expand(2 * c_sigma * s2_), sp.expand(2 * c_tau * t2_), sp.expand(wdot)]
    rates = {rx: eta_x, ry: eta_y, rW: eta_W}
    rhs = sp.ImmutableMatrix([sp.factor(sp.expand(e.xreplace(rates))) for e in rhs])
    closure = tuple((c, sp.simplify(r)) for c, r in closure)
    bad = [c for c, r in closure if r != 0]
    if bad:
        raise DerivationCheckError(f"mean-field ansatz is not closed: {bad}")
    return MeanField((X_, Y_, s2_, t2_, w_), rhs, om, stop_gradient, closure)


def model_md_reduced(omega=2) -> sp.ImmutableMatrix:
    r"""docs/model.md §3's reduced equations (ω = 2) in this module's symbols, from the closed forms
    (:func:`symcollapse.closed_forms.meanfield_reduced_rhs`), to compare the derivation with."""
    return sp.ImmutableMatrix(meanfield_reduced_rhs(X_, Y_, s2_, t2_, w_, n_, m_, eta_x, eta_y, eta_W))


def reduced_invariant(omega=None) -> sp.Expr:
    r"""I = Σ_k ‖z_k‖²/η_k − w²/η_W in the ansatz variables: (2n(X²+σ²) + mτ²)/η_x + 2Y²/η_y − w²/η_W."""
    return (2 * n_ * (X_**2 + s2_) + m_ * t2_) / eta_x + 2 * Y_**2 / eta_y - w_**2 / eta_W


def reduced_time_derivative(mf: MeanField, expr) -> sp.Expr:
    """d expr/dt along the reduced flow."""
    return sp.simplify(sum(sp.diff(expr, v) * f for v, f in zip(mf.variables, mf.rhs)))


@lru_cache(maxsize=None)
def self_consistency(stop_gradient=True, omega=None) -> dict:
    r"""Non-trivial fixed points of the reduced flow (σ² = τ² = 0, X ≠ 0, w > 0), by sp.solve.

    Returns {'w2': w*², 'Y_over_X': Y*/X*, 'Yinf2': Y_∞² from the invariant I₀}.
    """
    mf = derive_meanfield(stop_gradient, omega)
    f = [e.subs({s2_: 0, t2_: 0}) for e in mf.rhs]
    sols = sp.solve([f[0], f[1], f[4]], [Y_, w_], dict=True)
    good = [so for so in sols if so.get(w_, 0) != 0 and sp.simplify(so[w_]).is_positive is not False
            and sp.simplify(so.get(Y_, 0)) != 0]
    good = [so for so in good if (so[w_].subs({n_: 3, m_: 1, X_: 1}).is_positive)]
    if not good:
        return {"w2": None, "Y_over_X": None, "Yinf2": None, "solutions": sols}
    so = good[0]
    w2 = sp.factor(sp.simplify(so[w_] ** 2))
    ratio = sp.simplify(so[Y_] / X_)
    I0 = sp.Symbol("I_0", real=True)
    Yinf = sp.Symbol("Y_inf", positive=True)
    wstar = sp.sqrt(w2)
    inv = reduced_invariant().subs({s2_: 0, t2_: 0, X_: Yinf / ratio.subs(w_, wstar) if ratio.has(w_) else Yinf / ratio,
                                    w_: wstar, Y_: Yinf})
    Y2 = sp.solve(sp.Eq(inv, I0), Yinf**2) or [sp.solve(sp.Eq(inv, I0), Yinf)[0] ** 2]
    return {"w2": w2, "Y_over_X": ratio, "Yinf2": sp.factor(sp.simplify(Y2[0])), "I0": I0,
            "solutions": sols}


def reduced_jacobian(stop_gradient=True, omega=None) -> sp.ImmutableMatrix:
    """∂(Ẋ, Ẏ, σ̇², τ̇², ẇ)/∂(X, Y, σ², τ², w) (symbolic)."""
    mf = derive_meanfield(stop_gradient, omega)
    return sp.ImmutableMatrix(mf.rhs.jacobian(sp.Matrix(mf.variables)))


def self_consistency_roots_mp(P, dps: int = 30) -> list:
    r"""Head eigenvalues ν of a general graph: roots of det(A − νD) = 0 (exact rational P),
    refined with mpmath.findroot to ``dps`` digits from the floating-point spectrum."""
    Pm = sp.Matrix(P).applyfunc(sp.nsimplify)
    N, K = Pm.shape
    # samples eliminated exactly (x = P y/(ν D_x)): det(ν² D_y − Pᵀ D_x⁻¹ P) = 0, a polynomial in ν²
    Dx = sp.diag(*[sum(Pm.row(i)) for i in range(N)])
    Dy = sp.diag(*[sum(Pm.col(c)) for c in range(K)])
    q = sp.Symbol("q")  # q = ν²
    poly = sp.Poly(sp.expand((q * Dy - Pm.T * Dx.inv() * Pm).det()), q)
    f = sp.lambdify(q, poly.as_expr(), "mpmath")
    vals, _ = graph_modes(np.asarray(P, dtype=float))
    starts = sorted({round(float(v * v), 10) for v in vals if abs(v) > 1e-8})
    roots = []
    with mpmath.workdps(dps + 10):
        for s0 in starts:
            r = mpmath.findroot(f, mpmath.mpf(s0))
            roots.append(r)
    with mpmath.workdps(dps):
        out = sorted({mpmath.nstr(mpmath.sqrt(r), dps): mpmath.sqrt(r) for r in roots}.values())
    return out, poly


@lru_cache(maxsize=None)
def mode_condition(stop_gradient=True, d: int = 2) -> tuple:
    r"""Single-mode fixed-point condition, derived from the edge forces.

    With Z = φ aᵀ, Aφ = νDφ, and forces affine in (x, y) without constant term,
    Σ_c P_ic F_x(φ_i a, φ_c a) = D_i φ_i [F_x(a, 0) + ν F_x(0, a)], so Ż = 0 iff
    c(a) = F_x(a, 0) + ν F_x(0, a) = 0. Returns (c(a), a, W, ν).
    """
    loss = head_loss(d, stop_gradient, True)
    flow = derive_flow(loss)
    a = sp.Matrix(sp.symbols(f"a_0:{d}", real=True))
    nu = sp.Symbol("nu", real=True)
    Fx = sp.Matrix(flow.force("x"))
    zero = {s: 0 for s in list(loss.x) + list(loss.y)}
    if any(sp.expand(e) != 0 for e in Fx.xreplace(zero)):
        raise DerivationCheckError("mode condition: the sample force has a constant term")
    at = lambda xv, yv: Fx.xreplace({**dict(zip(loss.x, xv)), **dict(zip(loss.y, yv))})  # noqa: E731
    for e in Fx:
        if _poly_deg(e.xreplace({**dict(zip(loss.x, a * sp.Symbol("p"))), **dict(zip(loss.y, a * sp.Symbol("q")))}),
                     sp.Symbol("p")) > 1:
            raise DerivationCheckError("mode condition: the sample force is not linear in x")
    c = (at(a, [0] * d) + nu * at([0] * d, a)).applyfunc(sp.expand)
    W = sp.Matrix(loss.block("W"))
    return sp.ImmutableMatrix(c), sp.ImmutableMatrix(a), sp.ImmutableMatrix(W), nu


# --- numeric side of the reduction (for comparison with the full simulation) -------------
def reduced_rhs_function(mf: MeanField, values: dict):
    """f(v) for v = (X, Y, σ², τ², w) with n, m, ω and the rates given in ``values`` (names)."""
    syms = {s.name: s for s in mf.rhs.free_symbols}
    subs = {syms[k]: v for k, v in values.items() if k in syms}
    expr = mf.rhs.xreplace(subs)
    left = expr.free_symbols - set(mf.variables)
    if left:
        raise DerivationCheckError(f"reduced flow needs values for {sorted(map(str, left))}")
    fn = sp.lambdify(list(mf.variables), list(expr), "numpy")
    return lambda v: np.array(fn(*v), dtype=float)


def ansatz_state(n: int, m: int, X: float, Y: float, s, t, w: float, d: int = 1):
    r"""Full state (Z, W) on the ansatz: class 0 at (X + s_i)e, class 1 at −(X + s_i)e, frustrated
    at t_j e, labels ±Y e, W = w e eᵀ + (I − e eᵀ), e the first axis (Σ s = Σ t = 0 enforced)."""
    s = np.asarray(s, dtype=float) - np.mean(s)
    t = np.asarray(t, dtype=float) - np.mean(t) if m else np.zeros(0)
    col = np.concatenate([X + s, -(X + s), t, [Y, -Y]])
    Z = np.zeros((len(col), d))
    Z[:, 0] = col
    W = np.eye(d)
    W[0, 0] = w
    return Z, W


def project_ansatz(n: int, m: int, Z, W):
    """(X, Y, σ², τ², w) of a full K = 2 state along the first axis (samples ordered as B(2, n, m))."""
    z = np.asarray(Z)[:, 0]
    x0, f, y = z[:n], z[2 * n:2 * n + m], z[2 * n + m:]
    X = x0.mean()
    return np.array([X, y[0], np.mean((x0 - X) ** 2), np.mean(f ** 2) if m else 0.0, np.asarray(W)[0, 0]])
