r"""Decay rates of the linear flow Ż = −H L_G Z: the spectrum of H·L_G, H = diag(η).

H·L_G is similar to the symmetric S = H^{1/2} L_G H^{1/2}, so its eigenvalues are real and ≥ 0.
Small graphs: dense ``eigvalsh`` of S. Large graphs: eliminate the samples exactly (they couple
only to labels); for r below the smallest sample pole η_x·min D_i the spectrum below r is
counted by the K×K Schur complement
    M(r) = η_y D_y − r I − η_x η_y Pᵀ diag(1/(η_x D_i − r)) P,
(inertia of S − rI = inertia of M(r)), whose eigenvalues decrease monotonically in r.
General sparse fallback: Lanczos on the shift-invert operator with the known kernel of S
(one vector H^{-1/2}1_C per connected component C) projected out.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sps
from scipy.linalg import eigh, eigvalsh
from scipy.optimize import brentq

from ..errors import DerivationCheckError, InvalidParameterError
from ..validation import check_rate
from .graph import CouplingGraph

DENSE_LIMIT = 3000  # N + K up to which the dense eigenvalue problem is used by default
MAX_DENSE = 8000  # beyond this the full spectrum is refused (memory/time)


def _graph(P) -> CouplingGraph:
    return P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)


def rate_diagonal(graph: CouplingGraph, eta_x: float, eta_y: float) -> np.ndarray:
    """H = diag(η): η_x for the N samples, η_y for the K labels."""
    return np.concatenate([np.full(graph.N, eta_x), np.full(graph.K, eta_y)])


def symmetrised_laplacian(P, eta_x: float, eta_y: float) -> np.ndarray:
    """S = H^{1/2} L_G H^{1/2} (dense), similar to H·L_G."""
    g = _graph(P)
    h = np.sqrt(rate_diagonal(g, eta_x, eta_y))
    return (h[:, None] * g.laplacian.toarray()) * h[None, :]


def decay_rates(P, eta_x: float = 1.0, eta_y: float = 1.0) -> np.ndarray:
    """All N+K eigenvalues of H·L_G, ascending (each occurs once per embedding coordinate)."""
    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    g = _graph(P)
    if g.N + g.K > MAX_DENSE:
        raise InvalidParameterError(
            f"N + K must be <= {MAX_DENSE} for the full spectrum; got {g.N + g.K} (use slow_rate)")
    ev = eigvalsh(symmetrised_laplacian(g, eta_x, eta_y))
    return np.clip(ev, 0.0, None)


def n_zero_modes(P) -> int:
    """Multiplicity of the eigenvalue 0 of H·L_G: the number of connected components."""
    return _graph(P).components[0]


def slow_rate_dense(P, eta_x: float = 1.0, eta_y: float = 1.0) -> float:
    """Smallest nonzero eigenvalue of H·L_G from the dense spectrum (skips one 0 per component)."""
    g = _graph(P)
    ev = decay_rates(g, eta_x, eta_y)
    c = n_zero_modes(g)
    if c >= len(ev):
        raise InvalidParameterError("P has no coupled pair of nodes: there is no nonzero rate")
    return float(ev[c])


def schur_complement(graph: CouplingGraph, eta_x: float, eta_y: float):
    """r -> M(r) (K×K, symmetric) for r below the smallest sample pole; samples grouped by degree."""
    Ds = graph.sample_degree
    coupled = Ds > 0
    degrees = np.unique(Ds[coupled])
    csr = graph.csr
    Q = []
    for delta in degrees:
        rows = np.flatnonzero(Ds == delta)
        Pd = csr[rows]
        Q.append((Pd.T @ Pd).toarray())
    Q = np.array(Q) if Q else np.zeros((0, graph.K, graph.K))
    base = np.diag(eta_y * graph.label_degree)
    eye = np.eye(graph.K)

    def M(r: float) -> np.ndarray:
        w = eta_x * eta_y / (eta_x * degrees - r)
        return base - r * eye - np.tensordot(w, Q, axes=1)

    pole = float(eta_x * degrees.min()) if len(degrees) else np.inf
    return M, pole


def label_components(graph: CouplingGraph) -> int:
    """Number of connected components that contain at least one label."""
    _, lab = graph.components
    return int(len(np.unique(lab[graph.N:])))


def slow_rate_schur(P, eta_x: float = 1.0, eta_y: float = 1.0, *, xtol: float = 1e-15) -> float:
    """Smallest nonzero eigenvalue of H·L_G by eliminating the samples (cost O(nnz(P)·K + K³)).

    With c label-carrying components, M(r) has c negative eigenvalues for 0 < r < r_s and the
    (c+1)-th eigenvalue λ_c(M(r)) (continuous, decreasing) crosses 0 at r = r_s. If it does not
    cross below the first pole η_x·min D_i, the dense (small) or deflated sparse solver is used.
    """
    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    g = _graph(P)
    M, pole = schur_complement(g, eta_x, eta_y)
    c = label_components(g)
    if c >= g.K:  # every label in its own component: no label-coupled slow mode
        return _unstructured(g, eta_x, eta_y)

    def f(r):
        return float(eigvalsh(M(r), subset_by_index=[c, c])[0])

    hi = pole * (1.0 - 1e-12) if np.isfinite(pole) else None
    if hi is None or f(hi) > 0.0:
        return _unstructured(g, eta_x, eta_y)
    lo = 0.0
    # f(0+) > 0 unless r_s is tiny; start just above 0 (f(0) = λ_c(M(0)) > 0 by construction).
    if f(lo) <= 0.0:
        raise DerivationCheckError("Schur complement at r = 0 has more zero modes than components")
    r = brentq(f, lo, hi, xtol=xtol * max(hi, 1e-300), rtol=4 * np.finfo(float).eps, maxiter=500)
    return float(r)


def _unstructured(g: CouplingGraph, eta_x: float, eta_y: float) -> float:
    """Fallback when the slowest mode is not below the sample poles: dense if small, else sparse."""
    if g.N + g.K <= DENSE_LIMIT:
        return slow_rate_dense(g, eta_x, eta_y)
    return slow_rate_sparse(g, eta_x, eta_y)


def null_basis(graph: CouplingGraph, eta_x: float, eta_y: float) -> sps.csr_matrix:
    """Orthonormal basis of ker S (one column per component C): H^{-1/2} 1_C, normalised."""
    n, lab = graph.components
    w = 1.0 / np.sqrt(rate_diagonal(graph, eta_x, eta_y))
    norms = np.sqrt(np.bincount(lab, weights=w**2, minlength=n))
    return sps.csr_matrix((w / norms[lab], (np.arange(len(lab)), lab)), shape=(len(lab), n))


def slow_rate_sparse(P, eta_x: float = 1.0, eta_y: float = 1.0) -> float:
    """Smallest nonzero eigenvalue of S by Lanczos on the deflated shift-invert operator
    Π (S − σI)^{-1} Π, Π = I − QQᵀ the projector off the known kernel (Q = :func:`null_basis`):
    its largest eigenvalue is 1/(r_s − σ). (Counting zeros instead is unreliable: Lanczos does
    not resolve a highly degenerate eigenvalue 0.)
    """
    from scipy.sparse.linalg import LinearOperator, eigsh, splu

    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    g = _graph(P)
    n = g.N + g.K
    c = n_zero_modes(g)
    if n - c < 4:  # too small for Lanczos
        return slow_rate_dense(g, eta_x, eta_y)
    h = np.sqrt(rate_diagonal(g, eta_x, eta_y))
    H = sps.diags(h)
    S = (H @ g.laplacian @ H).tocsc()
    sigma = -1e-3 * min(eta_x, eta_y)
    lu = splu((S - sigma * sps.identity(n, format="csc")).tocsc())
    Q = null_basis(g, eta_x, eta_y)

    def project(v):
        return v - Q @ (Q.T @ v)

    op = LinearOperator((n, n), matvec=lambda v: project(lu.solve(project(np.ravel(v)))), dtype=float)
    v0 = project(np.random.default_rng(0).standard_normal(n))
    mu = eigsh(op, k=1, which="LA", v0=v0, tol=1e-14, return_eigenvectors=False)
    return float(sigma + 1.0 / mu.max())


def slow_rate(P, eta_x: float = 1.0, eta_y: float = 1.0, *, method: str = "auto") -> float:
    """Smallest nonzero decay rate r_s of Ż = −H L_G Z (the collapse rate for connected frustration).

    method: 'dense' (eigvalsh, N+K ≤ 8000), 'schur' (samples eliminated), 'sparse' (eigsh), or
    'auto' (dense for N+K ≤ 3000, else Schur).
    """
    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    g = _graph(P)
    if method == "auto":
        method = "dense" if g.N + g.K <= DENSE_LIMIT else "schur"
    if method == "dense":
        return slow_rate_dense(g, eta_x, eta_y)
    if method == "schur":
        return slow_rate_schur(g, eta_x, eta_y)
    if method == "sparse":
        return slow_rate_sparse(g, eta_x, eta_y)
    raise InvalidParameterError(f"method must be 'auto', 'dense', 'schur' or 'sparse'; got {method!r}")


def decay_modes(P, eta_x: float = 1.0, eta_y: float = 1.0):
    """(rates, right eigenvectors of H·L_G as columns): V = H^{1/2} U with S U = U diag(r)."""
    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    g = _graph(P)
    if g.N + g.K > MAX_DENSE:
        raise InvalidParameterError(f"N + K must be <= {MAX_DENSE} for the eigenvectors; got {g.N + g.K}")
    ev, U = eigh(symmetrised_laplacian(g, eta_x, eta_y))
    return np.clip(ev, 0.0, None), np.sqrt(rate_diagonal(g, eta_x, eta_y))[:, None] * U

