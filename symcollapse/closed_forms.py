r"""The specification's closed forms, each written once (docs/model.md §2, §3, §6).

These are the REFERENCE the derived objects are compared with: they are typed from the
specification, independently of the engine (no derivation is re-run here). Jobs, checks,
tests and benchmarks import them instead of typing them again.

Every function is written over its arguments only, so it serves both uses: pass SymPy symbols
(e.g. those of a derived sector's ``.symbols`` table, or of :mod:`symcollapse.symbolic.symbols`)
to get an expression to compare symbolically, or numbers/NumPy arrays to get a value.
This module imports no other part of the package (it sits at the bottom of the layer order,
beside :mod:`symcollapse.errors`).
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

__all__ = [
    "sector_matrix", "sector_cubic", "sector_cubic_coefficients", "sector_rates", "slow_rate",
    "slow_rate_leading_mu", "slow_rate_fast_labels", "slow_rate_fast_labels_series",
    "slow_rate_k2_fast_labels", "class_end_point", "embedding_invariants", "weighted_mean",
    "head_edge_forces", "head_invariant", "nu_sep_squared", "nu_sep_squared_k2",
    "meanfield_reduced_rhs", "meanfield_w_star_squared", "meanfield_y_over_x", "meanfield_y_inf_squared",
    "ema_edge_forces", "ema_component_end_value", "ema_sector_blocks", "ema_sector_polynomial", "ema_sector_rates", "ema_invariants", "ema_end_state",
]


def _sqrt(v):
    return sp.sqrt(v) if isinstance(v, sp.Basic) else math.sqrt(v)


# --- §2 embedding-only model: the class-separation sector (ω = 2) ------------------------------
def sector_matrix(K, n, mu, eta_x, eta_y) -> sp.Matrix:
    r"""The sector matrix on (X, F, Y), ω = 2 (docs/model.md §2):
    [[−η_x, 0, η_x], [0, −2η_x, η_x], [η_y n, η_y μ(K−2), −η_y(n + (K−1)μ)]]."""
    return sp.Matrix([[-eta_x, 0, eta_x],
                      [0, -2 * eta_x, eta_x],
                      [eta_y * n, eta_y * mu * (K - 2), -eta_y * (n + (K - 1) * mu)]])


def sector_cubic_coefficients(K, n, mu, eta_x, eta_y) -> list:
    r"""[1, a₂, a₁, a₀] of the sector cubic r³ + a₂r² + a₁r + a₀ (docs/model.md §2)."""
    return [1,
            -(3 * eta_x + eta_y * n + (K - 1) * eta_y * mu),
            2 * eta_x**2 + 2 * eta_x * eta_y * n + (2 * K - 1) * eta_x * eta_y * mu,
            -K * eta_x**2 * eta_y * mu]


def sector_cubic(r, K, n, mu, eta_x, eta_y):
    r"""r³ − (3η_x + η_y n + (K−1)η_y μ) r² + (2η_x² + 2η_xη_y n + (2K−1)η_xη_y μ) r − Kη_x²η_y μ
    (docs/model.md §2); its roots are the decay rates of the separation sector."""
    c = sector_cubic_coefficients(K, n, mu, eta_x, eta_y)
    return c[0] * r**3 + c[1] * r**2 + c[2] * r + c[3]


def sector_rates(K, n, mu, eta_x: float = 1.0, eta_y: float = 1.0) -> np.ndarray:
    """The three roots of the sector cubic, ascending (numbers; numpy.roots)."""
    c = [float(v) for v in sector_cubic_coefficients(K, n, mu, eta_x, eta_y)]
    return np.sort(np.roots(c).real)


def slow_rate(K, n, mu, eta_x: float = 1.0, eta_y: float = 1.0) -> float:
    """r_s: the smallest root of the sector cubic (docs/model.md §2), as a number."""
    return float(sector_rates(K, n, mu, eta_x, eta_y)[0])


def slow_rate_leading_mu(K, n, mu, eta_x, eta_y):
    r"""Leading order in μ: r_s ≈ Kη_xη_yμ / (2(η_x + η_y n)) (docs/model.md §2)."""
    return K * eta_x * eta_y * mu / (2 * (eta_x + eta_y * n))


def slow_rate_fast_labels(K, eps, eta_x):
    r"""Fast labels (η_y n ≫ η_x): r_s = η_x[Kε + K − 1 − √((K−1)² − K(K−2)ε²)] / ((K−1)(1+ε))."""
    return eta_x * (K * eps + K - 1 - _sqrt((K - 1)**2 - K * (K - 2) * eps**2)) / ((K - 1) * (1 + eps))


def slow_rate_fast_labels_series(K, eps, eta_x):
    r"""Its series to O(ε²): η_x[Kε/(K−1) − K²ε²/(2(K−1)²)] (docs/model.md §2)."""
    return eta_x * (K * eps / (K - 1) - K**2 * eps**2 / (2 * (K - 1)**2))


def slow_rate_k2_fast_labels(eps, eta_x):
    r"""K = 2, fast labels: r_s = 2η_xε/(1+ε) (docs/model.md §2)."""
    return 2 * eta_x * eps / (1 + eps)


def class_end_point(xs, y, eta_x, eta_y):
    r"""R_c = (Σ_{i∈c} x_i(0)/η_x + y_c(0)/η_y) / (n_c/η_x + 1/η_y): where an isolated class ends
    (docs/model.md §2). ``xs`` is the sequence (or array, rows) of the class's x_i(0)."""
    n_c = len(xs)
    if isinstance(xs, np.ndarray):
        total = xs.sum(axis=0)
    else:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
    return (total / eta_x + y / eta_y) / (n_c / eta_x + 1 / eta_y)


def embedding_invariants(Z, eta, components=None) -> np.ndarray:
    r"""Σ_{k∈C} z_k/η_k for every connected component C (docs/model.md §2): conserved by the flow.
    ``components`` = (count, label of each node); default: one component (all nodes)."""
    Z, eta = np.asarray(Z, dtype=float), np.asarray(eta, dtype=float)
    count, lab = components if components is not None else (1, np.zeros(len(Z), dtype=int))
    out = np.zeros((count, Z.shape[1]))
    np.add.at(out, lab, Z / eta[:, None])
    return out


def weighted_mean(Z, eta):
    r"""Σ_k z_k/η_k / Σ_k 1/η_k: the end state of a connected component (docs/model.md §2)."""
    Z, eta = np.asarray(Z, dtype=float), np.asarray(eta, dtype=float)
    return (Z / eta[:, None]).sum(axis=0) / (1.0 / eta).sum()


# --- §3 projection head -------------------------------------------------------------------------
def head_edge_forces(x, y, W, detached=("x", "y")):
    r"""−∂ℓ/∂(x, y, W) of ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²) (docs/model.md §3), with t_y = sg(y)
    when 'y' is in ``detached`` (else y) and likewise t_x:
    F_x = −Wᵀ(W x − y) + [x not detached](W y − x), F_y = −Wᵀ(W y − x) + [y not detached](W x − y),
    F_W = −((W x − y)xᵀ + (W y − x)yᵀ). Arguments: SymPy column vectors and a square matrix."""
    x, y, W = sp.Matrix(x), sp.Matrix(y), sp.Matrix(W)
    fx, fy = -W.T * (W * x - y), -W.T * (W * y - x)
    if "x" not in detached:
        fx = fx + (W * y - x)
    if "y" not in detached:
        fy = fy + (W * x - y)
    fW = -((W * x - y) * x.T + (W * y - x) * y.T)
    return fx, fy, fW


def head_invariant(X, Y, W, eta_x, eta_y, eta_W):
    r"""I = Σ_i ‖x_i‖²/η_x + Σ_c ‖y_c‖²/η_y − ‖W‖_F²/η_W (docs/model.md §3); NumPy arrays or
    SymPy matrices."""
    if isinstance(X, sp.MatrixBase) or isinstance(W, sp.MatrixBase):
        sq = lambda M: sum(e**2 for e in sp.Matrix(M))  # noqa: E731
    else:
        sq = lambda M: float(np.sum(np.asarray(M, dtype=float) ** 2))  # noqa: E731
    return sq(X) / eta_x + sq(Y) / eta_y - sq(W) / eta_W


def nu_sep_squared(K, n, mu, omega=2):
    r"""ν_sep² = (n + ωμ(K−2)/4) / (n + ωμ(K−1)/2) of the balanced ensemble (docs/model.md §3)."""
    return (n + omega * mu * (K - 2) / 4) / (n + omega * mu * (K - 1) / 2)


def nu_sep_squared_k2(eps):
    r"""K = 2, ω = 2: ν_sep² = (1 − ε)/(1 + ε) (docs/model.md §3)."""
    return (1 - eps) / (1 + eps)


def meanfield_reduced_rhs(X, Y, s2, t2, w, n, m, eta_x, eta_y, eta_W) -> list:
    r"""The K = 2 reduced equations (ω = 2, docs/model.md §3), in the order (Ẋ, Ẏ, σ̇², τ̇², ẇ):
    Ẋ = −η_x w(wX − Y), Ẏ = −η_y w((n+m)wY − nX), σ̇² = −2η_x w²σ², τ̇² = −4η_x w²τ²,
    ẇ = −η_W[w(2n(X² + σ²) + 2mτ² + 2(n+m)Y²) − 4nXY]."""
    return [-eta_x * w * (w * X - Y),
            -eta_y * w * ((n + m) * w * Y - n * X),
            -2 * eta_x * w**2 * s2,
            -4 * eta_x * w**2 * t2,
            -eta_W * (w * (2 * n * (X**2 + s2) + 2 * m * t2 + 2 * (n + m) * Y**2) - 4 * n * X * Y)]


def meanfield_w_star_squared(n, m):
    r"""Self-consistent head: w*² = n/(n+m) (docs/model.md §3)."""
    return n / (n + m)


def meanfield_y_over_x(w_star):
    r"""Y*/X* = w* (i.e. X* = Y*/w*) at the self-consistent fixed point (docs/model.md §3)."""
    return w_star


def meanfield_y_inf_squared(I0, n, m, eta_x, eta_y, eta_W):
    r"""Final separation from the invariant: Y_∞² = (I₀ + w*²/η_W) / (2(n+m)/η_x + 2/η_y)."""
    return (I0 + meanfield_w_star_squared(n, m) / eta_W) / (2 * (n + m) / eta_x + 2 / eta_y)


# --- §6 EMA target ------------------------------------------------------------------------------
def ema_edge_forces(x, y, xi_x, xi_y):
    r"""−∂ℓ/∂(x, y, ξ_x, ξ_y) of ℓ = ½(‖x − sg(ξ_y)‖² + ‖y − sg(ξ_x)‖²) (docs/model.md §6):
    F_x = ξ_y − x, F_y = ξ_x − y, and no force on the targets."""
    x, y, xi_x, xi_y = (sp.Matrix(a) for a in (x, y, xi_x, xi_y))
    return xi_y - x, xi_x - y, sp.zeros(*xi_x.shape), sp.zeros(*xi_y.shape)


def ema_component_end_value(z0, xi0, etas, degrees, tau):
    r"""R_C = Σ_k (z_k(0)/η_k + D_kk ξ_k(0)/τ) / Σ_k (1/η_k + D_kk/τ) over the nodes of one component
    (docs/model.md §6); sequences of equal length, numbers or SymPy expressions."""
    num = sum(z / e + D * xi / tau for z, xi, e, D in zip(z0, xi0, etas, degrees))
    den = sum(1 / e + D / tau for e, D in zip(etas, degrees))
    return num / den


def ema_sector_blocks(K, n, mu, eta_x, eta_y) -> tuple:
    r"""(HD_s, HA_s): the diagonal and coupling parts of the §2 sector matrix, M = −HD_s + HA_s
    (docs/model.md §6): HD_s = diag(η_x, 2η_x, η_y(n + (K−1)μ)),
    HA_s = [[0, 0, η_x], [0, 0, η_x], [η_y n, η_y μ(K−2), 0]]."""
    HD = sp.diag(eta_x, 2 * eta_x, eta_y * (n + (K - 1) * mu))
    HA = sp.Matrix([[0, 0, eta_x], [0, 0, eta_x], [eta_y * n, eta_y * mu * (K - 2), 0]])
    return HD, HA


def ema_sector_polynomial(r, K, n, mu, eta_x, eta_y, tau):
    r"""det[(τ − r)(HD_s − r I) − τ HA_s] (docs/model.md §6): its six roots are the decay rates of
    the EMA-target model's class-separation sector."""
    HD, HA = ema_sector_blocks(K, n, mu, eta_x, eta_y)
    return sp.expand(((tau - r) * (HD - r * sp.eye(3)) - tau * HA).det())


def ema_sector_rates(K, n, mu, eta_x: float = 1.0, eta_y: float = 1.0, tau: float = 1.0) -> np.ndarray:
    """The six roots of :func:`ema_sector_polynomial` as complex numbers, sorted by real part."""
    r = sp.Symbol("r")
    c = [complex(v) for v in sp.Poly(ema_sector_polynomial(r, K, n, mu, sp.nsimplify(eta_x),
                                                           sp.nsimplify(eta_y), sp.nsimplify(tau)), r).all_coeffs()]
    roots = np.roots(c)
    return roots[np.argsort(roots.real)]


def ema_invariants(Z, Xi, eta, degree, tau, components) -> np.ndarray:
    r"""Σ_{k∈C} (z_k/η_k + D_kk ξ_k/τ) for every connected component C (docs/model.md §6).
    ``components`` = (count, label of each node)."""
    count, lab = components
    out = np.zeros((count, np.shape(Z)[1]))
    np.add.at(out, lab, np.asarray(Z) / np.asarray(eta)[:, None] + np.asarray(degree)[:, None] * np.asarray(Xi) / tau)
    return out


def ema_end_state(Z, Xi, eta, degree, tau, components) -> np.ndarray:
    r"""lim Z = lim Ξ: on each component R_C = Σ(z_k/η_k + D_kk ξ_k/τ) / Σ(1/η_k + D_kk/τ)."""
    count, lab = components
    w = np.zeros(count)
    np.add.at(w, lab, 1.0 / np.asarray(eta) + np.asarray(degree) / tau)
    return (ema_invariants(Z, Xi, eta, degree, tau, components) / w[:, None])[lab]
