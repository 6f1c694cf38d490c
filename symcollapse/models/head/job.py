r"""Job: the projection-head model with stop-gradient (docs/model.md §3) — derive, verify, write
LaTeX and figures.

Derivation chain: loss ½(‖Wx − sg(y)‖² + ‖Wy − sg(x)‖²) → engine forces (with and without sg)
→ invariant I and dI/dt on the path graph → single-mode fixed-point condition → ν_sep from the
D⁻¹A separation sector → K = 2 mean-field reduction by ansatz substitution (closure proved) →
self-consistency, invariant-selected end state → Jacobians and the d-vs-2K stability boundary.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import sympy as sp

from ... import closed_forms as cf
from ..couplings import balanced_couplings, frustration_fraction
from . import HeadModel, graph_modes, head_loss, nu_sep, self_consistent_head
from . import meanfield as mfm
from ...symbolic.assemble import assemble_symbolic
from ...symbolic.flow import derive_flow
from ...symbolic.symbols import sqnorm
from ...symbolic.losses import head_matrix_loss
from ...symbolic.matrix_flow import derive_matrix_flow
from ...verification import Check, close, identity
from ... import phase as ph
from ...numerics import families as fm
from ...numerics.basins import run_to_fixed_point
from ...numerics.graph import CouplingGraph
from ...numerics.integrate import integrate
from ...outputs.figures import label_axes, log_time_axis, new_figure, save_figure
from ...outputs.io import atomic_write_text, ensure_writable_dir
from ...outputs.latex import document, equation, matrix_flow_latex, section
from ...outputs.phase_figures import phase_figure
from ...phase import SPARES
from ..embedding import EmbeddingModel
from .phase import final_separation_grid
from . import stability_rows

MODEL = "head"
ORDER = 20
CAPTIONS = {  # report captions, by figure file stem
    "fig4_head_variants": r"$\Delta_{\min}(t)$ with no head, a head without stop-gradient, a frozen head $W = I$ with "
                          "stop-gradient, and a learned head with stop-gradient: only the learned head with "
                          "stop-gradient keeps the classes apart; values below $10^{-9}$ (round-off) are not drawn.",
    "fig5_phase_eps_d": r"Stability phase diagram of the head model with stop-gradient over the frustration fraction "
                        r"$\varepsilon$ and the head dimension $d$ ($K = 2$, small grid): colour = simulated fraction of "
                        r"seeds ending separated, contours = mean $\rho = \Delta_{\min}(T)/\Delta_{\min}(0)$; derived "
                        "from the engine Jacobian: hatched = no stable separated fixed-point family, circles = a stable "
                        "collapsed family (members with head spectrum in $[-1, 1]$).",
    "fig6_phase_eps_etaW": r"Final class separation $|Y_\infty|/|Y_0|$ of the mean-field end state over $\varepsilon$ and "
                           r"$\eta_W/\eta_x$ (map): this state is a saddle of the full model. Circles: runs started on "
                           "the ansatz (t = 60); squares: the same runs nudged by $10^{-8}$ and continued to their "
                           "(derived-stable) fixed points, which collapse.",
    "fig7_meanfield_vs_full": "The mean-field reduction (lines) against the full simulation (markers): head "
                              r"eigenvalue $w$, sample coordinate $X$ and label coordinate $Y$ over time.",
}

PATH_P = [[1, 0], [0, 1], [1, 1]]  # x1–y1–f–y2–x2
RATES = (1.0, 0.1, 1.0)  # η_x, η_y, η_W of the simulations


# --- derived objects (cached; shared by checks, LaTeX and figures) ---------------------------------
@lru_cache(maxsize=None)
def flow(d: int = 2, stop_gradient=True, learn_head: bool = True):
    return derive_flow(head_loss(d, stop_gradient, learn_head))


@lru_cache(maxsize=None)
def path_system(stop_gradient=True):
    return assemble_symbolic(flow(1, stop_gradient), PATH_P)


def invariant_expr(system):
    f = system
    ex, ey, eW = (flow(1).loss.rate(b) for b in ("x", "y", "W"))
    return sqnorm(f.blocks["x"]) / ex + sqnorm(f.blocks["y"]) / ey - sqnorm(f.blocks["W"]) / eW


def model_md_forces(d: int, with_sg: bool):
    """docs/model.md §3's edge forces (the closed form) in the symbols of head_loss(d, with_sg)."""
    loss = head_loss(d, with_sg)
    return cf.head_edge_forces(loss.x, loss.y, loss.block("W"), ("x", "y") if with_sg else ())


@lru_cache(maxsize=None)
def sim_k2(stop_gradient=True, d: int = 4, n: int = 6, mu: int = 2, t_end: float = 2000.0):
    m = HeadModel(balanced_couplings(2, n, mu), d=d, eta_x=RATES[0], eta_y=RATES[1], eta_W=RATES[2],
                  stop_gradient=stop_gradient)
    return m, m.simulate(t_end=t_end, seed=0, n_points=40)


@lru_cache(maxsize=None)
def meanfield_vs_full(n: int = 5, m: int = 2, omega: int = 2, d: int = 1, t_end: float = 30.0):
    ex, ey, eW = 1.0, 0.5, 1.0
    model = HeadModel(balanced_couplings(2, n, m, omega), d=d, eta_x=ex, eta_y=ey, eta_W=eW)
    rng = np.random.default_rng(7)
    Z0, W0 = mfm.ansatz_state(n, m, 0.3, 1.1, 0.2 * rng.normal(size=n), 0.3 * rng.normal(size=m), 0.8, d)
    t = np.concatenate([[0.0], np.geomspace(1e-2, t_end, 40)])
    tr = model.simulate(t_eval=t, Z0=Z0, W0=W0, keep_states=True, method="BDF", rtol=1e-12, atol=1e-14)
    proj = np.array([mfm.project_ansatz(n, m, *model.unpack(v)) for v in tr.states])
    f = mfm.reduced_rhs_function(mfm.derive_meanfield(True, omega),
                                 {"n": n, "m": m, "omega": omega, "eta_x": ex, "eta_y": ey, "eta_W": eW})
    red = integrate(f, proj[0], t, method="BDF", rtol=1e-12, atol=1e-14).y
    return t, proj, red


# --- checks ------------------------------------------------------------------------------------
def _nonzero(model, claim, expr, compared_with) -> Check:
    ok = sp.simplify(expr) != 0
    return Check(model, claim, "symbolic: ≢ 0", compared_with, 0.0 if ok else float("inf"), 0.0)


def checks() -> list[Check]:
    M = MODEL
    rows = []
    for with_sg in (True, False):
        fl = flow(2, with_sg)
        fx, fy, fW = model_md_forces(2, with_sg)
        tag = "with sg" if with_sg else "without sg"
        rows.append(identity(M, f"derived forces {tag} = docs/model.md §3 (d = 2)",
                             sp.Matrix.vstack(fl.force("x") - fx, fl.force("y") - fy, (fl.force("W") - fW).reshape(4, 1)),
                             "docs/model.md §3"))
    frozen = flow(2, True, False)
    loss = frozen.loss
    I_sub = {s: (1 if s.name.split("_")[1] == s.name.split("_")[2] else 0) for s in loss.block("W")}
    rows.append(identity(M, "sg flow with W frozen at I = model (a) forces",
                         sp.Matrix(frozen.force("x")).xreplace(I_sub) - (sp.Matrix(loss.y) - sp.Matrix(loss.x)),
                         "ẋ = y − x per edge"))
    P = balanced_couplings(3, 4, 2)
    hm = HeadModel(P, d=3, eta_x=1.3, eta_y=0.4, learn_head=False)
    Z, W = hm.initial_state(5)
    g = CouplingGraph.from_couplings(P)
    H = np.concatenate([np.full(hm.N, 1.3), np.full(hm.K, 0.4)])
    rows.append(close(M, "frozen-I head flow = −H L_G Z numerically", hm.flow(Z, W)[0],
                      -H[:, None] * (g.laplacian @ Z), 1e-12, reference_text="−H L_G Z"))
    # invariant
    s1 = path_system(True)
    rows.append(identity(M, "dI/dt ≡ 0 with sg (path graph, d = 1)", s1.time_derivative(invariant_expr(s1)),
                         "assembled symbolic flow"))
    s0 = path_system(False)
    rows.append(_nonzero(M, "dI/dt ≢ 0 without sg (path graph)", s0.time_derivative(invariant_expr(s0)),
                         "assembled symbolic flow"))
    Pk = balanced_couplings(2, 5, 2)
    mi = HeadModel(Pk, d=3, eta_x=1.0, eta_y=0.3, eta_W=0.7)
    tri = mi.simulate(t_end=30.0, seed=1, n_points=10, keep_states=True, method="DOP853", rtol=1e-11, atol=1e-13)
    inv = tri.extra["invariant"]
    rows.append(Check(M, "I conserved along a trajectory (K=2, d=3)", f"max drift {np.max(np.abs(inv - inv[0])):.2e}",
                      "I(0)", float(np.max(np.abs(inv - inv[0])) / abs(inv[0])), 1e-8))
    # ν_sep
    expr, syms = mfm.separation_nu_squared()
    K, n, mu, om = syms["K"], syms["n"], syms["mu"], syms["omega"]
    rows.append(identity(M, "ν_sep² from D⁻¹A sector = docs/model.md §3", expr - cf.nu_sep_squared(K, n, mu, om),
                         "(n + ωμ(K−2)/4)/(n + ωμ(K−1)/2)"))
    for (Kv, nv, muv, omv) in ((2, 6, 2, 2.0), (4, 3, 1, 1.0)):
        vals, _ = graph_modes(balanced_couplings(Kv, nv, muv, omv))
        top = np.sort(vals[vals > 1e-9])[0]
        rows.append(close(M, f"ν_sep(K={Kv}, n={nv}, μ={muv}, ω={omv:g}) vs eigh(A, D)", nu_sep(Kv, nv, muv, omv),
                          top, 1e-12))
    eps = sp.Symbol("epsilon", positive=True)
    nk2 = expr.subs({K: 2, om: 2})
    # K = 2: ε = μ/(2n + μ) -> μ = 2nε/(1 − ε)
    rows.append(identity(M, "K = 2, ω = 2: ν_sep² = (1−ε)/(1+ε)", nk2.subs(mu, 2 * n * eps / (1 - eps)) - cf.nu_sep_squared_k2(eps),
                         "docs/model.md §3"))
    # fixed points at the end of simulations
    model, tr = sim_k2(True)
    ev = np.sort(np.linalg.eigvals(tr.W).real)
    nu = nu_sep(2, 6, 2)
    rows.append(close(M, "eig W(T) = ±1, ±ν_sep (K=2, d=4, sim)", ev, [-1, -nu, nu, 1], 1e-6))
    rows.append(close(M, "W(T) = (ZᵀAZ)(ZᵀDZ)⁺ at the end", tr.W, self_consistent_head(model.graph, tr.Z), 1e-6))
    rows.append(Check(M, "Δ_min stays finite with sg (K=2, d=4)", f"{tr.d_min[-1]:.4g}", f"Δ_min(0) = {tr.d_min[0]:.4g}",
                      0.0 if 0.5 * tr.d_min[0] <= tr.d_min[-1] <= 2 * tr.d_min[0] else float("inf"), 0.0))
    _, tr0 = sim_k2(False)
    rows.append(Check(M, "Δ_min → 0 without sg (K=2, d=4)", f"{tr0.d_min[-1]:.2e}", "< 1e-8",
                      float(tr0.d_min[-1] / 1e-8), 1.0))
    c, a, Wm, nus = mfm.mode_condition(False, 2)
    I2 = sp.eye(2)
    rows.append(identity(M, "no sg: mode condition = [(W−ν)ᵀ(W−ν) + 1 − ν²] a = 0",
                         c + ((Wm - nus * I2).T * (Wm - nus * I2) + (1 - nus**2) * I2) * a, "derived edge forces"))
    rows.append(identity(M, "no sg: aᵀc = −‖(W−ν)a‖² − (1−ν²)‖a‖² (< 0 for |ν| < 1)",
                         (a.T * c)[0] + sqnorm((Wm - nus * I2) * a) + (1 - nus**2) * sqnorm(a), "quadratic form"))
    c1, *_ = mfm.mode_condition(True, 2)
    rows.append(identity(M, "sg: mode condition = Wᵀ(W − ν) a = 0", c1 + Wm.T * (Wm - nus * I2) * a, "derived edge forces"))
    # mean field
    mf = mfm.derive_meanfield(True)
    rows.append(identity(M, "ansatz closed (mirror, linear deviations, frustrated centre)",
                         sp.Matrix([r for _, r in mf.closure]), "substitution into the derived flow"))
    rows.append(identity(M, "reduced equations (ω = 2) = docs/model.md §3", mf.rhs.subs(mfm.omega_, 2) - mfm.model_md_reduced(),
                         "docs/model.md §3"))
    rows.append(identity(M, "reduced invariant conserved", mfm.reduced_time_derivative(mf, mfm.reduced_invariant()),
                         "reduced flow"))
    sol = mfm.self_consistency(True)
    w2 = sol["w2"].subs(mfm.omega_, 2)
    rows.append(identity(M, "w*² = n/(n+m)", w2 - cf.meanfield_w_star_squared(mfm.n_, mfm.m_), "docs/model.md §3"))
    rows.append(identity(M, "X* = Y*/w*", sol["Y_over_X"].subs(mfm.omega_, 2) - cf.meanfield_y_over_x(sp.sqrt(w2)), "docs/model.md §3"))
    ref = cf.meanfield_y_inf_squared(sol["I0"], mfm.n_, mfm.m_, mfm.eta_x, mfm.eta_y, mfm.eta_W)
    rows.append(identity(M, "Y_∞² from the invariant", sol["Yinf2"].subs(mfm.omega_, 2) - ref, "docs/model.md §3"))
    rows.append(Check(M, "no sg: no reduced fixed point with w > 0, Y ≠ 0", "none found", "sp.solve",
                      0.0 if mfm.self_consistency(False)["w2"] is None else float("inf"), 0.0))
    t, proj, red = meanfield_vs_full()
    rows.append(close(M, "reduced flow vs full simulation on the ansatz (K=2, d=1)", proj, red, 1e-8,
                      derived_text="full, projected", reference_text="reduced, integrated"))
    Pu = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1], [0.5, 0, 1.5]])
    roots, _ = mfm.self_consistency_roots_mp(Pu, dps=30)
    vals, _ = graph_modes(Pu)
    rows.append(close(M, "unbalanced graph: ν by findroot (30 digits) vs eigh", [float(r) for r in roots],
                      np.unique(np.round(vals[vals > 1e-9], 12)), 1e-12))
    # stability: derived fixed-point families, their stability, and simulated basins
    rows.extend(phase_checks())
    return rows


PHASE_GRID = {2: (0.25, (2, 4)), 3: (0.2, (3, 6)), 4: (0.2, (4,))}  # K: (ε, d values) of the table
PHASE_SEEDS = 2


def meanfield_saddle(n: int = 5, m: int = 2, eta=(1.0, 0.5, 1.0)):
    r"""The K = 2 mean-field end state (X*, Y* = w*X*, σ² = τ² = 0, w*) as a full d = 1 state: the
    symbolic (X, Y, w)-block eigenvalues of the reduced Jacobian, the full Jacobian's spectrum and
    the derived classification."""
    sol = mfm.self_consistency(True)
    X0 = sp.Symbol("X_0", positive=True)
    at = {mfm.X_: X0, mfm.Y_: sol["Y_over_X"] * X0, mfm.s2_: 0, mfm.t2_: 0, mfm.w_: sp.sqrt(sol["w2"])}
    vals = {mfm.n_: n, mfm.m_: m, mfm.omega_: 2, mfm.eta_x: sp.nsimplify(eta[0]), mfm.eta_y: sp.nsimplify(eta[1]),
            mfm.eta_W: sp.nsimplify(eta[2]), X0: 1}
    Jr = mfm.reduced_jacobian(True).subs(at).subs(vals)
    blk = [0, 1, 4]  # X, Y, w: the mirror-symmetric subspace (σ² = τ² = 0) is invariant
    sym_ev = np.array([complex(v) for v in sp.Matrix(Jr.extract(blk, blk)).eigenvals(multiple=True)])
    w = float(sp.sqrt(sol["w2"]).subs(vals))
    Yv = float((sol["Y_over_X"] * X0).subs(vals))
    model = HeadModel(balanced_couplings(2, n, m), d=1, eta_x=eta[0], eta_y=eta[1], eta_W=eta[2])
    Z, W = mfm.ansatz_state(n, m, 1.0, Yv, np.zeros(n), np.zeros(m), w, 1)
    full = np.linalg.eigvals(model.system.jacobian(model.pack(Z, W)).toarray())
    return sym_ev, full, fm.classify_state(model, Z, W)


@lru_cache(maxsize=None)
def phase_records():
    """The verification grid of :data:`PHASE_GRID` (K = 2, 3, 4) run through the phase sweep; each
    reached family gets its derived verdict (:func:`~symcollapse.phase.reached_family_verdict`: a
    stable scanned member, or a stable member at the reached amplitudes; not the whole family table)."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for K, (e, ds) in PHASE_GRID.items():
            recs = ph.run_phase(K, [e], list(ds), PHASE_SEEDS, tmp, eta_x=RATES[0], eta_y=RATES[1], backend="serial")
            cells = ph.summarise(recs)
            for (ee, dd, ew), c in cells.items():
                members = c.pop("members", {})
                c["derived"] = {k: ph.reached_family_verdict(K, ee, dd, RATES[0], RATES[1], ew, 4, k,
                                                             tuple(members.get(k, ()))) for k in c["families"]}
            out[K] = (recs, cells)
    return out


def phase_checks() -> list[Check]:
    """Rows: families and stability (derived) against spectra and simulations (independent)."""
    M = MODEL
    rows = []
    P = balanced_couplings(2, 5, 2)
    m4 = HeadModel(P, d=4, eta_x=RATES[0], eta_y=RATES[1], eta_W=RATES[2])
    fams = fm.enumerate_families(P, 4)
    worst, inv = 0.0, 0.0
    for f in fams:
        Z, W = fm.representative(P, 4, f, spare=0.5)
        worst = max(worst, float(np.max(np.abs(m4.system.flow_vector(m4.pack(Z, W))))))
        inv = max(inv, fm.classify_state(m4, Z, W).invariant_residual)
    rows.append(Check(M, f"all {len(fams)} families of B(2,5,2), d=4, are fixed points", f"{worst:.1e}",
                      "derived flow", worst, 1e-12))
    rows.append(Check(M, "∇I is a left null vector of J at every family", f"{inv:.1e}", "engine J", inv, 1e-12))
    sym_ev, full, st_mf = meanfield_saddle()
    miss = max(float(np.min(np.abs(full - v))) for v in sym_ev)
    rows.append(Check(M, "symbolic reduced (X, Y, w) spectrum ⊂ spec J (d=1)", "symbolic", "eig of J", miss, 1e-9))
    rows.append(Check(M, "mean-field end state (fig 6) is a saddle", st_mf.label, f"λ_max = {st_mf.max_real:.3g}",
                      0.0 if st_mf.kind == "saddle" else float("inf"), 0.0))
    rows.extend(stability_rows.condition_rows())
    rows.extend(stability_rows.prediction_rows())
    for K, (recs, cells) in phase_records().items():
        res = max(r["result"]["residual"] for r in recs)
        rows.append(Check(M, f"K={K}: {len(recs)} simulated end states are fixed points", f"{res:.1e}",
                          "residual ≤ 1e-9", res, 1e-9))
        drift = max(r["result"]["invariant_drift"] for r in recs)
        rows.append(Check(M, f"K={K}: invariant I(T) = I(0) at every end state", f"{drift:.1e}",
                          "conserved", drift, 1e-6))
        for (e, d, _), c in sorted(cells.items()):
            for fam, cnt in sorted(c["families"].items()):
                how = c["derived"][fam]
                ok = how != ph.REACHED_NONE and c["unstable"] == 0 and c["unclassified"] == 0
                short = fam.replace(".0000", "").replace("x1", "")
                rows.append(Check(M, f"K={K} ε={c['eps_real']:.2f} d={d}: {cnt}/{c['n']} end in {short}",
                                  ("stable" if how == ph.REACHED_SCAN else "stable at its amplitudes") if ok
                                  else "UNSTABLE", "end-state J", 0.0 if ok else float("inf"), 0.0))
    return rows


# --- LaTeX -------------------------------------------------------------------------------------------
def latex_document() -> str:
    fl, fl0 = flow(2, True), flow(2, False)
    loss = fl.loss
    s1, s0 = path_system(True), path_system(False)
    expr, _ = mfm.separation_nu_squared()
    Msec, _ = mfm.separation_sector()
    mf, mf0 = mfm.derive_meanfield(True), mfm.derive_meanfield(False)
    sol = mfm.self_consistency(True)
    c, a, Wm, nus = mfm.mode_condition(False, 2)
    c1, *_ = mfm.mode_condition(True, 2)
    Jr = mfm.reduced_jacobian(True)
    X0 = sp.Symbol("X_*", positive=True)
    at = {mfm.X_: X0, mfm.Y_: sol["Y_over_X"] * X0, mfm.s2_: 0, mfm.t2_: 0, mfm.w_: sp.sqrt(sol["w2"])}
    Jstar = Jr.subs(at).applyfunc(sp.simplify)
    names = ["\\dot X", "\\dot Y", "\\dot{\\sigma^2}", "\\dot{\\tau^2}", "\\dot w"]
    reduced = "".join(equation(nm, e) for nm, e in zip(names, mf.rhs))
    reduced0 = "".join(equation(nm, e) for nm, e in zip(names, mf0.rhs))

    msg, mno = derive_matrix_flow(head_matrix_loss("both")), derive_matrix_flow(head_matrix_loss("none"))
    secs = [
        section("Derived flow in matrix form (every $d$)",
                "The loss is written with $x, y \\in \\mathbb{R}^d$, $W \\in \\mathbb{R}^{d\\times d}$ of "
                "unspecified $d$; the engine differentiates it term by term (trace calculus) and checks "
                "every result against the component derivation at $d = 1, 2, 3$. With stop-gradient:",
                matrix_flow_latex(msg),
                "Without stop-gradient (the full gradient of the same loss):",
                matrix_flow_latex(mno, jvp=False)),
        section("Loss ($d = 2$ shown)", equation("\\ell", loss.expr)),
        section("Derived forces with stop-gradient",
                equation("F_x", fl.force("x")), equation("F_y", fl.force("y")),
                *[equation(f"(F_W)_{{{a}{b}}}", fl.force("W")[a, b]) for a in range(2) for b in range(2)]),
        section("Derived forces without stop-gradient",
                equation("F_x", fl0.force("x")), equation("F_y", fl0.force("y"))),
        section("Invariant on the path graph ($d = 1$)",
                equation("I", invariant_expr(s1)),
                equation("\\dot I_{\\mathrm{sg}}", sp.simplify(s1.time_derivative(invariant_expr(s1)))),
                equation("\\dot I_{\\mathrm{no\\,sg}}", sp.factor(s0.time_derivative(invariant_expr(s0))))),
        section("Single-mode fixed-point conditions ($Z = \\phi a^T$, $A\\phi = \\nu D\\phi$)",
                equation("c_{\\mathrm{sg}}(a)", c1), equation("c_{\\mathrm{no\\,sg}}(a)", c),
                equation("a^T c_{\\mathrm{no\\,sg}}", sp.factor(sp.expand((a.T * c)[0])))),
        section("Class-separation sector of $D^{-1}A$",
                equation("M_{\\mathrm{sep}}", Msec), equation("\\nu_{\\mathrm{sep}}^2", expr)),
        section("Mean-field reduction ($K = 2$, with stop-gradient)", reduced),
        section("Mean-field reduction ($K = 2$, without stop-gradient)", reduced0),
        section("Self-consistency and end state",
                equation("w_*^2", sol["w2"]), equation("Y_*/X_*", sol["Y_over_X"]),
                equation("I_{\\mathrm{red}}", mfm.reduced_invariant()),
                equation("Y_\\infty^2", sol["Yinf2"])),
        section("Jacobian of the reduced flow at the self-consistent point", equation("J_*", Jstar),
                equation("\\det J_*", sp.simplify(Jstar.det()))),
        section("Stability of the fixed points", stability_table()),
    ]
    return document("Projection head with stop-gradient: derived dynamics", *secs,
                    abstract="Derived by symcollapse from the loss; every formula is printed from derived SymPy objects.")


def stability_table() -> str:
    """Derived stability of every fixed-point family of B(2, 5, 2) for d = 1…4 (stable ones listed)."""
    P = balanced_couplings(2, 5, 2)
    lines = ["Fixed-point families $Z = \\sum_\\ell \\Phi_\\ell C_\\ell$ (rank $r_\\ell$ per $\\nu$-level) of $B(2, 5, 2)$, "
             "$\\eta = (1, 0.1, 1)$; stability from the engine Jacobian with the gauge, free-head and "
             "level-swap zero modes removed; rank-deficient families at spare head eigenvalue $s = \\pm 0.5$.",
             "", "\\begin{tabular}{rlll}", "$d$ & kept $\\nu$ (rank) & class & families (stable/saddle/degenerate)\\\\",
             "\\hline"]
    for d in (1, 2, 3, 4):
        m = HeadModel(P, d=d, eta_x=RATES[0], eta_y=RATES[1], eta_W=RATES[2])
        counts = {"stable": 0, "saddle": 0, "degenerate": 0}
        stable = []
        for f in fm.enumerate_families(P, d):
            kinds = [fm.classify_family(m, f, spare=sp_).kind for sp_ in (SPARES if f.rank < d else (0.0,))]
            k = "stable" if "stable" in kinds else ("saddle" if all(x == "saddle" for x in kinds) else "degenerate")
            counts[k] += 1
            if k == "stable":
                stable.append(f)
        summary = "/".join(str(counts[k]) for k in ("stable", "saddle", "degenerate"))
        for i, f in enumerate(stable):
            nus = ", ".join(f"{nu:+.3f}" + (f"$\\times{r}$" if r > 1 else "") for nu, r in zip(f.nus, f.ranks) if r)
            lines.append(f"{d if i == 0 else ''} & {nus} & stable & {summary if i == 0 else ''}\\\\")
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


def write_latex(folder) -> list[Path]:
    out = ensure_writable_dir(folder) / "head.tex"
    return [atomic_write_text(out, latex_document())]


# --- figures ---------------------------------------------------------------------------------------
def write_figures(folder) -> list[Path]:
    folder = ensure_writable_dir(folder)
    return [figure_variants(folder / "fig4_head_variants.png"),
            figure_phase_d(folder / "fig5_phase_eps_d.png"),
            figure_phase_etaW(folder / "fig6_phase_eps_etaW.png"),
            figure_meanfield(folder / "fig7_meanfield_vs_full.png")]


NOISE_FLOOR = 1e-9  # Δ_min below this (relative to Δ_min(0) ~ 1) is integration round-off, not data


def resolved(values: np.ndarray, floor: float = NOISE_FLOOR) -> np.ndarray:
    """The values, masked (NaN) from the first one below ``floor`` on: the curve stops where it
    reaches round-off instead of plotting the noise (which can wander back above the floor)."""
    v = np.array(values, dtype=float)
    below = np.flatnonzero(~(v >= floor))
    if below.size:
        v[below[0]:] = np.nan
    return v


def figure_variants(path) -> Path:
    """Δ_min(t): no head / head without sg / head + sg frozen W = I / head + sg learned W."""
    K, n, mu, d = 3, 8, 2, 6
    P = balanced_couplings(K, n, mu)
    fig, axes = new_figure(1, 1, width=4.4, height=3.2)
    ax = axes[0, 0]
    emb = EmbeddingModel(P, d=d, eta_x=RATES[0], eta_y=RATES[1])
    tr = emb.simulate(t_end=2000.0, seed=0, n_points=60)
    ok = log_time_axis(ax, tr.t)
    ax.semilogy(tr.t[ok], resolved(tr.d_min[ok]), "k-", lw=2.5, alpha=0.35, label="no head")
    for kw, style, lab in (({"stop_gradient": False}, "C3-", "head, no sg"),
                           ({"learn_head": False}, "C0--", "head + sg, frozen W = I"),
                           ({}, "C2-", "head + sg, learned W")):
        m = HeadModel(P, d=d, eta_x=RATES[0], eta_y=RATES[1], eta_W=RATES[2], **kw)
        # rtol 1e-11: Δ_min is a difference of O(1) label embeddings, resolved only to about rtol·|y|
        # (at rtol 1e-7 the no-sg tail below ~1e-7 depended on the integrator: BDF and LSODA differed)
        tr = m.simulate(t_end=2000.0, seed=0, n_points=60, rtol=1e-11, atol=1e-14)
        ax.semilogy(tr.t[ok], resolved(tr.d_min[ok]), style, label=lab)
    ax.axhline(NOISE_FLOOR, color="0.6", lw=0.8, ls=":")
    ax.annotate("round-off floor", (1.0, NOISE_FLOOR), xycoords=("axes fraction", "data"),
                xytext=(-2, 3), textcoords="offset points", ha="right", fontsize=6.5, color="0.4")
    ax.set_ylim(bottom=0.3 * NOISE_FLOOR)
    label_axes(ax, "time t", "Δ_min", f"K={K}, n={n}, μ={mu}, ε={frustration_fraction(K, n, mu):.2f}, d={d}")
    return save_figure(fig, path)


FIG5_GRID = {"K": 2, "eps": (0.1, 0.25), "d": (1, 2, 3, 4), "seeds": 2}  # small: it runs in reproduce


def figure_phase_d(path) -> Path:
    """(ε, d) for K = 2 on :data:`FIG5_GRID`: simulated fraction of separated end states (colour), mean ρ
    (contours), derived stability (hatched: no stable separated family; circles: a stable collapsed one).
    The larger committed diagrams come from :func:`symcollapse.phase.regenerate`."""
    import tempfile

    g = FIG5_GRID
    with tempfile.TemporaryDirectory() as tmp:
        recs = ph.run_phase(g["K"], list(g["eps"]), list(g["d"]), g["seeds"], tmp, eta_x=RATES[0], eta_y=RATES[1],
                            backend="serial")
    cells = ph.attach_derived(ph.summarise(recs), g["K"], RATES[0], RATES[1])
    return phase_figure(cells, g["K"], "d", path)


def figure_phase_etaW(path) -> Path:
    """Final separation |Y_∞|/|Y_0| over ε and η_W/η_x of the mean-field end state (map; a saddle of the
    full model), the ansatz runs (circles) and the stable end states of the same runs nudged by 1e-8 (squares)."""
    n, X0, Y0, w0 = 10, 0.0, 1.0, 1.0
    ms = np.arange(0, 21)
    etaW = np.geomspace(0.05, 20, 60)
    Mg, Eg = np.meshgrid(ms, etaW, indexing="ij")
    ex, ey = 1.0, 0.5
    I0 = 2 * n * X0**2 / ex + 2 * Y0**2 / ey - w0**2 / Eg
    _, Yinf = final_separation_grid(n, Mg, ex, ey, Eg, I0)
    Yinf = np.where(np.isfinite(Yinf), Yinf, 0.0)  # Y_∞² < 0: no separated end state, the labels collapse
    eps = ms / (2 * n + ms)
    fig, axes = new_figure(1, 1, width=4.4, height=3.2)
    ax = axes[0, 0]
    im = ax.pcolormesh(eps, etaW, (Yinf / Y0).T, shading="nearest", cmap="viridis", vmin=0.0,
                       vmax=float(np.max(Yinf / Y0)))
    cs = ax.contour(eps, etaW, (Yinf / Y0).T, levels=[0.1, 0.2, 0.3], colors="w", linewidths=0.8)
    ax.clabel(cs, fontsize=6)
    ax.set_yscale("log")

    for m in (2, 20):
        for eW in (0.1, 1.0, 10.0):
            model = HeadModel(balanced_couplings(2, n, m), d=1, eta_x=ex, eta_y=ey, eta_W=eW)
            Z0, W0 = mfm.ansatz_state(n, m, X0, Y0, np.zeros(n), np.zeros(m), w0, 1)
            tr = model.simulate(t_eval=np.array([0.0, 60.0]), Z0=Z0, W0=W0)
            r = abs(tr.Z[-1, 0]) / Y0
            e = m / (2 * n + m)
            ax.scatter([e], [eW], c=[r], cmap="viridis", vmin=im.norm.vmin, vmax=im.norm.vmax,
                       edgecolors="r", s=40, zorder=3)
            # the same run nudged off the ansatz by 1e-8, continued to its fixed point: a stable end state
            nudge = 1e-8 * np.random.default_rng(0).normal(size=Z0.shape)
            Zs, Ws, _, res = run_to_fixed_point(model, Z0 + nudge, W0, tol=1e-9, t_max=2e4)
            kind = fm.classify_state(model, Zs, Ws).kind if res <= 1e-7 else "unconverged"
            rs = abs(Zs[-1, 0] - Zs[-2, 0]) / (2 * Y0)
            ax.scatter([e * 1.06 + 0.01], [eW], c=[rs], cmap="viridis", vmin=im.norm.vmin, vmax=im.norm.vmax,
                       marker="s", edgecolors="k" if kind == "stable" else "m", s=28, zorder=3)
    ax.scatter([], [], c="none", edgecolors="r", s=40, label="mean-field end state (t = 60): saddle")
    ax.scatter([], [], c="none", marker="s", edgecolors="k", s=28, label="nudged 1e-8, end state: stable")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.2), frameon=False, ncol=1)
    fig.colorbar(im, ax=ax, label=r"$|Y_\infty|/|Y_0|$")
    label_axes(ax, "frustration ε", r"$\eta_W/\eta_x$", f"K=2, n={n}: map = mean field (a saddle)", legend=False)
    return save_figure(fig, path)


def figure_meanfield(path) -> Path:
    """w, X, Y over time: mean-field reduction (lines) vs full simulation (markers)."""
    t, proj, red = meanfield_vs_full()
    fig, axes = new_figure(1, 1, width=4.4, height=3.2)
    ax = axes[0, 0]
    ok = log_time_axis(ax, t)
    for name, k, col in (("X", 0, "C0"), ("Y", 1, "C1"), ("w", 4, "C2")):
        ax.plot(t[ok], red[ok, k], "-", color=col, label=f"{name} (reduced)")
        ax.plot(t[ok][::3], proj[ok, k][::3], "o", color=col, ms=3.5, mfc="none", label=f"{name} (full)")
    label_axes(ax, "time t", "ansatz variables", "K=2, n=5, m=2, d=1")
    return save_figure(fig, path)
