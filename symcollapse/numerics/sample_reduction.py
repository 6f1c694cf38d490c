r"""Exact reduction of the samples to a few weighted pseudo-samples (docs/model.md §3.5).

The matrix kernels accept a flow only if every sample force is affine in its own sample vector,
with a linear part set by the shared blocks and the sample's degree and an offset set by its
coupling row (ẋ_i = D_i A x_i + B (P Y)_i + D_i c), and every label or shared force reads the
samples only through the edge moments Σ_e p_e, Σ_e p_e n, Σ_e p_e n_p n_qᵀ
(:mod:`.matrix_kernels`; a flow of another form raises ``StructureError`` there). So the samples
of a group g with one coupling row move by one affine map, x_i(t) = Φ_g(t) x_i(0) + ψ_g(t), and
the rest of the flow sees the group only through n_g, its first and its second moment. A group of
n_g > q = d + 1 samples is therefore replaced by q pseudo-samples u_k = μ + L s_k of multiplicity
n_g/q (μ, C = L Lᵀ the group's mean and covariance, s_k a regular simplex: Σ s_k = 0,
Σ s_k s_kᵀ = q I), which carry the same n_g and moments; each sample is the affine combination
x_i = Σ_k α_ik u_k, α_ik = (1 + s_kᵀ L⁺(x_i − μ))/q, at t = 0 and hence at every t. The labels,
the shared blocks and the loss of the reduced flow are those of the full flow, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps

from ..errors import DerivationCheckError
from ..symbolic.loss import LABEL, SAMPLE

#: a reduction is used only if it keeps at most this fraction of the samples
MAX_KEPT_FRACTION = 0.5
#: relative agreement of the full flow and the lifted reduced flow required at the initial state
EXACTNESS_TOL = 1e-9


@dataclass(frozen=True)
class SampleGroups:
    """Samples with one coupling row, and the pseudo-samples that stand for them.

    ``members[g]`` the sample indices of group g, ``pseudo[g]`` the rows of its pseudo-samples in
    the reduced graph, ``q[g]`` their number (q = d + 1 if the group is larger, else its samples)."""

    members: tuple
    pseudo: tuple
    q: tuple
    N: int
    N_reduced: int


def sample_groups(P, d: int) -> SampleGroups:
    """Group the rows of P (N × K) by equal coupling row; a group of more than d + 1 samples gets
    d + 1 pseudo-samples, a smaller group keeps its samples."""
    P = P.toarray() if sps.issparse(P) else np.asarray(P, dtype=float)
    _, inv = np.unique(P, axis=0, return_inverse=True)
    inv = np.ravel(inv)
    order = np.argsort(inv, kind="stable")
    cuts = np.flatnonzero(np.diff(inv[order])) + 1
    members, pseudo, q, off = [], [], [], 0
    for idx in np.split(order, cuts):
        k = d + 1 if len(idx) > d + 1 else len(idx)
        members.append(idx)
        pseudo.append(np.arange(off, off + k))
        q.append(k)
        off += k
    return SampleGroups(tuple(members), tuple(pseudo), tuple(q), P.shape[0], off)


def simplex(q: int) -> np.ndarray:
    """Vertices s_k (rows, q × (q−1)) of a regular simplex centred at 0 with Σ_k s_k s_kᵀ = q I."""
    M = np.eye(q) - 1.0 / q
    w, V = np.linalg.eigh(M)
    return np.sqrt(q) * V[:, w > 0.5]


def _spread(X0: np.ndarray):
    """Mean, centred samples, covariance eigenpairs, and the directions of spread above round-off on
    the scale of the samples themselves."""
    mu = X0.mean(axis=0)
    Xc = X0 - mu
    lam, V = np.linalg.eigh(Xc.T @ Xc / len(X0))
    keep = lam > 1e-24 * max(float(np.max(np.sum(X0 * X0, axis=1))), 1e-300)
    return mu, Xc, lam, V, keep


def spread_rank(X0: np.ndarray) -> int:
    """The number of directions in which the samples X0 (n × d) spread (their covariance's rank)."""
    return int(_spread(X0)[4].sum())


def group_lift(X0: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    r"""(U, α) for one group's initial samples X0 (n × d): q = d + 1 pseudo-samples U (q × d) with
    the same mean and second moment (each of multiplicity n/q), and the affine coordinates α
    (n × q, rows summing to 1) with X0 = α U; q = n: U = X0, α = I."""
    n, d = X0.shape
    if q == n:
        return X0.copy(), np.eye(n)
    mu, Xc, lam, V, keep = _spread(X0)
    L = V[:, keep] * np.sqrt(lam[keep])  # C = L Lᵀ on its range
    S = simplex(q)[:, :L.shape[1]] if L.shape[1] < d else simplex(q)
    U = mu + S @ L.T
    Linv = (V[:, keep] / np.sqrt(lam[keep])).T  # L⁺
    alpha = (1.0 + (Xc @ Linv.T) @ S.T) / q
    return U, alpha


@dataclass(frozen=True)
class Lift:
    """One state's affine coordinates: sample i = Σ_k alpha[g][i, k] · pseudo-sample k of its group."""

    alpha: tuple
    generic: tuple = ()  # per group: its pseudo-samples span R^d affinely (or are its samples)

    @property
    def bound(self) -> float:
        """max_i Σ_k |α_ik| (≥ 1): a sample's velocity is at most this times the largest
        pseudo-sample velocity of its group."""
        return max(float(np.abs(a).sum(axis=1).max()) for a in self.alpha)


def lift_samples(groups: SampleGroups, Xr: np.ndarray, lift: Lift) -> np.ndarray:
    """The N samples (N × d) from the pseudo-samples Xr (N_reduced × d): x_i = Σ_k α_ik x̃_k."""
    X = np.empty((groups.N, Xr.shape[1]))
    for idx, rows, a in zip(groups.members, groups.pseudo, lift.alpha):
        X[idx] = a @ Xr[rows]
    return X


@dataclass(frozen=True)
class SampleReduction:
    """The reduced system of a full system, and how its states map to full states."""

    full: object
    system: object
    groups: SampleGroups

    def reduce(self, v: np.ndarray) -> tuple[np.ndarray, Lift]:
        """A full state -> (reduced state, its lift); the pseudo-samples carry each group's moments."""
        st = self.full.unpack(np.asarray(v, dtype=float))
        X = st[SAMPLE]
        Xr = np.empty((self.groups.N_reduced, X.shape[1]))
        alpha, generic = [], []
        for idx, rows, q in zip(self.groups.members, self.groups.pseudo, self.groups.q):
            U, a = group_lift(X[idx], q)
            Xr[rows] = U
            alpha.append(a)
            generic.append(q == len(idx) or spread_rank(X[idx]) == X.shape[1])
        red = dict(st)
        red[SAMPLE] = Xr
        return self.system.pack(red), Lift(tuple(alpha), tuple(generic))

    def expand(self, vr: np.ndarray, lift: Lift) -> np.ndarray:
        """A reduced state -> the full state (samples lifted, labels and shared blocks as they are)."""
        st = self.system.unpack(np.asarray(vr, dtype=float))
        full = dict(st)
        full[SAMPLE] = lift_samples(self.groups, st[SAMPLE], lift)
        return self.full.pack(full)

    def full_norm(self, f: np.ndarray, lift: Lift) -> float:
        """‖θ̇‖_∞ of the full flow, given the reduced flow f at a reduced state: the labels' and shared
        blocks' entries as they are, the samples' velocities lifted (exact for this affine flow)."""
        (off, (n, k)) = self.system.layout[SAMPLE]
        rest = np.concatenate([f[:off], f[off + n * k:]])
        r = float(np.max(np.abs(rest))) if rest.size else 0.0
        F = f[off:off + n * k].reshape(n, k)
        for rows, a in zip(self.groups.pseudo, lift.alpha):
            r = max(r, float(np.max(np.abs(a @ F[rows]))))
        return r

    def _flow_gap(self, v: np.ndarray, vr: np.ndarray, lift: Lift) -> tuple[float, float]:
        """(max|lifted reduced flow − full flow|, max|full flow|) at the pair (v, vr)."""
        f_full = self.full.flow_vector(v)
        fr = dict(self.system.unpack(self.system.flow_vector(vr)))
        fr[SAMPLE] = lift_samples(self.groups, fr[SAMPLE], lift)
        f_lift = self.full.pack({b: fr[b] for b in self.full.layout})
        return float(np.max(np.abs(f_lift - f_full))), float(np.max(np.abs(f_full)))

    def full_norms(self, F: np.ndarray, lifts: list, above: float | None = None) -> np.ndarray:
        """:meth:`full_norm` of each row of F (B × reduced size) with its lift, all rows at once
        (one batched product per group). ``above``: a row whose label and shared entries already
        exceed it gets that maximum instead — a lower bound of its norm that is > ``above``, so the
        test norm ≤ above is decided the same, without lifting its samples."""
        F = np.atleast_2d(F)
        (off, (n, k)) = self.system.layout[SAMPLE]
        if off == 0:
            rest = F[:, n * k:]
        else:
            rest = np.concatenate([F[:, :off], F[:, off + n * k:]], axis=1)
        r = np.abs(rest).max(axis=1) if rest.shape[1] else np.zeros(len(F))
        todo = np.arange(len(F)) if above is None else np.flatnonzero(~(r > above))  # NaN: lifted
        if not len(todo):
            return r
        Fx = F[todo, off:off + n * k].reshape(len(todo), n, k)
        rt = r[todo]
        for g, rows in enumerate(self.groups.pseudo):
            A = np.stack([lifts[i].alpha[g] for i in todo])
            rt = np.maximum(rt, np.abs(A @ Fx[:, rows]).max(axis=(1, 2)))
        r[todo] = rt
        return r

    def check(self, v: np.ndarray, vr: np.ndarray, lift: Lift, tol: float = EXACTNESS_TOL) -> float:
        r"""Relative difference between the full flow, loss and samples at v and the lifted reduced ones
        at vr, and between the flows at a generic reduced state vr' (same lift: the identity holds for
        every reduced state, Σ_i α_ik α_il = m δ_kl) and its lift, whose flow is not small — near a fixed
        point the flow at v cancels to far below its terms, so both gaps are measured on that scale.
        DerivationCheckError above ``tol`` (the reduction would not be exact) or if not finite."""
        rng = np.random.default_rng(0)
        st_r = self.system.unpack(vr)
        pert = {b: (a + 0.5 * max(float(np.max(np.abs(a))), 1.0) * rng.normal(size=a.shape))
                for b, a in st_r.items() if b in self.system.layout and b != SAMPLE}
        Xr = st_r[SAMPLE].copy()
        for rows, ok in zip(self.groups.pseudo, lift.generic):
            if ok:  # a rank-deficient group's pseudo-samples move only inside its affine hull
                Xr[rows] += 0.5 * max(float(np.max(np.abs(Xr[rows]))), 1.0) * rng.normal(size=Xr[rows].shape)
        pert[SAMPLE] = Xr
        vr2 = self.system.pack(pert)
        gap2, size2 = self._flow_gap(self.expand(vr2, lift), vr2, lift)
        gap, size = self._flow_gap(v, vr, lift)
        scale = max(float(np.max([size, size2])), 1e-300)  # np.max: a NaN propagates
        err = float(np.max([gap, gap2])) / scale
        st = self.full.unpack(v)
        l_full, l_red = self.full.loss(st), self.system.loss(st_r)
        err_l = abs(l_red - l_full) / max(abs(l_full), 1e-300)
        x_err = float(np.max(np.abs(self.full.unpack(self.expand(vr, lift))[SAMPLE] - st[SAMPLE])))
        x_err /= max(float(np.max(np.abs(st[SAMPLE]))), 1e-300)
        worst = float(np.max([err, err_l, x_err]))  # not Python's max, which drops a NaN not in first place
        if not worst <= tol:
            raise DerivationCheckError(
                f"sample reduction: the lifted reduced flow differs from the full flow by {err:.3g}, the loss "
                f"by {err_l:.3g}, the lifted samples by {x_err:.3g} (relative; tolerance {tol:g})")
        return worst


def reducible(system) -> bool:
    """Whether ``system`` is a matrix-level flow with learned samples and no per-sample data, whose
    samples fall into groups of equal coupling row (the kernels guarantee the affine form)."""
    if getattr(system, "path", None) != "matrix" or getattr(system, "multiplicity", None) is not None:
        return False
    loss = system.compiled.loss
    return loss.x is not None and loss.data is None and SAMPLE in system.layout and LABEL in system.layout


def reduction(system, max_fraction: float = MAX_KEPT_FRACTION) -> SampleReduction | None:
    """The reduced system of ``system`` (docs/model.md §3.5), or None when it does not apply or
    would keep more than ``max_fraction`` of the samples."""
    if not reducible(system):
        return None
    d = system.layout[SAMPLE][1][1]
    groups = sample_groups(system.graph.P, d)
    if groups.N_reduced > max_fraction * groups.N:
        return None
    P = system.graph.P.toarray() if sps.issparse(system.graph.P) else np.asarray(system.graph.P, dtype=float)
    rows = np.empty((groups.N_reduced, P.shape[1]))
    m = np.empty(groups.N_reduced)
    for idx, pr, q in zip(groups.members, groups.pseudo, groups.q):
        m[pr] = len(idx) / q
        rows[pr] = P[idx[0]] * (len(idx) / q)
    red = type(system)(system.compiled, rows, rates=dict(system.rates), dims=dict(system.dims),
                       params=dict(system.params), frozen=dict(system.frozen) or None, scale=system.scale,
                       check=False, multiplicity=m)
    return SampleReduction(system, red, groups)
