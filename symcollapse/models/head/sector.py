r"""The class-separation sector of the head model on the balanced ensemble B(K, n, μ)
(docs/model.md §3): consistent samples X·v_c, frustrated samples of pair (a, b) F·(v_a + v_b),
labels Y·v_c with Σ_c v_c = 0. D⁻¹A maps the sector to itself; its non-zero eigenvalues are
±ν_sep, the head eigenvalue that keeps the classes apart.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from ...errors import DerivationCheckError

# symbols of the sector (shared with the mean-field reduction)
K_, n_, mu_, omega_ = sp.symbols("K n mu omega", positive=True)


@lru_cache(maxsize=None)
def separation_sector() -> tuple[sp.ImmutableMatrix, dict]:
    r"""The 3×3 matrix of D⁻¹A on the sector coordinates (X, F, Y), derived by summing neighbours.

    (D⁻¹Az)_k = Σ_j A_kj z_j / D_k. A consistent sample of class c (pattern v_c) sees y_c;
    a frustrated sample of pair (c, b) (pattern v_c + v_b) sees y_c and y_b with weight ω/2;
    a label c sees n consistent samples (weight 1) and, for each b ≠ c, μ frustrated samples
    (weight ω/2, pattern v_c + v_b), whose patterns sum to (K−1)v_c + (S − v_c), S = Σ_b v_b = 0.
    """
    vc, vb, S = sp.symbols("v_c v_b S")
    Xc, Fc, Yc = sp.symbols("X F Y")
    order = (Xc, Fc, Yc)
    nodes = {  # own pattern, [(weight, count, neighbour coordinate, summed neighbour pattern)]
        Xc: (vc, [(1, 1, Yc, vc)]),
        Fc: (vc + vb, [(omega_ / 2, 1, Yc, vc), (omega_ / 2, 1, Yc, vb)]),
        # μ(K−1) frustrated neighbours; their mean pattern is ((K−1)v_c + S − v_c)/(K−1)
        Yc: (vc, [(1, n_, Xc, vc), (omega_ / 2, mu_ * (K_ - 1), Fc, ((K_ - 1) * vc + S - vc) / (K_ - 1))]),
    }
    M = sp.zeros(3, 3)
    for r, node in enumerate(order):
        own, nbrs = nodes[node]
        degree = sum(wgt * cnt for wgt, cnt, _, _ in nbrs)
        image = sp.expand(sum(wgt * cnt * coord * pat for wgt, cnt, coord, pat in nbrs).subs(S, 0) / degree)
        for k, coord in enumerate(order):
            coef = sp.simplify(sp.expand(image).coeff(coord) / own)
            if coef.free_symbols & {vc, vb}:
                raise DerivationCheckError(f"separation sector is not invariant under D⁻¹A (row {node})")
            M[r, k] = coef
    return sp.ImmutableMatrix(M), {"K": K_, "n": n_, "mu": mu_, "omega": omega_}


@lru_cache(maxsize=None)
def separation_nu_squared() -> tuple[sp.Expr, dict]:
    r"""ν_sep² from the characteristic polynomial of the sector matrix: det(λ − M) = λ(λ² − ν_sep²)."""
    M, syms = separation_sector()
    lam = sp.Symbol("lambda")
    cp = sp.factor(sp.expand((lam * sp.eye(3) - M).det()))
    poly = sp.Poly(sp.expand(cp), lam)
    c = poly.all_coeffs()  # λ³ + c1 λ² + c2 λ + c3
    if len(c) != 4 or sp.simplify(c[1]) != 0 or sp.simplify(c[3]) != 0:
        raise DerivationCheckError(f"separation sector: characteristic polynomial not of the form "
                                   f"λ(λ² − ν²): {cp}")
    return sp.factor(sp.simplify(-c[2] / c[0])), syms


@lru_cache(maxsize=None)
def nu_sep_kernel():
    """ν_sep(K, n, μ, ω) lambdified once from the derived ν_sep² (array-valued)."""
    expr, s = separation_nu_squared()
    return sp.lambdify((s["K"], s["n"], s["mu"], s["omega"]), sp.sqrt(expr), "numpy")


def nu_sep_grid(K, n, mu, omega=2.0) -> np.ndarray:
    r"""ν_sep(K, n, μ, ω) on broadcast arrays, from the derived ν_sep² expression."""
    K, n, mu, omega = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (K, n, mu, omega)))
    return np.asarray(nu_sep_kernel()(K, n, mu, omega), dtype=float)
