r"""Linear stability of the head model's fixed points (stop-gradient), with the degenerate
directions that are not instabilities removed first.

Fixed points: Z = Σ_{k∈S} φ_k a_kᵀ (Aφ_k = ν_k Dφ_k), W a_k = ν_k a_k. They come in families:
for any invertible G, (Z Gᵀ, G W G⁻¹) is again a fixed point (tangent δZ = Z Mᵀ, δW = MW − WM;
the orthogonal part is the rotation symmetry of the loss), and a kept mode may be replaced by
any mode of the same ν (tangent δZ = φ_j a_kᵀ). With T an orthonormal basis of these tangents,
J T = 0 and spec J = {0}^{dim T} ∪ spec(Qᵀ J Q), Q ⊥ T: the classification uses spec(QᵀJQ).

The typed-in rules below (predicted_kind, stable_mode_counts, phase_boundary) are deprecated:
the derived classification of every family, rank-deficient ones included, is in
:mod:`symcollapse.numerics.families` (docs/model.md §3).

Mode-competition rule (from the linearised sample flow ḃᵀ ∝ −bᵀ(WᵀW − ν_j W) of an absent
mode j): an absent mode grows iff some kept mode k has ν_k ν_j > 0 and |ν_k| < |ν_j|.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidParameterError
from ...tolerance import spectrum_counts, within
from ...validation import check_int, check_real
from . import HeadModel, graph_modes


@dataclass(frozen=True)
class StabilityResult:
    """kind: 'stable' | 'saddle' | 'marginal'; eigenvalues of the Jacobian on the complement of
    the fixed-point family; counts of family / rotation-symmetry directions removed."""

    kind: str
    max_real: float
    eigenvalues: np.ndarray
    n_family: int
    n_rotation: int
    n_marginal: int


def exact_fixed_point(P, d: int, keep, amplitudes=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""(Z, W, φ, ν): Z = Σ_k φ_k a_kᵀ over the kept modes (indices into ascending ν), a_k the
    columns of ``amplitudes`` (d × |S|, default random), W = Σ ν_k a_k ã_kᵀ (ã the dual basis; W = 0
    on the complement of span a)."""
    d = check_int("d", d, 1)
    vals, phi = graph_modes(P)
    keep = [int(k) for k in keep]
    if len(keep) > d or len(set(keep)) != len(keep) or any(k < 0 or k >= len(vals) for k in keep):
        raise InvalidParameterError(f"keep must be at most d = {d} distinct mode indices in [0, {len(vals)}); got {keep}")
    a = (default_amplitudes(d, len(keep), seed) if amplitudes is None
         else np.asarray(amplitudes, dtype=float))
    if a.shape != (d, len(keep)):
        raise InvalidParameterError(f"amplitudes must have shape ({d}, {len(keep)}); got {a.shape}")
    Z = phi[:, keep] @ a.T
    W = a @ np.diag(vals[keep]) @ np.linalg.pinv(a)
    return Z, W, phi, vals


def default_amplitudes(d: int, k: int, seed: int = 0) -> np.ndarray:
    """d × k amplitudes a_k: orthogonal directions (a normal, symmetric head) with random lengths in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return Q[:, :k] * rng.uniform(0.5, 2.0, size=k)


def family_tangent(model, Z, W, phi=None, vals=None, keep=(), amplitudes=None, tol: float = 1e-8):
    r"""Orthonormal basis (columns) of the fixed-point family tangent, and the rank of its rotation part."""
    d = model.d
    vecs, rot = [], []
    for p in range(d):
        for q in range(d):
            M = np.zeros((d, d))
            M[p, q] = 1.0
            v = model.pack(Z @ M.T, M @ W - W @ M)
            vecs.append(v)
            if p < q:
                S = M - M.T
                rot.append(model.pack(Z @ S.T, S @ W - W @ S))
    if phi is not None and len(keep):
        for col, k in enumerate(keep):
            same = np.flatnonzero(np.abs(vals - vals[k]) < 1e-9)
            for j in same:
                if j in keep:
                    continue
                dZ = np.outer(phi[:, j], amplitudes[:, col])
                vecs.append(model.pack(dZ, np.zeros((d, d))))
    T = _orth(np.array(vecs).T, tol)
    R = _orth(np.array(rot).T, tol) if rot else np.zeros((len(vecs[0]), 0))
    return T, R.shape[1]


def _orth(A, tol):
    if A.size == 0:
        return A
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    r = int(np.sum(s > tol * max(s[0], 1e-300)))
    return U[:, :r]


def classify(model, Z, W, T=None, n_rotation: int = 0, tol: float = 1e-7) -> StabilityResult:
    r"""Stable / saddle / marginal from spec(QᵀJQ), J the engine's Jacobian at (Z, W), Q ⊥ T."""
    tol = check_real("tol", tol, 0.0, None, strict_min=True)
    v = model.pack(Z, W)
    f = model.system.flow_vector(v)
    scale = max(1.0, float(np.max(np.abs(v))))
    if not within(np.max(np.abs(f)), 1e-8 * scale):
        raise InvalidParameterError(f"(Z, W) is not a fixed point: max |flow| = {np.max(np.abs(f)):.2e}")
    J = model.system.jacobian(v).toarray()
    n = J.shape[0]
    if T is None or T.shape[1] == 0:
        Q = np.eye(n)
        nT = 0
    else:
        if not within(np.max(np.abs(J @ T)), 1e-6 * max(1.0, np.max(np.abs(J)))):
            raise InvalidParameterError("the family tangent is not in the kernel of the Jacobian")
        U, _, _ = np.linalg.svd(T, full_matrices=True)
        Q = U[:, T.shape[1]:]
        nT = T.shape[1]
    ev = np.linalg.eigvals(Q.T @ J @ Q)
    jscale = max(1.0, float(np.max(np.abs(ev)))) if len(ev) else 1.0
    mr = float(np.max(ev.real)) if len(ev) else 0.0
    n_uns, n_marg, kind = spectrum_counts(ev, tol * jscale, "reduced Jacobian at (Z, W)")
    kind = "marginal" if kind == "degenerate" else kind
    return StabilityResult(kind, mr, np.sort_complex(ev), nT, int(n_rotation), n_marg)


def analyse_fixed_point(P, d: int, keep, *, eta=(1.0, 1.0, 1.0), seed: int = 0, amplitudes=None,
                        tol: float = 1e-7):
    """Build the exact fixed point keeping modes ``keep`` (amplitudes: default orthogonal, i.e. a
    symmetric head) and classify it (learned head, stop-gradient)."""
    a = default_amplitudes(d, len(keep), seed) if amplitudes is None else np.asarray(amplitudes, float)
    Z, W, phi, vals = exact_fixed_point(P, d, keep, a)
    model = HeadModel(P, d=d, eta_x=eta[0], eta_y=eta[1], eta_W=eta[2])
    T, nrot = family_tangent(model, Z, W, phi, vals, list(keep), a)
    return classify(model, Z, W, T, nrot, tol), vals


def _deprecated(name: str) -> None:
    warnings.warn(f"stability.{name} is a typed-in rule for full-rank fixed points with symmetric heads; "
                  "use the derived classification in symcollapse.numerics.families (enumerate_families, "
                  "classify_family, classify_state), which includes rank-deficient families",
                  DeprecationWarning, stacklevel=3)


def predicted_kind(vals, keep, zero_tol: float = 1e-9) -> str:
    """Deprecated: the typed-in mode-competition rule (see :func:`_predicted_kind`)."""
    _deprecated("predicted_kind")
    return _predicted_kind(vals, keep, zero_tol)


def _predicted_kind(vals, keep, zero_tol: float = 1e-9) -> str:
    r"""The mode-competition rule: 'saddle' if an absent mode j has a kept k with ν_kν_j > 0 and
    |ν_k| < |ν_j|; else 'marginal' if a kept mode has ν = 0 while a mode with ν ≠ 0 is absent
    (W has a kernel: that mode neither grows nor decays); else 'stable'."""
    vals = np.asarray(vals, dtype=float)
    vals = np.where(np.abs(vals) < zero_tol, 0.0, vals)
    keep = sorted(set(int(k) for k in keep))
    kept = vals[keep]
    absent = np.delete(vals, keep)
    for nj in absent:
        if np.any((kept * nj > 0) & (np.abs(kept) < np.abs(nj) - zero_tol)):
            return "saddle"
    if np.any(kept == 0) and np.any(absent != 0):
        return "marginal"
    return "stable"


def stable_mode_counts(K: int, d: int, nu: float) -> list[tuple[int, int, int, int]]:
    """Deprecated (typed-in balanced spectrum, full rank only): see :func:`_stable_mode_counts`."""
    _deprecated("stable_mode_counts")
    return _stable_mode_counts(K, d, nu)


def _stable_mode_counts(K: int, d: int, nu: float) -> list[tuple[int, int, int, int]]:
    r"""All (#(+1), #(−1), #(+ν_sep), #(−ν_sep)) kept by a stable full-rank fixed point of the
    balanced spectrum {±1, ±ν_sep^{(K−1)}, 0…}, by the mode-competition rule (ν_sep < 1)."""
    K = check_int("K", K, 2)
    d = check_int("d", d, 1)
    vals = np.array([1.0, -1.0] + [nu] * (K - 1) + [-nu] * (K - 1) + [0.0])
    out = []
    for a in range(2):
        for b in range(2):
            for p in range(K):
                for q in range(K):
                    if a + b + p + q != min(d, 2 * K):
                        continue
                    keep = ([0] if a else []) + ([1] if b else []) + list(range(2, 2 + p)) \
                        + list(range(K + 1, K + 1 + q))
                    if _predicted_kind(vals, keep) == "stable" or (d > 2 * K and a + b + p + q == 2 * K):
                        out.append((a, b, p, q))
    return out


def phase_boundary(K: int, nu: float, d_max: int) -> dict:
    """Deprecated (counts full-rank fixed points only): see :func:`_phase_boundary`."""
    _deprecated("phase_boundary")
    return _phase_boundary(K, nu, d_max)


def _phase_boundary(K: int, nu: float, d_max: int) -> dict:
    r"""From the stable mode counts: d_collapse = largest d with a stable fixed point keeping no
    separation mode (Δ_min → 0 possible); d_full = smallest d where every stable fixed point keeps
    all 2K non-zero modes (head spectrum ±1, ±ν_sep)."""
    d_collapse, d_full = 0, None
    for d in range(1, d_max + 1):
        counts = _stable_mode_counts(K, d, nu)
        if any(p + q == 0 for _, _, p, q in counts):
            d_collapse = d
        if d_full is None and counts and all(a + b + p + q == 2 * K for a, b, p, q in counts):
            d_full = d
    return {"d_collapse": d_collapse, "d_full": d_full}
