r"""Phase-diagram figures of the head model (docs/model.md §3): simulated basin fraction of separated
end states as colour, mean final separation ρ as contours, derived stability as hatching/markers."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def phase_figure(cells: dict, K: int, yname: str, path, *, ax=None) -> Path | None:
    """(ε, y) diagram, y = 'd' or 'eta_W'. Derived: hatched = no stable separated family among the
    scanned members, 'o' = a stable collapsed family with head spectrum in [−1, 1]; red 'x' = a
    simulated end state whose family has no derived-stable member (or is itself unstable)."""
    from matplotlib.patches import Rectangle

    from .figures import label_axes, new_figure, save_figure

    eps = sorted({k[0] for k in cells})
    ys = sorted({k[1] if yname == "d" else k[2] for k in cells})
    F = np.full((len(ys), len(eps)), np.nan)
    R = np.full_like(F, np.nan)
    own = ax is None
    if own:
        fig, axes = new_figure(1, 1, width=4.6, height=3.4)
        ax = axes[0, 0]
    for key, c in cells.items():
        i, j = ys.index(key[1] if yname == "d" else key[2]), eps.index(key[0])
        F[i, j], R[i, j] = c["separated"], c["rho_mean"]
    ex = [cells[next(k for k in cells if k[0] == e)]["eps_real"] for e in eps]
    im = ax.pcolormesh(np.arange(len(eps) + 1) - 0.5, np.arange(len(ys) + 1) - 0.5, F, vmin=0, vmax=1,
                       cmap="viridis", shading="flat")
    if len(eps) > 1 and len(ys) > 1 and np.all(np.isfinite(R)):
        cs = ax.contour(np.arange(len(eps)), np.arange(len(ys)), R, levels=[0.2, 0.4, 0.6, 0.8],
                        colors="w", linewidths=0.8)
        ax.clabel(cs, fontsize=6, fmt="ρ=%.1f")
    for key, c in cells.items():
        i, j = ys.index(key[1] if yname == "d" else key[2]), eps.index(key[0])
        if not c["derived_stable_separated"]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", ec="0.85", lw=0))
        if c.get("derived_bounded_collapsed", c["derived_stable_collapsed"]):
            ax.plot(j, i, "o", mfc="none", mec="orange", ms=5)
        if c["reached_not_derived_stable"] or c["unstable"]:
            ax.plot(j, i, "x", color="r", ms=6)
    ax.set_xticks(range(len(eps)), [f"{e:.2f}" for e in ex], rotation=60 if len(eps) > 8 else 0)
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
    n_lo, n_hi = min(c["n"] for c in cells.values()), max(c["n"] for c in cells.values())
    n = f"{n_lo}" if n_lo == n_hi else f"{n_lo}–{n_hi}"
    ax.plot([], [], "o", mfc="none", mec="orange", label="stable collapsed family, head spectrum in [−1, 1]")
    ax.add_patch(Rectangle((0, 0), 0, 0, fill=False, hatch="///", ec="0.6", label="no stable separated family found"))
    ylabel = "head dimension d" if yname == "d" else "η_W / η_x"
    label_axes(ax, "frustration ε", ylabel, f"K={K} ({n} seeds/cell)", legend=False)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(-0.15, -0.2), ncol=1, frameon=False)
    if own:
        fig.colorbar(im, ax=ax, label="fraction separated (contours: mean ρ)")
        return save_figure(fig, path)
    return None


def phase_panels(cell_sets: dict, yname: str, path) -> Path:
    """One panel per K ({K: cells}) side by side, shared colour scale (fraction separated)."""
    import matplotlib.pyplot as plt

    from .figures import new_figure, save_figure

    Ks = sorted(cell_sets)
    fig, axes = new_figure(1, len(Ks), width=3.5, height=3.4)
    for ax, K in zip(axes[0], Ks):
        phase_figure(cell_sets[K], K, yname, None, ax=ax)
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=list(axes[0]), label="fraction separated; contours: mean ρ")
    return save_figure(fig, path)
