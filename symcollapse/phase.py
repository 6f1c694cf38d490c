r"""Stability phase diagrams of the head model with stop-gradient (docs/model.md §3): derived
fixed-point families and their stability per (ε, d) cell, and simulated basins from seeded
sweeps (resumable JSON lines, :mod:`symcollapse.numerics.sweeps`).

Derived: for B(K, n, μ) and head dimension d, every family (ranks r_ℓ per ν-level) and its
linear stability at a representative (spare head eigenvalue s = ±0.5 for rank-deficient ones).
Simulated: each seed's end state (flow residual ≤ tol), its family, its own derived stability
and its separation ρ = Δ_min(T)/Δ_min(0).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import InvalidParameterError
from .validation import check_int, check_real

SPARES = (0.5, -0.5)  # spare head eigenvalues of the LaTeX family table (rank-deficient families)
KIND_CODE = {"stable": 1.0, "degenerate": 0.0}  # saddles: −n_unstable; unclassified: −99


def balanced_for_eps(K: int, eps: float, n_max: int = 8) -> tuple[int, int, float]:
    r"""(n, μ, ε') of the smallest balanced ensemble with ε' = m/N closest to ``eps``
    (m = μK(K−1)/2, N = Kn + m, 1 ≤ n ≤ n_max, μ ≥ 0)."""
    K = check_int("K", K, 2)
    eps = check_real("eps", eps, 0.0, 1.0, strict_max=True)
    n_max = check_int("n_max", n_max, 1)
    pairs = K * (K - 1) // 2
    best = None
    for n in range(1, n_max + 1):
        if eps == 0:
            cands = [0]
        else:
            mu0 = eps * K * n / ((1 - eps) * pairs)
            cands = sorted({max(1, math.floor(mu0)), max(1, math.ceil(mu0))})
        for mu in cands:
            m = mu * pairs
            e = m / (K * n + m)
            key = (round(abs(e - eps), 12), K * n + m)
            if best is None or key < best[0]:
                best = (key, n, mu, e)
    return best[1], best[2], float(best[3])


def _model(K, eps, d, eta_x, eta_y, eta_W, n_max):
    from .models.couplings import balanced_couplings
    from .models.head import HeadModel

    n, mu, e = balanced_for_eps(K, eps, n_max)
    return HeadModel(balanced_couplings(K, n, mu), d=d, eta_x=eta_x, eta_y=eta_y, eta_W=eta_W), n, mu, e


def phase_point(K: int = 3, eps: float = 0.1, d: int = 4, seed: int = 0, eta_W: float = 1.0,
                eta_x: float = 1.0, eta_y: float = 0.1, n_max: int = 4, t_max: float = 2e4,
                tol: float = 1e-9) -> dict:
    r"""One seeded simulation of B(K, n, μ) (ε' ≈ eps) with head dimension d to its fixed point:
    its family (ranks r_ℓ per ν-level), derived stability, residual, separation ρ, invariant drift."""
    from .numerics.basins import end_state

    model, n, mu, e = _model(K, eps, d, eta_x, eta_y, eta_W, n_max)
    es = end_state(model, check_int("seed", seed, 0), tol=tol, t_max=t_max)
    out = {"eps_real": e, "n": n, "mu": mu, "residual": es.residual, "t_end": es.t,
           "separation": es.separation, "invariant_drift": es.invariant_drift, "rank": es.family.rank}
    if es.stability is None:
        out.update(kind=-99.0, n_unstable=-1.0)
    else:
        s = es.stability
        out.update(kind=KIND_CODE.get(s.kind, -float(s.n_unstable)), n_unstable=s.n_unstable,
                   n_symmetry=s.n_symmetry, max_real=s.max_real)
    sep = 0
    for i, (nu, r) in enumerate(zip(es.family.nus, es.family.ranks)):
        out[f"nu_{i}"] = nu
        out[f"r_{i}"] = r
        if 0 < abs(nu) < 1 - 1e-9:
            sep += r
    out["sep_rank"] = sep
    return {k: float(v) for k, v in out.items()}


@lru_cache(maxsize=None)
def derived_cell(K: int, eps: float, d: int, eta_x: float = 1.0, eta_y: float = 0.1, eta_W: float = 1.0,
                 n_max: int = 4, quick: bool = False) -> dict:
    r"""Derived stability over all families of the cell (``quick``: fewer members scanned, for figures):
    the families with a stable member among the
    scanned ones (:func:`~symcollapse.numerics.families.scan_family`), split into separated (keep a
    level 0 < |ν| < 1) and collapsed."""
    from .numerics import families as fm

    model, n, mu, e = _model(K, eps, d, eta_x, eta_y, eta_W, n_max)
    stable, bounded, kinds = [], [], {}
    for fam in fm.enumerate_families(model.graph, d):
        if quick:  # figures: one member (equal lengths), spare head eigenvalues ±0.5 only
            verdict, verdict_b, labels = fm.scan_family(model, fam, spares=(-0.5, 0.5),
                                                        members=lambda f: [dict(lengths=np.ones(f.rank))])
        else:
            verdict, verdict_b, labels = fm.scan_family(model, fam)
        kinds[fam.key] = labels
        if verdict == "stable":
            stable.append(fam)
        if verdict_b == "stable":
            bounded.append(fam.key)

    def separated(f):
        return any(0 < abs(nu) < 1 - 1e-9 and r for nu, r in zip(f.nus, f.ranks))

    sep = [f.key for f in stable if separated(f)]
    col = [f.key for f in stable if not separated(f)]
    col_b = [k for k in col if k in bounded]
    sep_b = [k for k in sep if k in bounded]
    return {"n": n, "mu": mu, "eps_real": e, "stable_separated": sep, "stable_collapsed": col,
            "stable_separated_bounded": sep_b, "stable_collapsed_bounded": col_b, "kinds": kinds}


# --- runs ------------------------------------------------------------------------------------------
def check_phase_args(K, eps, d, seeds, eta_W=(1.0,)) -> tuple:
    """Validate a phase grid before any work: K ≥ 2, 0 ≤ ε < 1 distinct, d ≥ 1 distinct, seeds ≥ 1, η_W > 0."""
    K = check_int("K", K, 2)
    eps = [check_real("eps", e, 0.0, 1.0, strict_max=True) for e in eps]
    d = [check_int("d", v, 1) for v in d]
    seeds = check_int("seeds", seeds, 1)
    eta_W = [check_real("eta_W", v, 0.0, None, strict_min=True) for v in eta_W]
    for name, vals in (("eps", eps), ("d", d), ("eta_W", eta_W)):
        if not vals:
            raise InvalidParameterError(f"{name} needs at least one value")
        if len(set(vals)) != len(vals):
            raise InvalidParameterError(f"values of {name} must be distinct; got {vals}")
    if max(d) > 32:
        raise InvalidParameterError(f"d must be <= 32 for the assembled Jacobian; got {max(d)}")
    return K, eps, d, seeds, eta_W


def run_phase(K: int, eps, d, seeds: int, out, *, eta_W=(1.0,), eta_x: float = 1.0, eta_y: float = 0.1,
              workers: int | None = None, backend: str = "processes", t_max: float = 2e4, progress=None) -> list[dict]:
    r"""The seeded sweep of :func:`phase_point` over ε × d × η_W × seeds, streamed to
    ``out/phase_K{K}.jsonl`` (finished points are skipped on rerun)."""
    from .numerics.sweeps import run_sweep

    K, eps, d, seeds, eta_W = check_phase_args(K, eps, d, seeds, eta_W)
    out = Path(out)
    params = {"K": [K], "eps": eps, "d": d, "eta_W": eta_W, "seed": list(range(seeds)),
              "eta_x": [float(eta_x)], "eta_y": [float(eta_y)], "t_max": [float(t_max)]}
    return run_sweep(phase_point, params, out / f"phase_K{K}.jsonl", backend=backend, workers=workers,
                     progress=progress)


def summarise(records: list[dict]) -> dict:
    r"""Per cell (ε, d, η_W): basin fraction of every family reached, fraction separated
    (ρ > 1e-6), mean ± std of ρ, worst residual, and how many end states were unstable."""
    cells: dict = {}
    for rec in records:
        p, r = rec["params"], rec["result"]
        key = (p["eps"], p["d"], p["eta_W"])
        c = cells.setdefault(key, {"n": 0, "families": {}, "rho": [], "residual": 0.0, "unstable": 0,
                                   "unclassified": 0, "eps_real": r["eps_real"]})
        c["n"] += 1
        fam = " ".join(f"{r[f'nu_{i}']:+.4f}x{int(r[f'r_{i}'])}" for i in range(20)
                       if f"r_{i}" in r and r[f"r_{i}"] > 0) or "Z=0"
        c["families"][fam] = c["families"].get(fam, 0) + 1
        c["rho"].append(r["separation"])
        c["residual"] = max(c["residual"], r["residual"])
        c["unstable"] += int(r["kind"] < 0 and r["kind"] != -99)
        c["unclassified"] += int(r["kind"] == -99)
    for c in cells.values():
        rho = np.array(c.pop("rho"))
        c["separated"] = float(np.mean(rho > 1e-6))
        c["rho_mean"], c["rho_std"] = float(rho.mean()), float(rho.std())
        c["basin"] = {k: v / c["n"] for k, v in c["families"].items()}
    return cells


def attach_derived(cells: dict, K: int, eta_x: float = 1.0, eta_y: float = 0.1, quick: bool = False) -> dict:
    """Add each cell's derived stable families and the reached families that are not among them."""
    for (e, d, ew), c in cells.items():
        der = derived_cell(K, e, d, eta_x, eta_y, ew, quick=quick)
        c["derived_stable_separated"] = der["stable_separated"]
        c["derived_stable_collapsed"] = der["stable_collapsed"]
        c["derived_bounded_separated"] = der["stable_separated_bounded"]
        c["derived_bounded_collapsed"] = der["stable_collapsed_bounded"]
        c["reached_not_derived_stable"] = [f for f in c["families"]
                                           if f not in der["stable_separated"] + der["stable_collapsed"]]
        if quick and c["reached_not_derived_stable"]:  # the full member scan, for reached families only
            from .numerics import families as fm

            model, *_ = _model(K, e, d, eta_x, eta_y, ew, 4)
            by_key = {f.key: f for f in fm.enumerate_families(model.graph, d)}
            verified = [k for k in c["reached_not_derived_stable"]
                        if k in by_key and fm.scan_family(model, by_key[k])[0] == "stable"]
            c["reached_not_derived_stable"] = [k for k in c["reached_not_derived_stable"] if k not in verified]
            c["derived_stable_separated"] = c["derived_stable_separated"] + [
                k for k in verified if any(0 < abs(f_nu) < 1 - 1e-9 and r for f_nu, r in
                                           zip(by_key[k].nus, by_key[k].ranks))]
    return cells


def cells_from_results(path, K: int, eta_x: float = 1.0, eta_y: float = 0.1, quick: bool = False, keep=None) -> dict:
    """Cells (with the derived families attached) from a phase results file, finished points only."""
    from .numerics.sweeps import read_results

    recs = [r for r in read_results(path).values() if r["params"]["K"] == K and (keep is None or keep(r["params"]))]
    if not recs:
        raise InvalidParameterError(f"no K = {K} results in {str(path)!r}")
    return attach_derived(summarise(recs), K, eta_x, eta_y, quick=quick)


def write_summary(cells: dict, path) -> Path:
    """The per-cell summary as JSON (atomic)."""
    from .outputs.io import atomic_write_text

    rows = [{"eps": k[0], "d": k[1], "eta_W": k[2], **v} for k, v in sorted(cells.items())]
    return atomic_write_text(Path(path), json.dumps(rows, indent=1, sort_keys=True) + "\n")


def write_outputs(K: int, eps, d, seeds: int, out, *, eta_W=(1.0,), eta_x: float = 1.0, eta_y: float = 0.1,
                  workers: int = 1, t_max: float = 2e4, figures: bool = True, progress=None) -> list[Path]:
    r"""Run (or resume) the sweep, then write ``phase_K{K}_summary.json`` (per cell: basins, ρ, the
    derived stable families) and, with ``figures``, ``phase_K{K}_eps_d.png`` (η_W fixed) and/or
    ``phase_K{K}_eps_etaW.png`` (d fixed)."""
    K, eps, d, seeds, eta_W = check_phase_args(K, eps, d, seeds, eta_W)
    out = Path(out)
    recs = run_phase(K, eps, d, seeds, out, eta_W=eta_W, eta_x=eta_x, eta_y=eta_y, workers=workers,
                     backend="serial" if workers == 1 else "processes", t_max=t_max, progress=progress)
    cells = attach_derived(summarise(recs), K, eta_x, eta_y)
    paths = [write_summary(cells, out / f"phase_K{K}_summary.json")]
    if figures:
        from .outputs.phase_figures import phase_figure

        if len(eta_W) == 1:
            paths.append(phase_figure(cells, K, "d", out / f"phase_K{K}_eps_d.png"))
        if len(d) == 1 and len(eta_W) > 1:
            paths.append(phase_figure(cells, K, "eta_W", out / f"phase_K{K}_eps_etaW.png"))
    return paths


#: The default (committed-figure) grids of the issue: ≥ 20 ε × ≥ 10 rows × 8 seeds per K. Slow:
#: see :func:`regenerate` (a few hours per K on 2 cores; README states the cost).
DEFAULT_EPS = tuple(round(0.02 * k, 2) for k in range(1, 21))
DEFAULT_ETA_W = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)


def default_grid(K: int) -> dict:
    """ε × d (d = 1 … max(10, 2K + 4)) and ε × η_W (d = K + 1) with 8 seeds per cell."""
    return {"eps": DEFAULT_EPS, "d": tuple(range(1, max(10, 2 * K + 4) + 1)), "eta_W": DEFAULT_ETA_W,
            "d_etaW": K + 1, "seeds": 8}


def regenerate(out, Ks=(2, 3, 4), *, workers: int = 2, grids: dict | None = None, progress=None) -> list[Path]:
    r"""The slow target: run (or resume) the default grids of every K and write their figures into
    ``out/K{K}/`` and ``out/K{K}_etaW/``; ``grids`` {K: dict like :func:`default_grid`} overrides."""
    paths = []
    for K in Ks:
        g = (grids or {}).get(K, default_grid(K))
        paths += write_outputs(K, g["eps"], g["d"], g["seeds"], Path(out) / f"K{K}", workers=workers,
                               progress=progress)
        paths += write_outputs(K, g["eps"], [g["d_etaW"]], g["seeds"], Path(out) / f"K{K}_etaW",
                               eta_W=g["eta_W"], workers=workers, progress=progress)
    return paths
