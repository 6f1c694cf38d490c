r"""The round-off floor of BDF's Newton test: a noise-aware convergence test (docs/model.md §3.6).

SciPy's BDF (scipy/integrate/_ivp/bdf.py, ``solve_bdf_system``) iterates
δ_k = (I − cJ)⁻¹(c f(y_k) − ψ − d_k), y_{k+1} = y_k + δ_k, and calls the iteration failed when the
rate ρ = ‖δ_k‖/‖δ_{k−1}‖ (scaled norm ‖v‖ = rms(v/(atol + rtol|y|))) is ≥ 1 or too slow for the
tolerance. Once y_k is as close to the BDF solution as the arithmetic allows, δ_k is the image of
the flow's round-off and does not shrink: ρ ≈ 1, and BDF refreshes J and halves h step after step.

The floor is *measured* where scipy's test fails: with p = s∘(‖δ_k‖·scale) (a fixed ±1 pattern s,
every entry moved by the increment's own scaled size) the noise difference
4Δ²f(p) − Δ²f(2p), Δ²f(p) = f(y_k + p) + f(y_k − p) − 2f(y_k), has no linear part (J·p cancels
exactly, whatever J is), no quadratic and no odd part: for flows of degree ≤ 3 what is left is the
rounding noise of five evaluations. Its Newton image through the iteration's own factorisation,
η = √(2/70)·‖(I − cJ)⁻¹ c (4Δ²f(p) − Δ²f(2p))‖, estimates the noise part of an increment. The
iteration is accepted at y_k when ‖δ_k‖ ≤ FLOOR_FACTOR·η and ‖δ_k‖ ≤ FLOOR_MAX (all finite).
An increment at the floor but above FLOOR_MAX fails *at the floor*: a new Jacobian cannot lower the
noise, so the step (:func:`floor_step_impl`) halves h without one (η ∝ c on the slow and zero modes);
after a step accepted at the floor η, h grows by at most :func:`floor_growth` (η).
Everywhere else the test and the step are scipy's, unchanged; the floor costs four flow evaluations
and one linear solve, only at iterations that scipy's test would fail with ‖δ_k‖ ≤ PROBE_MAX.
"""
from __future__ import annotations

import types

import numpy as np
import scipy
import scipy.integrate._ivp.bdf as _bdf
from scipy.integrate import BDF

from ..errors import IntegrationError

NEWTON_MAXITER = _bdf.NEWTON_MAXITER
#: a would-fail increment is accepted when it is at most this multiple of the measured floor η:
#: at the floor δ_k is the difference of two evaluations' noise images (≈ √2 σ) and η estimates
#: the same √2 σ from five evaluations; one sample fluctuates by O(1) in the rms over few unknowns
FLOOR_FACTOR = 2.0
#: an increment above this scaled norm is never accepted at the floor: scipy's largest Newton
#: tolerance min(0.03, √rtol) (rtol ≥ 10⁻³), so an accepted iterate never carries a larger Newton
#: error than scipy's BDF accepts at any tolerance. A larger floor shrinks with the step (η ∝ c on
#: the slow and zero modes), so halving h is then right. Measured (docs/model.md §3.6): with the
#: step's error tolerance 1 as the bound, real errors in slow modes hid below the zero-mode noise
#: and a head run at rtol 10⁻⁶ stalled at ‖θ̇‖∞ = 6.5·10⁻⁸ instead of reaching 10⁻⁹
FLOOR_MAX = 0.03  # 0 turns the noise-aware test off (scipy's test exactly)
#: would-fail increments up to this scaled norm get their floor measured; one at the floor but
#: above FLOOR_MAX fails *at the floor* (the step then halves h without a new Jacobian). Above it
#: the step's error test (‖error‖ ≤ 1, error ∝ Σδ) rejects the step anyway: no measurement
PROBE_MAX = 1.0
#: False: a failure at the floor is handled as scipy does (a new Jacobian first, then h halved)
KEEP_JACOBIAN_AT_FLOOR = True
#: False: the step size grows after a step accepted at the floor as scipy's controller says
CAP_GROWTH_AT_FLOOR = True
#: seed of the fixed ±1 pattern s of the probe (deterministic runs)
SIGN_SEED = 20_612


def noise_signs(n: int) -> np.ndarray:
    """The fixed pattern s ∈ {−1, +1}ⁿ of the floor's probe."""
    return np.where(np.random.default_rng(SIGN_SEED).random(n) < 0.5, -1.0, 1.0)


def rms(v: np.ndarray) -> float:
    """scipy's BDF norm ‖v‖ = ‖v‖₂/√n."""
    return float(np.linalg.norm(v) / v.size ** 0.5) if v.size else 0.0


def at_floor(dy_norm, floor, factor: float = FLOOR_FACTOR, most: float = FLOOR_MAX):
    """Whether Newton increments of scaled norm ``dy_norm`` are at the round-off floor ``floor``:
    dy_norm ≤ factor·floor and dy_norm ≤ most, both finite (a NaN or inf floor never accepts).
    Elementwise for arrays."""
    dy_norm, floor = np.asarray(dy_norm, dtype=float), np.asarray(floor, dtype=float)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(floor) & np.isfinite(dy_norm) & (dy_norm <= factor * floor) & (dy_norm <= most)
    return bool(ok) if ok.ndim == 0 else ok


def second_difference(F_plus: np.ndarray, F_minus: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Δ²f = f(y + p) + f(y − p) − 2 f(y) (its linear part in p cancels exactly)."""
    return (F_plus - F) + (F_minus - F)


def noise_difference(F_p, F_m, F_2p, F_2m, F) -> np.ndarray:
    """4Δ²f(p) − Δ²f(2p) = 4f(y+p) + 4f(y−p) − f(y+2p) − f(y−2p) − 6f(y): the linear and the
    quadratic part in p cancel exactly (and every odd one), so a flow of degree ≤ 3 leaves only the
    rounding noise of the five evaluations, variance (16 + 16 + 1 + 1 + 36)σ² = 70σ²."""
    return 4.0 * second_difference(F_p, F_m, F) - second_difference(F_2p, F_2m, F)


#: η = NOISE_NORM · ‖(I − cJ)⁻¹ c noise_difference‖: the image of √2σ, the noise of one increment
NOISE_NORM = (2.0 / 70.0) ** 0.5


def floor_rows(flows, solve, Y: np.ndarray, F: np.ndarray, c: np.ndarray, scale: np.ndarray,
               sizes: np.ndarray, signs: np.ndarray) -> np.ndarray:
    r"""η per row (docs/model.md §3.6): η = √(2/70)·‖(I − cJ)⁻¹ c (4Δ²f(p) − Δ²f(2p)) / scale‖ (rms)
    at the state Y[b] with flow F[b], probe p = s∘(sizes[b]·scale[b]). ``flows(Y) -> F`` evaluates
    the rows, ``solve(R) -> X`` applies each row's (I − cJ)⁻¹. NaN for a row whose evaluation or
    solve is not finite, and for every row when a hook raises (a non-finite flow, a failed Krylov
    solve): then nothing is accepted."""
    m = len(Y)
    eta = np.full(m, np.nan)
    P = signs[None, :] * (np.asarray(sizes, dtype=float)[:, None] * scale)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            Fs = [np.asarray(flows(Y + a * P), dtype=float) for a in (1.0, -1.0, 2.0, -2.0)]
            R = np.asarray(c, dtype=float)[:, None] * noise_difference(*Fs, F)
        good = np.all(np.isfinite(R), axis=1)
        if not good.any():
            return eta
        R[~good] = 0.0
        E = np.asarray(solve(R), dtype=float) / scale
    except (ArithmeticError, IntegrationError):
        return eta
    with np.errstate(over="ignore", invalid="ignore"):
        val = NOISE_NORM * np.sqrt(np.einsum("bn,bn->b", E, E) / max(E.shape[1], 1))
    eta[good] = val[good]
    eta[~np.isfinite(eta)] = np.nan
    return eta


def floor_norm(fun, t: float, y: np.ndarray, f: np.ndarray, c: float, LU, solve_lu, scale: np.ndarray,
               size: float, signs: np.ndarray) -> float:
    r""":func:`floor_rows` for one state of a scipy BDF (``fun(t, y)``, ``solve_lu(LU, r)``)."""
    return float(floor_rows(lambda Y: fun(t, Y[0])[None], lambda R: solve_lu(LU, R[0])[None],
                            y[None], f[None], np.array([c]), scale[None], np.array([size]), signs)[0])


def new_stats() -> dict:
    """Counters of the noise-aware test: ``checks`` (would-fail iterations whose floor was measured),
    ``accepted`` (of those, accepted at the floor), ``limited`` (of those, failed at a floor above
    FLOOR_MAX: h halved without a new Jacobian)."""
    return {"checks": 0, "accepted": 0, "limited": 0}


def floor_verdict(dy_norm, floor):
    """(accepted, limited) for would-fail increments of scaled norm ``dy_norm`` with measured floor
    ``floor``: accepted = :func:`at_floor`; limited = at the floor (‖δ‖ ≤ FLOOR_FACTOR·η, finite) but
    above FLOOR_MAX (the failure is the noise's, not the Jacobian's). Elementwise for arrays."""
    acc = np.asarray(at_floor(dy_norm, floor))
    lim = np.asarray(at_floor(dy_norm, floor, most=np.inf)) & ~acc & KEEP_JACOBIAN_AT_FLOOR
    return (bool(acc), bool(lim)) if acc.ndim == 0 else (acc, lim)


def floor_growth(eta):
    """The largest step-size growth after a step whose iterate was accepted at the floor η (NaN:
    not at the floor, no limit): FLOOR_MAX/(FLOOR_FACTOR·η), the factor that puts the floor — ∝ h on
    the slow and zero modes — where increments up to FLOOR_FACTOR times it stay within FLOOR_MAX
    (scipy's controller, seeing only the tiny error estimate, grows h past the floor and the next
    step fails there). At least 1 (never a reason to shrink h). Elementwise for arrays."""
    eta = np.asarray(eta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(np.isfinite(eta) & (eta > 0) & CAP_GROWTH_AT_FLOOR,
                       np.maximum(1.0, FLOOR_MAX / (FLOOR_FACTOR * eta)), np.inf)
    return float(cap) if cap.ndim == 0 else cap


def probed(dy_norm, limit=True):
    """Whether would-fail increments of scaled norm ``dy_norm`` get their floor measured: up to
    FLOOR_MAX (acceptable), and up to PROBE_MAX where ``limit`` (the Jacobian is not current, so
    a failure at the floor saves a new one; with a current J the step halves h anyway)."""
    top = np.where(np.asarray(limit) & KEEP_JACOBIAN_AT_FLOOR, PROBE_MAX, FLOOR_MAX)
    ok = (np.asarray(dy_norm) <= top) & (FLOOR_MAX > 0)
    return bool(ok) if ok.ndim == 0 else ok


def solve_bdf_system(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, *, signs=None, stats=None):
    """scipy's ``solve_bdf_system`` with the noise-aware test (docs/model.md §3.6): the same
    iterates, rate test and return values, except that an iteration scipy calls failed (ρ ≥ 1 or
    ρ^(4−k)/(1−ρ)·‖δ_k‖ > tol) is converged at y_k when :func:`at_floor` (‖δ_k‖, η(y_k))."""
    return newton_at_floor(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, signs=signs, stats=stats)[:4]


def newton_at_floor(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, *, signs=None, stats=None,
                    limit=True):
    """:func:`solve_bdf_system` returning also whether its failure is *at the floor* (``limited``,
    :func:`floor_verdict`; looked for only where ``limit``: the step's J is not current) and the
    floor η of an iterate accepted at it (NaN otherwise): (converged, iterations, y, d, limited, η)."""
    if signs is None:
        signs = noise_signs(len(y_predict))
    d = 0
    y = y_predict.copy()
    dy_norm_old = None
    converged = limited = False
    eta = np.nan
    for k in range(NEWTON_MAXITER):
        f = fun(t_new, y)
        if not np.all(np.isfinite(f)):
            break

        dy = solve_lu(LU, c * f - psi - d)
        dy_norm = rms(dy / scale)

        if dy_norm_old is None:
            rate = None
        else:
            rate = dy_norm / dy_norm_old

        if (rate is not None and (rate >= 1 or
                rate ** (NEWTON_MAXITER - k) / (1 - rate) * dy_norm > tol)):
            if probed(dy_norm, limit):
                floor = floor_norm(fun, t_new, y, f, c, LU, solve_lu, scale, dy_norm, signs)
                converged, limited = floor_verdict(dy_norm, floor)
                eta = floor if converged else np.nan
                if stats is not None:  # converged: y is as converged as the arithmetic allows
                    stats["checks"] += 1
                    stats["accepted"] += int(converged)
                    stats["limited"] += int(limited)
            break

        y += dy
        d += dy

        if (dy_norm == 0 or
                rate is not None and rate / (1 - rate) * dy_norm < tol):
            converged = True
            break

        dy_norm_old = dy_norm

    return converged, k + 1, y, d, limited, eta


def rebind(fn, **names):
    """``fn`` with some of its global names replaced (scipy's BDF step reused with another Newton
    solver or norm, its logic unchanged). A name ``fn`` does not use raises RuntimeError (a scipy
    whose BDF no longer calls it would otherwise silently run without the replacement)."""
    missing = sorted(n for n in names if n not in fn.__code__.co_names)
    if missing:
        raise RuntimeError(f"{fn.__qualname__} of scipy {scipy.__version__} does not use the global "
                           f"name(s) {missing}: the noise-aware Newton test (docs/model.md §3.6) cannot be "
                           "installed in this scipy's BDF")
    g = dict(fn.__globals__)
    g.update(names)
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


def floor_step_impl(self):
    """scipy's ``BDF._step_impl`` (scipy/integrate/_ivp/bdf.py, BSD-3-Clause, © the SciPy
    developers; the same predictor, error control, step-size and order selection) with the Newton
    iteration ``self._floor_newton`` (:func:`newton_at_floor`) and one change (docs/model.md §3.6):
    a Newton failure *at the floor* (``limited``) halves h at once, without the new Jacobian scipy
    would compute first — the noise it failed on does not depend on J; after a step accepted at the
    floor η, h grows by at most :func:`floor_growth` (η). Every other failure and step is handled as
    scipy does, so where no iteration reaches the floor the steps are scipy's, bit for bit (tested)."""
    t = self.t
    D = self.D

    max_step = self.max_step
    min_step = 10 * np.abs(np.nextafter(t, self.direction * np.inf) - t)
    if self.h_abs > max_step:
        h_abs = max_step
        _bdf.change_D(D, self.order, max_step / self.h_abs)
        self.n_equal_steps = 0
    elif self.h_abs < min_step:
        h_abs = min_step
        _bdf.change_D(D, self.order, min_step / self.h_abs)
        self.n_equal_steps = 0
    else:
        h_abs = self.h_abs

    atol = self.atol
    rtol = self.rtol
    order = self.order

    alpha = self.alpha
    gamma = self.gamma
    error_const = self.error_const

    J = self.J
    LU = self.LU
    current_jac = self.jac is None

    step_accepted = False
    while not step_accepted:
        if h_abs < min_step:
            return False, self.TOO_SMALL_STEP

        h = h_abs * self.direction
        t_new = t + h

        if self.direction * (t_new - self.t_bound) > 0:
            t_new = self.t_bound
            _bdf.change_D(D, order, np.abs(t_new - t) / h_abs)
            self.n_equal_steps = 0
            LU = None

        h = t_new - t
        h_abs = np.abs(h)

        y_predict = np.sum(D[:order + 1], axis=0)

        scale = atol + rtol * np.abs(y_predict)
        psi = np.dot(D[1: order + 1].T, gamma[1: order + 1]) / alpha[order]

        converged = False
        c = h / alpha[order]
        while not converged:
            if LU is None:
                LU = self.lu(self.I - c * J)

            converged, n_iter, y_new, d, limited, eta = self._floor_newton(
                self.fun, t_new, y_predict, c, psi, LU, self.solve_lu, scale, self.newton_tol,
                limit=not current_jac)

            if not converged:
                if current_jac or limited:  # limited: a new J cannot lower the noise
                    break
                J = self.jac(t_new, y_predict)
                LU = None
                current_jac = True

        if not converged:
            factor = 0.5
            h_abs *= factor
            _bdf.change_D(D, order, factor)
            self.n_equal_steps = 0
            LU = None
            continue

        safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter)

        scale = atol + rtol * np.abs(y_new)
        error = error_const[order] * d
        error_norm = _bdf.norm(error / scale)

        if error_norm > 1:
            factor = max(_bdf.MIN_FACTOR, safety * error_norm ** (-1 / (order + 1)))
            h_abs *= factor
            _bdf.change_D(D, order, factor)
            self.n_equal_steps = 0
        else:
            step_accepted = True

    self.n_equal_steps += 1

    self.t = t_new
    self.y = y_new

    self.h_abs = h_abs
    self.J = J
    self.LU = LU

    D[order + 2] = d - D[order + 1]
    D[order + 1] = d
    for i in reversed(range(order + 1)):
        D[i] += D[i + 1]

    if self.n_equal_steps < order + 1:
        return True, None

    if order > 1:
        error_m = error_const[order - 1] * D[order]
        error_m_norm = _bdf.norm(error_m / scale)
    else:
        error_m_norm = np.inf

    if order < _bdf.MAX_ORDER:
        error_p = error_const[order + 1] * D[order + 2]
        error_p_norm = _bdf.norm(error_p / scale)
    else:
        error_p_norm = np.inf

    error_norms = np.array([error_m_norm, error_norm, error_p_norm])
    with np.errstate(divide='ignore'):
        factors = error_norms ** (-1 / np.arange(order, order + 3))

    delta_order = np.argmax(factors) - 1
    order += delta_order
    self.order = order

    factor = min(_bdf.MAX_FACTOR, safety * np.max(factors), floor_growth(eta))
    self.h_abs *= factor
    _bdf.change_D(D, order, factor)
    self.n_equal_steps = 0
    self.LU = None

    return True, None


def install(solver, newton=None) -> dict:
    """Make a scipy BDF instance use the noise-aware Newton test (``newton(fun, t, y, c, psi, LU,
    solve_lu, scale, tol, signs=, stats=, limit=) -> (converged, iterations, y, d, limited, η)``, default
    :func:`newton_at_floor`) in its step (:func:`floor_step_impl`); returns its counters (also
    ``solver.newton_floor``)."""
    stats = new_stats()
    signs = noise_signs(solver.n)
    newton = newton_at_floor if newton is None else newton

    def bound(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, limit=True):
        return newton(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, signs=signs, stats=stats,
                      limit=limit)

    solver._floor_newton = bound
    solver._step_impl = types.MethodType(floor_step_impl, solver)
    solver.newton_floor = stats
    return stats


class FloorBDF(BDF):
    """scipy's BDF with the noise-aware Newton test of docs/model.md §3.6 (the same steps as
    scipy's wherever no Newton iteration reaches the round-off floor); ``newton_floor``: its
    counters."""

    def __init__(self, fun, t0, y0, t_bound, **options):
        super().__init__(fun, t0, y0, t_bound, **options)
        install(self)
