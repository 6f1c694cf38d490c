r"""Job: the linear teacher–student model (docs/model.md §4) — derive, verify, write LaTeX and figures.

Derivation chain: edge loss in x → engine forces → linear sample map x = S u (map Jacobian
δ_mk u_j, chain rule F_S = F_x uᵀ, checked against the composite loss) → induced flow
Ẋ = η_S G F_X (exact, small graph, symbolic inputs) → its Jacobian −blockdiag(η_S G, η_y I) L_G
→ slow rate, invariants with G⁻¹, end states; then simulations of the composed flow.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import sympy as sp

from .. import teacher_student as ts
from . import MAP, TeacherStudentModel
from ...symbolic.losses import student_matrix_loss
from ...symbolic.matrix_flow import derive_matrix_flow
from ...verification import Check, close, identity
from ...numerics.kernels import compile_loss
from ...numerics.linear_map import verify_linear_map
from ...numerics.metrics import d_min
from ...outputs.figures import plt  # pyplot with the Agg backend selected
from ...outputs.io import atomic_savefig, atomic_write_text, ensure_writable_dir
from ...outputs.latex import document, equation, matrix_flow_latex, section, tex
from ...symbolic.reparam import map_structure_difference
from ..embedding import EmbeddingModel

MODEL = "teacher_student"
ORDER = 30
CAPTIONS = {  # report captions, by figure file stem
    "fig8_teacher_student_time_course": r"Linear teacher--student model ($K = 3$, clustered inputs): $\Delta_{\min}$, "
                                        "training and test accuracy against time without frustration, with "
                                        r"$\varepsilon = 0.1$, and with $\varepsilon = 0.1$ and a head with stop-gradient.",
    "fig9_teacher_student_slow_rate": r"Teacher--student slow rate against $\varepsilon$: the smallest nonzero eigenvalue "
                                      r"of $\mathrm{blockdiag}(\eta_S G, \eta_y I)\, L_G$ and the fitted decay of $\Delta_{\min}$.",
}

# Instances: K = 2 has one class-separation mode, so Δ_min decays at a single slow rate.
RATE_CASE = dict(K=2, n_inputs=40, D=400, d=2)
HEAD_CASE = dict(K=2, n_inputs=20, D=200, d=4, n_test=200)
# Figure 8: clustered inputs (80% of E|g|^2 in the teacher's row space, full-rank noise) so the
# student generalises; slow labels (eta_y = 0.1) keep the classes apart for eps = 0. Measured
# final test accuracy over seeds 0-5: eps = 0 0.71-0.92, eps = 0.1 0.33-0.41 (chance 1/3),
# eps = 0.1 with head + sg 0.65-0.79.
FIG_CASE = dict(K=3, n_inputs=30, D=300, d=6, n_test=300, inputs="clustered", signal=0.8, eta_y=0.1)
RATE_EPS = (0.05, 0.1)
HEAD_SEEDS = (0, 1)


def _bound(claim: str, value: float, *, lower: float | None = None, upper: float | None = None,
           derived: str = "") -> Check:
    """A row that passes iff lower < value < upper."""
    ok = (lower is None or value > lower) and (upper is None or value < upper)
    ref = " and ".join(x for x in ((f"> {lower:g}" if lower is not None else ""),
                                   (f"< {upper:g}" if upper is not None else "")) if x)
    return Check(MODEL, claim, derived or f"{value:.4g}", ref, 0.0 if ok else float("inf"), 0.0)


# --- derived objects (cached) ----------------------------------------------------------------------
@lru_cache(maxsize=None)
def rate_run(eps: float, seed: int = 0):
    """(model, trajectory) for the slow-rate fit: t_end = 22/r_s (Δ_min falls by ~e^{-22})."""
    m = TeacherStudentModel(eps=eps, seed=seed, **RATE_CASE)
    t_end = 22.0 / m.slow_rate()
    return m, m.simulate(t_end, n_points=300)


@lru_cache(maxsize=None)
def head_run(stop_gradient: bool, seed: int):
    m = TeacherStudentModel(eps=0.1, head=True, stop_gradient=stop_gradient, seed=seed, **HEAD_CASE)
    return m, m.simulate(400.0, rtol=1e-8, atol=1e-10)


@lru_cache(maxsize=None)
def figure_runs():
    """ε = 0, ε = 0.1, and ε = 0.1 with head + sg (K = 3, clustered inputs) for figure 8."""
    out = {}
    for key, kw in (("eps0", dict(eps=0.0)), ("eps", dict(eps=0.1)),
                    ("head_sg", dict(eps=0.1, head=True, stop_gradient=True))):
        m = TeacherStudentModel(seed=0, **FIG_CASE, **kw)
        out[key] = (m, m.simulate(400.0, rtol=1e-8, atol=1e-10))
    return out


def end_state_labels(m: TeacherStudentModel, st0: dict) -> np.ndarray:
    """Label end state when every component C holds one class (ε = 0): x_i = y_c = R_C, fixed by
    the invariants I_C = Σ_{C'} (1_Cᵀ G⁻¹ 1_{C'}) R_{C'}/η_S + R_C/η_y (a K×K linear system)."""
    n, comp = m.graph.components
    N = m.n_inputs
    one = np.zeros((N, n))
    one[np.arange(N), comp[:N]] = 1.0
    M = one.T @ np.linalg.solve(m.gram, one) / m.eta_S
    lab = np.zeros((m.K, n))
    lab[np.arange(m.K), comp[N:]] = 1.0
    M = M + np.diag(lab.sum(0)) / m.eta_y
    R = np.linalg.solve(M, m.invariants(st0))
    return lab @ R


# --- checks ------------------------------------------------------------------------------------------
def symbolic_checks() -> list[Check]:
    rows = []
    for d, head, sgv, probe in ((8, False, True, 2), (2, True, True, 2), (2, True, False, 2)):
        lm = ts.derive_student_map(d, head, sgv, probe)
        tag = "no head" if not head else ("head + sg" if sgv else "head, no sg")
        rows.append(identity(MODEL, f"chain rule F_S = F_x u^T ({tag}, d={d}, D0={probe})",
                             sp.Matrix(lm.composite.force(MAP)) - sp.Matrix(lm.force_S),
                             "composite loss l(Su, y) differentiated by the engine"))
    lm = ts.derive_student_map(1)
    rows.append(identity(MODEL, "map Jacobian d(Su)_m/dS_kj = delta_mk u_j (D0=3)",
                         map_structure_difference(lm.map_jacobian, lm.u, 1), "x_k = sum_j S_kj u_j"))
    rows.append(identity(MODEL, "induced flow U S'^T = eta_S G F_X (path graph, symbolic U)",
                         ts.induced_flow_difference(), "assembled composite flow vs base flow"))
    rows.append(identity(MODEL, "induced flow with head + sg (path graph, symbolic U)",
                         ts.induced_flow_difference(head=True), "assembled composite flow vs base flow"))
    rows.append(identity(MODEL, "Jacobian of (X', Y') = -blockdiag(eta_S G, eta_y I) L_G",
                         ts.induced_jacobian_difference(), "docs/model.md §4"))
    for name, P in (("path graph", ts.PATH_P), ("eps = 0 (two components)", ts.SPLIT_P)):
        system, basis, proposed = ts.component_invariants(P)
        C = sp.Matrix([[sp.diff(I, s) for s in system.state] for I in proposed])
        B = sp.Matrix.hstack(*basis).T if basis else sp.zeros(0, len(system.state))
        rank = sp.Matrix.vstack(B, C).rank(simplify=True)
        rows.append(Check(MODEL, f"linear invariants = components ({name})", str(len(basis)),
                          f"{len(proposed)} components, span rank {rank}",
                          0.0 if len(basis) == len(proposed) == rank else float("inf"), 0.0))
        rows.append(identity(MODEL, f"dI_C/dt = 0, I_C = sum (G^-1 X)/eta_S + sum y/eta_y ({name})",
                             sp.Matrix([system.time_derivative(I) for I in proposed]), "assembled flow"))
    rows.append(identity(MODEL, "head + sg: |S|^2/eta_S + |Y|^2/eta_y - |W|^2/eta_W conserved",
                         ts.norm_invariant_rate(True), "assembled composite flow, symbolic U"))
    rate_nosg = ts.norm_invariant_rate(False)
    rows.append(Check(MODEL, "head without sg: that norm is not conserved", "dI/dt != 0",
                      "assembled composite flow", 0.0 if rate_nosg != 0 else float("inf"), 0.0))
    return rows


def numeric_checks() -> list[Check]:
    rows = []
    for d, head, sgv in ((8, False, True), (4, True, True), (4, True, False)):
        errs = verify_linear_map(compile_loss(ts.student_loss(d, head, sgv)), name=MAP)
        for what, err in errs.items():
            rows.append(Check(MODEL, f"{what} (d={d}, head={head}, sg={sgv})", f"{err:.2e}",
                              "central differences", err, 1e-6))
    # slow rate: engine Jacobian spectrum, fitted decay, invariants along the trajectory
    for eps in RATE_EPS:
        m, tr = rate_run(eps)
        r = m.slow_rate()
        rs = m.rowspace_system(m.initial_state()[MAP])
        ev = np.sort(-np.linalg.eigvals(rs.jacobian(np.zeros(rs.size)).toarray()).real)
        rows.append(close(MODEL, f"slow rate = smallest nonzero rate of the engine Jacobian (eps={eps})",
                          r, ev[m.graph.components[0] * m.d], 1e-8))
        rows.append(close(MODEL, f"fitted decay of Delta_min = slow rate (eps={eps}, K=2)",
                          tr.fit_slow_rate(), r, 5e-3))
        inv = tr.extra["invariant"]
        rows.append(close(MODEL, f"component invariants conserved along the trajectory (eps={eps})",
                          inv[-1], inv[0], 1e-8))
    # G ≈ I for D ≫ N: model (a) on the same couplings (the embedding model's own slow rate)
    m = TeacherStudentModel(eps=0.1, K=2, n_inputs=40, D=256 * 40, d=2, n_test=1)
    rows.append(close(MODEL, "D = 256 N: slow rate -> model (a)'s rate (O(sqrt(N/D)) = 0.06)",
                      m.slow_rate(), EmbeddingModel(m.data.P, d=2).slow_rate(), 0.05))
    # ε = 0: no collapse, end state from the invariants
    m0 = TeacherStudentModel(eps=0.0, **RATE_CASE)
    tr0 = m0.simulate(400.0)
    pred = d_min(end_state_labels(m0, m0.initial_state()))
    rows.append(close(MODEL, "eps = 0: final Delta_min = end state of the invariants", tr0.d_min[-1], pred, 1e-6))
    rows.append(_bound("eps = 0: Delta_min(T)/Delta_min(0) stays finite", tr0.d_min[-1] / tr0.d_min[0], lower=0.05))
    for eps in RATE_EPS:
        _, tr = rate_run(eps)
        rows.append(_bound(f"eps = {eps}: Delta_min(T)/Delta_min(0) collapses", tr.d_min[-1] / tr.d_min[0], upper=1e-6))
        rows.append(_bound(f"eps = {eps}: training accuracy reaches 1 before collapse",
                           float(np.max(tr.accuracy)), lower=0.999))
    for seed in HEAD_SEEDS:
        _, tr = head_run(True, seed)
        rows.append(_bound(f"head + sg keeps Delta_min finite (seed {seed})", tr.d_min[-1] / tr.d_min[0], lower=0.05))
        inv = tr.extra["invariant"]
        rows.append(close(MODEL, f"head + sg: norm invariant conserved (seed {seed})", inv[-1], inv[0], 1e-6))
        _, tr = head_run(False, seed)
        rows.append(_bound(f"head without sg collapses (seed {seed})", tr.d_min[-1] / tr.d_min[0], upper=1e-6))
    return rows


def checks() -> list[Check]:
    """All verification rows of the teacher–student model."""
    return symbolic_checks() + numeric_checks()


# --- LaTeX ---------------------------------------------------------------------------------------------
def latex_document() -> str:
    """The derivation document, printed from the derived objects."""
    lm = ts.derive_student_map(1, False, True, 2)
    lmh = ts.derive_student_map(1, True, True, 2)
    loss, lossh = lm.base.loss, lmh.base.loss
    eta_S, eta_y = lm.rate, loss.rate("y")
    s1 = section(
        "Loss and the linear sample map",
        "Each sample embedding is a learned linear map of a fixed input, $x_i = S u_i$; the edge "
        "loss is written in $x$ and the engine composes the chain rule through the map.",
        equation(r"\ell(x, y)", loss.expr),
        equation(r"\ell_{\mathrm{head}}(x, y)", lossh.expr),
        "Map Jacobian, derived from $x_k=\\sum_j S_{kj}u_j$ at $D_0=2$ (it has the form "
        "$\\delta_{mk}u_j$, valid for every $D$):",
        equation(r"\frac{\partial x}{\partial \operatorname{vec} S}", lm.map_jacobian),
        "Composed forces $F_S=F_x u^{\\top}$ (checked against the composite loss):",
        equation(r"F_S", lm.force_S),
        equation(r"F_S^{\mathrm{head}}", lmh.force_S),
    )

    s_mat = section(
        "The student derived once for every $d$ and $D$",
        "The loss written with $S \\in \\mathbb{R}^{d\\times D}$, $u \\in \\mathbb{R}^D$, "
        "$y \\in \\mathbb{R}^d$ of unspecified sizes (checked against the component derivation at "
        "$(d, D) = (1, 2), (2, 3), (3, 1)$). Without head:",
        matrix_flow_latex(derive_matrix_flow(student_matrix_loss(False))),
        "With the shared head and stop-gradient:",
        matrix_flow_latex(derive_matrix_flow(student_matrix_loss(True, "both")), jvp=False))
    J = ts.induced_jacobian_difference()
    s2 = section(
        "Induced sample flow",
        "Assembled on the path graph $x_1$--$y_1$--$f$--$y_2$--$x_2$ with symbolic inputs $U$, "
        "the composite flow satisfies $U\\dot S^{\\top} = \\eta_S G F_X$ identically, so "
        "$\\dot X = -\\eta_S G\\,\\partial L/\\partial X$ with $G=UU^{\\top}$. Residual of the identity:",
        equation(r"U\dot S^{\top} - \eta_S G F_X", ts.induced_flow_difference()),
        "and the Jacobian of $(\\dot X, \\dot Y)$ minus $-\\operatorname{blockdiag}(\\eta_S G, \\eta_y I)L_G$:",
        equation(r"\Delta J", J),
        "So without a head the decay rates are the eigenvalues of "
        "$\\operatorname{blockdiag}(\\eta_S G, \\eta_y I)L_G$; the slow (collapse) rate is the "
        "smallest nonzero one.",
    )
    _, _, proposed = ts.component_invariants(ts.PATH_P)
    _, _, proposed_s = ts.component_invariants(ts.SPLIT_P)
    s3 = section(
        "Invariants",
        "With $U$ an integer $3\\times3$ matrix, the invariants $I_C$ below have $dI_C/dt=0$ along "
        "the assembled flow in $(S, Y)$, and they span the null space of linear invariants that "
        "the engine finds (one per connected component):",
        *[equation(f"I_{{{k}}}", I) for k, I in enumerate(proposed)],
        "and for $\\varepsilon=0$ (two components):",
        *[equation(f"I_{{{k}}}", I) for k, I in enumerate(proposed_s)],
        "i.e. $I_C=\\sum_{i\\in C}(G^{-1}X)_i/\\eta_S+\\sum_{c\\in C}y_c/\\eta_y$. With head and "
        "stop-gradient, $\\|S\\|_F^2/\\eta_S+\\sum_c\\|y_c\\|^2/\\eta_y-\\|W\\|_F^2/\\eta_W$ is conserved:",
        equation(r"\frac{dI}{dt}", ts.norm_invariant_rate(True)),
    )
    return document("Linear teacher--student model: derivation", s_mat, s1, s2, s3,
                    abstract=f"Rates: ${tex(eta_S)}$ for the map $S$, ${tex(eta_y)}$ for the labels.")


def write_latex(folder) -> list[Path]:
    path = ensure_writable_dir(folder) / "teacher_student.tex"
    return [atomic_write_text(path, latex_document())]


# --- figures --------------------------------------------------------------------------------------------
def write_figures(folder) -> list[Path]:
    folder = ensure_writable_dir(folder)
    runs = figure_runs()
    titles = {"eps0": r"$\varepsilon=0$", "eps": r"$\varepsilon=0.1$",
              "head_sg": r"$\varepsilon=0.1$, head + sg"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=False)
    for ax, (key, (m, tr)) in zip(axes, runs.items()):
        t = tr.t[1:]
        ax.semilogx(t, tr.accuracy[1:], label="train accuracy")
        ax.semilogx(t, tr.test_accuracy[1:], label="test accuracy")
        ax.semilogx(t, tr.d_min[1:] / tr.d_min[0], label=r"$\Delta_{\min}/\Delta_{\min}(0)$")
        ax.semilogx(t, tr.loss[1:] / tr.loss[0], label=r"$L/L(0)$")
        ax.set_title(f"{titles[key]}: final test accuracy {tr.test_accuracy[-1]:.2f}")
        ax.axhline(1.0 / m.K, color="gray", ls=":", lw=0.8)  # chance level
        ax.set_xlabel("t")
        ax.set_ylim(-0.05, 1.1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Teacher-student, clustered inputs (signal fraction {FIG_CASE['signal']:g}): "
                 f"K={FIG_CASE['K']}, N={FIG_CASE['n_inputs']}, D={FIG_CASE['D']}, d={FIG_CASE['d']}, "
                 rf"$\eta_y$={FIG_CASE['eta_y']:g}; chance = 1/K")
    fig.tight_layout()
    p8 = atomic_savefig(fig, folder / "fig8_teacher_student_time_course.png")
    plt.close(fig)

    eps_grid = np.linspace(0.025, 0.3, 12)
    ts_rate, a_rate, fit = [], [], []
    for eps in eps_grid:
        m = TeacherStudentModel(eps=float(eps), **RATE_CASE)
        ts_rate.append(m.slow_rate())
        a_rate.append(EmbeddingModel(m.data.P, d=m.d).slow_rate())
    for eps in RATE_EPS:
        fit.append(rate_run(eps)[1].fit_slow_rate())
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(eps_grid, ts_rate, "o-", label=r"teacher-student: $\lambda_{\min}^{+}[\mathrm{blockdiag}(\eta_S G,\eta_y I)L_G]$")
    ax.plot(eps_grid, a_rate, "s--", label="model (a), same couplings")
    ax.plot(RATE_EPS, fit, "k*", ms=12, label=r"fitted decay of $\Delta_{\min}$")
    ax.set_xlabel(r"$\varepsilon$")
    ax.set_ylabel("slow rate")
    ax.set_title(f"K={RATE_CASE['K']}, N={RATE_CASE['n_inputs']}, D={RATE_CASE['D']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p9 = atomic_savefig(fig, folder / "fig9_teacher_student_slow_rate.png")
    plt.close(fig)
    return [p8, p9]
