r"""scipy's BDF for many independent initial-value problems of one autonomous flow at once.

Every seed keeps its own step size, order, difference array, Jacobian and LU, and takes exactly
the decisions of its own single run with ``scipy.integrate.BDF`` (same predictor, Newton
iteration and convergence test, error estimate, step-size and order selection; the formulas of
scipy/integrate/_ivp/bdf.py, vectorised over the seeds). What the seeds share is the evaluation:
in one *round* every running seed makes one step attempt, and the flows of all their Newton
iterates are one call of ``flows`` (a batched kernel), the Jacobians requested in the round one
call of ``jacobians``. A seed therefore never takes the smaller steps or extra Jacobians another
seed needs (the lockstep BDF over a stacked state does: its step size is the smallest any seed
accepts), and seeds leave the batch one by one (:meth:`SeedBDF.retire`).
"""
from __future__ import annotations

import numpy as np
from scipy.integrate._ivp.bdf import BdfDenseOutput

from ..errors import IntegrationError
from . import newton_floor as _floor

MAX_ORDER = 5
NEWTON_MAXITER = 4
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0
EPS = np.finfo(float).eps
_KAPPA = np.array([0, -0.1850, -1 / 9, -0.0823, -0.0415, 0])
_GAMMA = np.hstack((0, np.cumsum(1 / np.arange(1, MAX_ORDER + 1))))
_ALPHA = (1 - _KAPPA) * _GAMMA
_ERROR_CONST = _KAPPA * _GAMMA + 1 / np.arange(1, MAX_ORDER + 2)
_ROWS = np.arange(MAX_ORDER + 1)


def _rms(X: np.ndarray) -> np.ndarray:
    """scipy's error norm ‖x‖ = ‖x‖₂/√n of every row."""
    return np.sqrt(np.einsum("bn,bn->b", X, X) / X.shape[1])


def _compute_R(factor: np.ndarray) -> np.ndarray:
    """scipy's compute_R(MAX_ORDER, f) for each f (B×6×6); its leading (q+1)×(q+1) block is
    compute_R(q, f)."""
    I = np.arange(1, MAX_ORDER + 1)[:, None]
    J = np.arange(1, MAX_ORDER + 1)
    M = np.zeros((len(factor), MAX_ORDER + 1, MAX_ORDER + 1))
    M[:, 1:, 1:] = (I - 1 - factor[:, None, None] * J) / I
    M[:, 0] = 1
    return np.cumprod(M, axis=1)


def change_D(D: np.ndarray, order: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """scipy's change_D seed by seed: D_b[:q+1] ← (R(q, f) U(q))ᵀ D_b[:q+1], q = order_b,
    f = factor_b (the differences re-expressed for the step h·f); returns the new D (B×8×n)."""
    order = np.asarray(order)
    blk = (_ROWS[None, :] <= order[:, None])
    m2 = blk[:, :, None] & blk[:, None, :]
    RU = (_compute_R(np.asarray(factor, dtype=float)) * m2) @ (_compute_R(np.ones(len(order))) * m2)
    T = np.broadcast_to(np.eye(MAX_ORDER + 3), (len(order), MAX_ORDER + 3, MAX_ORDER + 3)).copy()
    T[:, :MAX_ORDER + 1, :MAX_ORDER + 1] = np.where(m2, np.swapaxes(RU, 1, 2), np.eye(MAX_ORDER + 1))
    return T @ D


class SeedBDF:
    """B independent BDF integrations of θ̇ = f(θ) from the rows of ``Y0`` (t0 → t_bound), each
    with scipy's BDF decisions (docstring of the module). The problem is given by hooks:

    * ``flows(seeds, Y) -> F``: f at the rows of Y (the states of ``seeds``), one batched call;
      a non-finite flow raises :class:`~symcollapse.errors.IntegrationError`;
    * ``jacobians(seeds, Y) -> list``: the Jacobian of each row (any object ``factor`` accepts);
    * ``factor(Js, cs) -> list``: solvers LU of (I − c J) x = r for the pairs (J, c) (one call per
      round); ``solve(LUs, R) -> X``: the rows of R solved with the LUs of their seeds.

    :meth:`step` makes one attempt for every running seed and returns the seeds that accepted
    a step; ``t``, ``y``, :meth:`dense_output` are per seed. Counters ``nfev``, ``njev``,
    ``nlu``, ``nsteps`` (and ``floor_checks``, ``floor_accepted``, ``floor_limited`` of the
    noise-aware Newton test, docs/model.md §3.6) are per seed."""

    def __init__(self, flows, jacobians, factor, solve, t0: float, Y0: np.ndarray, t_bound: float,
                 *, rtol: float, atol: float, F0: np.ndarray | None = None):
        Y0 = np.array(Y0, dtype=float)
        B, n = Y0.shape
        self.B, self.n = B, n
        self.flows, self.jacobians, self.factor, self.solve = flows, jacobians, factor, solve
        self.rtol, self.atol, self.t_bound = float(rtol), float(atol), float(t_bound)
        self.newton_tol = max(10 * EPS / rtol, min(0.03, rtol ** 0.5))
        self.nfev = np.zeros(B, dtype=int)
        self.njev = np.zeros(B, dtype=int)
        self.nlu = np.zeros(B, dtype=int)
        self.nsteps = np.zeros(B, dtype=int)
        self.floor_checks = np.zeros(B, dtype=int)  # the noise-aware Newton test (docs/model.md §3.6)
        self.floor_accepted = np.zeros(B, dtype=int)
        self.floor_limited = np.zeros(B, dtype=int)
        self.floor_eta = np.full(B, np.nan)  # the floor of the last step's accepted iterate (NaN: none)
        self.noise_signs = _floor.noise_signs(n)
        seeds = np.arange(B)
        F0 = self._flows(seeds, Y0) if F0 is None else np.asarray(F0, dtype=float)
        self.t = np.full(B, float(t0))
        self.t_old = self.t.copy()
        self.y = Y0
        self.h_abs = self._initial_step(seeds, Y0, F0)
        self.D = np.zeros((B, MAX_ORDER + 3, n))
        self.D[:, 0] = Y0
        self.D[:, 1] = F0 * self.h_abs[:, None]
        self.order = np.ones(B, dtype=int)
        self.n_equal = np.zeros(B, dtype=int)
        self.J = [None] * B
        self._set_jacobians(seeds, Y0)
        self.LU = [None] * B
        self.live = np.ones(B, dtype=bool)
        self.fresh = np.ones(B, dtype=bool)  # the next attempt starts a new step
        self.current_jac = np.zeros(B, dtype=bool)
        self.min_step = np.zeros(B)

    # --- hooks with counting ---------------------------------------------------------------
    def _flows(self, seeds, Y):
        self.nfev[seeds] += 1
        return self.flows(seeds, Y)

    def _set_jacobians(self, seeds, Y):
        self.njev[seeds] += 1
        for b, J in zip(seeds, self.jacobians(seeds, Y)):
            self.J[b] = J

    def _initial_step(self, seeds, y0, f0):
        """scipy's select_initial_step (order 1, no max_step) per seed."""
        interval = abs(self.t_bound - self.t[seeds])
        scale = self.atol + np.abs(y0) * self.rtol
        d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
        h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.where(d1 > 0, d1, 1.0))
        h0 = np.minimum(h0, interval)
        f1 = self._flows(seeds, y0 + h0[:, None] * f0)
        d2 = _rms((f1 - f0) / scale) / h0
        with np.errstate(divide="ignore"):
            h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h0 * 1e-3),
                          (0.01 / np.maximum(d1, d2)) ** 0.5)
        return np.minimum.reduce([100 * h0, h1, interval])

    def retire(self, seeds) -> None:
        """Take seeds out of the batch (stopped or finished): no further attempts."""
        self.live[seeds] = False

    def dense_output(self, b: int) -> BdfDenseOutput:
        """The interpolant of seed b's last step (scipy's BdfDenseOutput)."""
        q = int(self.order[b])
        return BdfDenseOutput(float(self.t_old[b]), float(self.t[b]), float(self.h_abs[b]), q,
                              self.D[b, :q + 1].copy())

    def _rescale(self, sel, factor, order=None):
        self.D[sel] = change_D(self.D[sel], self.order[sel] if order is None else order, factor)

    # --- one round -------------------------------------------------------------------------
    def step(self) -> np.ndarray:
        """One step attempt for every running seed; returns the seeds whose attempt was accepted."""
        S = np.flatnonzero(self.live)
        if not len(S):
            return S
        new = S[self.fresh[S]]
        if len(new):  # the head of scipy's _step_impl
            t = self.t[new]
            self.min_step[new] = 10 * np.abs(np.nextafter(t, np.inf) - t)
            self.current_jac[new] = False
            small = self.h_abs[new] < self.min_step[new]
            if small.any():
                sel = new[small]
                self._rescale(sel, self.min_step[sel] / self.h_abs[sel])
                self.h_abs[sel] = self.min_step[sel]
                self.n_equal[sel] = 0
            self.fresh[new] = False
        if np.any(self.h_abs[S] < self.min_step[S]):
            b = S[np.argmax(self.h_abs[S] < self.min_step[S])]
            raise IntegrationError(f"integration failed at t = {self.t[b]:g} of {self.t_bound:g}: "
                                   "Required step size is less than spacing between numbers.; "
                                   "no trajectory returned")
        t = self.t[S]
        t_new = t + self.h_abs[S]
        over = t_new > self.t_bound
        if over.any():
            sel = S[over]
            t_new[over] = self.t_bound
            self._rescale(sel, (self.t_bound - t[over]) / self.h_abs[sel])
            self.n_equal[sel] = 0
            for b in sel:
                self.LU[b] = None
        h = t_new - t
        self.h_abs[S] = np.abs(h)
        o = self.order[S]
        # (a view when the running seeds are consecutive, e.g. all of them: no copy of their differences)
        Dp = self.D[S[0]:S[-1] + 1, :MAX_ORDER + 1] if S[-1] - S[0] == len(S) - 1 else self.D[S, :MAX_ORDER + 1]
        y_pred = np.einsum("bi,bin->bn", (_ROWS[None, :] <= o[:, None]).astype(float), Dp)
        scale = self.atol + self.rtol * np.abs(y_pred)
        g = np.where((_ROWS[None, :] >= 1) & (_ROWS[None, :] <= o[:, None]), _GAMMA[None, :], 0.0)
        psi = np.einsum("bi,bin->bn", g, Dp) / _ALPHA[o][:, None]
        c = h / _ALPHA[o]

        m = len(S)
        conv = np.zeros(m, dtype=bool)
        n_iter = np.zeros(m, dtype=int)
        y_new, dsum = y_pred.copy(), np.zeros_like(y_pred)
        pending = np.arange(m)
        while len(pending):
            need = [i for i in pending if self.LU[S[i]] is None]
            if need:
                self.nlu[S[need]] += 1
                for i, LU in zip(need, self.factor([self.J[S[i]] for i in need], c[need])):
                    self.LU[S[i]] = LU
            ok, it, yv, dv = self._newton(S, pending, y_pred, c, psi, scale)
            conv[pending], n_iter[pending], y_new[pending], dsum[pending] = ok, it, yv, dv
            failed = pending[~ok]
            # a failure at the round-off floor halves h at once: a new J cannot lower the noise
            refresh = failed[~self.current_jac[S[failed]] & ~self.newton_limited[~ok]]
            if len(refresh):  # a fresh Jacobian at the predictor, then Newton again
                sel = S[refresh]
                self._set_jacobians(sel, y_pred[refresh])
                for b in sel:
                    self.LU[b] = None
                self.current_jac[sel] = True
            pending = refresh
        halve = np.flatnonzero(~conv)
        if len(halve):  # Newton failed with a current Jacobian: half the step
            sel = S[halve]
            self.h_abs[sel] *= 0.5
            self._rescale(sel, np.full(len(sel), 0.5))
            self.n_equal[sel] = 0
            for b in sel:
                self.LU[b] = None
        C = np.flatnonzero(conv)
        if not len(C):
            return C
        safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter[C])
        scale = self.atol + self.rtol * np.abs(y_new[C])
        error_norm = _rms(_ERROR_CONST[o[C]][:, None] * dsum[C] / scale)
        rej = error_norm > 1
        if rej.any():  # the LU is kept (scipy: no convergence problem)
            sel = S[C[rej]]
            factor = np.maximum(MIN_FACTOR, safety[rej] * error_norm[rej] ** (-1 / (o[C[rej]] + 1)))
            self.h_abs[sel] *= factor
            self._rescale(sel, factor)
            self.n_equal[sel] = 0
        a = ~rej
        A = C[a]
        sel = S[A]
        if not len(sel):
            return sel
        self._accept(sel, t_new[A], y_new[A], dsum[A], scale[a], error_norm[a], safety[a])
        return sel

    def _newton(self, S, P, y_pred, c, psi, scale):
        """scipy's solve_bdf_system for the seeds S[P] at once (each with its own rate test), with
        the noise-aware test of docs/model.md §3.6 (:func:`.newton_floor.solve_bdf_system`): a seed
        whose iteration scipy calls failed is converged at its iterate when its increment is at the
        measured round-off floor (the floor's flows and solves batched over those seeds). Sets
        ``newton_limited`` (per seed of P): its failure is at a floor above FLOOR_MAX
        (:func:`.newton_floor.floor_verdict`)."""
        m = len(P)
        y = y_pred[P].copy()
        d = np.zeros_like(y)
        old = np.zeros(m)
        ok = np.zeros(m, dtype=bool)
        self.newton_limited = np.zeros(m, dtype=bool)
        self.floor_eta[S[P]] = np.nan
        it = np.zeros(m, dtype=int)
        run = np.ones(m, dtype=bool)
        tol = self.newton_tol
        for k in range(NEWTON_MAXITER):
            A = np.flatnonzero(run)
            if not len(A):
                break
            seeds = S[P[A]]
            F = self._flows(seeds, y[A])
            dy = self.solve([self.LU[b] for b in seeds], c[P[A]][:, None] * F - psi[P[A]] - d[A])
            dn = _rms(dy / scale[P[A]])
            it[A] = k + 1
            if k == 0:
                bad = np.zeros(len(A), dtype=bool)
                done = dn == 0
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    rate = dn / old[A]
                    bad = (rate >= 1) | (rate ** (NEWTON_MAXITER - k) / (1 - rate) * dn > tol)
                    done = ~bad & ((dn == 0) | (rate / (1 - rate) * dn < tol))
                probe = np.flatnonzero(bad & _floor.probed(dn, ~self.current_jac[seeds]))  # else nothing to decide
                if len(probe):
                    done[probe], lim = self._at_floor(S[P[A[probe]]], y[A[probe]], F[probe], c[P[A[probe]]],
                                                      scale[P[A[probe]]], dn[probe])
                    self.newton_limited[A[probe]] = lim
            good = A[~bad]
            y[good] += dy[~bad]
            d[good] += dy[~bad]
            ok[A[done]] = True
            run[A[bad | done]] = False
            old[A] = dn
        return ok, it, y, d

    def _at_floor(self, seeds, Y, F, c, scale, dn):
        """(accepted, limited): which would-fail increments (scaled norms ``dn``) are at the
        measured round-off floor of their seeds and acceptable, which are at a floor above
        FLOOR_MAX (:func:`.newton_floor.floor_rows`, :func:`.newton_floor.floor_verdict`,
        docs/model.md §3.6); counted per seed."""
        LUs = [self.LU[b] for b in seeds]
        eta = _floor.floor_rows(lambda X: self._flows(seeds, X), lambda R: self.solve(LUs, R), Y, F, c, scale, dn,
                         self.noise_signs)
        acc, lim = _floor.floor_verdict(dn, eta)
        self.floor_eta[seeds[acc]] = eta[acc]
        self.floor_checks[seeds] += 1
        self.floor_accepted[seeds[acc]] += 1
        self.floor_limited[seeds[lim]] += 1
        return acc, lim

    def _accept(self, sel, t_new, y_new, d, scale, error_norm, safety):
        """The end of scipy's _step_impl for accepted seeds: differences updated, then the order
        and step size for the next step chosen (after order + 1 equal steps)."""
        self.n_equal[sel] += 1
        self.nsteps[sel] += 1
        self.fresh[sel] = True
        self.t_old[sel] = self.t[sel]
        self.t[sel] = t_new
        self.y[sel] = y_new
        o = self.order[sel]
        D = self.D  # updated in place, row by row (the same sums as scipy's; no gather of whole seeds)
        D[sel, o + 2] = d - D[sel, o + 1]
        D[sel, o + 1] = d
        for i in reversed(range(MAX_ORDER + 1)):
            q = sel[i <= o]
            if len(q):
                D[q, i] += D[q, i + 1]
        Q = np.flatnonzero(self.n_equal[sel] >= o + 1)
        if not len(Q):
            return
        oq, sq = o[Q], sel[Q]
        with np.errstate(divide="ignore"):
            em = np.where(oq > 1, _rms(_ERROR_CONST[np.maximum(oq - 1, 0)][:, None] * D[sq, oq] / scale[Q]), np.inf)
            ep = np.where(oq < MAX_ORDER, _rms(_ERROR_CONST[np.minimum(oq + 1, MAX_ORDER)][:, None]
                                               * D[sq, np.minimum(oq + 2, MAX_ORDER + 2)] / scale[Q]), np.inf)
            norms = np.stack([em, error_norm[Q], ep], axis=1)
            factors = norms ** (-1.0 / (oq[:, None] + np.arange(3)))
        onew = oq + np.argmax(factors, axis=1) - 1
        factor = np.minimum.reduce([np.full(len(Q), MAX_FACTOR), safety[Q] * np.max(factors, axis=1),
                                    _floor.floor_growth(self.floor_eta[sq])])
        self.order[sq] = onew
        self.h_abs[sq] *= factor
        self._rescale(sq, factor, onew)
        self.n_equal[sq] = 0
        for b in sq:
            self.LU[b] = None
