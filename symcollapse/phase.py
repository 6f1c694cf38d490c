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


@lru_cache(maxsize=16)
def _model(K, eps, d, eta_x, eta_y, eta_W, n_max):
    """The HeadModel of a cell, built once per (K, ε, d, η, n_max) and reused by every seed."""
    from .models.couplings import balanced_couplings
    from .models.head import HeadModel

    n, mu, e = balanced_for_eps(K, eps, n_max)
    return HeadModel(balanced_couplings(K, n, mu), d=d, eta_x=eta_x, eta_y=eta_y, eta_W=eta_W), n, mu, e


#: integrator of the seeded end-state runs: LSODA with the engine's dense Jacobian (the systems of a
#: phase grid are small, N + K ≲ 60, d ≤ 12: a dense LU beats the sparse one with dense W columns)
END_STATE_METHOD = "LSODA"
END_STATE_RTOL, END_STATE_ATOL = 1e-8, 1e-11
#: above this many unknowns (K = 10, d ≥ 16): BDF-nodes (samples eliminated in closed form, only labels and
#: W factorised; K = 10, N = 55, d = 16: 7.1 s CPU to the same end state as BDF-Schur's 9.3 s)
LARGE_STATE = 1000
POLISH_RESIDUAL = 1e-12  # fixed-point residual of the continued run when the first end state is too rough


def end_state_method(size: int) -> str:
    """LSODA with the dense Jacobian for small systems, BDF-nodes above :data:`LARGE_STATE` unknowns."""
    return END_STATE_METHOD if size <= LARGE_STATE else "BDF-nodes"


def phase_point(K: int = 3, eps: float = 0.1, d: int = 4, seed: int = 0, eta_W: float = 1.0,
                eta_x: float = 1.0, eta_y: float = 0.1, n_max: int = 4, t_max: float = 2e4,
                tol: float = 1e-9) -> dict:
    r"""One seeded simulation of B(K, n, μ) (ε' ≈ eps) with head dimension d to its fixed point
    (integration stops at the first step with ‖θ̇‖_∞ ≤ tol, or at t_max): its family (ranks r_ℓ
    per ν-level), its derived stability, residual ‖θ̇‖_∞/max(1, ‖θ‖_∞), separation ρ, invariant drift."""
    from .numerics import families as fm
    from .numerics.basins import d_min, residual  # Δ_min as the basins module measures it

    model, n, mu, e = _model(check_int("K", K, 2), float(eps), check_int("d", d, 1), float(eta_x),
                             float(eta_y), float(eta_W), check_int("n_max", n_max, 1))
    Z0, W0 = model.initial_state(check_int("seed", seed, 0))
    I0 = model.invariant(Z0, W0)
    method = end_state_method(model.system.size)
    tr = model.simulate(t_end=float(t_max), Z0=Z0, W0=W0, n_points=3, method=method,
                        rtol=END_STATE_RTOL, atol=END_STATE_ATOL, stop_residual=tol)
    Z, W, t_end, polished = tr.Z, tr.W, float(tr.extra.get("t_reached", t_max)), 0.0
    res = residual(model, Z, W)
    st = None
    if res <= 1e-7:
        try:
            st = fm.classify_state(model, Z, W, residual_tol=1e-7)
        except InvalidParameterError:
            # decaying remnants (~tol) can leave a noise direction in the numerical symmetry tangent:
            # continue to a tighter fixed point and classify there
            tr = model.simulate(t_end=max(float(t_max) - t_end, 1.0), Z0=Z, W0=W, n_points=3,
                                method=method, rtol=1e-10, atol=1e-14, stop_residual=POLISH_RESIDUAL)
            Z, W, t_end, polished = tr.Z, tr.W, t_end + float(tr.extra.get("t_reached", 0.0)), 1.0
            res = residual(model, Z, W)
            try:
                st = fm.classify_state(model, Z, W, residual_tol=1e-7)
            except InvalidParameterError:  # recorded as unclassified (kind −99), counted in the summary
                st = None
    fam, _ = fm.state_family(model.graph, Z)
    out = {"eps_real": e, "n": n, "mu": mu, "residual": res, "t_end": t_end, "polished": polished,
           "separation": d_min(Z[model.N:]) / d_min(Z0[model.N:]),
           "invariant_drift": abs(model.invariant(Z, W) - I0) / max(1.0, abs(I0)), "rank": fam.rank}
    if st is None:
        out.update(kind=-99.0, n_unstable=-1.0)
    else:
        out.update(kind=KIND_CODE.get(st.kind, -float(st.n_unstable)), n_unstable=st.n_unstable,
                   n_symmetry=st.n_symmetry, max_real=st.max_real)
    sep = 0
    for i, (nu, r) in enumerate(zip(fam.nus, fam.ranks)):
        out[f"nu_{i}"] = nu
        out[f"r_{i}"] = r
        if 0 < abs(nu) < 1 - 1e-9:
            sep += r
    out["sep_rank"] = sep
    out.update(member_fields(model.graph, Z, W, fam))
    return {k: float(v) for k, v in out.items()}


def member_fields(P, Z, W, fam) -> dict:
    r"""The end state's member data (docs/model.md §3.1): ``len_k`` = the amplitude lengths of the kept
    modes (the top r_ℓ singular values of C_ℓ = Φ_ℓᵀDZ, levels in ascending ν) and ``spare_j`` = the
    spare head eigenvalues, spec(Q⊥ᵀ W Q⊥) on the complement R⊥ of the kept directions (real parts,
    ascending; ``spare_imag`` = the largest |imaginary part|)."""
    from .numerics import families as fm

    out, rows = {}, []
    k = 0
    for c, r in zip(fm.level_amplitudes(P, Z), fam.ranks):
        if r:
            _, sv, Vt = np.linalg.svd(c, full_matrices=False)
            for v in sv[:r]:
                out[f"len_{k}"] = float(v)
                k += 1
            rows.append(Vt[:r])
    d = np.asarray(W).shape[0]
    if rows:
        _, _, Vt = np.linalg.svd(np.vstack(rows), full_matrices=True)
        perp = Vt[fam.rank:]
    else:
        perp = np.eye(d)
    ev = np.linalg.eigvals(perp @ np.asarray(W, float) @ perp.T) if len(perp) else np.zeros(0)
    for j, v in enumerate(np.sort(ev.real)):
        out[f"spare_{j}"] = float(v)
    out["spare_imag"] = float(np.max(np.abs(ev.imag))) if len(ev) else 0.0
    return out


def member_of(r: dict) -> tuple | None:
    """(lengths, spares) of a phase_point result with member data (:func:`member_fields`), rounded to
    1e-9; None without it (records of an older driver) or with complex spare head eigenvalues."""
    rank = int(r.get("rank", -1))
    if rank < 0 or (rank and "len_0" not in r) or "spare_imag" not in r or not r["spare_imag"] <= 1e-9:
        return None
    d = rank + sum(1 for k in r if k.startswith("spare_") and k != "spare_imag")
    return (tuple(round(r[f"len_{k}"], 9) for k in range(rank)),
            tuple(round(r[f"spare_{j}"], 9) for j in range(d - rank)))


def _separated(f) -> bool:
    """The family keeps a level 0 < |ν| < 1 (the classes stay apart)."""
    return any(0 < abs(nu) < 1 - 1e-9 and r for nu, r in zip(f.nus, f.ranks))


def _quick_members(f):
    return [dict(lengths=np.ones(f.rank))]


#: the collapsed families searched keep at most this many ν = 0 modes (the scan over all of them costs
#: 4(d + 1) classifications per cell)
COLLAPSED_MAX_NU0 = 1


def derived_point(K: int = 3, eps: float = 0.1, d: int = 4, eta_W: float = 1.0, eta_x: float = 1.0,
                  eta_y: float = 0.1, n_max: int = 4) -> dict:
    r"""The derived layer of one (ε, d, η_W) cell (docs/model.md §3), searched until answered:
    ``stable_separated`` = 1 if some family keeping a level 0 < |ν| < 1 has a stable member
    (families scanned by fewest kept ν = 0 modes, then decreasing rank, with one member and spare
    head eigenvalues ±0.5; if none is found every separated family is rescanned with all members
    of :func:`~symcollapse.numerics.families.scan_family`); ``stable_collapsed`` = 1 if a family
    keeping only ν ∈ {0, ±1}, at most :data:`COLLAPSED_MAX_NU0` of them ν = 0, has a stable member with
    head spectrum in [−1, 1] (one member, ±0.5, by increasing rank). Also the number of families, of
    classifications, and the rank found."""
    from .numerics import families as fm

    model, n, mu, e = _model(check_int("K", K, 2), float(eps), check_int("d", d, 1), float(eta_x),
                             float(eta_y), float(eta_W), check_int("n_max", n_max, 1))
    fams = fm.enumerate_families(model.graph, d)
    sep = sorted((f for f in fams if _separated(f)), key=lambda f: (f.keeps(0.0), -f.rank, f.ranks))
    col = [f for f in fams if not _separated(f) and f.keeps(0.0) <= COLLAPSED_MAX_NU0]
    n_cls, found_sep, found_col = 0, 0, 0
    for full in (False, True):
        for f in sep:
            verdict, _, labels = fm.scan_family(model, f, spares=(-0.5, 0.5) if not full else fm.MEMBER_SPARES,
                                                members=None if full else _quick_members)
            n_cls += len(labels)
            if verdict == "stable":
                found_sep = f.rank
                break
        if found_sep:
            break
    for f in col:
        _, verdict_b, labels = fm.scan_family(model, f, spares=(-0.5, 0.5), members=_quick_members)
        n_cls += len(labels)
        if verdict_b == "stable":
            found_col = f.rank if f.rank else 0.5  # Z = 0 has rank 0: 0.5 marks it
            break
    return {"eps_real": e, "n": n, "mu": mu, "stable_separated": float(found_sep > 0),
            "stable_collapsed": float(found_col > 0), "separated_rank": float(found_sep),
            "collapsed_rank": float(found_col), "families": float(len(fams)), "classified": float(n_cls)}


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
              workers: int | None = None, backend: str = "processes", t_max: float = 2e4, n_max: int = 4,
              progress=None) -> list[dict]:
    r"""The seeded sweep of :func:`phase_point` over ε × d × η_W × seeds, streamed to
    ``out/phase_K{K}.jsonl`` (finished points are skipped on rerun). Seeds vary fastest, so a
    worker reuses the cell's model (:func:`_model`) for all its seeds."""
    from .numerics.sweeps import run_sweep

    K, eps, d, seeds, eta_W = check_phase_args(K, eps, d, seeds, eta_W)
    n_max = check_int("n_max", n_max, 1)
    out = Path(out)
    params = {"K": [K], "eps": eps, "d": d, "eta_W": eta_W, "seed": list(range(seeds)),
              "eta_x": [float(eta_x)], "eta_y": [float(eta_y)], "t_max": [float(t_max)], "n_max": [n_max]}
    return run_sweep(phase_point, params, out / f"phase_K{K}.jsonl", backend=backend, workers=workers,
                     progress=progress)


def run_derived(K: int, eps, d, out, *, eta_W=(1.0,), eta_x: float = 1.0, eta_y: float = 0.1, n_max: int = 4,
                workers: int | None = None, backend: str = "processes", progress=None) -> list[dict]:
    r"""The derived layer (:func:`derived_point`) of every cell, streamed to ``out/derived_K{K}.jsonl``
    (resumable like the simulations)."""
    from .numerics.sweeps import run_sweep

    K, eps, d, _, eta_W = check_phase_args(K, eps, d, 1, eta_W)
    params = {"K": [K], "eps": eps, "d": d, "eta_W": eta_W, "eta_x": [float(eta_x)], "eta_y": [float(eta_y)],
              "n_max": [check_int("n_max", n_max, 1)]}
    return run_sweep(derived_point, params, Path(out) / f"derived_K{K}.jsonl", backend=backend, workers=workers,
                     progress=progress)


def family_key(r: dict) -> str:
    """The family name (:attr:`~symcollapse.numerics.families.Family.key`) of a phase_point result."""
    return " ".join(f"{r[f'nu_{i}']:+.4f}x{int(r[f'r_{i}'])}" for i in range(64)
                    if f"r_{i}" in r and r[f"r_{i}"] > 0) or "Z=0"


def summarise(records: list[dict]) -> dict:
    r"""Per cell (ε, d, η_W): basin fraction of every family reached, fraction separated (the end
    state's family keeps a level 0 < |ν| < 1), mean ± std of ρ, worst residual, and how many end
    states were unstable, degenerate (no unstable eigenvalue, marginal ones beyond the symmetries) or
    unclassified; the reached members (:func:`member_of`) per family."""
    cells: dict = {}
    for rec in records:
        p, r = rec["params"], rec["result"]
        key = (p["eps"], p["d"], p["eta_W"])
        c = cells.setdefault(key, {"n": 0, "families": {}, "rho": [], "sep": [], "residual": 0.0, "unstable": 0,
                                   "unclassified": 0, "eps_real": r["eps_real"], "N": int(r["n"] * p["K"] +
                                   r["mu"] * p["K"] * (p["K"] - 1) // 2), "n_max": p.get("n_max", 4)})
        c["n"] += 1
        fam = family_key(r)
        c["families"][fam] = c["families"].get(fam, 0) + 1
        mem = member_of(r)
        if mem is not None:
            ms = c.setdefault("members", {}).setdefault(fam, [])
            if mem not in ms:
                ms.append(mem)
        c["rho"].append(r["separation"])
        c["sep"].append(r["sep_rank"] > 0 if "sep_rank" in r else r["separation"] > 1e-6)
        c["residual"] = max(c["residual"], r["residual"])
        c["unstable"] += int(r["kind"] < 0 and r["kind"] != -99)
        c["unclassified"] += int(r["kind"] == -99)
        c["degenerate"] = c.get("degenerate", 0) + int(r["kind"] == 0.0)  # no unstable, but marginal modes
    for c in cells.values():
        rho = np.array(c.pop("rho"))
        c["separated"] = float(np.mean(c.pop("sep")))
        c["rho_mean"], c["rho_std"] = float(rho.mean()), float(rho.std())
        c["basin"] = {k: v / c["n"] for k, v in c["families"].items()}
    return cells


@lru_cache(maxsize=4096)
def _reached_family_stable(K, eps, d, eta_x, eta_y, eta_W, n_max, key) -> bool:
    """A family reached by simulation has a derived-stable scanned member (full member scan)."""
    from .numerics import families as fm

    model, *_ = _model(K, eps, d, eta_x, eta_y, eta_W, n_max)
    by_key = {f.key: f for f in fm.enumerate_families(model.graph, d)}
    return key in by_key and fm.scan_family(model, by_key[key])[0] == "stable"


def member_stability(model, fam, lengths, spares, balanced: tuple | None = None) -> str:
    r"""Derived stability of the family's member with amplitude lengths ``lengths`` (kept modes in level
    order, orthogonal amplitude vectors) and spare head eigenvalues ``spares`` (docs/model.md §3.1):
    the engine Jacobian with the symmetry modes removed
    (:func:`~symcollapse.numerics.families.classify_family`) up to :data:`LARGE_STATE` unknowns; above
    it, on a balanced graph ``balanced`` = (K, n, μ), the derived sector blocks at the aligned member
    (:func:`~symcollapse.models.head.sector_stability.predict`, no Jacobian). Returns the label."""
    from .numerics import families as fm

    if model.system.size <= LARGE_STATE or balanced is None or len(fam.ranks) != 5:
        return fm.classify_family(model, fam, lengths=np.asarray(lengths, float),
                                  spare=np.asarray(spares, float)).label
    from .models.head import sector_stability as ss

    K, n, mu = balanced
    mem = ss.aligned_member(K, n, mu, model.d, fam.ranks, lengths=np.asarray(lengths, float),
                            spares=np.asarray(spares, float))
    return ss.predict(mem, model.eta_x, model.eta_y, model.eta_W).label


#: verdicts of a reached family (:func:`reached_family_verdict`)
REACHED_SCAN, REACHED_AMPLITUDES, REACHED_NONE = "scan", "amplitudes", "none"


@lru_cache(maxsize=4096)
def reached_family_verdict(K, eps, d, eta_x, eta_y, eta_W, n_max, key, members=()) -> str:
    r"""How a family reached by simulation is derived stable (docs/model.md §3.1): ``'scan'`` — a
    member of the family scan (:func:`~symcollapse.numerics.families.scan_family`: equal and seeded
    amplitude lengths, spare head eigenvalues ±0.5, ±1.5) is stable; ``'amplitudes'`` — none of those,
    but the member at the amplitude lengths and spare head eigenvalues of one of its end states
    (``members``: (lengths, spares) pairs, :func:`member_of`) is (stability of a family member is
    amplitude-limited); ``'none'`` — not an enumerated family, or no stable member found: a FAIL.
    Above :data:`LARGE_STATE` unknowns the reached members are tried first and the scan (a dense
    Jacobian per member) only when they give no answer."""
    from .numerics import families as fm

    model, n, mu, _ = _model(K, eps, d, eta_x, eta_y, eta_W, n_max)
    by_key = {f.key: f for f in fm.enumerate_families(model.graph, d)}
    if key not in by_key:
        return REACHED_NONE
    fam = by_key[key]
    small = model.system.size <= LARGE_STATE
    if small and _reached_family_stable(K, eps, d, eta_x, eta_y, eta_W, n_max, key):
        return REACHED_SCAN
    for lengths, spares in members:
        if member_stability(model, fam, lengths, spares, (K, n, mu)) == "stable":
            return REACHED_AMPLITUDES
    if not small and _reached_family_stable(K, eps, d, eta_x, eta_y, eta_W, n_max, key):
        return REACHED_SCAN
    return REACHED_NONE


def attach_derived(cells: dict, K: int, eta_x: float = 1.0, eta_y: float = 0.1, quick: bool = False,
                   derived: list[dict] | None = None, search: bool = True) -> dict:
    """Add each cell's derived layer (:func:`derived_point`: from ``derived`` records of
    :func:`run_derived`, else computed here) and the verdict of every reached family
    (:func:`reached_family_verdict`): ``reached_not_derived_stable`` (no stable member found: a FAIL)
    and ``reached_stable_at_amplitudes`` (no stable scanned member, stable at its reached amplitudes;
    such a separated family makes ``derived_separated`` True). ``search=False`` (large systems, partial
    grids): cells without a ``derived`` record are not searched — only their reached families are
    classified: ``derived_separated`` is True where a reached separated family is derived-stable and
    None (not searched) elsewhere, ``derived_collapsed`` None.
    ``quick`` is accepted for compatibility."""
    del quick
    by_cell = {(r["params"]["eps"], r["params"]["d"], r["params"]["eta_W"]): r["result"] for r in derived or ()}
    for (e, d, ew), c in cells.items():
        n_max = int(c.get("n_max", 4))
        members = c.pop("members", {})
        verdict = {f: reached_family_verdict(K, float(e), int(d), float(eta_x), float(eta_y), float(ew), n_max, f,
                                             tuple(members.get(f, ()))) for f in c["families"]}
        c["reached_not_derived_stable"] = [f for f, v in verdict.items() if v == REACHED_NONE]
        c["reached_stable_at_amplitudes"] = [f for f, v in verdict.items() if v == REACHED_AMPLITUDES]
        der = by_cell.get((e, d, ew))
        if der is None and not search:
            ok_sep = [f for f in c["families"] if f not in c["reached_not_derived_stable"] and _key_separated(f)]
            c["derived"] = None
            c["derived_separated"] = True if ok_sep else None
            c["derived_collapsed"] = None
            continue
        if der is None:
            der = derived_point(K, e, d, ew, eta_x, eta_y, n_max)
        c["derived"] = der
        # a separated family stable at its reached amplitudes is a stable separated family of the cell
        # (the search's scanned members can all miss it: stability is amplitude-limited)
        c["derived_separated"] = bool(der["stable_separated"]) or any(
            _key_separated(f) for f in c["reached_stable_at_amplitudes"])
        c["derived_collapsed"] = bool(der["stable_collapsed"])
    return cells


def _key_separated(key: str) -> bool:
    """A family name (ν×r parts) keeps a level 0 < |ν| < 1."""
    return key != "Z=0" and any(0 < abs(float(p.split("x")[0])) < 1 - 1e-4 for p in key.split())


def cells_from_results(path, K: int, eta_x: float = 1.0, eta_y: float = 0.1, quick: bool = False, keep=None,
                       search: bool = True, seeds: int | None = None) -> dict:
    """Cells (with the derived layer attached: from ``derived_K{K}.jsonl`` beside ``path`` where
    present, see :func:`attach_derived` for ``search``) from a phase results file, finished points
    only; with ``seeds``, only the cells in which all ``seeds`` seeds have finished (partial runs)."""
    from .numerics.sweeps import read_results

    path = Path(path)
    recs = [r for r in read_results(path).values() if r["params"]["K"] == K and (keep is None or keep(r["params"]))]
    if not recs:
        raise InvalidParameterError(f"no K = {K} results in {str(path)!r}")
    cells = summarise(recs)
    if seeds is not None:
        cells = {k: c for k, c in cells.items() if c["n"] >= seeds}
    der = list(read_results(path.parent / f"derived_K{K}.jsonl").values())
    return attach_derived(cells, K, eta_x, eta_y, derived=der, search=search)


def grid_checks(cells: dict) -> dict:
    r"""The verification counts of a grid (docs/model.md §3): end states, the worst flow residual, how many
    end states were unstable, degenerate or unclassified, how many reached families (per cell) have no derived-stable
    member, how many are derived stable only at their reached amplitudes
    (:func:`reached_family_verdict`), and how many end states fell in each family (summed over the cells)."""
    fams: dict = {}
    for c in cells.values():
        for k, v in c["families"].items():
            fams[k] = fams.get(k, 0) + v
    return {"cells": len(cells), "end_states": sum(c["n"] for c in cells.values()),
            "max_residual": max(c["residual"] for c in cells.values()),
            "unstable": sum(c["unstable"] for c in cells.values()),
            "unclassified": sum(c["unclassified"] for c in cells.values()),
            "degenerate": sum(c.get("degenerate", 0) for c in cells.values()),
            "reached_not_derived_stable": sum(len(c["reached_not_derived_stable"]) for c in cells.values()),
            "reached_stable_at_amplitudes": sum(len(c.get("reached_stable_at_amplitudes", ()))
                                                for c in cells.values()),
            "families": dict(sorted(fams.items(), key=lambda kv: -kv[1]))}


def write_summary(cells: dict, path) -> Path:
    """The per-cell summary as JSON (atomic): the data the figures are drawn from."""
    from .outputs.io import atomic_write_text

    rows = [{"eps": k[0], "d": k[1], "eta_W": k[2], **v} for k, v in sorted(cells.items())]
    return atomic_write_text(Path(path), json.dumps(rows, indent=1, sort_keys=True) + "\n")


def read_summary(path) -> dict:
    """Cells {(ε, d, η_W): cell} from a summary JSON of :func:`write_summary`."""
    rows = json.loads(Path(path).read_text())
    return {(r["eps"], r["d"], r["eta_W"]): {k: v for k, v in r.items() if k not in ("eps", "d", "eta_W")}
            for r in rows}


def write_outputs(K: int, eps, d, seeds: int, out, *, eta_W=(1.0,), eta_x: float = 1.0, eta_y: float = 0.1,
                  workers: int = 1, t_max: float = 2e4, figures: bool = True, n_max: int = 4,
                  search: bool = True, progress=None) -> list[Path]:
    r"""Run (or resume) the sweep and the derived layer, then write ``phase_K{K}_summary.json`` (per
    cell: basins, ρ, the derived layer) and, with ``figures``, ``phase_K{K}_eps_d.png`` (η_W fixed)
    and/or ``phase_K{K}_eps_etaW.png`` (d fixed). ``search=False``: no derived-layer search, only the
    reached families are classified (:func:`attach_derived`)."""
    K, eps, d, seeds, eta_W = check_phase_args(K, eps, d, seeds, eta_W)
    out = Path(out)
    backend = "serial" if workers == 1 else "processes"
    recs = run_phase(K, eps, d, seeds, out, eta_W=eta_W, eta_x=eta_x, eta_y=eta_y, workers=workers,
                     backend=backend, t_max=t_max, n_max=n_max, progress=progress)
    der = run_derived(K, eps, d, out, eta_W=eta_W, eta_x=eta_x, eta_y=eta_y, n_max=n_max, workers=workers,
                      backend=backend, progress=progress) if search else []
    cells = attach_derived(summarise(recs), K, eta_x, eta_y, derived=der, search=search)
    paths = [write_summary(cells, out / f"phase_K{K}_summary.json")]
    if figures:
        from .outputs.phase_figures import phase_figure

        if len(eta_W) == 1:
            paths.append(phase_figure(cells, K, "d", out / f"phase_K{K}_eps_d.png"))
        if len(d) == 1 and len(eta_W) > 1:
            paths.append(phase_figure(cells, K, "eta_W", out / f"phase_K{K}_eps_etaW.png"))
    return paths


# --- the default grids -----------------------------------------------------------------------------
#: The default (committed-figure) grids: 20 realised ε × d = 1 … max(10, 2K + 4) × 8 seeds per K, and
#: (ε, η_W/η_x) for K = 2 at d = 3. Largest balanced ensemble per K: n ≤ GRID_N_MAX[K] samples per class.
GRID_N_SIZE = {2: 40, 3: 45, 4: 50}  # largest N = Kn + m of a default-grid ensemble
GRID_EPS_RANGE = (0.05, 0.5)
GRID_EPS_HI = {4: 0.6}  # K = 4 with N <= 50 has only 17 balanced ε <= 0.5
DEFAULT_ETA_W = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
DEFAULT_EPS = tuple(round(0.02 * k, 2) for k in range(1, 21))  # kept for compatibility (targets only)


def realisable_eps(K: int, count: int = 20, lo: float = GRID_EPS_RANGE[0], hi: float = GRID_EPS_RANGE[1],
                   N_max: int | None = None) -> tuple:
    r"""``count`` distinct frustration fractions ε = m/N of balanced ensembles B(K, n, μ) with
    N = Kn + m ≤ N_max (m = μK(K−1)/2), spread over [max(lo, smallest), hi]: for each of ``count``
    evenly spaced targets the nearest ε not taken yet. Each is realised exactly by
    :func:`balanced_for_eps` with n_max = N_max // K."""
    K = check_int("K", K, 2)
    count = check_int("count", count, 1)
    N_max = check_int("N_max", GRID_N_SIZE.get(K, 10 * K) if N_max is None else N_max, K + 1)
    pairs = K * (K - 1) // 2
    vals = sorted({round(mu * pairs / (K * n + mu * pairs), 12) for n in range(1, N_max // K + 1)
                   for mu in range(1, N_max // pairs + 1) if K * n + mu * pairs <= N_max
                   and mu * pairs / (K * n + mu * pairs) <= hi + 1e-12})
    if not vals:
        raise InvalidParameterError(f"no balanced ε <= {hi:g} with N <= {N_max} at K = {K}")
    lo = max(lo, vals[0])
    vals = [v for v in vals if v >= lo - 1e-12]
    if len(vals) < count:
        raise InvalidParameterError(f"only {len(vals)} balanced ε in [{lo:g}, {hi:g}] with N <= {N_max}; "
                                    f"count must be <= {len(vals)}")
    out = []
    for t in np.linspace(lo, hi, count):
        out.append(min((v for v in vals if v not in out), key=lambda v: (abs(v - t), v)))
    return tuple(sorted(out))


#: K = 10 (N = 55, 65, 75: the smallest balanced ensembles, ε = 45μ/(10n + 45μ) ≥ 0.6) up to d = 2K + 4 = 24,
#: 3 seeds; the derived layer classifies the reached families only (one classification at d = 24 takes ~10 s)
K10_GRID = {"eps": (45 / 55, 45 / 65, 45 / 75), "d": (1, 2, 4, 6, 8, 10, 12, 16, 20, 24), "seeds": 3, "n_max": 3,
            "etaW": False, "search": False}


def default_grid(K: int) -> dict:
    """ε × d (20 realised ε, d = 1 … max(10, 2K + 4), 8 seeds) and, for K = 2, ε × η_W/η_x (every
    other ε × 10 rates) at d = K + 1; K = 10: :data:`K10_GRID`."""
    K = check_int("K", K, 2)
    if K == 10:
        return dict(K10_GRID)
    N_max = GRID_N_SIZE.get(K, 10 * K)
    n_max = N_max // K
    eps = realisable_eps(K, 20, hi=GRID_EPS_HI.get(K, GRID_EPS_RANGE[1]), N_max=N_max)
    return {"eps": eps, "d": tuple(range(1, max(10, 2 * K + 4) + 1)), "eta_W": DEFAULT_ETA_W,
            "eps_etaW": eps[::2], "d_etaW": K + 1, "seeds": 8, "n_max": n_max, "etaW": K == 2}


def regenerate(out, Ks=(2, 3, 4, 10), *, workers: int = 1, grids: dict | None = None, figures=None,
               progress=None) -> list[Path]:
    r"""The slow target: run (or resume) the default grids of every K into ``out/K{K}/`` (and
    ``out/K{K}_etaW/``), then, with ``figures`` (a folder), copy the per-cell summaries to
    ``figures/phase_data/`` and draw the paper figures from them (:func:`figures_from_summaries`).
    ``grids`` {K: dict like :func:`default_grid`} overrides."""
    import shutil

    paths, summaries = [], []
    grid_of = {K: (grids or {}).get(K, default_grid(K)) for K in Ks}
    for K, g in grid_of.items():  # the (ε, d) diagrams first, then the (ε, η_W) ones
        paths += write_outputs(K, g["eps"], g["d"], g["seeds"], Path(out) / f"K{K}", workers=workers,
                               n_max=g.get("n_max", 4), search=g.get("search", True), progress=progress)
        summaries.append((Path(out) / f"K{K}" / f"phase_K{K}_summary.json", f"phase_K{K}_eps_d.json"))
    for K, g in grid_of.items():
        if g.get("etaW", True):
            paths += write_outputs(K, g.get("eps_etaW", g["eps"]), [g["d_etaW"]], g["seeds"],
                                   Path(out) / f"K{K}_etaW", eta_W=g["eta_W"], workers=workers,
                                   n_max=g.get("n_max", 4), progress=progress)
            summaries.append((Path(out) / f"K{K}_etaW" / f"phase_K{K}_summary.json", f"phase_K{K}_eps_etaW.json"))
    if figures is not None:
        from .outputs.io import ensure_writable_dir

        data = ensure_writable_dir(Path(figures) / "phase_data")
        for src, name in summaries:
            shutil.copyfile(src, data / name)
        paths += figures_from_summaries(figures)
    return paths


def figures_from_summaries(folder) -> list[Path]:
    r"""Draw ``phase_eps_d.png`` (one panel per K) and ``phase_eps_etaW.png`` from the summaries in
    ``folder/phase_data/`` (written by :func:`regenerate`), and write their :func:`grid_checks` to
    ``folder/phase_data/checks.json``."""
    from .outputs.phase_figures import phase_figure, phase_panels

    folder = Path(folder)
    data = folder / "phase_data"
    sets = {int(p.name.split("_")[1][1:]): read_summary(p) for p in sorted(data.glob("phase_K*_eps_d.json"))}
    if not sets:
        raise InvalidParameterError(f"no phase_K*_eps_d.json summaries in {str(data)!r}")
    paths = [phase_panels(sets, "d", folder / "phase_eps_d.png")]
    checks = {p.stem: grid_checks(read_summary(p)) for p in sorted(data.glob("phase_K*_eps_*.json"))}
    for p in sorted(data.glob("phase_K*_eps_etaW.json")):
        K = int(p.name.split("_")[1][1:])
        paths.append(phase_figure(read_summary(p), K, "eta_W", folder / "phase_eps_etaW.png"))
    from .outputs.io import atomic_write_text

    paths.append(atomic_write_text(data / "checks.json", json.dumps(checks, indent=1) + "\n"))
    return paths
