r"""Verification rows of the head model for issue #13: the derived per-sector stability conditions
against the engine Jacobian's spectrum (docs/model.md §3.1), and the end state predicted by the
conserved quantities against integrated end states (docs/model.md §3.2)."""
from __future__ import annotations

import itertools

import numpy as np

from ...numerics import families as fm
from ...numerics.basins import run_to_fixed_point
from ...numerics.metrics import d_min
from ...verification import Check
from ..couplings import balanced_couplings, frustration_fraction
from . import HeadModel
from . import end_state as ep
from . import sector_stability as ss

MODEL_NAME = "head"
RATES = (1.0, 0.1)  # η_x, η_y
#: (K, n, μ, d) × η_W/η_x of the condition rows; every family without a ν = 0 mode is checked
CONDITION_POINTS = ((2, 5, 2, 2), (2, 2, 1, 3), (3, 2, 1, 3), (3, 3, 1, 4), (4, 2, 1, 4))
ETA_W = (0.1, 1.0)
SPARES = (0.5,)


def _families(K, d):
    caps = (1, K - 1, 0, K - 1, 1)
    return [r for r in itertools.product(*[range(c + 1) for c in caps]) if sum(r) <= d]


def condition_rows() -> list[Check]:
    r"""For every family (r_0 = 0) of each point, an aligned member (amplitudes 0.7…1.6, spare head
    eigenvalue 0.5): derived block spectrum = spec J, derived verdict = numerical verdict,
    Hurwitz conditions = verdict; plus the families whose verdict flips between the two η_W."""
    rows = []
    for K, n, mu, d in CONDITION_POINTS:
        eps = frustration_fraction(K, n, mu)
        R = np.linalg.qr(np.random.default_rng(K).normal(size=(d, d)))[0]
        verdicts = {}
        for eW in ETA_W:
            model = HeadModel(balanced_couplings(K, n, mu), d=d, eta_x=RATES[0], eta_y=RATES[1], eta_W=eW)
            worst, bad, count, kinds = 0.0, 0, 0, {}
            for ranks in _families(K, d):
                for s in (SPARES if sum(ranks) < d else (None,)):
                    spares = None if s is None else [s] * (d - sum(ranks))
                    mem = ss.aligned_member(K, n, mu, d, ranks, lengths=np.linspace(0.7, 1.6, sum(ranks)),
                                            spares=spares)
                    out = ss.compare_with_jacobian(model, mem, rotation=R)
                    worst = max(worst, out["match"])
                    p, q = out["pred"], out["numeric"]
                    agree = p.label == q.label and p.n_symmetry == q.n_symmetry and \
                        ss.hurwitz_stable(p) == (p.kind == "stable")
                    bad += not agree
                    count += 1
                    kinds[p.kind] = kinds.get(p.kind, 0) + 1
                    verdicts[(ranks, s, eW)] = p.kind
            summary = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
            where = f"K={K} ε={eps:.2f} d={d} η_W/η_x={eW:g}"
            rows.append(Check(MODEL_NAME, f"{where}: derived sector blocks = spec J ({count} members, no ν=0 mode)",
                              f"{worst:.1e}", "eig of engine J", worst, 1e-9))
            rows.append(Check(MODEL_NAME, f"{where}: derived verdict = numerical ({summary})",
                              f"{count - bad}/{count} agree", "classify_state", 0.0 if bad == 0 else float("inf"), 0.0))
        flips = sorted({(r, s) for (r, s, e) in verdicts if verdicts[(r, s, ETA_W[0])] != verdicts[(r, s, ETA_W[1])]})
        rows.append(Check(MODEL_NAME, f"K={K} ε={eps:.2f} d={d}: verdicts that flip with η_W (derived = numerical)",
                          f"{len(flips)} members", "both η_W rows", 0.0 if flips else float("inf"), 0.0))
    return rows


#: decoupled-sector cases of the prediction rows: (K, n, μ, seeds)
PREDICTION_CASES = ((2, 5, 2, (0, 1, 2)), (3, 2, 1, (1, 2)), (4, 2, 1, (1,)))


def prediction_rows() -> list[Check]:
    r"""Decoupled sector states (one separation pattern per head direction plus the uniform sector,
    W(0) = I): Δ_min(∞) predicted from Q(0) and the levels reached vs the integrated end state
    (residual ≤ 1e-9); d = 1 general states; and the counter-example outside these classes."""
    rows = []
    for K, n, mu, seeds in PREDICTION_CASES:
        sectors = [("sep", p) for p in range(K - 1)] + ["uniform"]
        model = HeadModel(balanced_couplings(K, n, mu), d=len(sectors), eta_x=RATES[0], eta_y=RATES[1], eta_W=1.0)
        err, res_max, stable = 0.0, 0.0, 0
        for seed in seeds:
            Z0, W0 = ep.decoupled_state(K, n, mu, sectors, seed=seed)
            Z, W, _, res = run_to_fixed_point(model, Z0, W0, tol=1e-9)
            res_max = max(res_max, res)
            signs = ep.reached_levels(model, K, n, mu, sectors, Z, W)
            _, dpred = ep.predict_decoupled(model, K, n, mu, sectors, Z0, W0, signs)
            dsim = d_min(Z[model.N:])
            err = max(err, abs(dpred - dsim) / max(dsim, 1.0))
            stable += fm.classify_state(model, Z, W).kind == "stable"
        rows.append(Check(MODEL_NAME, f"K={K} d={K}: decoupled states, {len(seeds)} seeds: Δ_min(∞) = Q(0) prediction",
                          f"{err:.1e} ({stable}/{len(seeds)} ends stable)", f"end states, residual {res_max:.0e}",
                          err if res_max <= 1e-9 else float("inf"), 1e-6))
    model = HeadModel(balanced_couplings(2, 5, 2), d=1, eta_x=RATES[0], eta_y=RATES[1], eta_W=1.0)
    err = 0.0
    for seed in range(3):
        Z0, W0 = model.initial_state(seed)
        Z, W, _, res = run_to_fixed_point(model, Z0, W0, tol=1e-9)
        fam, _ = fm.state_family(model.graph, Z)
        kept = [lv for lv, r in zip(fm.nu_levels(model.graph), fam.ranks) if r]
        if len(kept) != 1 or kept[0].m != 1 or not res <= 1e-9:
            err = float("inf")
            continue
        phi = kept[0].phi[:, 0]
        got = abs(float(phi @ (model.graph.degree * Z[:, 0])))
        err = max(err, abs(ep.single_mode_amplitude(model, Z0, W0, phi, kept[0].nu) - got) / got)
    rows.append(Check(MODEL_NAME, "K=2 d=1: general states, 3 seeds: end amplitude ℓ = I₀ prediction",
                      f"{err:.1e}", "end states", err, 1e-6))
    model = HeadModel(balanced_couplings(2, 5, 2), d=2, eta_x=RATES[0], eta_y=RATES[1], eta_W=1.0)
    Z0, W0 = model.initial_state(0)
    Z0b, W0b = ep.equal_invariant_state(model, Z0, W0, angle=0.3, seed=0)
    dQ = float(np.max(np.abs(ep.matrix_invariant(model, Z0, W0) - ep.matrix_invariant(model, Z0b, W0b))))
    ends = [run_to_fixed_point(model, a, b, tol=1e-9) for a, b in ((Z0, W0), (Z0b, W0b))]
    keys = [fm.state_family(model.graph, Z)[0].key for Z, *_ in ends]
    seps = [d_min(Z[model.N:]) for Z, *_ in ends]
    ok = dQ <= 1e-12 and keys[0] == keys[1] and abs(seps[0] - seps[1]) > 1e-2
    rows.append(Check(MODEL_NAME, "K=2 d=2 general state: same Q, same family, Δ_min differs (no prediction)",
                      f"{seps[0]:.4f} vs {seps[1]:.4f}", f"equal-Q state (|ΔQ| = {dQ:.0e})",
                      0.0 if ok else float("inf"), 0.0))
    return rows
