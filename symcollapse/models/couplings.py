"""Coupling matrices P (N×K) of the sample–label graph."""
from __future__ import annotations

import itertools

import numpy as np

from ..validation import check_int, check_real


def balanced_couplings(K: int, n: int, mu: int, omega: float = 2.0) -> np.ndarray:
    """Balanced ensemble B(K, n, μ, ω): n consistent samples per class (P_ic = δ_{c,c(i)}),
    μ frustrated samples per unordered class pair (a, b) with P_ia = P_ib = ω/2.

    Rows: class 0's n samples, class 1's, …, then pairs (0,1), (0,2), … in lexicographic
    order, μ rows each. N = Kn + μK(K−1)/2.
    """
    K = check_int("K", K, 2)
    n = check_int("n", n, 1)
    mu = check_int("mu", mu, 0)
    omega = check_real("omega", omega, 0.0, None, strict_min=True)
    pairs = list(itertools.combinations(range(K), 2))
    N = K * n + mu * len(pairs)
    P = np.zeros((N, K))
    P[np.arange(K * n), np.repeat(np.arange(K), n)] = 1.0
    row = K * n
    for a, b in pairs:
        P[row:row + mu, a] = omega / 2
        P[row:row + mu, b] = omega / 2
        row += mu
    return P


def frustration_fraction(K: int, n: int, mu: int) -> float:
    """ε = m/N with m = μK(K−1)/2 frustrated samples and N = Kn + m."""
    m = mu * K * (K - 1) // 2
    return m / (K * n + m)


def consistent_labels(P: np.ndarray) -> np.ndarray:
    """Own class of each sample with exactly one coupled label, −1 for frustrated samples."""
    P = np.asarray(P)
    nnz = (P > 0).sum(axis=1)
    own = np.argmax(P, axis=1)
    return np.where(nnz == 1, own, -1)
