"""Job 'literature': published closed forms re-derived with the engine (Saxe 2014, SimSiam
linear predictor after Tian et al. 2021, the unconstrained-features model of neural
collapse) and the invariants the engine discovers on the head model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import sympy as sp

from ..literature import invariants_demo, saxe, simsiam, ufm
from ..numerics.integrate import integrate
from ..outputs.figures import plt  # pyplot with the Agg backend selected
from ..outputs.io import atomic_savefig, atomic_write_text
from ..outputs.latex import document, equation, invariants_latex, matrix_flow_latex, section
from ..outputs.report import checks_table_latex, latex_text

MODEL = "literature"
ORDER = 40
CAPTIONS = {  # report captions, by figure file stem
    "literature_saxe": r"Saxe et al.\ (2014): the mode strength $u(t)$ integrated from the derived flow and the "
                       "published closed form.",
    "literature_simsiam": r"SimSiam-style linear predictor with stop-gradient (after Tian et al.\ 2021): "
                          r"trajectories in the $(p, w)$ plane from the derived mode flow.",
    "literature_ufm": r"Unconstrained-features model: the collapsed norm $\|w_c\|^2$ against $\lambda_H$, derived and published.",
}


def _cases():
    return (saxe, simsiam, ufm, invariants_demo)


def checks() -> list:
    """All rows of the literature cases (each case's rows carry its own model label)."""
    rows = []
    for case in _cases():
        rows.extend(case.checks())
    return rows


def _edge_names(invariants, loss=None) -> list:
    """Invariants of an assembled system with readable names. The state of node i, component k
    is named x{i}_{k} / y{i}_{k}, which prints as x₀₀: on one edge the loss's own variables are
    used (τa² − τb², not τx₀₀² − τy₀₀²); otherwise x_i (d = 1) or x_{i,k}."""
    import re

    names = {}
    if loss is not None:
        names = {f"x0_{k}": v for k, v in enumerate(loss.x)} | {f"y0_{k}": v for k, v in enumerate(loss.y)}
    exprs = [getattr(inv, "expr", inv) for inv in invariants]
    node = [(q, re.fullmatch(r"([xy])(\d+)_(\d+)", q.name)) for e in exprs for q in e.free_symbols]
    node = [(q, m) for q, m in node if m]
    one_d = all(m.group(3) == "0" for _, m in node)  # over the whole set: one naming for all
    out = []
    for e in exprs:
        sub = {}
        for q, m in node:
            if q.name in names:
                sub[q] = names[q.name]
            else:
                b, i, k = m.groups()
                sub[q] = sp.Symbol(f"{b}_{{{i}}}" if one_d else f"{b}_{{{i},{k}}}", real=True)
        out.append(e.xreplace(sub))
    return out


def write_latex(folder) -> list[Path]:
    """derivations/literature.tex: the losses, derived equations and the verification rows."""
    ds = saxe.derive()
    s1 = section(
        "Saxe, McClelland \\& Ganguli (2014): one mode of a two-layer linear network",
        "Matrix-level loss of one input--output mode through a hidden layer of any width $d$ "
        "($a \\in \\mathbb{R}^d$ the sample block, $b \\in \\mathbb{R}^d$ the label block, rates $1/\\tau$) "
        "and its flow, derived once for every $d$:",
        matrix_flow_latex(ds["matrix_flow"], jvp=False),
        "Matrix-level invariant found by the engine (every $d$; Saxe's balancedness):",
        *[equation("I", inv.latex()) for inv in ds["matrix_invariants"]],
        "The published scalar mode is the case $d = 1$:",
        equation(r"\ell", sp.factor(ds["loss"].expr)),
        "Derived flow and the balanced-mode equation ($a=b=\\sqrt{u}$):",
        equation(r"\dot a", ds["adot"]), equation(r"\dot b", ds["bdot"]), equation(r"\dot u", ds["udot"]),
        "Quadratic invariant found by the engine:", invariants_latex(_edge_names(ds["invariants"], ds["loss"])),
        "Published solution and learning time, checked against the derived equation:",
        equation("u(t)", saxe.published_u()), equation("t_f", saxe.published_learning_time()),
        "Learning time derived as $\\int_{u_0}^{u_f} du/\\dot u$:", equation("t_f", ds["t_learn"]),
        checks_table_latex(saxe.checks(), long=False))
    dm = simsiam.derive()
    s2 = section(
        "SimSiam-style linear predictor with stop-gradient (Tian, Chen \\& Ganguli 2021)",
        "Matrix-level loss per input sample $u$ (with $X = \\sum_i u_i u_i^T$; $W$ and the predictor $Q = W_p$ "
        "shared, rates $1$ and $\\alpha_p$; weight decays $\\lambda_W = \\eta/N$, $\\lambda_Q = \\eta/(\\alpha_p N)$ "
        "on each of the $N$ samples) and its flow, derived once for every size:",
        matrix_flow_latex(dm["matrix_flow"], jvp=False),
        "Mode loss (aligned eigenbasis; $x=w_j$, $y=p_j$, rates $1$ and $\\alpha_p$):",
        equation(r"\ell", dm["loss"].expr),
        "Derived mode flow:", equation(r"\dot w", dm["wdot"]), equation(r"\dot p", dm["pdot"]),
        "Published fixed points:",
        *[equation(f"(w, p)_{{{k}}}", sp.Tuple(*fp)) for k, fp in enumerate(simsiam.paper_fixed_points())],
        "Invariant discovered at $\\eta = 0$:",
        invariants_latex(_edge_names(dm["inv_eta0"], simsiam._mode_loss_eta0())),
        checks_table_latex(simsiam.checks(), long=False))
    du = ufm.derive()
    s3 = section(
        "Unconstrained-features model, MSE and weight decay",
        f"Loss for $K={du['K']}$, $n={du['n']}$: $L = \\frac{{1}}{{2N}}\\|WH-Y\\|_F^2 + \\frac{{\\lambda_W}}{{2}}\\|W\\|_F^2"
        " + \\frac{\\lambda_H}{2}\\|H\\|_F^2$. Reduced flow on the collapsed ansatz $W = aI$, $H = bY$:",
        equation(r"\dot a", du["adot"]), equation(r"\dot b", du["bdot"]),
        "The same loss as an edge loss over the samples (feature $h_i \\in \\mathbb{R}^d$, one-hot target "
        "$u_i \\in \\mathbb{R}^K$, $W \\in \\mathbb{R}^{K\\times d}$) and its flow, derived once for every $d$ and $K$:",
        matrix_flow_latex(du["matrix_flow"], jvp=False),
        "Published collapsed norm $\\|w_c\\|^2$ and threshold on $\\lambda_W\\lambda_H$:",
        equation(r"\|w_c\|^2", ufm.published_norm(du["K"], du["n"])),
        equation(r"\lambda_W\lambda_H", ufm.published_threshold(du["K"], du["n"])),
        checks_table_latex(ufm.checks(), long=False))
    parts = ["\\paragraph{Matrix level (every $d$, every graph).} Invariants found among the block sums and Gram "
             "forms of the learned blocks and proved by the trace calculus (docs/model.md \\S 7):"]
    for label, mflow, invs in invariants_demo.matrix_level():
        body = "".join(equation("I", inv.latex()) for inv in invs) if invs else "none.\n"
        parts.append(f"{latex_text(label)}: " + body)
    parts.append("\\paragraph{Component level (the cross-check), on the path graph.}")
    for label, sg, ansatz, S, inv in invariants_demo.discovered():
        parts.append(f"\\paragraph{{{latex_text(label)}, sg = {sg} ({ansatz} ansatz).}}\n"
                     + invariants_latex(_edge_names(inv)))
    s4 = section("Invariants discovered on the head and student models", *parts,
                 checks_table_latex(invariants_demo.checks(), long=False))
    text = document("Literature cases derived with symcollapse", s1, s2, s3, s4)
    return [atomic_write_text(Path(folder) / "literature.tex", text)]


def write_figures(folder) -> list[Path]:
    """Saxe u(t) (integrated vs closed form); SimSiam (p, w) trajectories; UFM ‖w_c‖² vs λ_H."""
    out = []
    tt, ab, _ = saxe.simulate()
    ref = sp.lambdify(saxe.t, saxe.published_u().subs({saxe.s: 2.0, saxe.tau: 1.5, saxe.u0: 1e-3}), "numpy")(tt)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(tt, ref, "k-", lw=2.5, alpha=0.4, label="published $u(t)$")
    ax.plot(tt, ab, "C0.", ms=4, label="engine flow $a b$")
    ax.set_xlabel("t")
    ax.set_ylabel("mode strength u")
    ax.legend()
    fig.tight_layout()
    out.append(atomic_savefig(fig, Path(folder) / "literature_saxe.png"))
    plt.close(fig)

    sysm = simsiam._system()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for w0, p0 in ((0.9, 0.2), (0.3, 0.9), (0.05, 0.02), (0.1, 0.3), (-0.8, 0.4)):
        sol = integrate(sysm.flow_vector, np.array([w0, p0]), np.linspace(0, 200, 200), jac=sysm.jacobian,
                        rtol=1e-8, atol=1e-10)
        ax.plot(sol.y[:, 1], sol.y[:, 0], lw=1)
    for wp, pp in simsiam.paper_fixed_points():  # marked by the engine Jacobian's eigenvalues
        pt = np.array([simsiam._num(wp), simsiam._num(pp)])
        stable = np.all(np.linalg.eigvals(sysm.jacobian(pt).toarray()).real < 0)
        ax.plot(pt[1], pt[0], "ko" if stable else "rx", ms=6)
    ax.set_xlabel("predictor eigenvalue p")
    ax.set_ylabel("weight w")
    ax.set_title("fixed points: stable (black dots), unstable (red crosses)", fontsize=9)
    fig.tight_layout()
    out.append(atomic_savefig(fig, Path(folder) / "literature_simsiam.png"))
    plt.close(fig)

    du = ufm.derive()
    lw = 0.05
    lh = np.linspace(0.002, 1.2 * float(ufm.published_threshold(du["K"], du["n"])) / lw, 60)
    rho = [float(ufm.published_norm(du["K"], du["n"]).subs({ufm.lam_W: lw, ufm.lam_H: v})) for v in lh]
    branches = [sp.lambdify(ufm.lam_H, (f[ufm.a] ** 2).subs(ufm.lam_W, lw), "numpy")
                for f in du["fixed"] if f[ufm.a] != 0]
    with np.errstate(invalid="ignore"):
        vals = np.array([np.asarray(fn(lh.astype(complex)), dtype=complex) for fn in branches])
    real = np.where(np.abs(vals.imag) < 1e-12, vals.real, np.nan)
    real = np.where(real > 0, real, np.nan)  # a² ≤ 0: no real non-trivial fixed point
    derived = np.where(np.all(np.isnan(real), axis=0), 0.0,
                       np.nanmax(np.where(np.isnan(real), -np.inf, real), axis=0))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(lh, np.maximum(rho, 0), "k-", lw=2.5, alpha=0.4, label="published $\\|w_c\\|^2$")
    ax.plot(lh, derived, "C1.", ms=4, label="derived fixed point $a^2$")
    ax.axvline(float(ufm.published_threshold(du["K"], du["n"])) / lw, color="C3", ls="--", lw=1,
               label="$K^2 n\\lambda_W\\lambda_H = 1$")
    ax.set_xlabel("$\\lambda_H$ ($\\lambda_W$ = %g)" % lw)
    ax.set_ylabel("$\\|w_c\\|^2$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(atomic_savefig(fig, Path(folder) / "literature_ufm.png"))
    plt.close(fig)
    return out
