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
from scipy.sparse.linalg import LinearOperator, eigsh, splu

from ..errors import DerivationCheckError, InvalidParameterError
from ..validation import check_rate
from .graph import CouplingGraph

DENSE_LIMIT = 3000  # N + K up to which the dense eigenvalue problem is used by default
MAX_DENSE = 8000  # beyond this the full spectrum is refused (memory/time)
#: Largest rate ratio max(η)/min(η) for which the dense symmetrised spectrum gives r_s to
#: ~1e-10 relative (its absolute error is ~ eps·‖S‖, ‖S‖ ∝ max η); above it 'auto' uses the
#: Schur complement, which is scaled by the rates and keeps relative accuracy.
DENSE_MAX_RATIO = 1e4


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


def _scaled_schur(graph: CouplingGraph, rho: float):
    """ρ̂ -> M(r)/η_y in units r = η_x ρ̂ with ρ = η_y/η_x: D_y − (ρ̂/ρ) I − Pᵀ diag(1/(D_i − ρ̂)) P.

    The same inertia as M(r) (η_y > 0), without the product η_xη_y (no overflow) and with
    O(1) entries whatever the rate ratio, so the crossing keeps relative accuracy."""
    Ds = graph.sample_degree
    degrees = np.unique(Ds[Ds > 0])
    csr = graph.csr
    Q = np.array([(csr[np.flatnonzero(Ds == delta)].T @ csr[np.flatnonzero(Ds == delta)]).toarray()
                  for delta in degrees]) if len(degrees) else np.zeros((0, graph.K, graph.K))
    base = np.diag(graph.label_degree.astype(float))
    eye = np.eye(graph.K)

    def M(x: float) -> np.ndarray:
        return base - (x / rho) * eye - np.tensordot(1.0 / (degrees - x), Q, axes=1)

    pole = float(degrees.min()) if len(degrees) else np.inf
    return M, pole


def _rate_ratio(eta_x: float, eta_y: float) -> float:
    """ρ = η_y/η_x, refused if it leaves the floating-point range."""
    rho = eta_y / eta_x
    if not np.isfinite(rho) or rho < np.finfo(float).tiny:
        raise InvalidParameterError(
            f"eta_y/eta_x = {eta_y:g}/{eta_x:g} is outside the floating-point range; rescale time "
            "(r_s is proportional to the rates: r_s(a·η_x, a·η_y) = a·r_s(η_x, η_y))")
    return float(rho)


def _checked_rate(r: float, eta_x: float, eta_y: float) -> float:
    """A slow rate that is a positive normal float, or InvalidParameterError (no silent 0)."""
    if not np.isfinite(r) or r < np.finfo(float).tiny:
        raise InvalidParameterError(
            f"the slow rate for eta_x = {eta_x:g}, eta_y = {eta_y:g} is {r:g}: not a positive normal "
            "float; rescale the rates (r_s is proportional to them)")
    return float(r)


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
    rho = _rate_ratio(eta_x, eta_y)
    M, pole = _scaled_schur(g, rho)  # r = η_x·x: the root is found in rate-free units
    c = label_components(g)
    if c >= g.K:  # every label in its own component: no label-coupled slow mode
        return _unstructured(g, eta_x, eta_y)

    def f(x):
        return float(eigvalsh(M(x), subset_by_index=[c, c])[0])

    hi = pole * (1.0 - 1e-12) if np.isfinite(pole) else None
    if hi is None or f(hi) > 0.0:
        return _unstructured(g, eta_x, eta_y)
    lo = 0.0
    # f(0+) > 0 unless r_s is tiny; start just above 0 (f(0) = λ_c(M(0)) > 0 by construction).
    if f(lo) <= 0.0:
        raise DerivationCheckError("Schur complement at r = 0 has more zero modes than components")
    # relative tolerance only: r_s may be many orders below the pole (slow labels, small ε)
    x = brentq(f, lo, hi, xtol=min(xtol, 1e-300) * max(hi, 1e-300), rtol=4 * np.finfo(float).eps,
               maxiter=500)
    return _checked_rate(eta_x * float(x), eta_x, eta_y)


def _unstructured(g: CouplingGraph, eta_x: float, eta_y: float) -> float:
    """Fallback when the slowest mode is not below the sample poles: dense if small, else sparse."""
    if g.N + g.K <= DENSE_LIMIT and _ratio(eta_x, eta_y) <= DENSE_MAX_RATIO:
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
    if method not in ("auto", "dense", "schur", "sparse"):
        raise InvalidParameterError(f"method must be 'auto', 'dense', 'schur' or 'sparse'; got {method!r}")
    g = _graph(P)
    ratio = _ratio(eta_x, eta_y)
    if method == "auto":
        method = "dense" if g.N + g.K <= DENSE_LIMIT and ratio <= DENSE_MAX_RATIO else "schur"
    if method == "dense" and ratio > DENSE_MAX_RATIO:
        raise InvalidParameterError(
            f"method='dense' loses relative accuracy for the rate ratio {ratio:.3g} > DENSE_MAX_RATIO = "
            f"{DENSE_MAX_RATIO:g} (its error is ~1e-16 times the ratio); use method='schur' or 'auto'")
    # r_s is homogeneous of degree 1 in the rates: compute at (1, η_y/η_x), scale by η_x
    rho = _rate_ratio(eta_x, eta_y)
    fn = {"dense": slow_rate_dense, "schur": slow_rate_schur, "sparse": slow_rate_sparse}[method]
    return _checked_rate(eta_x * fn(g, 1.0, rho), eta_x, eta_y)


def _ratio(eta_x: float, eta_y: float) -> float:
    """max(η)/min(η) (inf if it overflows)."""
    with np.errstate(over="ignore"):
        return float(max(eta_x, eta_y) / min(eta_x, eta_y))


def decay_modes(P, eta_x: float = 1.0, eta_y: float = 1.0):
    """(rates, right eigenvectors of H·L_G as columns): V = H^{1/2} U with S U = U diag(r)."""
    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    g = _graph(P)
    if g.N + g.K > MAX_DENSE:
        raise InvalidParameterError(f"N + K must be <= {MAX_DENSE} for the eigenvectors; got {g.N + g.K}")
    ev, U = eigh(symmetrised_laplacian(g, eta_x, eta_y))
    return np.clip(ev, 0.0, None), np.sqrt(rate_diagonal(g, eta_x, eta_y))[:, None] * U

