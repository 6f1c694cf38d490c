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
Everywhere else the test is scipy's, unchanged; the floor costs four flow evaluations and one
linear solve, only at iterations that scipy's test would fail.
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
    ``accepted`` (of those, accepted at the floor)."""
    return {"checks": 0, "accepted": 0}


def solve_bdf_system(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, *, signs=None, stats=None):
    """scipy's ``solve_bdf_system`` with the noise-aware test (docs/model.md §3.6): the same
    iterates, rate test and return values, except that an iteration scipy calls failed (ρ ≥ 1 or
    ρ^(4−k)/(1−ρ)·‖δ_k‖ > tol) is converged at y_k when :func:`at_floor` (‖δ_k‖, η(y_k))."""
    if signs is None:
        signs = noise_signs(len(y_predict))
    d = 0
    y = y_predict.copy()
    dy_norm_old = None
    converged = False
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
            if dy_norm <= FLOOR_MAX:  # else it cannot be accepted: no measurement
                if stats is not None:
                    stats["checks"] += 1
                if at_floor(dy_norm, floor_norm(fun, t_new, y, f, c, LU, solve_lu, scale, dy_norm, signs)):
                    converged = True  # y is as converged as the arithmetic allows
                    if stats is not None:
                        stats["accepted"] += 1
            break

        y += dy
        d += dy

        if (dy_norm == 0 or
                rate is not None and rate / (1 - rate) * dy_norm < tol):
            converged = True
            break

        dy_norm_old = dy_norm

    return converged, k + 1, y, d


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


def install(solver, newton=None) -> dict:
    """Make a scipy BDF instance use the noise-aware Newton test (``newton(fun, t, y, c, psi, LU,
    solve_lu, scale, tol, signs=, stats=)``, default :func:`solve_bdf_system`) in its step; returns
    its counters (also ``solver.newton_floor``)."""
    stats = new_stats()
    signs = noise_signs(solver.n)
    newton = solve_bdf_system if newton is None else newton

    def bound(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol):
        return newton(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, signs=signs, stats=stats)

    solver._step_impl = types.MethodType(rebind(BDF._step_impl, solve_bdf_system=bound), solver)
    solver.newton_floor = stats
    return stats


class FloorBDF(BDF):
    """scipy's BDF with the noise-aware Newton test of docs/model.md §3.6 (the same steps as
    scipy's wherever no Newton iteration reaches the round-off floor); ``newton_floor``: its
    counters."""

    def __init__(self, fun, t0, y0, t_bound, **options):
        super().__init__(fun, t0, y0, t_bound, **options)
        install(self)
