r"""Exact propagator of a linear flow: θ̇ = J θ with constant J gives θ(t) = exp(J t) θ(0).

For the embedding model J = −H L_G ⊗ I_d, assembled from the derived edge Jacobian; the
action exp(J t) v is computed without forming exp(J t) (scipy's expm_multiply), which is
exact up to its truncation tolerance however stiff J is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps
from scipy.sparse.linalg import expm_multiply

from ..errors import DerivationCheckError, InvalidParameterError
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
        if err > tol:
            raise DerivationCheckError(
                f"the flow is not linear (f(v) ≠ J v, relative error {err:.3e}); "
                "use a numerical integrator instead of the exact propagator")
    return LinearPropagator(J)
