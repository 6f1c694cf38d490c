r"""Fixed-point families of the stop-gradient head flow and their derived linear stability
(docs/model.md §3).

Fixed points: Z = Σ_{k∈S} φ_k a_kᵀ (Aφ_k = ν_k Dφ_k), W a_k = ν_k a_k, |S| ≤ d. Graph modes are
grouped into ν-levels ℓ (equal ν, eigenspace Φ_ℓ of multiplicity m_ℓ); in level ℓ the state is
Φ_ℓ C_ℓ with rank r_ℓ ≤ m_ℓ, and a family is the rank vector (r_ℓ) with Σ r_ℓ ≤ d. Rank-deficient
families (Σ r_ℓ < d) are included: on the complement R⊥ of the kept directions R = row span Z,
W is free (Ẇ = −η_W(W ZᵀDZ − ZᵀAZ) does not see it), which is where spare head eigenvalues live.

Zero modes that are symmetries, not marginal directions (their span T is removed; J T = 0 and
spec J = {0}^{dim T} ∪ spec(QᵀJQ), Q an orthonormal complement of T):
  gauge        δZ = Z Mᵀ, δW = MW − WM (any M; Z → Z Gᵀ, W → G W G⁻¹ keeps the fixed-point set),
  free head    δZ = 0, δW = u vᵀ with v ⊥ R (W on R⊥ is not constrained),
  level swaps  δZ = Φ_ℓ X with row(X) ⊂ R_ℓ (a degenerate level keeps a subspace, not modes).
The conserved invariant I = Σ‖z_k‖²/η_k − ‖W‖²/η_W gives a left null vector ∇I of J (checked);
its right partner moves along the family and lies in T.
Classification from spec(QᵀJQ): 'stable' (all Re λ < −tol), 'saddle' (n_unstable > 0),
'degenerate' (no unstable, some |Re λ| ≤ tol beyond the symmetries).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import eigh

from ..errors import InvalidParameterError
from ..tolerance import spectrum_counts
from ..validation import check_int, check_real
from .graph import CouplingGraph

LEVEL_TOL = 1e-9  # |ν_a − ν_b| below which two graph modes belong to one ν-level


@dataclass(frozen=True)
class Level:
    """One ν-level: value ν, D-orthonormal eigenspace Φ (columns), multiplicity m."""

    nu: float
    phi: np.ndarray = field(repr=False)

    @property
    def m(self) -> int:
        return int(self.phi.shape[1])


@dataclass(frozen=True)
class Family:
    """A fixed-point family: rank r_ℓ kept in each ν-level (levels in ascending ν)."""

    nus: tuple
    ranks: tuple

    @property
    def rank(self) -> int:
        return int(sum(self.ranks))

    @property
    def key(self) -> str:
        """Canonical name: the kept levels as 'ν×r' (ν to 4 digits), '0' for Z = 0."""
        parts = [f"{nu:+.4f}x{r}" for nu, r in zip(self.nus, self.ranks) if r]
        return " ".join(parts) if parts else "Z=0"

    def keeps(self, nu: float, tol: float = 1e-6) -> int:
        return int(sum(r for v, r in zip(self.nus, self.ranks) if abs(v - nu) <= tol))


@dataclass(frozen=True)
class Stability:
    """Derived linear stability at one fixed point of a family."""

    kind: str  # 'stable' | 'saddle' | 'degenerate'
    n_unstable: int
    n_degenerate: int
    max_real: float
    eigenvalues: np.ndarray = field(repr=False)
    n_symmetry: int  # dim T: zero modes identified as gauge / free head / level swaps
    invariant_residual: float  # max |∇Iᵀ J| / (|∇I| |J|): the invariant is a left null vector

    @property
    def label(self) -> str:
        return f"saddle({self.n_unstable})" if self.kind == "saddle" else self.kind


# --- graph modes grouped into levels -------------------------------------------------------------
def _graph(P) -> CouplingGraph:
    return P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)


_LEVELS: dict = {}


def nu_levels(P, tol: float = LEVEL_TOL) -> list[Level]:
    r"""The generalised graph modes Aφ = νDφ grouped into levels of equal ν (ascending)."""
    g = _graph(P)
    key = (g.P.tobytes() if hasattr(g.P, "tobytes") else id(g), getattr(g.P, "shape", None), tol)
    if key not in _LEVELS:
        if len(_LEVELS) > 64:
            _LEVELS.clear()
        _LEVELS[key] = _nu_levels(g, tol)
    return _LEVELS[key]


def _nu_levels(g: CouplingGraph, tol: float) -> list[Level]:
    if np.any(g.degree <= 0):
        raise InvalidParameterError("P must give every sample and every label at least one edge")
    vals, phi = eigh(g.adjacency.toarray(), np.diag(g.degree))
    levels, start = [], 0
    for k in range(1, len(vals) + 1):
        if k == len(vals) or vals[k] - vals[k - 1] > tol:
            nu = float(np.mean(vals[start:k]))
            levels.append(Level(0.0 if abs(nu) < tol else nu, phi[:, start:k]))
            start = k
    return levels


def enumerate_families(P, d: int, *, include_zero: bool = True) -> list[Family]:
    r"""Every rank vector (r_ℓ), 0 ≤ r_ℓ ≤ m_ℓ, Σ r_ℓ ≤ d: all fixed-point families (ordered by rank)."""
    d = check_int("d", d, 1)
    levels = nu_levels(P)
    nus = tuple(lv.nu for lv in levels)
    ranges = [range(min(lv.m, d) + 1) for lv in levels]
    out = [Family(nus, r) for r in itertools.product(*ranges) if sum(r) <= d and (include_zero or sum(r))]
    return sorted(out, key=lambda f: (f.rank, f.ranks))


# --- representatives -----------------------------------------------------------------------------
def representative(P, d: int, family: Family, *, seed: int = 0, spare=0.0,
                   lengths=None) -> tuple[np.ndarray, np.ndarray]:
    r"""(Z, W) of ``family``: the first r_ℓ modes of each level with orthogonal amplitudes a_k
    (lengths in [0.5, 2] from ``seed``, or ``lengths``), W = B Λ B⁺ + s(I − B B⁺) (s = ``spare``), or
    W = B Λ B⁺ + Q⊥ diag(s_1 … s_{d−r}) Q⊥ᵀ for a sequence ``spare`` of d − r spare head eigenvalues
    (Q⊥ an orthonormal basis of the complement of the kept directions)."""
    d = check_int("d", d, 1)
    levels = nu_levels(P)
    if len(levels) != len(family.ranks) or family.rank > d:
        raise InvalidParameterError(f"family {family.key} does not belong to this graph with d = {d}")
    cols, nus = [], []
    for lv, r in zip(levels, family.ranks):
        if r > lv.m:
            raise InvalidParameterError(f"rank {r} exceeds the multiplicity {lv.m} of level ν = {lv.nu:.4g}")
        cols += [lv.phi[:, j] for j in range(r)]
        nus += [lv.nu] * r
    n = _graph(P).N + _graph(P).K
    r = len(cols)
    scalar = np.ndim(spare) == 0
    spares = _spares(spare, d - r)
    if r == 0 and scalar:
        return np.zeros((n, d)), float(spare) * np.eye(d)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    free = None if scalar else (Q[:, r:] * spares) @ Q[:, r:].T  # the head on the complement of R
    if r == 0:
        return np.zeros((n, d)), free
    ln = rng.uniform(0.5, 2.0, size=r) if lengths is None else np.asarray(lengths, float)
    if ln.shape != (r,) or not np.all(ln > 0):
        raise InvalidParameterError(f"lengths must be {r} positive numbers for family {family.key}; got {lengths}")
    B = Q[:, :r] * ln
    Z = np.array(cols).T @ B.T
    Bp = np.linalg.pinv(B)
    W = B @ np.diag(nus) @ Bp + (float(spare) * (np.eye(d) - B @ Bp) if scalar else free)
    return Z, W


def _spares(spare, count: int) -> np.ndarray:
    """The spare head eigenvalues: one value repeated ``count`` times, or exactly ``count`` finite values."""
    s = np.asarray(spare, float)
    if s.ndim == 0:
        s = np.full(count, float(s))
    if s.shape != (count,) or not np.all(np.isfinite(s)):
        raise InvalidParameterError(f"spare must be one number or {count} finite numbers (d − rank); got {spare}")
    return s


# --- mode amplitudes of a state --------------------------------------------------------------------
def level_amplitudes(P, Z) -> list[np.ndarray]:
    r"""C_ℓ = Φ_ℓᵀ D Z (m_ℓ × d) for every level: Z = Σ_ℓ Φ_ℓ C_ℓ (Φ D-orthonormal)."""
    g = _graph(P)
    DZ = g.degree[:, None] * np.asarray(Z, float)
    return [lv.phi.T @ DZ for lv in nu_levels(g)]


ABS_TOL = 1e-9  # amplitudes below this are zero whatever the largest one (a collapsed state's noise)


def state_family(P, Z, *, rel_tol: float = 1e-6, abs_tol: float = ABS_TOL) -> tuple[Family, np.ndarray]:
    r"""The family a state belongs to: r_ℓ = numerical rank of C_ℓ (singular values above
    max(rel_tol·max over all levels, abs_tol)); also returns every level's largest singular value."""
    levels = nu_levels(P)
    C = level_amplitudes(P, Z)
    sv = [np.linalg.svd(c, compute_uv=False) if c.size else np.zeros(0) for c in C]
    top = max((float(s[0]) for s in sv if len(s)), default=0.0)
    thr = max(rel_tol * top, abs_tol)
    ranks = tuple(int(np.sum(s > thr)) for s in sv)
    amp = np.array([float(s[0]) if len(s) else 0.0 for s in sv])
    return Family(tuple(lv.nu for lv in levels), ranks), amp


# --- symmetry tangent and classification ---------------------------------------------------------
def _orth(A: np.ndarray, tol: float) -> np.ndarray:
    if A.size == 0:
        return A
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    if not len(s) or s[0] == 0:
        return U[:, :0]
    return U[:, :int(np.sum(s > tol * s[0]))]


def symmetry_tangent(model, Z, W, *, rel_tol: float = 1e-6, abs_tol: float = ABS_TOL) -> np.ndarray:
    r"""Orthonormal basis of T = gauge ⊕ free head on R⊥ ⊕ level swaps at the fixed point (Z, W).

    Built at the cleaned state Z_c = Σ_ℓ Φ_ℓ [C_ℓ]_{r_ℓ} (each level truncated to its rank: amplitudes
    below rel_tol of the largest, or below abs_tol, are decaying remnants, not kept modes), so the three sets are exactly
    consistent and overlaps are removed without picking up remnant directions."""
    d = model.d
    P = model.graph
    levels = nu_levels(P)
    C = level_amplitudes(P, Z)
    top = max((float(np.linalg.norm(c, 2)) for c in C if c.size), default=0.0)
    Zc = np.zeros_like(np.asarray(Z, float))
    kept = []
    for lv, c in zip(levels, C):
        Ul, sl, Vl = np.linalg.svd(c, full_matrices=False)
        rl = int(np.sum(sl > max(rel_tol * top, abs_tol)))
        kept.append((lv, Vl[:rl]))
        if rl:
            Zc += lv.phi @ ((Ul[:, :rl] * sl[:rl]) @ Vl[:rl])
    rows = np.vstack([V for _, V in kept if len(V)]) if any(len(V) for _, V in kept) else np.zeros((0, d))
    r = int(np.linalg.matrix_rank(rows)) if len(rows) else 0
    _, _, Vt = np.linalg.svd(rows if len(rows) else np.zeros((1, d)), full_matrices=True)
    perp = Vt[r:]  # orthonormal basis of R⊥ (rows)
    # the head of the cleaned fixed point: self-consistent on R (W b_j = ν_j b_j), W itself on R⊥.
    # Gauge vectors built with the raw W would carry its O(remnant) error as spurious extra rank.
    Wc = np.asarray(W, float) @ (perp.T @ perp)
    if r:
        DZ = P.degree[:, None] * Zc
        Wc = Wc + (Zc.T @ (P.adjacency @ Zc)) @ np.linalg.pinv(Zc.T @ DZ, rcond=1e-12, hermitian=True)
    vecs = []
    E = np.eye(d)
    for p in range(d):
        for q in range(d):
            M = np.outer(E[p], E[q])
            vecs.append(model.pack(Zc @ M.T, M @ Wc - Wc @ M))
    zero = np.zeros_like(Zc)
    for v in perp:
        for u in E:
            vecs.append(model.pack(zero, np.outer(u, v)))
    for lv, V in kept:
        for j in range(lv.m):
            for v in V:
                vecs.append(model.pack(np.outer(lv.phi[:, j], v), np.zeros((d, d))))
    return _orth(np.array(vecs).T, 1e-9)


def invariant_gradient(model, Z, W) -> np.ndarray:
    """∇I of I = Σ_k ‖z_k‖²/η_k − ‖W‖_F²/η_W, in the engine's flat layout."""
    N = model.N
    return model.pack(np.vstack([2 * Z[:N] / model.eta_x, 2 * Z[N:] / model.eta_y]), -2 * W / model.eta_W)


def classify_state(model, Z, W, *, tol: float = 1e-6, residual_tol: float = 1e-7) -> Stability:
    r"""Derived linear stability at the fixed point (Z, W) of ``model`` (stop-gradient, learned head):
    engine Jacobian J (assembled sparse, densified), symmetry tangent T removed, spec(QᵀJQ) classified."""
    tol = check_real("tol", tol, 0.0, None, strict_min=True)
    v = model.pack(Z, W)
    f = model.system.flow_vector(v)
    scale = max(1.0, float(np.max(np.abs(v))))
    res = float(np.max(np.abs(f))) / scale
    if not res <= residual_tol:
        raise InvalidParameterError(f"(Z, W) is not a fixed point: max |flow| / max|state| = {res:.2e} "
                                    f"> {residual_tol:g}")
    J = model.system.jacobian(v).toarray()
    jn = max(float(np.max(np.abs(J))), 1e-300)
    T = symmetry_tangent(model, Z, W)
    # every symmetry direction must be a zero mode of the derived Jacobian
    if T.shape[1] and not float(np.max(np.abs(J @ T))) <= 1e-5 * jn:
        raise InvalidParameterError("the symmetry tangent is not in the kernel of the Jacobian "
                                    f"(max |J T| = {np.max(np.abs(J @ T)):.2e}); (Z, W) is not a family member")
    gI = invariant_gradient(model, Z, W)
    inv_res = float(np.max(np.abs(gI @ J)) / max(float(np.max(np.abs(gI))) * jn, 1e-300))
    if T.shape[1]:
        Qf, _ = np.linalg.qr(T, mode="complete")  # T orthonormal: the last columns span T⊥
        Q = Qf[:, T.shape[1]:]
        ev = np.linalg.eigvals(Q.T @ J @ Q)
    else:
        ev = np.linalg.eigvals(J)
    thr = tol * jn
    n_uns, n_deg, kind = spectrum_counts(ev, thr, "reduced Jacobian at the state")
    mr = float(np.max(ev.real)) if len(ev) else -np.inf
    return Stability(kind, n_uns, n_deg, mr, np.sort_complex(ev), int(T.shape[1]), inv_res)


def classify_family(model, family: Family, *, seed: int = 0, spare: float = 0.0, lengths=None,
                    tol: float = 1e-6) -> Stability:
    """Stability at the family's representative (:func:`representative`). Stability can differ between
    members of one family (amplitude lengths, non-normal W, the spare eigenvalues): see :func:`scan_family`."""
    Z, W = representative(model.graph, model.d, family, seed=seed, spare=spare, lengths=lengths)
    return classify_state(model, Z, W, tol=tol)


MEMBER_SPARES = (-0.5, 0.5, -1.5, 1.5)  # spare head eigenvalues tried for rank-deficient families


def scan_family(model, family: Family, *, spares=MEMBER_SPARES, members=None,
                tol: float = 1e-6) -> tuple[str, str, list]:
    r"""Classify several members (equal amplitude lengths; random lengths of seed 1; each spare head
    eigenvalue s for a rank-deficient family) and summarise: 'stable' if some member is stable (the
    family has an attracting part), 'saddle' if every member is a saddle, else 'degenerate'. Returns
    (verdict, verdict over the members whose head spectrum lies in [−1, 1] (|s| ≤ 1), labels).

    With |s| > 1 even Z = 0 attracts (Ż = −sH(sD − A)Z for W = sI, sD − A ≻ 0): collapsed families
    always have an attracting part with a large spare head spectrum."""
    members = [dict(lengths=np.ones(family.rank)), dict(seed=1)] if members is None else members(family)
    labels, bounded, any_ = [], False, False
    for mem in members:
        for s in (spares if family.rank < model.d else (0.0,)):
            st = classify_family(model, family, spare=s, tol=tol, **mem)
            labels.append((float(s), st.label))
            if st.kind == "stable":
                any_ = True
                bounded = bounded or abs(s) <= 1.0
                if bounded:
                    return "stable", "stable", labels

    def verdict(ok, sel):
        if ok:
            return "stable"
        lab = [lb for s, lb in labels if sel(s)]
        return "saddle" if lab and all(lb.startswith("saddle") for lb in lab) else "degenerate"

    return verdict(any_, lambda s: True), verdict(bounded, lambda s: abs(s) <= 1.0), labels


def family_table(model, *, seed: int = 0, spares=(0.0,), max_families: int | None = None) -> list[dict]:
    r"""Every family of ``model``'s graph at its head dimension, with its derived stability at the
    representative for each spare head eigenvalue s (only rank-deficient families depend on s)."""
    fams = enumerate_families(model.graph, model.d)
    if max_families is not None and len(fams) > max_families:
        raise InvalidParameterError(f"{len(fams)} families > max_families = {max_families}")
    rows = []
    for fam in fams:
        kinds = {}
        for s in (spares if fam.rank < model.d else (0.0,)):
            kinds[float(s)] = classify_family(model, fam, seed=seed, spare=s)
        rows.append({"family": fam, "stability": kinds})
    return rows
