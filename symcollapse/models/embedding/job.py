r"""Job: the embedding-only model (docs/model.md §1–§2) — derive, verify, write LaTeX and figures.

Derivation chain: loss ½‖x − y‖² → engine forces → class-separation sector of B(K, n, μ, ω)
(closure proved with symbolic neighbour sums) → det(r I + M) → slow root (series in μ, fast-label
closed form and series in ε) → fixed points, invariants and end states on small graphs.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np
import sympy as sp

from ... import closed_forms as cf
from ..couplings import balanced_couplings, frustration_fraction
from . import EmbeddingModel, embedding_loss, embedding_sector
from ...symbolic.assemble import assemble_symbolic
from ...symbolic.fixedpoints import end_state, linear_fixed_points
from ...symbolic.flow import derive_flow
from ...symbolic.invariants import linear_invariants
from ...symbolic.sectors import balanced_ansatz, balanced_centre_sector
from ...symbolic.series import slow_rate_series
from ...symbolic.losses import embedding_matrix_loss
from ...symbolic.matrix_flow import derive_matrix_flow
from ...verification import Check, close, identity
from ...numerics.metrics import d_min
from ...outputs.figures import label_axes, log_time_axis, mark_time, new_figure, plot_embedding, save_figure
from ...outputs.io import atomic_write_text, ensure_writable_dir
from ...outputs.latex import document, equation, matrix_flow_latex, section, tex

MODEL = "embedding"
ORDER = 10
CAPTIONS = {  # report captions, by figure file stem
    "fig1_time_course": r"Embedding model: accuracy, minimum class distance $\Delta_{\min}$ and loss against time "
                        r"(log axis), without frustration ($\varepsilon = 0$) and with it. With frustrated samples the "
                        r"accuracy saturates on the fast scale while $\Delta_{\min}$ decays at the slow rate $r_s$.",
    "fig2_slow_rate": r"The collapse rate $r_s$ against the frustration fraction $\varepsilon$: smallest root of the "
                      r"derived sector cubic, smallest nonzero eigenvalue of $H L_G$, fitted decay of $\Delta_{\min}$, "
                      r"and the leading order in $\mu$.",
    "fig3_snapshots": "Sample and label embeddings ($d = 2$) at $t = 0$, after the fast alignment, at $t = 1/r_s$ "
                      "and at $t = 5/r_s$: the classes merge on the slow time scale.",
}

N_PER_CLASS = 40  # n of the balanced ensembles used in checks and figures


# --- derived objects (cached: checks, LaTeX and figures share them) --------------------------------
@lru_cache(maxsize=None)
def sector(omega=None):
    """Class-separation sector (ω symbolic if None)."""
    return embedding_sector(omega=omega)


@lru_cache(maxsize=None)
def centre():
    """Centre-of-mass sector (ω symbolic)."""
    return balanced_centre_sector(embedding_loss(1))


@lru_cache(maxsize=None)
def series():
    """Slow-root series of the ω = 2 sector."""
    return slow_rate_series(sector(), omega=2, order=3)


@lru_cache(maxsize=None)
def path_system():
    """The smallest instance: K = 2, one consistent sample per class, one frustrated, d = 1."""
    return assemble_symbolic(derive_flow(embedding_loss(1)), balanced_couplings(2, 1, 1).astype(int))


@lru_cache(maxsize=None)
def split_system():
    """ε = 0, K = 2, two samples per class, d = 1: two components (the classes)."""
    return assemble_symbolic(derive_flow(embedding_loss(1)), balanced_couplings(2, 2, 0).astype(int))


def sector_rates(K: int, n: int, mu: float, eta_x: float = 1.0, eta_y: float = 1.0) -> np.ndarray:
    """The three decay rates of the ω = 2 class-separation sector, ascending (30-digit roots)."""
    return sector(2).rates(dict(eta_x=eta_x, eta_y=eta_y, n=n, mu=mu, K=K))


def fitted_slow_rate(model: EmbeddingModel, rates: np.ndarray, seed: int = 1):
    """(fitted rate, trajectory): fit log Δ_min on [t_fit, t_fit + 10/r_s], t_fit = 30/(r₂ − r_s)."""
    r_s = rates[0]
    t_fit = 30.0 / (rates[1] - r_s)
    t_end = t_fit + 10.0 / r_s
    t_eval = np.concatenate([[0.0], np.geomspace(1e-3, t_fit, 30)[:-1], np.linspace(t_fit, t_end, 60)])
    tr = model.simulate(t_end=t_end, seed=seed, t_eval=t_eval)
    return tr.fit_slow_rate(t_min=t_fit, fraction=1.0), tr


# --- docs/model.md §2 reference forms (the spec the derived objects are compared with) ------------
def _reference(S: dict) -> dict:
    ex, ey, n, mu, K, r = (S[k] for k in ("eta_x", "eta_y", "n", "mu", "K", "r"))
    return {"matrix": cf.sector_matrix(K, n, mu, ex, ey), "cubic": cf.sector_cubic(r, K, n, mu, ex, ey),
            "leading": cf.slow_rate_leading_mu(K, n, mu, ex, ey)}


def _reference_fast(ex, K, e):
    return cf.slow_rate_fast_labels(K, e, ex), cf.slow_rate_fast_labels_series(K, e, ex)


# --- checks ---------------------------------------------------------------------------------
def checks() -> list[Check]:
    rows = []
    s2, s = sector(2), sector()
    S = s2.symbols
    ref = _reference(S)
    rows.append(identity(MODEL, "sector matrix (ω=2) = docs/model.md §2", sp.Matrix(s2.matrix) - ref["matrix"],
                         "docs/model.md §2 matrix"))
    rows.append(identity(MODEL, "sector closure (Σ_b v_b = 0)",
                         sp.Matrix([p.residual for p in s.closure]), "κ·pattern, symbolic ω, K"))
    rows.append(identity(MODEL, "det(rI+M) (ω=2) = docs/model.md §2 cubic", s2.charpoly - ref["cubic"],
                         "docs/model.md §2 cubic"))
    # sector matrix (general ω) against the full compiled flow on the ansatz
    rng = np.random.default_rng(0)
    K, n, mu, om = 4, 3, 2, 1.0
    v = rng.normal(size=(K, 2))
    v -= v.mean(0)
    a = rng.normal(size=3)
    m = EmbeddingModel(balanced_couplings(K, n, mu, om), d=2, eta_x=0.7, eta_y=1.3)
    M = s.numeric_matrix(dict(eta_x=0.7, eta_y=1.3, n=n, mu=mu, K=K, omega=om))
    rows.append(close(MODEL, "full flow on ansatz = sector M·a (ω=1)", m.flow(balanced_ansatz(K, n, mu, v, a)),
                      balanced_ansatz(K, n, mu, v, M @ a), 1e-12, reference_text="compiled flow"))
    # the whole spectrum = separation ×(K−1) ∪ centre ∪ η_x ×K(n−1) ∪ ωη_x ×(m−K)  (K ≥ 3)
    vals = dict(eta_x=0.7, eta_y=1.3, n=n, mu=mu, K=K, omega=om)
    m_f = mu * K * (K - 1) // 2
    predicted = np.sort(np.concatenate([np.repeat(s.rates(vals), K - 1), centre().rates(vals),
                                        np.full(K * (n - 1), 0.7), np.full(m_f - K, om * 0.7)]))
    rows.append(close(MODEL, "spectrum of H L_G = union of the sectors (K=4, ω=1)", predicted,
                      m.decay_rates(), 1e-9, reference_text="eigvalsh of H^½ L_G H^½"))
    # slow root vs spectrum vs fitted decay
    for K, mu, ey in ((2, 1, 1.0), (4, 4, 0.02)):
        rates = sector_rates(K, N_PER_CLASS, mu, 1.0, ey)
        model = EmbeddingModel(balanced_couplings(K, N_PER_CLASS, mu), d=2, eta_x=1.0, eta_y=ey)
        tag = f"K={K}, n={N_PER_CLASS}, μ={mu}, η_y={ey}"
        rows.append(close(MODEL, f"slow root = min nonzero eig(H L_G), {tag}", rates[0], model.slow_rate(), 1e-10,
                          reference_text=f"{model.slow_rate():.10g} (eigvalsh)"))
        fit, _ = fitted_slow_rate(model, rates)
        rows.append(close(MODEL, f"slow root = fitted decay of Δ_min, {tag}", rates[0], fit, 1e-4,
                          reference_text=f"{fit:.10g} (simulation)"))
    big = balanced_couplings(10, 20000, 3)
    r_big = EmbeddingModel(big, d=1, eta_x=1.0, eta_y=0.5).slow_rate()
    rows.append(close(MODEL, f"slow root = Schur slow rate, K=10, N={big.shape[0]}",
                      sector_rates(10, 20000, 3, 1.0, 0.5)[0], r_big, 1e-8))
    # series
    ser = series()
    ex, ey, nn, mus, KK = (S[k] for k in ("eta_x", "eta_y", "n", "mu", "K"))
    rows.append(identity(MODEL, "leading order in μ = docs/model.md §2", ser.leading_mu - ref["leading"], "docs/model.md §2"))
    small = 1e-4
    lead = float(ser.leading_mu.subs({ex: 1.0, ey: 0.5, nn: 40, KK: 3, mus: small}))
    rows.append(close(MODEL, "leading order vs exact root, μ=1e-4", lead, sector_rates(3, 40, small, 1.0, 0.5)[0],
                      1e-3))
    e = ser.eps
    closed_ref, series_ref = _reference_fast(S["eta_x"], KK, e)
    rows.append(identity(MODEL, "fast-label closed form = docs/model.md §2", ser.fast_closed_form - closed_ref,
                         "docs/model.md §2"))
    rows.append(identity(MODEL, "fast-label series to O(ε²) = docs/model.md §2",
                         ser.fast_series - ser.fast_series.coeff(e, 3) * e**3 - series_ref, "docs/model.md §2"))
    rows.append(identity(MODEL, "K=2: r_s = 2η_xε/(1+ε)",
                         ser.fast_closed_form.subs(KK, 2) - cf.slow_rate_k2_fast_labels(e, ex), "docs/model.md §2"))
    Kn, nv, mv = 4, 30, 3
    eps_v = frustration_fraction(Kn, nv, mv)
    closed = float(ser.fast_closed_form.subs({ex: 1.0, KK: Kn, e: eps_v}))
    rows.append(close(MODEL, "fast-label closed form vs exact root, η_y=1e7", closed,
                      sector_rates(Kn, nv, mv, 1.0, 1e7)[0], 1e-6))
    small_eps = frustration_fraction(3, 2000, 1)
    approx = float(ser.fast_series.subs({ex: 1.0, KK: 3, e: small_eps}))
    exact = float(ser.fast_closed_form.subs({ex: 1.0, KK: 3, e: small_eps}))
    rows.append(close(MODEL, f"series to ε³ vs closed form, ε={small_eps:.2g}", approx, exact, 1e-7))
    # fixed points, invariants, end states
    ps = path_system()
    fps = linear_fixed_points(ps)
    rows.append(identity(MODEL, "path graph: fixed points = consensus",
                         sp.Matrix(fps.basis[0]) - fps.basis[0][0] * sp.ones(len(ps.state), 1),
                         "null space of J (1-dim)"))
    invs = linear_invariants(ps)
    w = sp.Matrix([1 / ps.rates.get("x") if str(z).startswith("x") else 1 / ps.rates.get("y") for z in ps.state])
    rows.append(identity(MODEL, "path graph: invariant Σ z_k/η_k", sp.Matrix(invs[0]) / invs[0][-1] - w / w[-1],
                         "c·f ≡ 0 null space"))
    rows.extend(_end_state_checks())
    return rows


def _end_state_checks() -> list[Check]:
    rows = []
    K, n, ex, ey = 3, 5, 1.0, 0.4
    m = EmbeddingModel(balanced_couplings(K, n, 0), d=2, eta_x=ex, eta_y=ey)
    Z0 = m.initial_state(2)
    tr = m.simulate(t_end=60.0, Z0=Z0)
    X0, Y0 = Z0[:K * n], Z0[K * n:]
    R = np.array([cf.class_end_point(X0[c * n:(c + 1) * n], Y0[c], ex, ey) for c in range(K)])
    rows.append(close(MODEL, "ε=0: labels end at R_c (simulation)", tr.Z[K * n:], R, 1e-8))
    dR = min(np.linalg.norm(R[a] - R[b]) for a, b in itertools.combinations(range(K), 2))
    rows.append(close(MODEL, "ε=0: Δ_min(∞) = min|R_a − R_b| > 0", tr.d_min[-1], dR, 1e-8))
    # symbolic end state of the split instance = R_c with n_c = 2
    ss = split_system()
    fin = end_state(ss)
    z0 = {z.name: sp.Symbol(f"{z.name}^0", real=True) for z in ss.state}
    exs, eys = ss.rates["x"], ss.rates["y"]
    Rc = cf.class_end_point([z0["x0_0"], z0["x1_0"]], z0["y0_0"], exs, eys)
    y0 = next(z for z in ss.state if z.name == "y0_0")
    rows.append(identity(MODEL, "ε=0 symbolic end state = R_c", fin[y0] - Rc, "invariants + null space"))
    m = EmbeddingModel(balanced_couplings(2, 3, 2), d=2, eta_x=1.0, eta_y=3.0)
    Z0 = m.initial_state(4)
    eta = np.array([1.0] * m.N + [3.0] * m.K)
    mean = cf.weighted_mean(Z0, eta)
    tr = m.simulate(t_end=400.0, Z0=Z0, keep_states=True, n_points=60)
    rows.append(close(MODEL, "connected frustration: end at η-weighted mean", tr.Z,
                      np.broadcast_to(mean, tr.Z.shape), 1e-8))
    inv0 = (Z0 / eta[:, None]).sum(0)
    drift = max(np.max(np.abs((v.reshape(Z0.shape) / eta[:, None]).sum(0) - inv0)) for v in tr.states)
    rows.append(close(MODEL, "Σ z_k/η_k conserved along trajectory", inv0 + drift, inv0, 1e-9,
                      derived_text=f"max drift {drift:.2e}"))
    return rows


# --- LaTeX ----------------------------------------------------------------------------------
def latex_document() -> str:
    """The derivation as a standalone LaTeX document (every formula printed by SymPy)."""
    loss = embedding_loss(1)
    flow = derive_flow(loss)
    s, s2, ser = sector(), sector(2), series()
    S = s2.symbols
    r = S["r"]
    x, y = loss.x[0], loss.y[0]
    ex, ey = loss.rate("x"), loss.rate("y")
    on_edge = {x: sp.Symbol("x_i"), y: sp.Symbol("y_c")}
    edge = {b: flow.force(b)[0].subs(on_edge) for b in ("x", "y")}

    parts = []
    parts.append(section(
        "Derived flow in matrix form (every $d$)",
        "The edge loss in $x, y \\in \\mathbb{R}^d$ of unspecified $d$, differentiated by the engine's "
        "trace calculus and checked against the component derivation at $d = 1, 2, 3$:",
        matrix_flow_latex(derive_matrix_flow(embedding_matrix_loss()))))
    parts.append(section(
        "Loss and derived flow",
        "Edge loss (one training pair $(i,c)$ of weight $P_{ic}$; $L = \\sum_{i,c} P_{ic}\\,\\ell(x_i, y_c)$, "
        "one embedding coordinate shown):",
        equation(r"\ell(x, y)", loss.expr),
        "Derived per-edge forces $F_b = -\\partial \\ell/\\partial b$:",
        equation("F_x", flow.force("x")[0]), equation("F_y", flow.force("y")[0]),
        "Assembled gradient flow:",
        equation(r"\dot x_i", f"{tex(ex)} \\sum_c P_{{ic}} \\left({tex(edge['x'])}\\right)"),
        equation(r"\dot y_c", f"{tex(ey)} \\sum_i P_{{ic}} \\left({tex(edge['y'])}\\right)"),
        "Edge-force coefficients detected from the derived forces (scalar times identity, so each "
        "embedding coordinate decouples): "
        + ", ".join(f"$A_{{{a}{b}}} = {tex(v)}$" for (a, b), v in s.coefficients.items()) + ".",
    ))
    closure = []
    for p in s.closure:
        t = s.ensemble.node(p.node)
        closure.append(f"{t.description.capitalize()} (pattern ${tex(t.pattern)}$, amplitude ${tex(t.amplitude)}$):")
        closure.append(equation(r"\dot z", p.flow))
        closure.append(equation(r"\dot z", p.reduced))
        closure.append(equation(r"\dot z", f"\\left({tex(p.coefficient)}\\right)\\left({tex(t.pattern)}\\right)"))
    parts.append(section(
        "Class-separation sector of the balanced ensemble",
        "Ansatz: consistent samples of class $c$ at $X v_c$, frustrated samples of the pair $(a,b)$ at "
        "$F(v_a+v_b)$, labels at $Y v_c$, with $\\sum_b v_b = 0$. Substituting into the derived flow and "
        "evaluating the neighbour sums (the zero-sum condition removes $\\sum_s v_s$) closes the ansatz:",
        *closure,
        "Sector matrix acting on $(X, F, Y)$ for general $\\omega$ and for $\\omega = 2$:",
        equation("M", s.matrix), equation(r"M_{\omega=2}", s2.matrix),
        "The same node types on a uniform pattern $v_c = u$ (centre of mass) give",
        equation(r"M_{\mathrm{centre}}", centre().matrix),
        equation(r"\det(rI + M_{\mathrm{centre}})", sp.factor(centre().charpoly)),
        r"whose zero root is the conserved weighted mean. With the within-class deviations (rate "
        r"$\eta_x$, $K(n-1)$ modes) and the frustrated modes that do not touch the labels (rate "
        r"$\omega\eta_x$, $m-K$ modes), the $K-1$ copies of $M$ and one of $M_{\mathrm{centre}}$ "
        r"account for all $N+K$ rates when $K \ge 3$ (checked against the full spectrum).",
    ))
    parts.append(section(
        "Characteristic polynomial and the slow rate",
        "Decay rates $r$ are the roots of $\\det(rI + M) = 0$; for $\\omega = 2$:",
        equation(r"\det(rI+M)", sp.collect(s2.charpoly, r)),
        "Regular perturbation of the root $r = 0$ at $\\mu = 0$ (leading order):",
        equation("r_s", ser.leading_mu),
        "Fast labels ($\\eta_y \\to \\infty$): the coefficient of $\\eta_y$ gives the reduced quadratic",
        equation("0", sp.collect(ser.fast_quadratic, r)),
        f"In the frustration fraction ${tex(ser.eps)} = m/N$ ($m = \\mu K(K-1)/2$, $N = Kn + m$):",
        equation("0", sp.collect(ser.fast_quadratic_eps, r)),
        "Its smaller root and its series:",
        equation("r_s", ser.fast_closed_form),
        equation("r_s", f"{tex(ser.fast_series)} + O({tex(ser.eps)}^{{{ser.order + 1}}})"),
        "For $K = 2$:", equation("r_s", sp.simplify(ser.fast_closed_form.subs(S["K"], 2))),
    ))
    ps = path_system()
    fps = linear_fixed_points(ps)
    invs = linear_invariants(ps)
    I = sum(c * z for c, z in zip(sp.Matrix(invs[0]) / invs[0][-1], ps.state))
    fin = end_state(ps)
    ss = split_system()
    fin_split = end_state(ss)
    y0 = next(z for z in ss.state if z.name == "y0_0")
    parts.append(section(
        "Invariants and fixed points on the smallest instance",
        "Path graph $x_0 - y_0 - x_2 - y_1 - x_1$ ($K=2$, one consistent sample per class, one "
        "frustrated sample $x_2$, $d = 1$; the second subscript of a symbol is the coordinate). Assembled flow:",
        *[equation(f"\\dot{{{tex(z)}}}", f) for z, f in zip(ps.state, ps.flow)],
        "Linear invariant (null space of $c \\cdot f \\equiv 0$):", equation("I", I),
        "Fixed points (null space of the flow matrix) are spanned by",
        equation(r"\phi", sp.Matrix(fps.basis[0]).T),
        "so every node ends at the invariant-weighted mean:",
        equation(f"{tex(ps.state[0])}(\\infty)", fin[ps.state[0]]),
        "Without frustration (two samples per class) each class is a component and its label ends at",
        equation(f"{tex(y0)}(\\infty)", fin_split[y0]),
    ))
    return document("Embedding-only model: derivation", *parts,
                    abstract="Derived by symcollapse from the loss; every formula below is printed from the "
                             "derived SymPy objects.")


def write_latex(folder) -> list[Path]:
    out = ensure_writable_dir(folder) / "embedding.tex"
    return [atomic_write_text(out, latex_document())]


# --- figures ---------------------------------------------------------------------------------
def write_figures(folder) -> list[Path]:
    folder = ensure_writable_dir(folder)
    return [figure_time_course(folder / "fig1_time_course.png"),
            figure_slow_rate(folder / "fig2_slow_rate.png"),
            figure_snapshots(folder / "fig3_snapshots.png")]


def figure_time_course(path) -> Path:
    """Accuracy, Δ_min and loss vs t (log axis), ε = 0 vs ε > 0."""
    K, n, mu = 3, N_PER_CLASS, 2
    r_s = sector_rates(K, n, mu)[0]
    t_end = 12.0 / r_s
    fig, axes = new_figure(1, 3, width=3.3, height=2.8)
    for m_, style in ((0, "--"), (mu, "-")):
        model = EmbeddingModel(balanced_couplings(K, n, m_), d=2)
        tr = model.simulate(t_end=t_end, seed=0, n_points=160)
        eps = frustration_fraction(K, n, m_)
        lab = f"ε = {eps:.3f}"
        ok = log_time_axis(axes[0, 0], tr.t)
        axes[0, 0].plot(tr.t[ok], tr.accuracy[ok], style, label=lab)
        log_time_axis(axes[0, 1], tr.t)
        axes[0, 1].semilogy(tr.t[ok], tr.d_min[ok], style, label=lab)
        log_time_axis(axes[0, 2], tr.t)
        shown = ok & (tr.loss > 1e-14 * tr.loss[0])  # below: integration round-off
        axes[0, 2].semilogy(tr.t[shown], tr.loss[shown], style, label=lab)
    for ax in axes[0]:
        mark_time(ax, 1.0 / r_s, "1/r_s")
    label_axes(axes[0, 0], "time t", "training accuracy", f"K={K}, n={n}")
    label_axes(axes[0, 1], "time t", "Δ_min (min label distance)", "class separation")
    label_axes(axes[0, 2], "time t", "loss L", "loss")
    return save_figure(fig, path)


def figure_slow_rate(path) -> Path:
    """r_s vs ε (log–log): sector root, full spectrum, fitted decay, leading order in μ."""
    K, n = 3, N_PER_CLASS
    ser = series()
    S = sector(2).symbols
    lead = sp.lambdify([S["mu"]], ser.leading_mu.subs({S["eta_x"]: 1, S["eta_y"]: 1, S["n"]: n, S["K"]: K}))
    mus_line = np.geomspace(0.05, 60, 60)
    m_line = mus_line * K * (K - 1) / 2
    eps_line = m_line / (K * n + m_line)
    root_line = np.array([sector_rates(K, n, float(m))[0] for m in mus_line])
    mus = [1, 2, 4, 8, 16, 32]
    eps_pts = np.array([frustration_fraction(K, n, m) for m in mus])
    spec = [EmbeddingModel(balanced_couplings(K, n, m), d=1).slow_rate() for m in mus]
    fit_mus = [1, 4, 16]
    fits = [fitted_slow_rate(EmbeddingModel(balanced_couplings(K, n, m), d=2), sector_rates(K, n, m))[0]
            for m in fit_mus]
    fig, axes = new_figure(1, 1, width=4.2, height=3.4)
    ax = axes[0, 0]
    ax.loglog(eps_line, root_line, "-", color="C0", label="sector root (cubic)")
    ax.loglog(eps_line, lead(mus_line), "--", color="C3", label="leading order in μ")
    ax.loglog(eps_pts, spec, "o", mfc="none", color="C1", label="full spectrum of H L_G")
    ax.loglog([frustration_fraction(K, n, m) for m in fit_mus], fits, "x", color="k", ms=7,
              label="fitted decay of Δ_min")
    label_axes(ax, "frustration fraction ε", "slow rate r_s", f"K={K}, n={n}, η_x=η_y=1")
    return save_figure(fig, path)


def figure_snapshots(path) -> Path:
    """Embeddings (d = 2) at t = 0, on the fast scale, at 1/r_s and 5/r_s."""
    K, n, mu = 3, 20, 2
    model = EmbeddingModel(balanced_couplings(K, n, mu), d=2)
    r_s = model.slow_rate()
    times = np.array([0.0, 2.0, 1.0 / r_s, 5.0 / r_s])
    tr = model.simulate(t_end=times[-1], seed=3, t_eval=times, keep_states=True)
    centre = (model.invariants(tr.states[0].reshape(-1, 2)) / (1.0 / model.eta).sum())[0]
    Zs = [v.reshape(model.N + model.K, 2) - centre for v in tr.states]
    fig, axes = new_figure(1, 4, width=2.6, height=2.8)
    for ax, t, Z in zip(axes[0], times, Zs):
        lim = 1.15 * np.max(np.abs(Z))  # each panel zoomed to its own extent (the end point is 0)
        plot_embedding(ax, Z[:model.N], Z[model.N:], model.labels,
                       title=f"t = {t:.3g}\nΔ_min = {d_min(Z[model.N:]):.2g}", limits=lim)
        ax.set_xlabel("coord. 1 − centre")
    axes[0, 0].set_ylabel("coord. 2 − centre")
    axes[0, 0].legend(frameon=False, loc="lower left", fontsize=6.5)
    return save_figure(fig, path)
