"""Collapse metrics: minimum class distance Δ_min, nearest-label accuracy."""
from __future__ import annotations

import numpy as np


def d_min(Y: np.ndarray) -> float:
    """Δ_min = min_{a<b} ‖y_a − y_b‖ over the label embeddings (rows of Y)."""
    Y = np.asarray(Y, dtype=float)
    diff = Y[:, None, :] - Y[None, :, :]
    dist = np.sqrt(np.einsum("abk,abk->ab", diff, diff))
    iu = np.triu_indices(len(Y), 1)
    return float(dist[iu].min())


def nearest_label(X: np.ndarray, Y: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """argmin_c ‖W x_i − y_c‖ (W = I without a head) for every row x_i of X."""
    Q = X if W is None else X @ np.asarray(W).T
    d2 = (Q * Q).sum(1)[:, None] - 2 * Q @ Y.T + (Y * Y).sum(1)[None, :]
    return np.argmin(d2, axis=1)


TIE_RTOL = 1e-9


def label_distances(X: np.ndarray, Y: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """D_ic = ‖W x_i − y_c‖, from the differences (no ‖q‖² − 2q·y + ‖y‖² cancellation)."""
    Q = np.asarray(X, dtype=float) if W is None else np.asarray(X, dtype=float) @ np.asarray(W, dtype=float).T
    Y = np.asarray(Y, dtype=float)
    D = np.empty((Q.shape[0], Y.shape[0]))
    for c in range(Y.shape[0]):  # one N×d difference at a time: memory O(N d), not O(N K d)
        diff = Q - Y[c]
        D[:, c] = np.sqrt(np.einsum("ik,ik->i", diff, diff))
    return D


def accuracy(X: np.ndarray, Y: np.ndarray, labels: np.ndarray, W: np.ndarray | None = None,
             *, rtol: float = TIE_RTOL) -> float:
    r"""Mean credit over samples with labels[i] ≥ 0: credit_i = [c(i) ∈ T_i] / |T_i| (docs/model.md §1).

    T_i = {c : ‖q_i − y_c‖ ≤ min_b ‖q_i − y_b‖ + rtol·s_i}, q_i = W x_i, s_i = ‖q_i‖ + max_b ‖y_b‖,
    is the set of labels tied for nearest to within round-off. Without ties this is the fraction
    of samples whose nearest label is their own; labels that coincide (complete collapse, Δ_min
    at round-off) share the credit, so a fully collapsed model scores 1/K (chance), not whatever
    the round-off in argmin happens to pick. Squared distances ‖q‖² − 2q·y + ‖y‖² (one matrix
    product) decide the rows whose two nearest labels are clearly apart; the others are
    recomputed from the differences q_i − y_c, which resolve distances down to round-off.
    """
    labels = np.asarray(labels)
    mask = labels >= 0
    if not np.any(mask):
        return float("nan")
    X, lab = np.asarray(X, dtype=float)[mask], labels[mask].astype(int)
    Y = np.asarray(Y, dtype=float)
    Q = X if W is None else X @ np.asarray(W, dtype=float).T
    qq = np.einsum("ik,ik->i", Q, Q)
    d2 = qq[:, None] - 2 * Q @ Y.T + np.einsum("ck,ck->c", Y, Y)[None, :]
    s = np.sqrt(qq) + float(np.max(np.linalg.norm(Y, axis=1)))
    credit = (np.argmin(d2, axis=1) == lab).astype(float)
    if Y.shape[0] > 1:
        two = np.partition(d2, 1, axis=1)[:, :2]
        # a tie within rtol·s in distance is a gap ≤ rtol·s·(2 d_min + rtol·s) ≤ 3 rtol s² in d²;
        # the expansion's own round-off is ≤ 64 ε s²: such rows are decided from the differences
        close = two[:, 1] - two[:, 0] <= (3 * rtol + 64 * np.finfo(float).eps) * s * s
        if np.any(close):
            D = label_distances(Q[close], Y)
            tied = D <= D.min(axis=1, keepdims=True) + rtol * s[close, None]
            own = tied[np.arange(int(close.sum())), lab[close]]
            credit[close] = own / tied.sum(axis=1)
    return float(np.mean(credit))


def d_min_many(Y: np.ndarray) -> np.ndarray:
    """Δ_min of each of B label sets Y[b] (B×K×d): the same pairwise norms as :func:`d_min`."""
    Y = np.asarray(Y, dtype=float)
    iu, ju = np.triu_indices(Y.shape[1], 1)
    diff = Y[:, iu, :] - Y[:, ju, :]
    return np.sqrt(np.einsum("bpk,bpk->bp", diff, diff)).min(axis=1)


def accuracy_many(X: np.ndarray, Y: np.ndarray, labels: np.ndarray, W: np.ndarray | None = None,
                  *, rtol: float = TIE_RTOL) -> np.ndarray:
    """:func:`accuracy` of B states at once (X: B×N×d, Y: B×K×d, W: B×d×d or None), equal to it
    seed by seed: the nearest label is argmin_c (‖y_c‖² − 2 q·y_c) (‖q‖² is common to a row);
    a seed with a row whose two nearest labels are within the tie/round-off margin of
    :func:`accuracy` is passed to :func:`accuracy` itself. (Every row is scored and the rows with
    labels[i] < 0 are not counted: no gathered copy of the samples; the two smallest scores are
    updated in place.)"""
    labels = np.asarray(labels)
    mask = labels >= 0
    B = X.shape[0]
    if not np.any(mask):
        return np.full(B, np.nan)
    X = np.asarray(X, dtype=float)
    lab = np.where(mask, labels, -1).astype(int)  # -1: never the nearest label, so never counted
    Y = np.asarray(Y, dtype=float)
    Q = X if W is None else X @ np.swapaxes(np.asarray(W, dtype=float), 1, 2)
    yy = np.einsum("bck,bck->bc", Y, Y)
    score = Y @ np.swapaxes(Q, 1, 2)  # (B, K, N): −½(‖y_c‖² − 2 q_i·y_c) up to the factor
    score *= -2.0
    score += yy[:, :, None]
    # the two smallest scores over the K labels, by a loop over K (first minimum, as np.argmin)
    m1, near, m2 = score[:, 0].copy(), np.zeros(score.shape[::2], dtype=int), np.full(score.shape[::2], np.inf)
    for c in range(1, score.shape[1]):
        v = score[:, c]
        lt = v < m1
        np.minimum(m2, v, out=m2)  # m2 ← min(m2, v), or the old m1 where v is the new minimum
        np.copyto(m2, m1, where=lt)
        np.copyto(m1, v, where=lt)
        np.copyto(near, c, where=lt)
    out = (near == lab[None, :]).sum(axis=1) / int(mask.sum())
    if Y.shape[1] > 1:
        # s² ≤ 2(‖q‖² + max‖y‖²): a margin of twice accuracy()'s, so every row it recomputes is caught
        s2 = 2.0 * ((Q * Q) @ np.ones(Q.shape[2]) + yy.max(axis=1)[:, None])
        close = m2 - m1 <= 2.0 * (3 * rtol + 64 * np.finfo(float).eps) * s2
        close &= mask[None, :]
        for b in np.flatnonzero(close.any(axis=1)):
            out[b] = accuracy(X[b], Y[b], labels, None if W is None else W[b], rtol=rtol)
    return out
