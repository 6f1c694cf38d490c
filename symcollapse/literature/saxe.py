r"""Saxe, McClelland & Ganguli (2014), two-layer linear network, one input–output mode.

Loss of the mode (strength s, layer weights a, b, time constant τ, rates 1/τ):
    ℓ = ½ (s − a b)²,    τ ȧ = b (s − a b),   τ ḃ = a (s − a b).
a² − b² is conserved; on the balanced manifold a = b the strength u = a b obeys
    τ u̇ = 2u(s − u),  u(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/u₀),
and u reaches u_f at t_f = (τ/2s) ln[u_f (s − u₀) / (u₀ (s − u_f))] (the published forms).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from ..numerics.integrate import integrate
from ..symbolic.assemble import assemble_symbolic
from ..symbolic.flow import derive_flow
from ..symbolic.invariants import quadratic_invariants
from ..symbolic.loss import EdgeLoss
from ..symbolic.symbols import vector
from ..verification import Check, close, identity
from ..numerics.kernels import compile_loss
from ..numerics.system import FlowSystem

MODEL = "literature: Saxe 2014"
s, tau, t, u, u0, uf = sp.symbols("s tau t u u_0 u_f", positive=True)


def saxe_loss() -> EdgeLoss:
    """ℓ = ½(s − a b)² on one edge: a is the 'sample' weight, b the 'label' weight, rates 1/τ."""
    a, b = vector("a", 1), vector("b", 1)
    return EdgeLoss(sp.Rational(1, 2) * (s - a[0] * b[0]) ** 2, a, b,
                    rates=(("x", 1 / tau), ("y", 1 / tau)), name="saxe_mode")


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
    loss = saxe_loss()
    flow = derive_flow(loss)
    a, b = loss.x[0], loss.y[0]
    adot = loss.rate("x") * flow.force("x")[0]
    bdot = loss.rate("y") * flow.force("y")[0]
    udot = sp.expand(adot * b + a * bdot)  # d(ab)/dt
    udot_u = sp.factor(udot.subs({a: sp.sqrt(u), b: sp.sqrt(u)}))  # balanced: a = b = √u
    system = assemble_symbolic(flow, [[1]])
    invariants = quadratic_invariants(system, "full")
    t_learn = sp.integrate(sp.apart(1 / udot_u, u), (u, u0, uf), conds="none")  # t_f = ∫ du/u̇
    return {"loss": loss, "flow": flow, "adot": adot, "bdot": bdot, "udot": udot_u,
            "invariants": invariants, "system": system, "t_learn": t_learn}


@lru_cache(maxsize=None)
def simulate(s_val: float = 2.0, tau_val: float = 1.5, u0_val: float = 1e-3, t_end: float = 4.0):
    """Integrate the engine's compiled flow from a = b = √u₀; returns (t, a b)."""
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
