r"""Phase-diagram figures of the head model (docs/model.md §3): simulated basin fraction of separated
end states as colour, mean final separation ρ as contours, derived stability as hatching/markers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .figures import label_axes, new_figure, plt, save_figure  # pyplot with the Agg backend selected

SEP_CMAP = "viridis"
COLOUR_LABEL = "basin fraction of separated end states"


def _edges(v: np.ndarray, log: bool = False, half: float = 0.5) -> np.ndarray:
    """Cell edges around the centres v (midpoints; the outer cells symmetric; ``half`` the half-width
    of a single cell)."""
    v = np.log(v) if log else np.asarray(v, float)
    if len(v) == 1:
        e = np.array([v[0] - half, v[0] + half]) if not log else np.array([v[0] - 0.3, v[0] + 0.3])
    else:
        mid = 0.5 * (v[1:] + v[:-1])
        e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return np.exp(e) if log else e


def _boundary(ax, M: np.ndarray, xe: np.ndarray, ye: np.ndarray) -> None:
    """Draw the cell edges between cells with M true and cells with M false (a step boundary)."""
    rows, cols = M.shape
    for i in range(rows):
        for j in range(cols):
            if j + 1 < cols and M[i, j] != M[i, j + 1]:
                ax.plot([xe[j + 1]] * 2, [ye[i], ye[i + 1]], color="w", lw=1.8, solid_capstyle="butt")
            if i + 1 < rows and M[i, j] != M[i + 1, j]:
                ax.plot([xe[j], xe[j + 1]], [ye[i + 1]] * 2, color="w", lw=1.8, solid_capstyle="butt")


def _flag(c: dict, new: str, old: str) -> bool | None:
    """A derived-layer flag of a cell (``new`` boolean field, else the older list field ``old``);
    None where the derived layer did not search."""
    if new in c:
        return None if c[new] is None else bool(c[new])
    return bool(c.get(old))


def legend_handles(with_x: bool) -> list:
    """Legend entries of the derived layer (and of unverified end states if any are drawn)."""

    out = [Patch(fc="none", ec="0.3", hatch="////", label="derived: no stable separated family"),
           Line2D([], [], ls="none", marker="o", mfc="none", mec="orange", label="derived: stable collapsed family")]
    if with_x:
        out.append(Line2D([], [], ls="none", marker="x", color="r",
                          label="end state not stable, or no derived-stable member of its family"))
    return out


def phase_figure(cells: dict, K: int, yname: str, path, *, ax=None, legend: bool = True,
                 colorbar: bool = True) -> Path | None:
    """(ε, y) diagram, y = 'd' or 'eta_W', on the realised ε of each cell. Simulated: colour = basin
    fraction of separated end states, white contours = mean ρ = Δ_min(T)/Δ_min(0). Derived: hatched =
    no stable separated family, orange ring = a stable collapsed family with head spectrum in [−1, 1];
    red 'x' = a simulated end state that is unstable or degenerate, or whose family has no stable member,
    neither among the scanned ones nor at the reached amplitudes (``symcollapse.phase.reached_family_verdict``)."""
    keys = sorted(cells)
    eps = sorted({k[0] for k in keys})
    ycol = 1 if yname == "d" else 2
    ys = sorted({k[ycol] for k in keys})
    ex = np.array([next(cells[k]["eps_real"] for k in keys if k[0] == e) for e in eps])
    yv = np.array(ys, float)
    F = np.full((len(ys), len(eps)), np.nan)
    R = np.full_like(F, np.nan)
    H = np.zeros_like(F, dtype=bool)
    C = np.zeros_like(H)
    X = np.zeros_like(H)
    searched = True
    for k, c in cells.items():
        i, j = ys.index(k[ycol]), eps.index(k[0])
        F[i, j], R[i, j] = c["separated"], c["rho_mean"]
        H[i, j] = _flag(c, "derived_separated", "derived_stable_separated") is False
        C[i, j] = bool(_flag(c, "derived_collapsed", "derived_bounded_collapsed"))
        searched = searched and c.get("derived_separated", True) is not None
        X[i, j] = bool(c["reached_not_derived_stable"]) or c["unstable"] > 0 or c.get("degenerate", 0) > 0
    own = ax is None
    if own:
        fig, axes = new_figure(1, 1, width=5.0, height=3.6)
        ax = axes[0, 0]
    logy = yname != "d"
    xe, ye = _edges(ex, half=0.04), (_edges(yv, log=True) if logy else _edges(yv))
    im = ax.pcolormesh(xe, ye, np.ma.masked_invalid(F), vmin=0, vmax=1, cmap=SEP_CMAP, shading="flat")
    if len(eps) > 2 and len(ys) > 2 and np.all(np.isfinite(R)):
        cs = ax.contour(ex, yv, R, levels=[0.2, 0.4, 0.6, 0.8], colors="w", linewidths=0.9)
        ax.clabel(cs, fontsize=6.5, fmt="ρ=%.1f")
    for i, j in zip(*np.nonzero(H)):  # derived: no stable separated family — hatched cells
        ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False,
                               hatch="////", ec="0.85", lw=0))
    _boundary(ax, H, xe, ye)
    for i, j in zip(*np.nonzero(C)):
        ax.plot(ex[j], yv[i], "o", mfc="none", mec="orange", ms=4, mew=1.0)
    for i, j in zip(*np.nonzero(X)):
        ax.plot(ex[j], yv[i], "x", color="r", ms=6, mew=1.5)
    if logy:
        ax.set_yscale("log")
        ax.set_yticks(yv, [f"{y:g}" for y in yv])
        ax.minorticks_off()
    else:
        ax.set_yticks(yv, [f"{int(y)}" for y in yv])
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    n_lo = min(c["n"] for c in cells.values())
    n_hi = max(c["n"] for c in cells.values())
    seeds = f"{n_lo}" if n_lo == n_hi else f"{n_lo}–{n_hi}"
    ylabel = "head dimension d" if yname == "d" else "η_W / η_x"
    extra = "" if yname == "d" else f", d = {next(iter(cells))[1]}"
    note = "" if searched else "\nderived layer: reached families only"
    label_axes(ax, "frustration ε = m/N", ylabel, f"K = {K}{extra}: {len(cells)} cells × {seeds} seeds{note}",
               legend=False)
    if legend:
        # three entries do not fit in two columns of a single panel: one column then
        ax.figure.legend(handles=legend_handles(X.any()), loc="outside lower center", ncol=1 if X.any() else 2,
                         fontsize=7,
                         frameon=False)
    if own:
        if colorbar:
            cb = fig.colorbar(im, ax=ax)  # a smaller label: at 3.6 in its two lines are taller than the panel
            cb.set_label(COLOUR_LABEL + "\n(white contours: mean final separation ρ)", fontsize=8)
        return save_figure(fig, path)
    return None


def phase_panels(cell_sets: dict, yname: str, path) -> Path:
    """One panel per K ({K: cells}) side by side, shared colour scale (basin fraction separated)."""


    Ks = sorted(cell_sets)
    rows = 2 if len(Ks) == 4 else 1
    cols = len(Ks) // rows
    width = 3.9 if rows == 2 else (3.6 if cols > 1 else 5.0)
    fig, axes = new_figure(rows, cols, width=width, height=3.5 if rows == 2 else 3.7)
    flat = list(axes.ravel())
    for ax, K in zip(flat, Ks):
        phase_figure(cell_sets[K], K, yname, None, ax=ax, legend=False)
    bad = any(c["reached_not_derived_stable"] or c["unstable"] or c.get("degenerate", 0)
              for cs in cell_sets.values() for c in cs.values())
    fig.legend(handles=legend_handles(bad), loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    sm = plt.cm.ScalarMappable(cmap=SEP_CMAP, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, label=COLOUR_LABEL + "\n(white contours: mean final separation ρ)",
                 shrink=0.9 if rows == 2 else 1.0)
    return save_figure(fig, path)
