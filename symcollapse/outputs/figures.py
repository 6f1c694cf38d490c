"""Shared plotting helpers (matplotlib, Agg backend): figure creation, log-time axes, embedding
scatter plots and atomic, byte-reproducible PNG output."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_savefig  # noqa: E402

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "lines.linewidth": 1.4,
    "figure.dpi": 120,
}


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 3.6, height: float = 3.0):
    """(fig, axes) with axes always a 2-D array of shape (nrows, ncols); panel size width×height in."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    fig.set_layout_engine("constrained")
    return fig, axes


def label_axes(ax, xlabel: str, ylabel: str, title: str | None = None, *, legend: bool = True) -> None:
    """Axis labels, optional title, and a legend if any artist has a label."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and any(not h.get_label().startswith("_") for h in ax.get_lines() + ax.collections):
        ax.legend(frameon=False)


def log_time_axis(ax, t: np.ndarray) -> np.ndarray:
    """Set a log time axis and return the mask of plottable times (t > 0)."""
    ax.set_xscale("log")
    return np.asarray(t) > 0


def mark_time(ax, t: float, text: str) -> None:
    """A dotted vertical line at time t with a short label at the top."""
    ax.axvline(t, color="0.4", ls=":", lw=1.0)
    ax.annotate(text, (t, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                textcoords="offset points", fontsize=7, color="0.3")


def plot_embedding(ax, X: np.ndarray, Y: np.ndarray, labels: np.ndarray, *, title: str | None = None,
                   limits: float | None = None) -> None:
    """Samples (dots, coloured by own class; frustrated in grey) and labels (stars) in 2-D."""
    cmap = plt.get_cmap("tab10")
    own = labels >= 0
    ax.scatter(X[~own, 0], X[~own, 1], s=8, c="0.6", label="frustrated samples", zorder=2)
    ax.scatter(X[own, 0], X[own, 1], s=8, c=[cmap(int(c) % 10) for c in labels[own]],
               label="consistent samples", zorder=3)
    ax.scatter(Y[:, 0], Y[:, 1], s=140, marker="*", c=[cmap(c % 10) for c in range(len(Y))],
               edgecolors="k", linewidths=0.6, label="labels", zorder=4)
    if limits is not None:
        ax.set_xlim(-limits, limits)
        ax.set_ylim(-limits, limits)
    ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title)


def save_figure(fig, path) -> Path:
    """Write the figure as PNG atomically (fixed metadata) and close it."""
    try:
        return atomic_savefig(fig, Path(path))
    finally:
        plt.close(fig)
