r"""Integration of θ̇ = f(θ) with a stiff solver fed the analytic sparse Jacobian.

A failed or non-finite integration raises :class:`IntegrationError` with the solver's
message and the time reached; a partial trajectory is never returned as if complete.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import BDF, solve_ivp
from scipy.linalg import lu_factor, lu_solve
from scipy.sparse import csc_matrix, issparse
from scipy.sparse.linalg import splu

from ..errors import IntegrationError, InvalidParameterError
from ..validation import check_array, check_int, check_real

STIFF = ("BDF", "Radau", "LSODA", "BDF-Schur")
METHODS = STIFF + ("RK45", "DOP853", "RK23")


def dense_tail(J) -> int:
    """Number k of trailing columns of J that are dense (at least half of the rows nonzero)."""
    counts = np.diff(csc_matrix(J).indptr)
    dense = counts >= 0.5 * J.shape[0]
    sparse = np.flatnonzero(~dense)
    return len(dense) - int(sparse[-1]) - 1 if len(sparse) else len(dense)


class SchurLU:
    r"""Exact LU of A = [[A₁₁, A₁₂], [A₂₁, A₂₂]] with sparse A₁₁ (splu) and the dense k×k
    Schur complement S = A₂₂ − A₂₁A₁₁⁻¹A₁₂ (LAPACK); solve: u = A₁₁⁻¹b₁, x₂ = S⁻¹(b₂ − A₂₁u),
    x₁ = u − (A₁₁⁻¹A₁₂)x₂. For Jacobians whose last k columns (shared blocks) are dense."""

    def __init__(self, A, k: int):
        A = csc_matrix(A)
        self.m = m = A.shape[0] - k
        self.lu11 = splu(A[:m, :m].tocsc())
        self.A21 = A[m:, :m].tocsr()
        self.X = self.lu11.solve(A[:m, m:].toarray())
        self.luS = lu_factor(A[m:, m:].toarray() - self.A21 @ self.X, overwrite_a=True)

    def solve(self, b: np.ndarray) -> np.ndarray:
        m = self.m
        u = self.lu11.solve(b[:m])
        x2 = lu_solve(self.luS, b[m:] - self.A21 @ u)
        return np.concatenate([u - self.X @ x2, x2])


class SchurBDF(BDF):
    """scipy's BDF whose Newton systems I − cJ (J sparse) are solved by :class:`SchurLU` over the
    dense trailing columns of J (found once, from the first Jacobian); plain splu when there are none
    or when the sparse block is singular."""

    def __init__(self, fun, t0, y0, t_bound, **options):
        super().__init__(fun, t0, y0, t_bound, **options)
        if not issparse(self.J):
            return
        k = dense_tail(self.J)
        if k == 0 or k >= self.n:
            return

        def lu(A):
            self.nlu += 1
            try:
                return SchurLU(A, k)
            except RuntimeError:  # singular sparse block: factor the whole matrix
                return splu(csc_matrix(A))

        self.lu = lu
        self.solve_lu = lambda LU, b: LU.solve(b)


class _NonFinite(ArithmeticError):
    """The flow returned NaN or inf at time ``args[0]`` (internal signal)."""


@dataclass(frozen=True)
class Solution:
    """States θ(t_k) at the requested times (rows of ``y``)."""

    t: np.ndarray
    y: np.ndarray
    nfev: int
    njev: int
    method: str


def time_grid(t_end: float, n_points: int = 200, t_first: float | None = None) -> np.ndarray:
    """0 followed by log-spaced times up to t_end (for log-time plots and late-time fits)."""
    t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
    n_points = check_int("n_points", n_points, 3)
    t_first = t_end * 1e-4 if t_first is None else check_real(
        "t_first", t_first, 0.0, t_end, strict_min=True, strict_max=True)
    return np.concatenate([[0.0], np.geomspace(t_first, t_end, n_points - 1)])


def integrate(fun, y0: np.ndarray, t_eval: np.ndarray, *, jac=None, method: str = "BDF",
              rtol: float = 1e-10, atol: float = 1e-12) -> Solution:
    """Solve θ̇ = fun(θ) from θ(0) = y0, returning θ at ``t_eval`` (increasing, from 0).

    ``jac(θ)`` (sparse or dense) is passed to the stiff solvers; "BDF-Schur" is BDF with the
    Newton systems of a sparse ``jac`` solved through the dense Schur complement of its dense
    trailing columns (:class:`SchurBDF`; same steps and error control as "BDF").
    """
    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {METHODS}; got {method!r}")
    rtol = check_real("rtol", rtol, 0.0, 1.0, strict_min=True)
    atol = check_real("atol", atol, 0.0, None, strict_min=True)
    y0 = check_array("y0", y0, ndim=1)
    t_eval = check_array("t_eval", t_eval, ndim=1)
    if len(t_eval) < 2 or np.any(np.diff(t_eval) <= 0) or t_eval[0] < 0:
        raise InvalidParameterError("t_eval must be increasing, non-negative times (at least two); "
                                    f"got {len(t_eval)} times from {t_eval[0]:g}")
    try:
        f0 = np.asarray(fun(y0), dtype=float)
    except (ValueError, TypeError, IndexError) as exc:
        raise InvalidParameterError(f"y0 of shape {y0.shape} is not a state of this flow: {exc}") from exc
    if f0.shape != y0.shape:
        raise InvalidParameterError(f"fun(y0) must have the shape of y0 {y0.shape}; got {f0.shape}")
    if not np.all(np.isfinite(f0)):
        raise IntegrationError("the flow is not finite at the initial state (t = 0)")

    reached = [float(t_eval[0])]  # the last accepted step (recorded by a never-firing event)

    def rhs(t, y):
        f = fun(y)
        if not np.all(np.isfinite(f)):
            raise _NonFinite(t)
        return f

    def track(t, y):
        reached[0] = float(t)
        return 1.0

    kw = {}
    if jac is not None and method in STIFF:
        kw["jac"] = lambda t, y: jac(y)
    try:
        with np.errstate(over="raise", invalid="raise"):
            sol = solve_ivp(rhs, (float(t_eval[0]), float(t_eval[-1])), y0,
                            method=SchurBDF if method == "BDF-Schur" else method,
                            t_eval=t_eval, rtol=rtol, atol=atol, events=track, **kw)
    except (FloatingPointError, _NonFinite) as exc:
        raise IntegrationError(f"the state diverged (non-finite flow) after t = {reached[0]:g} "
                               f"of {t_eval[-1]:g}; no trajectory returned") from exc
    if sol.status != 0 or sol.y.shape[1] != len(t_eval):
        raise IntegrationError(f"integration failed at t = {reached[0]:g} of {t_eval[-1]:g}: "
                               f"{sol.message}; no trajectory returned")
    if not np.all(np.isfinite(sol.y)):
        raise IntegrationError(f"integration produced non-finite values before t = {t_eval[-1]:g}; "
                               "no trajectory returned")
    return Solution(sol.t, sol.y.T, int(sol.nfev), int(sol.njev), method)
