r"""Exact solution of a linear flow that acts column by column: Ż = A Z, Z ∈ R^{(N+K)×d}.

For the embedding model (docs/model.md §2) the derived flow is −s·H L_G ⊗ I_d, so the d columns
of Z evolve independently under the (N+K)×(N+K) node operator A = −s·H L_G; every solver here
works on A and a matrix of d (or, for many seeds, d·B) columns, never on the (N+K)d system.

Two factorisation-free exact solutions (no sparse LU, no LAPACK call on an N-sized matrix):

* ``spectral`` — reduction by sample degree. Samples with equal degree δ form a group g with
  coupling block P_g; the part of X_g orthogonal to range(P_g) decays as e^{−s η_x δ t} and
  never touches the labels, the rest lives in the small space spanned by P_g's columns. The
  reduced operator (size m = K + Σ_g rank P_g ≤ K(1 + #degrees)) is symmetrisable by the rates
  and is diagonalised exactly (eigh): Z(t) is exact at every t, at O(nnz·d) per output time.
* ``expm`` — scipy's expm_multiply of A·Δt on the d-column matrix between output times; its
  work grows with ‖A‖₁·t_end, used when the reduction is large (many distinct degrees).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps
from scipy.sparse.linalg import expm_multiply

from ..errors import DerivationCheckError, InvalidParameterError
from ..symbolic.loss import LABEL, SAMPLE
from .kernels import relative_error

#: reduced size up to which the dense symmetric eigenproblem of the reduction is used
MAX_REDUCED = 3000


def node_operator(system, *, seed: int = 0, tol: float = 1e-11) -> sps.csr_matrix:
    r"""A = −s·H L_G (N+K square, sparse) of a FlowSystem whose derived flow is Ż = A Z.

    Checked against the compiled derived flow at two random states (‖f(Z) − A Z‖ ≤ tol‖A Z‖);
    a flow that is not this column-wise linear map raises DerivationCheckError.
    """
    cp = system.compiled
    learned = getattr(cp, "learned", None) or cp.flow.learned
    if set(learned) != {SAMPLE, LABEL} or system.layout[SAMPLE][1][1] != system.layout[LABEL][1][1]:
        raise DerivationCheckError("the flow has blocks other than samples and labels of one "
                                   "dimension: it is not a column-wise node flow")
    g = system.graph
    h = system.scale * np.concatenate([np.full(g.N, system.rates[SAMPLE]),
                                       np.full(g.K, system.rates[LABEL])])
    A = sps.csr_matrix(-(sps.diags(h) @ (sps.diags(g.degree) - g.adjacency)))
    d = system.layout[SAMPLE][1][1]
    rng = np.random.default_rng(seed)
    for _ in range(2):
        Z = rng.normal(size=(g.N + g.K, d))
        err = relative_error(system.flow_vector(Z.ravel()).reshape(Z.shape), A @ Z)
        if not err <= tol:
            raise DerivationCheckError(f"the derived flow is not Ż = −s·H L_G Z (relative error "
                                       f"{err:.2e}); use a numerical integrator")
    return A


@dataclass(frozen=True)
class DegreeReduction:
    r"""Ż = A Z split exactly: Z = lift(u) + Σ_g e^{−a_g t} X⊥_g, u̇ = M u with M small."""

    A: sps.csr_matrix
    N: int
    K: int
    groups: tuple  # (rows, a_g, Bg (sparse n_g×q), R (q×r_g)) with Q_g = Bg R orthonormal
    M: np.ndarray  # reduced operator on u = [a_1; …; a_G; Y]
    sizes: tuple  # r_g of each group

    @property
    def m(self) -> int:
        return int(self.M.shape[0])


def degree_reduction(A: sps.csr_matrix, N: int, K: int, max_reduced: int = MAX_REDUCED):
    """The reduction of A by groups of samples with equal self-rate −A_ii (None if m > max_reduced).

    Needs A_xx diagonal (samples couple only to labels), as for every model on the bipartite graph.
    """
    A = sps.csr_matrix(A)
    Axx = A[:N, :N]
    diag = Axx.diagonal()
    if (Axx - sps.diags(diag)).count_nonzero():
        return None
    Bxy = A[:N, N:].tocsr()
    Cyx_T = A[N:, :N].T.tocsr()
    Ayy = A[N:, N:].toarray()
    rates = -diag
    keys, inv = np.unique(np.round(rates, 12), return_inverse=True)
    if len(keys) * K > max_reduced:
        return None
    groups, blocks_B, blocks_C, sizes = [], [], [], []
    for gi in range(len(keys)):
        rows = np.flatnonzero(inv == gi)
        a = float(rates[rows].mean())
        Bg = sps.hstack([Bxy[rows], Cyx_T[rows]]).tocsc()
        G = (Bg.T @ Bg).toarray()
        lam, V = np.linalg.eigh(G)
        keep = lam > 1e-12 * max(lam.max(), 1e-300)
        R = V[:, keep] / np.sqrt(lam[keep])
        Q_B = np.asarray((Bxy[rows].T @ (Bg @ R)))  # (K × r): Bgᵀ-part, i.e. B_gᵀ Q
        Q_C = np.asarray((Cyx_T[rows].T @ (Bg @ R)))  # (K × r): C_g Q
        QtQ = R.T @ G @ R
        if not np.abs(QtQ - np.eye(len(QtQ))).max() <= 1e-9:
            return None
        groups.append((rows, a, Bg, R))
        blocks_B.append(Q_B.T)  # Qᵀ B_g: (r × K)
        blocks_C.append(Q_C)  # C_g Q: (K × r)
        sizes.append(R.shape[1])
    m = sum(sizes) + K
    if m > max_reduced:
        return None
    M = np.zeros((m, m))
    off = 0
    for (rows, a, _, _), QB, CQ, r in zip(groups, blocks_B, blocks_C, sizes):
        M[off:off + r, off:off + r] = -a * np.eye(r)
        M[off:off + r, m - K:] = QB
        M[m - K:, off:off + r] = CQ
        off += r
    M[m - K:, m - K:] = Ayy
    return DegreeReduction(A, N, K, tuple(groups), M, tuple(sizes))


@dataclass(frozen=True)
class ColumnPropagator:
    r"""Z(t) = exp(A t) Z₀ for the node operator A, exact: Z(t) = lift(V e^{Λt} V⁻¹ u₀) + Σ_g e^{−a_g t} X⊥_g.

    ``method`` is 'spectral' (the degree reduction, diagonalised; or, with ``reduction`` None,
    A itself diagonalised on all nodes: Z(t) = V e^{Λt} V⁻¹ Z₀) or 'expm' (expm_multiply).
    """

    A: sps.csr_matrix
    method: str
    reduction: DegreeReduction | None = None
    lam: np.ndarray | None = None  # eigenvalues of M (≤ 0)
    V: np.ndarray | None = None  # eigenvectors of M (columns)
    Vinv: np.ndarray | None = None

    def states(self, Z0: np.ndarray, t_eval: np.ndarray) -> "StateSequence":
        """The states at every time of t_eval (increasing, ≥ 0), one at a time (O(N·d) memory each)."""
        return StateSequence(self, np.asarray(Z0, dtype=float), np.asarray(t_eval, dtype=float))

    def __call__(self, Z0: np.ndarray, t: float) -> np.ndarray:
        return next(iter(self.states(Z0, np.array([float(t)]))))


class StateSequence:
    """Iterable of Z(t_k) for a :class:`ColumnPropagator` (the spectral form evaluates each t
    independently; expm steps from the previous output time)."""

    def __init__(self, prop: ColumnPropagator, Z0: np.ndarray, t_eval: np.ndarray):
        self.prop, self.Z0, self.t = prop, Z0, t_eval
        if prop.method == "spectral" and prop.reduction is None:  # diagonalised on all nodes
            self.c0 = prop.Vinv @ Z0
        elif prop.method == "spectral":
            red = prop.reduction
            N = red.N
            parts, perp = [], []
            for rows, a, Bg, R in red.groups:
                Xg = Z0[rows]
                ag = R.T @ (Bg.T @ Xg)
                parts.append(ag)
                perp.append((rows, a, Xg - Bg @ (R @ ag)))
            u0 = np.vstack(parts + [Z0[N:]])
            self.c0 = prop.Vinv @ u0
            self.perp = perp

    def at(self, t: float) -> np.ndarray:
        """Z(t) (spectral form only)."""
        prop, red = self.prop, self.prop.reduction
        u = prop.V @ (np.exp(prop.lam * t)[:, None] * self.c0)
        if red is None:
            return u
        N = red.N
        Z = np.empty_like(self.Z0)
        off = 0
        for (rows, a, Bg, R), r, (_, _, Xp) in zip(red.groups, red.sizes, self.perp):
            Z[rows] = Bg @ (R @ u[off:off + r]) + np.exp(-a * t) * Xp
            off += r
        Z[N:] = u[off:]
        return Z

    def __iter__(self):
        if self.prop.method == "spectral":
            for t in self.t:
                yield self.at(float(t))
            return
        Z, t_prev = self.Z0, 0.0
        for t in self.t:
            dt = float(t) - t_prev
            if dt > 0:
                Z = expm_multiply(self.prop.A * dt, Z)
            t_prev = float(t)
            yield Z


def column_propagator(A: sps.csr_matrix, N: int, K: int, method: str = "auto",
                      h: np.ndarray | None = None) -> ColumnPropagator:
    """The exact propagator of Ż = A Z; method 'auto' takes the degree reduction when it is
    small (≤ MAX_REDUCED) and symmetrisable by the rates ``h`` (A = −H L, L symmetric), else expm."""
    if method not in ("auto", "spectral", "expm"):
        raise InvalidParameterError(f"method must be 'auto', 'spectral' or 'expm'; got {method!r}")
    if method == "expm":
        return ColumnPropagator(A, "expm")
    red = degree_reduction(A, N, K)
    if red is None or h is None:
        if method == "spectral":
            raise InvalidParameterError("method='spectral' needs a small degree reduction (at most "
                                        f"{MAX_REDUCED} reduced unknowns); use method='expm'")
        return ColumnPropagator(A, "expm")
    # M = −H_r L_r with H_r = rates of the reduced coordinates: symmetrise and diagonalise
    hr = np.concatenate([np.full(r, h[rows[0]]) for (rows, _, _, _), r in zip(red.groups, red.sizes)]
                        + [h[N:]])
    s = np.sqrt(hr)
    S = red.M / s[:, None] * s[None, :]
    scale = max(np.abs(S).max(), 1e-300)
    if not np.abs(S - S.T).max() <= 1e-12 * scale:
        if method == "spectral":
            raise DerivationCheckError("the reduced operator is not symmetrisable by the rates")
        return ColumnPropagator(A, "expm")
    lam, Phi = np.linalg.eigh(0.5 * (S + S.T))
    lam = np.minimum(lam, 0.0)
    V = s[:, None] * Phi
    Vinv = Phi.T / s[None, :]
    return ColumnPropagator(A, "spectral", red, lam, V, Vinv)


def expm_cost(A: sps.csr_matrix, t_end: float, d: int) -> float:
    """Rough flop count of expm_multiply on [0, t_end]: ~‖A‖₁ t_end products of A with d columns."""
    norm1 = float(abs(A).sum(axis=0).max()) if A.nnz else 0.0
    return 2.0 * max(norm1 * t_end, 1.0) * (A.nnz + A.shape[0]) * d


def metric_propagator(A, H: np.ndarray, t_end: float, d: int, method: str = "auto") -> ColumnPropagator:
    r"""The exact propagator of Ż = A Z for A = −H L with H symmetric positive definite (dense) and
    L symmetric: H^{−½} A H^{½} = −H^{½} L H^{½} = −Φ Λ Φᵀ, so e^{At} = H^{½} Φ e^{−Λt} Φᵀ H^{−½}.

    This is the head-free teacher–student flow on the nodes Z = [X; Y] (docs/model.md §4:
    H = blockdiag(s·η_S G, s·η_y I), G = UUᵀ). 'auto' takes the dense eigen-solution ('spectral',
    ~10 n³ flops once, then one n×n product per output time) unless expm_multiply on [0, t_end]
    (:func:`expm_cost`) is estimated cheaper. H not positive definite, or H^{−½} A H^{½} not
    symmetric: 'spectral' raises DerivationCheckError, 'auto' takes 'expm'.
    """
    if method not in ("auto", "spectral", "expm"):
        raise InvalidParameterError(f"method must be 'auto', 'spectral' or 'expm'; got {method!r}")
    A_sp = sps.csr_matrix(A)
    n = A_sp.shape[0]
    if method == "expm" or (method == "auto" and expm_cost(A_sp, t_end, d) < 10.0 * n ** 3):
        return ColumnPropagator(A_sp, "expm")
    H = np.asarray(H, dtype=float)
    w, Vh = np.linalg.eigh(0.5 * (H + H.T))
    if not w.min() > 1e-12 * max(w.max(), 1e-300):
        if method == "spectral":
            raise DerivationCheckError("the node metric H is not positive definite: no spectral "
                                       "propagator; use method='expm'")
        return ColumnPropagator(A_sp, "expm")
    R = (Vh * np.sqrt(w)) @ Vh.T  # H^{½}
    Rinv = (Vh / np.sqrt(w)) @ Vh.T  # H^{−½}
    Ad = A_sp.toarray()
    S = Rinv @ Ad @ R
    scale = max(np.abs(S).max(), 1e-300)
    if not np.abs(S - S.T).max() <= 1e-10 * scale:
        if method == "spectral":
            raise DerivationCheckError("H^{-1/2} A H^{1/2} is not symmetric: A is not −H L with L "
                                       "symmetric; use method='expm'")
        return ColumnPropagator(A_sp, "expm")
    lam, Phi = np.linalg.eigh(0.5 * (S + S.T))
    lam = np.minimum(lam, 0.0)  # −H^{½} L H^{½} is negative semi-definite: clip round-off
    return ColumnPropagator(A_sp, "spectral", None, lam, R @ Phi, Phi.T @ Rinv)
