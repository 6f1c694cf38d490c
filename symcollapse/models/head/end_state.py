r"""What the conserved quantities of the stop-gradient head flow predict about its end state
(docs/model.md §3.2).

Conserved: the d × d matrix Q = Zᵀ H⁻¹ Z − WᵀW/η_W (H = diag(η_k)); I = tr Q. It is the only
matrix-level invariant the engine's discovery finds for this flow (:func:`conserved_quantities`),
and :func:`matrix_invariant` evaluates that discovered invariant. At a fixed point
Z = Σ_{j∈S} φ_j b_jᵀ, W b_j = ν_j b_j. Q gives d(d+1)/2 equations for the d² unknowns of (B, W),
so outside special classes the end state is not a function of the conserved quantities
(:func:`equal_invariant_state` builds a second initial state with the same Q).

Two classes where it is:
1. d = 1 and the end state keeps a simple level ν (multiplicity 1): Z = ℓφ, so
   ℓ² = (I₀ + ν²/η_W) / φᵀH⁻¹φ (φ D-normalised).
2. Decoupled sector states of B(K, n, μ, ω): head direction i carries one sector (the uniform one,
   or one class-separation pattern p_i of an orthonormal zero-sum basis, distinct across i),
   Z(0) = Σ_i U_i a_i e_iᵀ, W(0) = diag(w_i). The flow keeps this form (U_iᵀDU_j = U_iᵀAU_j = 0
   for i ≠ j), so Q stays diagonal and every Q_ii is conserved by itself. Direction i ends at
   a_i = α_i ψ_i (Mψ_i = ν_iψ_i) with α_i² = (Q_ii(0) + ν_i²/η_W) / ψ_iᵀG_Hψ_i, G_H = UᵀH⁻¹U,
   or at a_i = 0 with w_i² = −η_W Q_ii(0). Which ν_i a direction reaches is the basin (read off
   the end state); its amplitude, and Δ_min(∞)² = min_{a<b} Σ_i α_i² ψ_{i,Y}² (v_{p_i,a} − v_{p_i,b})²,
   are predicted.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import numpy as np
import sympy as sp

from ...errors import DerivationCheckError, InvalidParameterError
from ...symbolic.losses import head_matrix_loss
from ...symbolic.matrix_flow import derive_matrix_flow
from ...symbolic.matrix_invariants import matrix_invariants
from ...validation import check_int, check_real
from . import sector_blocks as hs
from . import sector_stability as ss


@lru_cache(maxsize=None)
def conserved_quantities():
    r"""The matrix-level invariants the engine discovers for the stop-gradient head flow
    (:func:`~symcollapse.symbolic.matrix_invariants.matrix_invariants`): exactly one, the d × d matrix
    Q = Σ_i x_i x_iᵀ/η_x + Σ_c y_c y_cᵀ/η_y − WᵀW/η_W (d(d+1)/2 conserved numbers; tr Q = I)."""
    flow = derive_matrix_flow(head_matrix_loss("both", True))
    invs = matrix_invariants(flow, check=False)
    if len(invs) != 1 or invs[0].level != "matrix":
        raise DerivationCheckError(f"expected one matrix-level invariant of the sg head flow; found {len(invs)}")
    return flow, invs[0]


def matrix_invariant(model, Z, W) -> np.ndarray:
    r"""Q(Z, W) = Zᵀ H⁻¹ Z − WᵀW/η_W: the discovered invariant (:func:`conserved_quantities`) evaluated
    at the model's rates."""
    flow, inv = conserved_quantities()
    rates = {flow.loss.rate(b): v for b, v in (("x", model.eta_x), ("y", model.eta_y), ("W", model.eta_W))}
    Z = np.asarray(Z, float)
    blocks = {"x": Z[:model.N], "y": Z[model.N:], "W": np.asarray(W, float)}
    val = inv.evaluate(blocks)  # entries: the rates as symbols times numbers
    return np.vectorize(lambda e: float(sp.sympify(e).xreplace(rates)), otypes=[float])(np.asarray(val, dtype=object))


def single_mode_amplitude(model, Z0, W0, phi: np.ndarray, nu: float) -> float:
    r"""d = 1: ℓ = √((I₀ + ν²/η_W) / φᵀH⁻¹φ) for an end state Z = ℓφ, W = ν (φ D-normalised)."""
    if model.d != 1:
        raise InvalidParameterError(f"the single-mode prediction needs d = 1; got d = {model.d}")
    I0 = float(matrix_invariant(model, Z0, W0)[0, 0])
    N = model.N
    h = float(phi[:N] @ phi[:N] / model.eta_x + phi[N:] @ phi[N:] / model.eta_y)
    val = (I0 + nu * nu / model.eta_W) / h
    if not val >= 0:
        raise InvalidParameterError(f"I₀ = {I0:.3g} is too small for an end state at ν = {nu:.4g}")
    return float(np.sqrt(val))


# --- decoupled sector states -----------------------------------------------------------------------
def _check_assignment(K, d, sectors):
    if len(sectors) != d:
        raise InvalidParameterError(f"sectors must give one entry per head direction (d = {d}); got {len(sectors)}")
    seen = set()
    for s in sectors:
        if s is None:
            continue
        if s == "uniform":
            key = ("uniform", 0)
        elif isinstance(s, tuple) and len(s) == 2 and s[0] == "sep" and 0 <= int(s[1]) < K - 1:
            key = ("sep", int(s[1]))
        else:
            raise InvalidParameterError(f"sectors entries must be None, 'uniform' or ('sep', p) with "
                                        f"0 ≤ p < K − 1 = {K - 1}; got {s!r}")
        if key in seen:
            raise InvalidParameterError(f"each sector may carry one head direction; {key} appears twice")
        seen.add(key)


def decoupled_state(K: int, n: int, mu: int, sectors, *, seed: int = 0,
                    w0=None) -> tuple[np.ndarray, np.ndarray]:
    r"""A decoupled sector initial state: column i = U_i a_i with a_i's sample coordinates from
    0.1·N(0, 1) and the label coordinate from N(0, 1) (``seed``), zero for ``None``; W = diag(w0)
    (default I)."""
    K, n, mu = check_int("K", K, 2), check_int("n", n, 1), check_int("mu", mu, 1)
    d = len(sectors)
    _check_assignment(K, d, sectors)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    nN = K * n + mu * K * (K - 1) // 2 + K
    Z = np.zeros((nN, d))
    for i, s in enumerate(sectors):
        if s is None:
            continue
        U = ss.sector_embedding(K, n, mu, *(("uniform", 0) if s == "uniform" else s))
        a = 0.1 * rng.normal(size=U.shape[1])
        a[-1] = rng.normal()
        Z[:, i] = U @ a
    W = np.diag(np.ones(d) if w0 is None else np.asarray(w0, float))
    return Z, W


def _weight(name, sign, K, n, mu, omega, nu, eta_x, eta_y):
    e = hs.invariant_weight(name, sign)
    vals = {hs.K_: K, hs.n_: n, hs.mu_: mu, hs.omega_: omega, hs.nu_: nu, hs.eta_x: eta_x, hs.eta_y: eta_y}
    return float(e.subs(vals))


@dataclass(frozen=True)
class DirectionOutcome:
    """One head direction of a decoupled state: its sector, the level it reached (sign of ν, or 0 for
    a collapsed direction a_i → 0), the predicted and the simulated amplitude α_i (|w_i| when collapsed)."""

    sector: object
    sign: int
    predicted: float
    simulated: float


def reached_levels(model, K, n, mu, sectors, Z, W, *, rel_tol: float = 1e-6) -> list[int]:
    r"""The level each direction of a simulated decoupled end state reached: sign of ν from its head
    eigenvalue W_ii, 0 when its column vanished (‖a_i‖ ≤ rel_tol·max)."""
    norms = np.linalg.norm(np.asarray(Z, float), axis=0)
    top = max(float(np.max(norms)), 1e-300)
    out = []
    for i, s in enumerate(sectors):
        if s is None or norms[i] <= rel_tol * top:
            out.append(0)
        else:
            out.append(1 if W[i, i] > 0 else -1)
    return out


def predict_decoupled(model, K: int, n: int, mu: int, sectors, Z0, W0, signs, *,
                      omega: float = 2.0) -> tuple[list, float]:
    r"""Predicted amplitudes α_i per direction and Δ_min(∞) of a decoupled state, from Q(0) and the
    levels reached (``signs``: ±1 per direction, 0 = collapsed)."""
    Q = matrix_invariant(model, Z0, W0)
    off = float(np.max(np.abs(Q - np.diag(np.diag(Q))))) / max(1.0, float(np.max(np.abs(Q))))
    if not off <= 1e-12:
        raise InvalidParameterError(f"Q(0) is not diagonal (max off-diagonal {off:.1e}): not a decoupled state")
    amps = []
    pairs = [(a, b) for a in range(K) for b in range(a + 1, K)]
    sq = np.zeros(len(pairs))
    for i, (s, g) in enumerate(zip(sectors, signs)):
        if s is None:
            amps.append(0.0)
            continue
        kind, idx = ("uniform", 0) if s == "uniform" else s
        name = ss.sector_name(K, kind)
        if g == 0:
            val = -model.eta_W * Q[i, i]
            amps.append(float(np.sqrt(val)) if val >= 0 else float("nan"))
            continue
        nu = 1.0 if kind == "uniform" else ss.nu_s(K, n, mu, omega)
        h = _weight(name, g, K, n, mu, omega, nu, model.eta_x, model.eta_y)
        alpha2 = (Q[i, i] + nu * nu / model.eta_W) / h
        alpha = float(np.sqrt(alpha2)) if alpha2 >= 0 else float("nan")
        amps.append(alpha)
        if kind == "sep":
            psi_y = float(ss._psi(name, g, K, n, mu, omega)[-1])
            v = ss._helmert(K)[idx]
            sq += alpha2 * psi_y ** 2 * np.array([(v[a] - v[b]) ** 2 for a, b in pairs])
    return amps, float(np.sqrt(np.min(sq)))


def simulated_amplitudes(K, n, mu, sectors, Z, W, signs, *, omega: float = 2.0) -> list:
    r"""α_i of a simulated end state: the ψ-coefficient of column i in its sector (|W_ii| if collapsed)."""
    out = []
    for i, (s, g) in enumerate(zip(sectors, signs)):
        if s is None:
            out.append(0.0)
            continue
        kind, idx = ("uniform", 0) if s == "uniform" else s
        if g == 0:
            out.append(float(abs(W[i, i])))
            continue
        U = ss.sector_embedding(K, n, mu, kind, idx)
        a = np.linalg.lstsq(U, Z[:, i], rcond=None)[0]
        psi = ss._psi(ss.sector_name(K, kind), g, K, n, mu, omega)
        out.append(float(abs(a @ psi) / (psi @ psi)))  # the sign of α is a gauge (Z → −Z)
    return out


def equal_invariant_state(model, Z0, W0, *, angle: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""A second initial state with the same conserved Q: Z0' = H^{1/2} O H^{−1/2} Z0, O a rotation by
    ``angle`` in a random plane of node space (Z0'ᵀH⁻¹Z0' = Z0ᵀH⁻¹Z0), W0 unchanged."""
    angle = check_real("angle", angle)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    nN = model.N + model.K
    a, b = np.linalg.qr(rng.normal(size=(nN, 2)))[0].T
    h = np.concatenate([np.full(model.N, model.eta_x), np.full(model.K, model.eta_y)])
    Y = np.asarray(Z0, float) / np.sqrt(h)[:, None]
    pa, pb = a @ Y, b @ Y
    c, s = np.cos(angle), np.sin(angle)
    Y2 = Y + np.outer(a, (c - 1) * pa - s * pb) + np.outer(b, s * pa + (c - 1) * pb)
    return Y2 * np.sqrt(h)[:, None], np.asarray(W0, float).copy()
