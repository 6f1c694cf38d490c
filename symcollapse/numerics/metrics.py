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


def accuracy(X: np.ndarray, Y: np.ndarray, labels: np.ndarray, W: np.ndarray | None = None) -> float:
    """Fraction of samples with labels[i] ≥ 0 whose nearest label is labels[i]."""
    mask = labels >= 0
    if not np.any(mask):
        return float("nan")
    return float(np.mean(nearest_label(X[mask], Y, W) == labels[mask]))
