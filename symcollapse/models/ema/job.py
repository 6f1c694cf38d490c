r"""Job: the EMA-target model (docs/model.md §6) — derive, verify, write LaTeX.

Derivation chain: loss ½(‖x − sg(ξ_y)‖² + ‖y − sg(ξ_x)‖²) → engine forces (none on the targets)
→ + relaxation ξ̇ = τ(z − ξ) → the assembled flow on the path graph → its linear invariants and
end state → the separation-sector rates against the assembled spectrum → simulation.
This module is the model's job (jobs layer): it may import outputs; the model may not import it.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import sympy as sp

from ... import closed_forms as cf
from ...symbolic.fixedpoints import end_state
from ...symbolic.flow import derive_flow, gradient_of_value
from ...symbolic.invariants import linear_invariants
from ...verification import Check, close, identity
from ..couplings import balanced_couplings
from . import TAU, EMATargetModel, ema_loss, ema_symbolic_system
from ...outputs.io import atomic_write_text, ensure_writable_dir
from ...outputs.latex import document, equation, section, tex

MODEL = "ema"
ORDER = 35

PATH_P = ((1, 0), (0, 1), (1, 1))  # x₁–y₁–f–y₂–x₂
SPLIT_P = ((1, 0), (0, 1))  # ε = 0: two components
SECTOR = (3, 4, 1, 1.0, 0.7, 0.5)  # K, n, μ, η_x, η_y, τ


@lru_cache(maxsize=None)
def flow(d: int = 1):
    return derive_flow(ema_loss(d))


@lru_cache(maxsize=None)
def path_system():
    return ema_symbolic_system(np.array(PATH_P, dtype=int))


def _coefficients(system, P):
    """The closed-form invariant Σ(z/η + D ξ/τ) as a coefficient column over the state."""
    P = np.asarray(P)
    deg = {("x", i): int(P[i].sum()) for i in range(P.shape[0])}
    deg.update({("y", c): int(P[:, c].sum()) for c in range(P.shape[1])})
    ex, ey = system.rates["x"], system.rates["y"]
    col = []
    for b in ("x", "y"):
        M = system.blocks[b]
        for r in range(M.rows):
            col.append(1 / (ex if b == "x" else ey))
            col.append(deg[(b, r)] / TAU)
    return sp.Matrix(col)


def checks() -> list[Check]:
    M = MODEL
    rows = []
    loss = ema_loss(2)
    fl = flow(2)
    d = 2
    x, xi_x = loss.x[:d, :], loss.x[d:, :]
    y, xi_y = loss.y[:d, :], loss.y[d:, :]
    fx, fy, fxi_x, fxi_y = cf.ema_edge_forces(x, y, xi_x, xi_y)
    rows.append(identity(M, "derived forces = docs/model.md §6 (d = 2)",
                         sp.Matrix.vstack(sp.Matrix(fl.force("x")) - sp.Matrix.vstack(fx, fxi_x),
                                          sp.Matrix(fl.force("y")) - sp.Matrix.vstack(fy, fxi_y)),
                         "F_x = ξ_y − x, F_y = ξ_x − y, F_ξ = 0"))
    full = sp.Matrix(gradient_of_value(loss, "x")[d:, :])
    acts = full != sp.zeros(d, 1) and sp.Matrix(fl.force("x")[d:, :]) == sp.zeros(d, 1)
    rows.append(Check(M, "sg acts: ∂ℓ/∂ξ of the loss value ≢ 0, derived F_ξ ≡ 0", "F_ξ = 0",
                      "gradient of the value", 0.0 if acts else float("inf"), 0.0))
    # every engine term against its own reference
    m = EMATargetModel(balanced_couplings(3, 4, 1), d=2, eta_x=1.0, eta_y=0.7, tau=0.5)
    errs = m.verify(seed=0)
    for name, err in errs.items():
        ref = {"gradient": "central differences of L (sg held)", "jacobian": "central differences of the flow"}
        rows.append(Check(M, f"term check: {name}", f"{err:.1e}", ref.get(name, "τ(θ − ξ) block by block"),
                          err, 1e-6))
    # exact statements on the path graph
    ps = path_system()
    invs = linear_invariants(ps)
    ref = _coefficients(ps, PATH_P)
    rows.append(Check(M, "path graph: one linear invariant", f"{len(invs)} found", "connected graph",
                      0.0 if len(invs) == 1 else float("inf"), 0.0))
    if len(invs) == 1:
        c = sp.Matrix(invs[0])
        rows.append(identity(M, "derived invariant ∝ Σ(z/η + D ξ/τ)", c / c[0] - ref / ref[0],
                             "docs/model.md §6"))
    ss = ema_symbolic_system(np.array(SPLIT_P, dtype=int))
    fin = end_state(ss)
    z0 = {s: sp.Symbol(f"{s.name}^0", real=True) for s in ss.state}
    ex, ey = ss.rates["x"], ss.rates["y"]
    X, Y = ss.blocks["x"], ss.blocks["y"]
    Rc = cf.ema_component_end_value([z0[X[0, 0]], z0[Y[0, 0]]], [z0[X[0, 1]], z0[Y[0, 1]]], [ex, ey], [1, 1], TAU)
    rows.append(identity(M, "ε = 0 symbolic end state = R_C", sp.Matrix([fin[X[0, 0]] - Rc, fin[Y[0, 1]] - Rc]),
                         "invariants + null space"))
    # separation sector: the six roots of the closed-form polynomial are rates of the assembled flow
    K, n, mu, ex_, ey_, tau = SECTOR
    ms = EMATargetModel(balanced_couplings(K, n, mu), d=1, eta_x=ex_, eta_y=ey_, tau=tau)
    spec = ms.decay_rates()
    roots = cf.ema_sector_rates(K, n, mu, ex_, ey_, tau)
    dist = max(float(np.min(np.abs(spec - r))) for r in roots)
    rows.append(Check(M, f"sector polynomial roots ⊂ spectrum of −J, K={K}, n={n}, μ={mu}, τ={tau:g}",
                      f"max distance {dist:.1e}", "eigvals of the assembled Jacobian", dist / float(np.abs(roots).max()),
                      1e-9))
    slow = float(roots[0].real)
    nz = np.sort(spec.real[spec.real > 1e-9])[0]
    rows.append(close(M, "slowest nonzero rate = smallest sector root", nz, slow, 1e-9))
    r_a = cf.slow_rate(K, n, mu, ex_, ey_)
    rows.append(Check(M, "EMA slows collapse: r_s(τ) < r_s of model (a)", f"{slow:.6g}", f"{r_a:.6g}",
                      0.0 if slow < r_a else float("inf"), 0.0))
    big = float(cf.ema_sector_rates(K, n, mu, ex_, ey_, 1e6)[0].real)
    rows.append(close(M, "τ → ∞ (τ = 1e6): smallest root → §2 cubic root", big, r_a, 1e-5))
    # simulation: invariants, end state, decay rate
    tr = ms.simulate(t_end=30.0 / slow, seed=1, keep_states=True, n_points=60)
    inv = np.array([ms.invariants(ms.system.unpack(v)) for v in tr.states])
    drift = float(np.max(np.abs(inv - inv[0])) / np.max(np.abs(inv[0])))
    rows.append(Check(M, "Σ(z/η + Dξ/τ) conserved along a trajectory", f"max drift {drift:.1e}", "its value at t = 0",
                      drift, 1e-8))
    st0 = ms.initial_state(1)
    Z0 = np.vstack([st0["x"], st0["y"]])
    Xi0 = np.vstack([st0["xi_x"], st0["xi_y"]])
    R = cf.ema_end_state(Z0, Xi0, ms.eta, ms.graph.degree, tau, ms.graph.components)
    rows.append(close(M, "end state = R_C (simulation, connected graph)", tr.Z, R, 1e-6))
    fit = tr.fit_slow_rate(t_min=2.0 / slow, fraction=1.0)
    rows.append(close(M, "fitted decay of Δ_min = smallest sector root", fit, slow, 1e-3,
                      reference_text=f"{slow:.10g} (sector polynomial)"))
    return rows


# --- LaTeX ----------------------------------------------------------------------------------------
def latex_document() -> str:
    """The derivation as a standalone LaTeX document (every formula printed by SymPy)."""
    loss = ema_loss(1)
    fl = flow(1)
    ps = path_system()
    r = sp.Symbol("r")
    K, n, mu = sp.symbols("K n mu", positive=True)
    ex, ey = loss.rate("x"), loss.rate("y")
    poly = cf.ema_sector_polynomial(r, K, n, mu, ex, ey, TAU)
    invs = linear_invariants(ps)
    state = sp.Matrix(ps.state)
    parts = [section(
        "Loss, derived forces and the relaxation term",
        "Edge loss (one embedding coordinate; $\\xi$ is the EMA target of each node):",
        equation(r"\ell", loss.expr),
        "Derived per-edge forces $F_b = -\\partial \\ell / \\partial b$ (stop-gradient held):",
        equation(r"F_{(x,\,\xi_x)}", sp.Matrix(fl.force("x"))),
        equation(r"F_{(y,\,\xi_y)}", sp.Matrix(fl.force("y"))),
        "The targets follow the online embeddings by the relaxation term (not a gradient):",
        equation(r"\dot\xi_k", f"{tex(TAU)}\\left(z_k - \\xi_k\\right)"),
    ), section(
        "The assembled flow on the path graph",
        "Samples $x_0, x_1, x_2$ (the last one frustrated), labels $y_0, y_1$; column 1 of each node is its target:",
        equation(r"\dot\theta", sp.Matrix(ps.flow)),
        "Linear invariants found from the assembled flow (coefficients of $\\theta$):",
        *[equation("I", sp.expand((sp.Matrix(c).T * state)[0, 0])) for c in invs],
    ), section(
        "Separation sector of the balanced ensemble",
        "With $\\Xi = \\tau Z/(\\tau - r)$ for a mode $e^{-rt}$, the rates of the class-separation sector "
        "($\\omega = 2$) are the roots of",
        equation(r"\det\left[(\tau - r)(HD_s - rI) - \tau HA_s\right]", r"\sum_{k=0}^{6} c_k r^k"),
        "with the coefficients",
        *[equation(f"c_{k}", _by_powers(cf_k, TAU)) for k, cf_k in
          zip(range(6, -1, -1), sp.Poly(poly, r).all_coeffs())],
        "As $\\tau \\to \\infty$ the three slow roots tend to those of the embedding-only sector cubic.",
    )]
    return document("Model (d): an EMA target (BYOL-style)", *parts,
                    abstract="Every equation is printed by SymPy from the derived objects; the checks are in "
                             "the verification table.")


def _by_powers(expr, var) -> str:
    """expr as Σ_j (factored coefficient)·var^j, one power of var per line (aligned)."""
    body = ""
    for k, ((j,), a) in enumerate(sorted(sp.Poly(sp.expand(expr), var).terms(), reverse=True)):
        a = sp.factor(a)
        neg = a.could_extract_minus_sign()
        a = -a if neg else a
        coef = f"\\left({tex(a)}\\right)" if a.is_Add else ("" if a == 1 and j else tex(a))
        term = (coef + (f" {tex(var**j)}" if j else "")).strip()
        sign = ("- " if neg else "") if k == 0 else (" \\\\\n& - " if neg else " \\\\\n& + ")
        body += sign + term
    return "\\begin{aligned}[t] & " + body + "\n\\end{aligned}"


def write_latex(folder) -> list[Path]:
    out = ensure_writable_dir(folder) / "ema.tex"
    return [atomic_write_text(out, latex_document())]


def write_figures(folder) -> list[Path]:
    """No figures of its own."""
    return []
