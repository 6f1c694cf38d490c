r"""Phase-diagram sweeps for the head model: closed forms evaluated on whole grids at once
(lambdified derived expressions on NumPy arrays, no loop over grid points), and batches of
simulations run in parallel worker processes.

Collapse measure: ρ = Δ_min(T)/Δ_min(0), averaged over seeds.
"""
from __future__ import annotations

from functools import lru_cache

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import sympy as sp

from ...validation import check_int, check_real
from ..couplings import balanced_couplings
from . import HeadModel
from . import meanfield as mfm
from .sector import nu_sep_grid, nu_sep_kernel  # noqa: F401  (grid forms of the sector)


@lru_cache(maxsize=None)
def _final_separation_kernels():
    """(w*, Y_∞²) of the K = 2 reduction, lambdified once from the derived self-consistency."""
    sol = mfm.self_consistency(True)
    args = (mfm.n_, mfm.m_, mfm.omega_, mfm.eta_x, mfm.eta_y, mfm.eta_W, sol["I0"])
    return (sp.lambdify(args, sp.sqrt(sol["w2"]), "numpy"), sp.lambdify(args, sol["Yinf2"], "numpy"))


def final_separation_grid(n, m, eta_x, eta_y, eta_W, I0, omega=2.0) -> tuple[np.ndarray, np.ndarray]:
    r"""(w*, |Y_∞|) of the K = 2 mean-field reduction on broadcast arrays, from the derived
    self-consistency w*² and the invariant-selected Y_∞²(I₀); Y_∞ = 0 where Y_∞² ≤ 0 (collapse)."""
    fw, fy2 = _final_separation_kernels()
    vals = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (n, m, omega, eta_x, eta_y, eta_W, I0)))
    Y2 = np.asarray(fy2(*vals), dtype=float)
    # Y_∞² ≤ 0: the invariant admits no separated end state; the labels collapse (Y_∞ = 0)
    Y = np.sqrt(np.clip(Y2, 0.0, None))
    return np.asarray(fw(*vals) + 0 * vals[0], dtype=float), Y


def _run_one(job: tuple) -> float:
    K, n, mu, d, seed, t_end, eta, stop_gradient = job
    m = HeadModel(balanced_couplings(K, n, mu), d=d, eta_x=eta[0], eta_y=eta[1], eta_W=eta[2],
                  stop_gradient=stop_gradient)
    tr = m.simulate(t_end=t_end, seed=seed, n_points=8, rtol=1e-6, atol=1e-9)
    return float(tr.d_min[-1] / tr.d_min[0])


def collapse_grid(K: int, n: int, mus, ds, seeds=(0, 1), *, t_end: float = 500.0,
                  eta=(1.0, 0.1, 1.0), stop_gradient=True, workers: int | None = None) -> np.ndarray:
    r"""ρ[i_μ, i_d] = mean over seeds of Δ_min(T)/Δ_min(0) for the balanced ensemble B(K, n, μ)."""
    K = check_int("K", K, 2)
    n = check_int("n", n, 1)
    t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
    mus = [check_int("mu", v, 0) for v in mus]
    ds = [check_int("d", v, 1) for v in ds]
    jobs = [(K, n, mu, d, s, t_end, tuple(eta), stop_gradient) for mu in mus for d in ds for s in seeds]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers > 1:
        # group by d so each worker compiles each head dimension once
        with ProcessPoolExecutor(max_workers=workers) as ex:
            out = list(ex.map(_run_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        out = [_run_one(j) for j in jobs]
    return np.array(out).reshape(len(mus), len(ds), len(seeds)).mean(axis=2)
