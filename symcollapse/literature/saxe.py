r"""Saxe, McClelland & Ganguli (2014), two-layer linear network, one input–output mode.

Loss of the mode (strength s, layer weights a, b, time constant τ, rates 1/τ):
    ℓ = ½ (s − a b)²,    τ ȧ = b (s − a b),   τ ḃ = a (s − a b).
a² − b² is conserved; on the balanced manifold a = b the strength u = a b obeys
    τ u̇ = 2u(s − u),  u(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/u₀),
and u reaches u_f at t_f = (τ/2s) ln[u_f (s − u₀) / (u₀ (s − u_f))] (the published forms).

Matrix path: the mode is derived once for a hidden layer of any width d, a ∈ R^d (input → hidden),
b ∈ R^d (hidden → output), ℓ = ½(s − bᵀa)² (:func:`saxe_matrix_loss`): τ ȧ = (s − bᵀa) b,
τ ḃ = (s − bᵀa) a, cross-checked against the component derivation at d = 1, 2, 3; the engine's
matrix-level invariant search finds Saxe's balancedness τ(a aᵀ − b bᵀ) (docs/model.md §7). The
published scalar mode is its d = 1 case (:func:`saxe_loss`, the component cross-check).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from sympy import Identity, MatrixSymbol

from ..numerics.integrate import integrate
from ..numerics.kernels import compile_loss
from ..numerics.system import FlowSystem
from ..symbolic import matcalc as mc
from ..symbolic.assemble import assemble_symbolic
from ..symbolic.flow import derive_flow
from ..symbolic.invariants import quadratic_invariants
from ..symbolic.loss import EdgeLoss
from ..symbolic.matrix_flow import MatrixEdgeLoss, cross_check, derive_matrix_flow
from ..symbolic.matrix_invariants import matrix_invariants
from ..verification import Check, close, identity

MODEL = "literature: Saxe 2014"
s, tau, t, u, u0, uf = sp.symbols("s tau t u u_0 u_f", positive=True)


d = sp.Symbol("d", integer=True, positive=True)


@lru_cache(maxsize=None)
def saxe_matrix_loss() -> MatrixEdgeLoss:
    """ℓ = ½(s − bᵀa)², a, b ∈ R^d (a hidden layer of width d), a the 'sample' block, b the
    'label' block, rates 1/τ; written with matrix symbols of symbolic size d."""
    a, b = MatrixSymbol("a", d, 1), MatrixSymbol("b", d, 1)
    r = s * Identity(1) - b.T * a
    return MatrixEdgeLoss(sp.Rational(1, 2) * (r.T * r), a, b, rates=(("x", 1 / tau), ("y", 1 / tau)),
                          name="saxe_mode")


def saxe_loss() -> EdgeLoss:
    """The published scalar mode ℓ = ½(s − a b)² on one edge: the d = 1 components of
    :func:`saxe_matrix_loss` (a the 'sample' weight, b the 'label' weight, rates 1/τ)."""
    return saxe_matrix_loss().component(d=1, name="saxe_mode")


def published_u(tt=t):
    """u(t) = s e^{2st/τ}/(e^{2st/τ} − 1 + s/u₀)."""
    E = sp.exp(2 * s * tt / tau)
    return s * E / (E - 1 + s / u0)


def published_learning_time():
    """t_f = (τ/2s) ln[u_f(s − u₀)/(u₀(s − u_f))]."""
    return tau / (2 * s) * sp.log(uf * (s - u0) / (u0 * (s - uf)))


@lru_cache(maxsize=None)
def derive() -> dict:
    """Mode equation, its solution and learning time, all derived from ℓ."""
    mloss = saxe_matrix_loss()
    mflow = derive_matrix_flow(mloss)  # cross-checked against the component path at d = 1, 2, 3
    loss = saxe_loss()
    flow = derive_flow(loss)
    a, b = loss.x[0], loss.y[0]
    one = {"a": sp.Matrix([[a]]), "b": sp.Matrix([[b]])}  # the matrix-level forces at d = 1
    adot = loss.rate("x") * mc.explicit_chains(mflow.forces["x"], one, (1, 1))[0]
    bdot = loss.rate("y") * mc.explicit_chains(mflow.forces["y"], one, (1, 1))[0]
    udot = sp.expand(adot * b + a * bdot)  # d(ab)/dt
    udot_u = sp.factor(udot.subs({a: sp.sqrt(u), b: sp.sqrt(u)}))  # balanced: a = b = √u
    system = assemble_symbolic(flow, [[1]])
    invariants = quadratic_invariants(system, "full")
    t_learn = sp.integrate(sp.apart(1 / udot_u, u), (u, u0, uf), conds="none")  # t_f = ∫ du/u̇
    return {"loss": loss, "flow": flow, "adot": adot, "bdot": bdot, "udot": udot_u,
            "invariants": invariants, "system": system, "t_learn": t_learn, "matrix_loss": mloss,
            "matrix_flow": mflow, "matrix_invariants": matrix_invariants(mflow),
            "component_force_at_d1": (flow.force("x")[0], flow.force("y")[0])}


@lru_cache(maxsize=None)
def simulate(s_val: float = 2.0, tau_val: float = 1.5, u0_val: float = 1e-3, t_end: float = 4.0):
    """Integrate the engine's compiled flow from a = b = √u₀; returns (t, a b)."""
    # (the mode's forces are cubic in the node vectors: the component kernels at d = 1 integrate it)
    sysm = FlowSystem(compile_loss(saxe_loss()), [[1.0]], rates={"x": 1 / tau_val, "y": 1 / tau_val},
                      params={"s": s_val})
    tt = np.linspace(0.0, t_end, 81)
    v0 = np.full(2, np.sqrt(u0_val))
    sol = integrate(sysm.flow_vector, v0, tt, jac=sysm.jacobian, rtol=1e-13, atol=1e-15)
    return tt, sol.y[:, 0] * sol.y[:, 1], sysm


@lru_cache(maxsize=None)
def checks() -> tuple[Check, ...]:
    d = derive()
    rows = []
    fx, fy = d["component_force_at_d1"]
    rows.append(identity(MODEL, "matrix path (any width d) at d = 1 = the component derivation of ℓ = ½(s − ab)²",
                         sp.Matrix([d["adot"] - fx / tau, d["bdot"] - fy / tau]), "component engine"))
    report = cross_check(d["matrix_flow"])
    rows.append(Check(MODEL, "matrix-level forces and JVPs = component derivation at d = 1, 2, 3",
                      f"{sum(report.values())} identities", "component engine", 0.0, 0.0))
    inv = d["matrix_invariants"]
    mterms = {(c.block, c.form): sp.simplify(k) for c, k in inv[0].terms} if len(inv) == 1 else {}
    rows.append(Check(MODEL, "matrix-level invariant: exactly one, τ(a aᵀ − b bᵀ) (balancedness, every d)",
                      f"{len(inv)} found", "Saxe et al.: W₁W₁ᵀ − W₂ᵀW₂ conserved",
                      0.0 if mterms == {("x", "gram"): tau, ("y", "gram"): -tau} else float("inf"), 0.0))
    rows.append(identity(MODEL, "balanced mode: τ u̇ = 2u(s − u) derived from ℓ = ½(s − ab)²",
                         d["udot"] - 2 * u * (s - u) / tau, "published mode equation"))
    inv = d["invariants"]
    a, b = d["system"].state
    rows.append(Check(MODEL, "quadratic invariants found: exactly one, ∝ a² − b²", str(len(inv)),
                      "a² − b² (balancedness)", 0.0 if len(inv) == 1 and sp.simplify(
                          inv[0].expr - tau * (a**2 - b**2)) == 0 else float("inf"), 0.0))
    pu = published_u()
    rows.append(identity(MODEL, "published u(t) solves the derived mode equation, u(0) = u₀",
                         sp.Matrix([pu.diff(t) - d["udot"].subs(u, pu), pu.subs(t, 0) - u0]),
                         "u̇ − f(u) and u(0) − u₀ simplified"))
    rows.append(_numeric_identity("learning time ∫ du/u̇ from u₀ to u_f", d["t_learn"],
                                  published_learning_time()))
    tt, ab, sysm = simulate()
    ref = sp.lambdify(t, published_u().subs({s: 2.0, tau: 1.5, u0: 1e-3}), "numpy")(tt)
    rows.append(close(MODEL, "integrated engine flow a(t)b(t) vs published u(t), t ∈ [0, 4]", ab, ref, 1e-8,
                      derived_text="BDF on the compiled flow", reference_text="closed form"))
    tf = float(published_learning_time().subs({s: 2.0, tau: 1.5, u0: 1e-3, uf: 1.0}))
    tt2 = np.array([0.0, tf])
    sol = integrate(sysm.flow_vector, np.full(2, np.sqrt(1e-3)), tt2, jac=sysm.jacobian, rtol=1e-13, atol=1e-15)
    rows.append(close(MODEL, f"u at the published learning time t_f = {tf:.6g} (u_f = 1)",
                      sol.y[-1, 0] * sol.y[-1, 1], 1.0, 1e-8))
    return tuple(rows)


def _numeric_identity(claim, derived, reference) -> Check:
    """Max relative gap between two closed forms at 5 random points (30-digit evaluation)."""
    rng = np.random.default_rng(7)
    errs = []
    for _ in range(5):
        sv = rng.uniform(1.0, 3.0)
        pt = {s: sv, tau: rng.uniform(0.5, 2.0), u0: sv * rng.uniform(0.01, 0.4),
              uf: sv * rng.uniform(0.5, 0.95), t: rng.uniform(0.1, 2.0)}
        dv, rv = complex(sp.N(derived.subs(pt), 30)), complex(sp.N(reference.subs(pt), 30))
        errs.append(abs(dv - rv) / abs(rv))
    return Check(MODEL, claim, "derived (SymPy)", "published form at 5 random points",
                 float(max(errs)), 1e-12)
