r"""Integration of θ̇ = f(θ) with a stiff solver fed the analytic sparse Jacobian.

A failed or non-finite integration raises :class:`IntegrationError` with the solver's
message and the time reached; a partial trajectory is never returned as if complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import DOP853, LSODA, RK23, RK45, Radau
from scipy.linalg import lu_factor, lu_solve
from scipy.sparse import csc_matrix, issparse
from scipy.sparse.linalg import splu

from ..errors import IntegrationError, InvalidParameterError, ProblemTooLargeError
from ..symbolic.loss import SAMPLE
from ..validation import check_array, check_int, check_real
from .krylov_bdf import KrylovBDF, check_krylov_system
from .newton_floor import FloorBDF

STIFF = ("BDF", "Radau", "LSODA", "BDF-Schur", "BDF-nodes", "BDF-krylov")
METHODS = STIFF + ("RK45", "DOP853", "RK23")
#: "BDF" is scipy's BDF with the noise-aware Newton test (:class:`.newton_floor.FloorBDF`,
#: docs/model.md §3.6; the same steps as scipy's wherever no Newton iteration reaches the round-off floor)
METHOD_CLASSES = {"BDF": FloorBDF, "Radau": Radau, "LSODA": LSODA, "RK45": RK45, "DOP853": DOP853, "RK23": RK23}


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


class SchurBDF(FloorBDF):
    """scipy's BDF (with the noise-aware Newton test of docs/model.md §3.6) whose Newton systems
    I − cJ (J sparse) are solved by :class:`SchurLU` over the dense trailing columns of J (found
    once, from the first Jacobian); plain splu when there are none or when the sparse block is
    singular."""

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


class NodeBlockLU:
    r"""Exact solve of A x = b, A = [[A₁₁, A₁₂], [A₂₁, A₂₂]], whose leading n₁ = N·k unknowns
    (the sample rows of an edge-loss flow: samples couple only to labels and shared blocks,
    docs/model.md §1) form a block-diagonal A₁₁ of N k×k blocks. A₁₁ is inverted block by block
    (batched LAPACK), the m×m Schur complement S = A₂₂ − A₂₁A₁₁⁻¹A₁₂ (labels + shared blocks) is
    factorised densely: cost O(N k³ + N k m²), no sparse LU, no fill-in over the samples.
    Raises ValueError when A₁₁ is not block diagonal."""

    def __init__(self, A, n_blocks: int, k: int):
        A = A.tocsr() if issparse(A) else csc_matrix(A).tocsr()
        n1 = n_blocks * k
        self.n1, self.N, self.k = n1, n_blocks, k
        A11 = A[:n1, :n1].tocoo()
        bi = A11.row // k
        if np.any(A11.col // k != bi):
            raise ValueError("the leading block is not block diagonal")
        B = np.zeros((n_blocks, k, k))
        np.add.at(B, (bi, A11.row % k, A11.col % k), A11.data)
        self.Binv = np.linalg.inv(B)
        A12 = A[:n1, n1:].toarray().reshape(n_blocks, k, -1)
        self.X = (self.Binv @ A12).reshape(n1, -1)
        A21 = A[n1:, :n1]
        self.A21 = A21.toarray() if A21.nnz > 0.3 * A21.shape[0] * A21.shape[1] else A21
        S = A[n1:, n1:].toarray() - self.A21 @ self.X
        self.luS = lu_factor(S, overwrite_a=True, check_finite=False)

    def solve(self, b: np.ndarray) -> np.ndarray:
        n1 = self.n1
        u = (self.Binv @ b[:n1].reshape(self.N, self.k, 1)).reshape(n1)
        x2 = lu_solve(self.luS, b[n1:] - self.A21 @ u, check_finite=False)
        return np.concatenate([u - self.X @ x2, x2])


class NodeBDF(FloorBDF):
    """scipy's BDF (with the noise-aware Newton test of docs/model.md §3.6) whose Newton systems
    I − cJ are solved by :class:`NodeBlockLU` over the leading
    ``node_blocks = (N, k)`` block-diagonal sample rows (same steps and error control as "BDF");
    plain splu if the structure does not hold."""

    def __init__(self, fun, t0, y0, t_bound, node_blocks=None, **options):
        super().__init__(fun, t0, y0, t_bound, **options)
        if node_blocks is None or not issparse(self.J):
            return
        N, k = node_blocks

        def lu(A):
            self.nlu += 1
            try:
                return NodeBlockLU(A, N, k)
            except (ValueError, np.linalg.LinAlgError):  # not block diagonal or a singular block
                return _SpluSolve(splu(csc_matrix(A)))

        self.lu = lu
        self.solve_lu = lambda LU, b: LU.solve(b)


class _SpluSolve:
    def __init__(self, lu):
        self.lu = lu

    def solve(self, b):
        return self.lu.solve(b)


class _NonFinite(ArithmeticError):
    """The flow returned NaN or inf at time ``args[0]`` (internal signal)."""


@dataclass(frozen=True)
class Solution:
    """States θ(t_k) at the requested times (rows of ``y``).

    With ``stop_residual`` the run ends at the first accepted step where ‖θ̇‖_∞ ≤ stop_residual:
    ``t`` then holds the requested times before that step and, last, the time reached.
    ``residual`` is ‖θ̇‖_∞ at the last state, ``stopped`` whether the residual test ended the run.
    ``newton_floor``: the BDF methods' counters of the noise-aware Newton test (docs/model.md §3.6:
    'checks', 'accepted', 'limited'); empty for the other methods. ``switched``: LSODA run
    ``until_stiff`` ended where it switched to its BDF mode (``t`` holds the requested times
    before that step and, last, the time reached).
    """

    t: np.ndarray
    y: np.ndarray
    nfev: int
    njev: int
    method: str
    stopped: bool = False
    residual: float = float("nan")
    nsteps: int = 0
    stats: dict = field(default_factory=dict)
    newton_floor: dict = field(default_factory=dict)
    switched: bool = False


#: largest number of unknowns for which a stiff solver may factorise the sparse Jacobian (SuperLU);
#: beyond it integrate() refuses with ProblemTooLargeError instead of failing inside SuperLU.
LU_LIMIT = 1_500_000


def node_blocks(system) -> tuple | None:
    """(N, k) when the state starts with the N sample rows of width k (their Jacobian block is
    block diagonal: samples couple only through labels and shared blocks), else None."""
    lay = getattr(system, "layout", {})
    if SAMPLE in lay and lay[SAMPLE][0] == 0 and len(lay[SAMPLE][1]) == 2:
        return tuple(int(v) for v in lay[SAMPLE][1])
    return None


def time_grid(t_end: float, n_points: int = 200, t_first: float | None = None) -> np.ndarray:
    """0 followed by log-spaced times up to t_end (for log-time plots and late-time fits)."""
    t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
    n_points = check_int("n_points", n_points, 3)
    t_first = t_end * 1e-4 if t_first is None else check_real(
        "t_first", t_first, 0.0, t_end, strict_min=True, strict_max=True)
    return np.concatenate([[0.0], np.geomspace(t_first, t_end, n_points - 1)])


def check_lu_size(n: int, method: str, lu_limit: int | None = None) -> None:
    """Refuse a sparse LU of an n-unknown Newton system beyond ``lu_limit`` (default LU_LIMIT)."""
    limit = LU_LIMIT if lu_limit is None else check_int("lu_limit", lu_limit, 1)
    if n > limit:
        raise ProblemTooLargeError(
            f"method={method!r} factorises the {n}×{n} sparse Jacobian (SuperLU), above the limit "
            f"lu_limit = {limit} unknowns (SuperLU runs out of memory or fails in gstrf at a few "
            "million): for a linear flow use method='auto' (exact, factorisation-free), else the "
            "matrix-free 'BDF-krylov' (stiff) or an explicit method ('DOP853'), or raise lu_limit if "
            "the machine has the memory")


def check_stop_residual(stop_residual) -> float | None:
    """None or a tolerance > 0 for ‖θ̇‖_∞ (the fixed-point test)."""
    return None if stop_residual is None else check_real("stop_residual", stop_residual, 0.0, None,
                                                         strict_min=True)


#: LSODA's method indicator MCUR (the method of its next step: 1 Adams, 2 BDF), IWORK(20) of
#: the Fortran solver
LSODA_MCUR = 19


def lsoda_method(solver) -> int:
    """The method scipy's LSODA ``solver`` takes next: 1 (Adams, non-stiff) or 2 (BDF, stiff)."""
    try:
        return int(solver._lsoda_solver._integrator.iwork[LSODA_MCUR])
    except (AttributeError, IndexError, TypeError) as exc:  # a SciPy without the Fortran work array
        raise IntegrationError("LSODA's method indicator (iwork MCUR) cannot be read from this SciPy's "
                               "LSODA: until_stiff is not available; use method='BDF-nodes'") from exc


def integrate(fun, y0: np.ndarray, t_eval: np.ndarray, *, jac=None, method: str = "BDF",
              rtol: float = 1e-10, atol: float = 1e-12, stop_residual: float | None = None,
              lu_limit: int | None = None, node_blocks: tuple | None = None, system=None,
              krylov: dict | None = None, residual_norm=None, until_stiff: bool = False) -> Solution:
    """Solve θ̇ = fun(θ) from θ(0) = y0, returning θ at ``t_eval`` (increasing, from 0).

    ``jac(θ)`` (sparse or dense) is passed to the stiff solvers; "BDF-Schur" is BDF with the
    Newton systems of a sparse ``jac`` solved through the dense Schur complement of its dense
    trailing columns (:class:`SchurBDF`; same steps and error control as "BDF"); "BDF-nodes"
    eliminates the leading ``node_blocks = (N, k)`` block-diagonal sample rows instead
    (:class:`NodeBDF`); "BDF-krylov" solves them matrix-free by preconditioned GMRES through the
    derived JVP of ``system`` (:class:`.krylov_bdf.KrylovBDF`, options ``krylov`` = {'krylov_rtol',
    'krylov_maxiter', 'krylov_coarse'}; no Jacobian is assembled, ``jac`` is not used).
    ``stop_residual``: end at the first step with ‖θ̇‖_∞ ≤ stop_residual (a fixed point reached);
    ``residual_norm(θ̇)`` replaces ‖θ̇‖_∞ there (a reduced flow measured as its full flow,
    :mod:`.sample_reduction`). A stiff method with more than ``lu_limit`` unknowns is refused (:class:`ProblemTooLargeError`).
    ``until_stiff`` (method 'LSODA' only): run LSODA in its Adams mode (no Jacobian; ``jac`` is
    not used, and its Jacobian is declared banded with zero bandwidth, so no n×n work array is
    allocated) and end after the first step following which LSODA switches to BDF
    (``Solution.switched``; the caller continues from the last state with a stiff method).
    """
    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {METHODS}; got {method!r}")
    if until_stiff and method != "LSODA":
        raise InvalidParameterError(f"until_stiff needs method='LSODA' (its Adams/BDF switch); got {method!r}")
    rtol = check_real("rtol", rtol, 0.0, 1.0, strict_min=True)
    atol = check_real("atol", atol, 0.0, None, strict_min=True)
    stop_residual = check_stop_residual(stop_residual)
    y0 = check_array("y0", y0, ndim=1)
    t_eval = check_array("t_eval", t_eval, ndim=1)
    if len(t_eval) < 2 or np.any(np.diff(t_eval) <= 0) or t_eval[0] < 0:
        raise InvalidParameterError("t_eval must be increasing, non-negative times (at least two); "
                                    f"got {len(t_eval)} times from {t_eval[0]:g}")
    if method == "BDF-nodes" and node_blocks is None:
        raise InvalidParameterError("method='BDF-nodes' needs node_blocks = (N, k): the leading block-diagonal rows")
    if method == "BDF-krylov":
        check_krylov_system(system)
        if system.size != len(y0):
            raise InvalidParameterError(f"y0 has {len(y0)} entries; the system has {system.size} unknowns")
        kopt = dict(krylov or {})
        bad = set(kopt) - {"krylov_rtol", "krylov_maxiter", "krylov_coarse"}
        if bad:
            raise InvalidParameterError("krylov options must be among 'krylov_rtol', 'krylov_maxiter', "
                                        f"'krylov_coarse'; got {sorted(bad)}")
        if "krylov_coarse" in kopt and not isinstance(kopt["krylov_coarse"], (bool, np.bool_)):
            raise InvalidParameterError(f"krylov_coarse must be True or False; got {kopt['krylov_coarse']!r}")
        if "krylov_rtol" in kopt:
            kopt["krylov_rtol"] = check_real("krylov_rtol", kopt["krylov_rtol"], 0.0, 1.0, strict_min=True,
                                             strict_max=True)
        if "krylov_maxiter" in kopt:
            kopt["krylov_maxiter"] = check_int("krylov_maxiter", kopt["krylov_maxiter"], 1)
    elif method in STIFF and jac is not None and method != "BDF-nodes" and not until_stiff:
        check_lu_size(len(y0), method, lu_limit)
    try:
        f0 = np.asarray(fun(y0), dtype=float)
    except (ValueError, TypeError, IndexError) as exc:
        raise InvalidParameterError(f"y0 of shape {y0.shape} is not a state of this flow: {exc}") from exc
    if f0.shape != y0.shape:
        raise InvalidParameterError(f"fun(y0) must have the shape of y0 {y0.shape}; got {f0.shape}")
    if not np.all(np.isfinite(f0)):
        raise IntegrationError("the flow is not finite at the initial state (t = 0)")

    nfev = [0]

    def rhs(t, y):
        nfev[0] += 1
        f = fun(y)
        if not np.all(np.isfinite(f)):
            raise _NonFinite(t)
        return f

    kw = {}
    if method == "BDF-krylov":
        kw.update(system=system, **kopt)
    elif until_stiff:  # Adams only: a "banded" Jacobian of bandwidth 0 keeps LSODA's work arrays O(n)
        kw.update(lband=0, uband=0)
    elif jac is not None and method == "LSODA":  # LSODA takes dense Jacobians only
        kw["jac"] = lambda t, y: (lambda J: J.toarray() if issparse(J) else J)(jac(y))
    elif jac is not None and method in STIFF:
        kw["jac"] = lambda t, y: jac(y)
    cls = {"BDF-Schur": SchurBDF, "BDF-nodes": NodeBDF, "BDF-krylov": KrylovBDF}.get(method) or METHOD_CLASSES[method]
    if method == "BDF-nodes":
        kw["node_blocks"] = node_blocks
    t0, t1 = float(t_eval[0]), float(t_eval[-1])
    ts, ys = [t0], [y0.copy()]
    norm = residual_norm or (lambda f: float(np.max(np.abs(f))) if f.size else 0.0)
    residual = norm(f0)
    if stop_residual is not None and residual <= stop_residual:
        return Solution(np.array(ts), np.array(ys), 1, 0, method, True, residual, 0)
    reached, stopped, switched, nsteps, i_eval, solver = t0, False, False, 0, 1, None
    try:
        with np.errstate(over="raise", invalid="raise"):
            solver = cls(rhs, t0, y0, t1, rtol=rtol, atol=atol, **kw)
            while solver.status == "running":
                msg = solver.step()
                if solver.status == "failed":
                    raise IntegrationError(f"integration failed at t = {reached:g} of {t1:g}: {msg}; "
                                           "no trajectory returned")
                nsteps += 1
                t = float(solver.t)
                reached = t
                j = int(np.searchsorted(t_eval, t, side="right"))
                if j > i_eval:
                    sol = solver.dense_output()
                    ts.extend(t_eval[i_eval:j].tolist())
                    ys.extend(np.atleast_2d(sol(t_eval[i_eval:j])).T)
                    i_eval = j
                if stop_residual is not None:
                    f = solver.f if method in ("RK45", "RK23", "DOP853") else rhs(t, solver.y)
                    residual = norm(f)
                    if residual <= stop_residual:
                        stopped = True
                        if ts[-1] != t:
                            ts.append(t)
                            ys.append(solver.y.copy())
                        break
                if until_stiff and solver.status == "running" and lsoda_method(solver) == 2:
                    switched = True
                    if ts[-1] != t:
                        ts.append(t)
                        ys.append(solver.y.copy())
                    break
    except (FloatingPointError, _NonFinite) as exc:
        raise IntegrationError(f"the state diverged (non-finite flow) after t = {reached:g} "
                               f"of {t1:g}; no trajectory returned") from exc
    y = np.array(ys)
    if not stopped and not switched and len(ts) != len(t_eval):
        raise IntegrationError(f"integration stopped at t = {reached:g} of {t1:g} before the last "
                               "requested time; no trajectory returned")
    if not np.all(np.isfinite(y)):
        raise IntegrationError(f"integration produced non-finite values before t = {t1:g}; "
                               "no trajectory returned")
    if stop_residual is None:
        residual = norm(np.asarray(fun(y[-1]), dtype=float))
    stats = dict(solver.stats) if isinstance(solver, KrylovBDF) else {}
    return Solution(np.array(ts), y, int(nfev[0]), int(getattr(solver, "njev", 0) or 0), method,
                    stopped, residual, nsteps, stats, dict(getattr(solver, "newton_floor", {}) or {}),
                    switched)
