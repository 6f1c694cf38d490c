r"""SimSiam-style linear predictor with stop-gradient (Tian, Chen & Ganguli 2021).

Loss (online weights W, linear predictor W_p, target τ·W behind a stop-gradient, data
correlation X, augmented views with E[x₁x₁ᵀ] = (1+σ²)X, weight decay η, predictor rate α_p):
    J = ½ tr(W_p W (1+σ²)X Wᵀ W_pᵀ) − τ tr(W_p W X sg(W)ᵀ) + η/(2α_p)‖W_p‖² + η/2‖W‖²,
    Ẇ = −∂J/∂W,  Ẇ_p = −α_p ∂J/∂W_p.
With W = diag(w_j), W_p = diag(p_j) in the eigenbasis X = diag(s_j) (the aligned case) the
flow closes mode by mode, and the derived mode equations are compared with the paper's
    ṗ_j = α_p s_j w_j² [τ − (1+σ²) p_j] − η p_j,    ẇ_j = w_j s_j p_j [τ − (1+σ²) p_j] − η w_j,
with the fixed points (0, 0) and p± = [τ ± √(τ² − 4η(1+σ²)/s_j)] / (2(1+σ²)), w² = p²/α_p
(existing iff η ≤ s_j τ²/(4(1+σ²))), the law p_j²/α_p − w_j² ∝ e^{−2ηt}, and the stability
statements: (0, 0) and p₊ stable, p₋ a saddle. (Transcribed from the paper's linear analysis;
the normalisation of σ² is ours: multiplicative augmentation, so that X' = (1+σ²)X.)

Matrix path (:func:`simsiam_matrix_loss`): J as an edge loss over input samples u_i with
X = Σ_i u_i u_iᵀ, ℓ_i = ½(1+σ²)‖W_p W u_i‖² − τ (W_p W u_i)ᵀ sg(W) u_i + λ_Q‖W_p‖²/2 + λ_W‖W‖²/2
(λ_W = η/N, λ_Q = η/(α_p N)),
derived once for every size d (W, W_p ∈ R^{d×d}); the explicit n = 2 derivation of J is its
cross-check, and the aligned-mode reduction is taken from the matrix-path flow.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from sympy import MatrixSymbol, Trace

from ..numerics.integrate import integrate
from ..numerics.kernels import compile_loss
from ..numerics.system import FlowSystem
from ..symbolic import matcalc as mc
from ..symbolic.matrix_flow import MatrixEdgeLoss, derive_matrix_flow
from ..symbolic.assemble import assemble_symbolic
from ..symbolic.flow import derive_flow
from ..symbolic.invariants import quadratic_invariants
from ..symbolic.loss import EdgeLoss
from ..symbolic.stopgrad import sg, stop_gradient, strip_stop_gradient
from ..symbolic.symbols import matrix, vector
from ..verification import Check, close, identity

MODEL = "literature: SimSiam (Tian 2021)"
sj, sigma2, tau_, eta, alpha = sp.symbols("s_j sigma2 tau eta alpha_p", positive=True)
POINT = {"s_j": 1.0, "sigma2": 0.25, "tau": 1.0, "eta": 0.05, "alpha_p": 0.5}  # below threshold


def matrix_flow(n: int = 2):
    """Derive Ẇ, Ẇ_p of J for n×n weights and X = diag(s_0 … s_{n−1}) (sg held while differentiating)."""
    W, Wp = matrix("W", n, n), matrix("Q", n, n)
    s = sp.symbols(f"s_0:{n}", positive=True)
    X = sp.diag(*s)
    J = (sp.Rational(1, 2) * (1 + sigma2) * (Wp * W * X * W.T * Wp.T).trace()
         - tau_ * (Wp * W * X * sg(W).T).trace()
         + eta / (2 * alpha) * sum(e**2 for e in Wp) + eta / 2 * sum(e**2 for e in W))
    Wdot = W.applyfunc(lambda w: -strip_stop_gradient(sp.diff(J, w)))
    Wpdot = Wp.applyfunc(lambda q: -alpha * strip_stop_gradient(sp.diff(J, q)))
    return W, Wp, s, Wdot, Wpdot


#: the weight decays on one of N input samples, λ_W = η/N and λ_Q = η/(α_p N) (a polynomial loss)
lam_W, lam_Q = sp.symbols("lambda_W lambda_Q", positive=True)


@lru_cache(maxsize=None)
def simsiam_matrix_loss() -> MatrixEdgeLoss:
    """J per input sample u ∈ R^d (data), W and W_p = Q ∈ R^{d×d} shared (rates 1 and α_p), the
    target sg(W), the weight decay spread over the N samples (λ_W = η/N, λ_Q = η/(α_p N)); the
    label block y is not used."""
    d = sp.Symbol("d", integer=True, positive=True)
    u, y, W, Q = MatrixSymbol("u", d, 1), MatrixSymbol("y", d, 1), MatrixSymbol("W", d, d), MatrixSymbol("Q", d, d)
    pred = Q * W * u
    expr = (sp.Rational(1, 2) * (1 + sigma2) * Trace(pred.T * pred) - tau_ * Trace(pred.T * sg(W) * u)
            + lam_Q / 2 * Trace(Q.T * Q) + lam_W / 2 * Trace(W.T * W))
    return MatrixEdgeLoss(expr, None, y, shared=(("W", W), ("Q", Q)), data=u,
                          rates=(("W", sp.S.One), ("Q", alpha)), learned=frozenset({"W", "Q"}), name="simsiam")


def matrix_path_flow(n: int = 2):
    """(Ẇ, Ẇ_p) of the matrix-level flow summed over the inputs u_j = √s_j e_j (X = diag(s)),
    in the explicit symbols of :func:`matrix_flow`."""
    W, Wp = matrix("W", n, n), matrix("Q", n, n)
    s = sp.symbols(f"s_0:{n}", positive=True)
    mflow = derive_matrix_flow(simsiam_matrix_loss())
    Wd, Qd = sp.zeros(n, n), sp.zeros(n, n)
    for j in range(n):
        vals = {"W": W, "Q": Wp, "u": sp.Matrix(n, 1, lambda i, _: sp.sqrt(s[j]) if i == j else 0)}
        decay = {lam_W: eta / n, lam_Q: eta / (alpha * n)}
        Wd += mc.explicit_chains(mflow.forces["W"], vals, (n, n)).subs(decay)
        Qd += alpha * mc.explicit_chains(mflow.forces["Q"], vals, (n, n)).subs(decay)
    return W, Wp, s, Wd.applyfunc(sp.expand), Qd.applyfunc(sp.expand), mflow


def mode_loss() -> EdgeLoss:
    """One aligned mode as an edge loss: x = w_j, y = p_j (rates 1 and α_p):
    ℓ = ½(1+σ²) s p² w² − τ s p w sg(w) + η/(2α_p) p² + η/2 w²."""
    w, p = vector("w", 1), vector("p", 1)
    W, P = w[0], p[0]
    expr = (sp.Rational(1, 2) * (1 + sigma2) * sj * P**2 * W**2 - tau_ * sj * P * W * stop_gradient(W)
            + eta / (2 * alpha) * P**2 + eta / 2 * W**2)
    return EdgeLoss(expr, w, p, rates=(("x", sp.S.One), ("y", alpha)), name="simsiam_mode")


def paper_mode_flow(w, p):
    """(ẇ, ṗ) of the paper's per-mode equations."""
    return (w * sj * p * (tau_ - (1 + sigma2) * p) - eta * w,
            alpha * sj * w**2 * (tau_ - (1 + sigma2) * p) - eta * p)


def paper_fixed_points():
    """(w, p) fixed points: (0, 0) and (±p±/√α_p, p±)."""
    disc = sp.sqrt(tau_**2 - 4 * eta * (1 + sigma2) / sj)
    pts = [(sp.S.Zero, sp.S.Zero)]
    for sgn in (1, -1):
        p = (tau_ + sgn * disc) / (2 * (1 + sigma2))
        pts += [(p / sp.sqrt(alpha), p), (-p / sp.sqrt(alpha), p)]
    return pts


@lru_cache(maxsize=None)
def derive() -> dict:
    W, Wp, s, Wdot, Wpdot, mflow = matrix_path_flow(2)  # the matrix path (every d) at n = 2
    _, _, _, cWdot, cWpdot = matrix_flow(2)  # its component cross-check: J differentiated at n = 2
    component_gap = sp.Matrix([*(Wdot - cWdot.applyfunc(sp.expand)), *(Wpdot - cWpdot.applyfunc(sp.expand))])
    w = sp.symbols("w_0:2", real=True)
    p = sp.symbols("p_0:2", real=True)
    sub = {W[a, b]: (w[a] if a == b else 0) for a in range(2) for b in range(2)}
    sub.update({Wp[a, b]: (p[a] if a == b else 0) for a in range(2) for b in range(2)})
    Wd, Pd = Wdot.xreplace(sub).applyfunc(sp.expand), Wpdot.xreplace(sub).applyfunc(sp.expand)
    loss = mode_loss()
    flow = derive_flow(loss)
    wm, pm = loss.x[0], loss.y[0]
    wdot = sp.expand(flow.force("x")[0])
    pdot = sp.expand(alpha * flow.force("y")[0])
    rational = {sj: sp.nsimplify(POINT["s_j"]), sigma2: sp.nsimplify(POINT["sigma2"]),
                tau_: sp.nsimplify(POINT["tau"]), eta: sp.nsimplify(POINT["eta"]),
                alpha: sp.nsimplify(POINT["alpha_p"])}
    sols = sp.solve([wdot.subs(rational), pdot.subs(rational)], [wm, pm], dict=True)  # exact, at the test point
    peq = sp.expand(sp.cancel(wdot / wm))  # ẇ = w · g(p)
    inv_eta0 = quadratic_invariants(assemble_symbolic(derive_flow(_mode_loss_eta0()), [[1]]), "full")
    return {"W": W, "Wp": Wp, "s": s, "Wd": Wd, "Pd": Pd, "w": w, "p": p, "loss": loss, "flow": flow,
            "matrix_flow": mflow, "component_gap": component_gap,
            "wm": wm, "pm": pm, "wdot": wdot, "pdot": pdot, "fixed": sols, "g": peq,
            "inv_eta0": inv_eta0}


def _mode_loss_eta0() -> EdgeLoss:
    l = mode_loss()
    return EdgeLoss(l.expr.subs(eta, 0), l.x, l.y, rates=l.rates, name="simsiam_mode_eta0")


def _num(expr) -> float:
    return float(sp.N(sp.sympify(expr).subs({sj: POINT["s_j"], sigma2: POINT["sigma2"], tau_: POINT["tau"],
                                             eta: POINT["eta"], alpha: POINT["alpha_p"]})))


@lru_cache(maxsize=None)
def _system():
    return FlowSystem(compile_loss(mode_loss()), [[1.0]], rates={"x": 1.0, "y": POINT["alpha_p"]},
                      params={k: v for k, v in POINT.items() if k != "alpha_p"} | {"alpha_p": POINT["alpha_p"]})


@lru_cache(maxsize=None)
def checks() -> tuple[Check, ...]:
    d = derive()
    rows = []
    w, p, s = d["w"], d["p"], d["s"]
    rows.append(identity(MODEL, "matrix-level flow of J (every size, inputs u_j = √s_j e_j) = explicit n = 2 derivation",
                         d["component_gap"], "J differentiated entry by entry"))
    off = [d["Wd"][0, 1], d["Wd"][1, 0], d["Pd"][0, 1], d["Pd"][1, 0]]
    rows.append(identity(MODEL, "aligned ansatz W, W_p diagonal is closed (off-diagonal flow ≡ 0)",
                         sp.Matrix(off), "derived matrix flow of J (n = 2)"))
    mode_from_matrix = []
    for j in range(2):
        pw, pp = paper_mode_flow(w[j], p[j])
        mode_from_matrix += [d["Wd"][j, j] - pw.subs(sj, s[j]), d["Pd"][j, j] - pp.subs(sj, s[j])]
    rows.append(identity(MODEL, "diagonal of the matrix flow = the paper's p_j, w_j equations",
                         sp.Matrix(mode_from_matrix), "Tian et al. 2021 eigenmode dynamics"))
    pw, pp = paper_mode_flow(d["wm"], d["pm"])
    rows.append(identity(MODEL, "engine mode flow (EdgeLoss, sg) = the paper's equations",
                         sp.Matrix([d["wdot"] - pw, d["pdot"] - pp]), "Tian et al. 2021 eigenmode dynamics"))
    # fixed points: the derived set equals the published set (counted, and each one checked)
    derived = d["fixed"]
    pub = paper_fixed_points()
    zero_flow = sp.Matrix([e for wp, ppt in pub for e in (pw.subs({d["wm"]: wp, d["pm"]: ppt}),
                                                          pp.subs({d["wm"]: wp, d["pm"]: ppt}))])
    rows.append(identity(MODEL, "published fixed points (0,0), (±p±/√α_p, p±) annihilate the derived flow",
                         zero_flow, "flow at each published fixed point"))
    num_der = sorted((round(_num(f[d["wm"]]), 12), round(_num(f[d["pm"]]), 12)) for f in derived)
    num_pub = sorted((round(_num(a), 12), round(_num(b), 12)) for a, b in pub)
    rows.append(close(MODEL, f"solve(flow = 0) finds {len(derived)} fixed points = the 5 published ones",
                      np.array(num_der) if len(num_der) == len(num_pub) else np.full(len(num_pub) * 2, np.nan),
                      np.array(num_pub), 1e-10, derived_text=f"{len(derived)} points",
                      reference_text=f"{len(pub)} points at the test parameters"))
    disc = sp.discriminant(sp.expand(d["g"]), d["pm"])  # ẇ = w·g(p): non-trivial p solve g(p) = 0
    eta_star = sp.solve(disc, eta)
    rows.append(identity(MODEL, "existence threshold: non-trivial fixed points iff η ≤ s τ²/(4(1+σ²))",
                         (eta_star[0] if len(eta_star) == 1 else sp.oo) - sj * tau_**2 / (4 * (1 + sigma2)),
                         "discriminant of g(p) = s p(τ − (1+σ²)p) − η"))
    rows.append(identity(MODEL, "d/dt(p²/α_p − w²) = −2η (p²/α_p − w²) along the derived flow",
                         sp.expand(2 * d["pm"] * d["pdot"] / alpha - 2 * d["wm"] * d["wdot"]
                                   + 2 * eta * (d["pm"]**2 / alpha - d["wm"]**2)), "paper's decay law"))
    inv = d["inv_eta0"]
    x0, y0 = sp.Symbol("x0_0", real=True), sp.Symbol("y0_0", real=True)
    ok = len(inv) == 1 and sp.simplify(inv[0].expr - (x0**2 - y0**2 / alpha)) == 0
    rows.append(Check(MODEL, "η = 0: invariant discovery finds exactly w² − p²/α_p", str(len(inv)),
                      "paper's conservation law at η = 0", 0.0 if ok else float("inf"), 0.0))
    # stability at the test parameters: eigenvalues of the engine's Jacobian at each fixed point
    sysm = _system()
    expected = {"(0,0)": "stable", "p+": "stable", "p-": "saddle"}
    names = ["(0,0)", "p+", "p+", "p-", "p-"]
    got = []
    for name, (wp, ppt) in zip(names, pub):
        ev = np.linalg.eigvals(sysm.jacobian(np.array([_num(wp), _num(ppt)])).toarray()).real
        kind = "stable" if np.all(ev < 0) else ("saddle" if np.any(ev > 0) and np.any(ev < 0) else "other")
        got.append(kind == expected[name])
    rows.append(Check(MODEL, "stability (engine Jacobian): (0,0) and p₊ stable, p₋ saddle",
                      f"{sum(got)}/5 as published", "Tian et al. 2021 stability statements",
                      0.0 if all(got) else float("inf"), 0.0))
    # integrated flow: the decay law and the two basins
    tt = np.linspace(0.0, 40.0, 41)
    sol = integrate(sysm.flow_vector, np.array([0.9, 0.2]), tt, jac=sysm.jacobian, rtol=1e-12, atol=1e-14)
    q = sol.y[:, 1] ** 2 / POINT["alpha_p"] - sol.y[:, 0] ** 2
    rows.append(close(MODEL, "integrated p²/α_p − w² = c·e^{−2ηt}", q, q[0] * np.exp(-2 * POINT["eta"] * tt),
                      1e-8, derived_text="BDF on the compiled flow", reference_text="paper's law"))
    long = np.array([0.0, 400.0])
    up = integrate(sysm.flow_vector, np.array([0.9, 0.2]), long, jac=sysm.jacobian).y[-1]
    down = integrate(sysm.flow_vector, np.array([0.05, 0.02]), long, jac=sysm.jacobian).y[-1]
    pplus = pub[1]
    rows.append(close(MODEL, "large initial weights converge to the p₊ fixed point", up,
                      [_num(pplus[0]), _num(pplus[1])], 1e-6))
    shrink = float(np.hypot(*down) / np.hypot(0.05, 0.02))
    rows.append(Check(MODEL, "small initial weights collapse to (0, 0): |θ(400)|/|θ(0)|", f"{shrink:.3g}",
                      "0 (collapse)", shrink, 1e-6))
    return tuple(rows)
