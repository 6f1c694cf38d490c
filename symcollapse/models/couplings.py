"""Coupling matrices P (N×K) of the sample–label graph."""
from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from ..validation import check_int, check_real

#: Largest number of entries N·K of a coupling matrix built here (2 GiB of float64).
MAX_ENTRIES = 2**28


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
    n_pairs = K * (K - 1) // 2
    N = K * n + mu * n_pairs
    if N * K > MAX_ENTRIES:
        raise InvalidParameterError(
            f"balanced_couplings(K={K}, n={n}, mu={mu}) has N = {N} samples and a dense N×K = "
            f"{N * K:.3g}-entry P ({8 * N * K / 2**30:.3g} GiB); at most MAX_ENTRIES = {MAX_ENTRIES:.3g} "
            "entries are built: reduce K, n or mu")
    P = np.zeros((N, K))
    P[np.arange(K * n), np.repeat(np.arange(K), n)] = 1.0
    if mu:  # pairs (a, b), a < b, in lexicographic order, mu rows each; one slice per a
        row = K * n
        for a in range(K - 1):
            rows = (K - 1 - a) * mu
            block = P[row:row + rows]
            block[:, a] = omega / 2
            block[np.arange(rows), np.repeat(np.arange(a + 1, K), mu)] = omega / 2
            row += rows
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
