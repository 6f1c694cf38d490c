r"""Exact propagator of a linear flow: θ̇ = J θ with constant J gives θ(t) = exp(J t) θ(0).

For the embedding model J = −H L_G ⊗ I_d, assembled from the derived edge Jacobian; the
action exp(J t) v is computed without forming exp(J t) (scipy's expm_multiply), which is
exact up to its truncation tolerance however stiff J is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps
from scipy.sparse.linalg import LinearOperator, eigsh, expm_multiply, splu

from ..errors import DerivationCheckError, InvalidParameterError
from ..tolerance import within
from ..validation import check_array, check_real
from .kernels import relative_error


@dataclass(frozen=True)
class LinearPropagator:
    """θ(t) = exp(J t) θ₀ for the constant sparse Jacobian J of a linear flow."""

    J: sps.csr_matrix

    def __call__(self, v0, t: float) -> np.ndarray:
        """exp(J t) v0."""
        t = check_real("t", t, 0.0, None)
        v0 = check_array("v0", v0, ndim=1, shape=(self.J.shape[0],))
        return expm_multiply(self.J * t, v0)

    def trajectory(self, v0, t_eval) -> np.ndarray:
        """Rows exp(J t_k) v0 for increasing, evenly spaced or arbitrary non-negative t_k."""
        t_eval = check_array("t_eval", t_eval, ndim=1)
        if np.any(t_eval < 0) or np.any(np.diff(t_eval) <= 0):
            raise InvalidParameterError("t_eval must be increasing, non-negative times")
        v0 = check_array("v0", v0, ndim=1, shape=(self.J.shape[0],))
        return np.array([expm_multiply(self.J * t, v0) for t in t_eval])


def linear_propagator(system, *, seed: int = 0, tol: float = 1e-10) -> LinearPropagator:
    """The exact propagator of a FlowSystem whose flow is linear, f(θ) = J θ.

    J is the analytic Jacobian at θ = 0; linearity is checked at two random states
    (f(v) = J v) and a non-linear flow is refused with DerivationCheckError.
    """
    n = system.size
    J = sps.csr_matrix(system.jacobian(np.zeros(n)))
    rng = np.random.default_rng(seed)
    for _ in range(2):
        v = rng.normal(size=n)
        err = relative_error(J @ v, system.flow_vector(v))
        if not within(err, tol):
            raise DerivationCheckError(
                f"the flow is not linear (f(v) ≠ J v, relative error {err:.3e}); "
                "use a numerical integrator instead of the exact propagator")
    return LinearPropagator(J)


@dataclass(frozen=True)
class SpectralPropagator:
    r"""exp(J t) v0 = H^{½} Φ e^{−Λ t} Φᵀ H^{−½} v0 + R for J = −H S_H, S = H^{−½}(−J)H^{½}
    symmetric; Φ, Λ are the eigenpairs of S below ``cutoff``. The dropped part obeys
    ‖H^{−½} R‖₂ ≤ e^{−cutoff·t} ‖H^{−½} v0‖₂, so for t ≥ t_min the result is exact to ``tol``."""

    sqrt_h: np.ndarray
    rates: np.ndarray  # Λ (ascending)
    modes: np.ndarray  # Φ (columns, orthonormal)
    cutoff: float
    t_min: float
    tol: float

    def __call__(self, v0, t: float) -> np.ndarray:
        t = check_real("t", t, self.t_min, None)
        v0 = check_array("v0", v0, ndim=1, shape=(len(self.sqrt_h),))
        w = v0 / self.sqrt_h
        return self.sqrt_h * (self.modes @ (np.exp(-self.rates * t) * (self.modes.T @ w)))


def spectral_propagator(system, t_min: float, *, tol: float = 1e-12, k0: int = 16) -> SpectralPropagator:
    """The propagator of a linear flow with symmetrisable Jacobian, valid for t ≥ t_min.

    Eigenpairs of S = H^{−½}(−J)H^{½} are found by shift-invert Lanczos (eigsh) and k is doubled
    until the largest one found exceeds cutoff = ln(1/tol)/t_min. Refuses a J that is not
    symmetrisable by the rates (DerivationCheckError); use :func:`linear_propagator` then.
    """
    t_min = check_real("t_min", t_min, 0.0, None, strict_min=True)
    tol = check_real("tol", tol, 0.0, 1.0, strict_min=True, strict_max=True)
    prop = linear_propagator(system)
    h = np.asarray(system.rate_vector, dtype=float)
    sh = np.sqrt(h)
    S = sps.diags(1.0 / sh) @ (-prop.J) @ sps.diags(sh)
    S = sps.csr_matrix(S)
    asym = abs(S - S.T).max() if S.nnz else 0.0
    scale = abs(S).max() if S.nnz else 1.0
    if not within(asym, 1e-12 * scale):
        raise DerivationCheckError(f"the Jacobian is not symmetrisable by the rates "
                                   f"(asymmetry {asym:.2e}); use linear_propagator")
    S = sps.csc_matrix((S + S.T) * 0.5)
    n = S.shape[0]
    cutoff = float(np.log(1.0 / tol) / t_min)
    k = min(k0, n - 2)
    sigma = -1e-3 * max(cutoff, 1e-300)
    lu = None
    for _attempt in range(MAX_ATTEMPTS):
        while True:
            if k >= n - 2:
                lam, phi = np.linalg.eigh(S.toarray())
                break
            lam, phi = eigsh(S, k=k, sigma=sigma, which="LM")
            order = np.argsort(lam)
            lam, phi = lam[order], phi[:, order]
            if lam[-1] > cutoff:
                break
            k = min(2 * k, n - 2)
        keep = lam <= cutoff
        # the eigenvector set must be closed under the cutoff: a degenerate cluster cut in half
        # would leave out modes below it, so require a gap above the kept ones
        if keep.all() and k < n - 2:
            raise DerivationCheckError("spectral propagator: no eigenvalue above the cutoff was found")
        if k >= n - 2:
            break  # the dense eigendecomposition is complete
        lu = lu if lu is not None else splu(S - sigma * sps.identity(n, format="csc"))
        if not missed_mode(lu, phi[:, keep], sigma, cutoff, n):
            break
        k = min(2 * k, n - 2)  # Lanczos missed a mode below the cutoff: ask for more
    else:
        raise DerivationCheckError(
            f"spectral propagator: after {MAX_ATTEMPTS} attempts Lanczos still misses modes below the "
            f"cutoff {cutoff:.3g} (n = {n}); use linear_propagator (expm_multiply) instead")
    return SpectralPropagator(sh, lam[keep], phi[:, keep], cutoff, t_min, tol)


MAX_ATTEMPTS = 4


def missed_mode(lu, phi: np.ndarray, sigma: float, cutoff: float, n: int) -> bool:
    r"""True if S has an eigenvalue below ``cutoff`` outside span(Φ).

    With P = I − ΦΦᵀ, the largest eigenvalue θ of P (S − σ)⁻¹ P is 1/(λ* − σ) for the
    smallest eigenvalue λ* of S on the complement of the kept modes; a mode was missed
    iff λ* ≤ cutoff, i.e. θ ≥ 1/(cutoff − σ). θ is found by an independent Lanczos run
    on the deflated operator, where a missed mode is the dominant one.
    """
    def project(x):
        return x - phi @ (phi.T @ x)

    op = LinearOperator((n, n), matvec=lambda x: project(lu.solve(project(np.ravel(x)))), dtype=float)
    theta = float(eigsh(op, k=1, which="LA", return_eigenvectors=False, tol=1e-8)[0])
    return not theta < (1.0 - 1e-6) / (cutoff - sigma)
