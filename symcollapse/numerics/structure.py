r"""Structure detection of a component-level derived flow (docs/model.md §2–§4).

Node forces affine in the node variables z, F_b = c_b + A_bx x + A_bu u + A_by y, and shared
forces quadratic in z, Σ_e p_e F_θ(e) = f(θ; M₀, M₁, M₂) over the edge moments: then the flow is
a few dense matrix products (the *moment* path of :class:`~symcollapse.numerics.system.FlowSystem`).
"""
from __future__ import annotations

import itertools

import sympy as sp

from ..symbolic import polydiff
from ..symbolic.flow import EdgeFlow
from ..symbolic.loss import LABEL, SAMPLE, EdgeLoss
from .lambdify import AffineCoefficient, _affine_coefficient, lambdify_list


def _node_parts(loss: EdgeLoss):
    return {"x": tuple(loss.x), "u": tuple(loss.data_symbols), "y": tuple(loss.y)}


def _affine_structure(flow: EdgeFlow, shared_args):
    """F_b = c_b + A_bx x + A_bu u + A_by y for node blocks b, or None if not affine."""
    loss = flow.loss
    z = set(loss.node_symbols)
    parts = _node_parts(loss)
    out = {}
    for b in (SAMPLE, LABEL):
        if b not in flow.learned:
            continue
        F = sp.Matrix(flow.force(b))
        coefs = {}
        for key, syms in parts.items():
            if not syms:
                coefs[key] = AffineCoefficient("zero", None, (len(F), 0))
                continue
            J = sp.Matrix(len(F), len(syms), lambda r, k: 0)
            for r, e in enumerate(F):
                for k, (sym, de) in enumerate(polydiff.gradient(e, syms).items()):
                    J[r, k] = de
            if any(e.free_symbols & z for e in J):
                return None
            coefs[key] = _affine_coefficient(J, shared_args)
        c = F.xreplace({s: 0 for s in z})
        coefs["c"] = (AffineCoefficient("general", lambdify_list(shared_args, list(c)), (len(F),))
                      if any(e != 0 for e in c) else AffineCoefficient("zero", None, (len(F), 1)))
        out[b] = coefs
    return out


def _moment_structure(flow: EdgeFlow, shared_args):
    """Σ_e p_e F_θ(e) as a function of the moments M₀, M₁, M₂ of z, or None if not quadratic."""
    loss = flow.loss
    z = list(loss.node_symbols)
    nz = len(z)
    zset = set(z)
    zpos = {v: p for p, v in enumerate(z)}
    m0 = sp.Symbol("M0")
    m1 = [sp.Symbol(f"M1_{p}") for p in range(nz)]
    m2 = {(p, q): sp.Symbol(f"M2_{p}_{q}") for p in range(nz) for q in range(p, nz)}
    msyms = (m0, *m1, *m2.values())
    out = {}
    for b in loss.shared_names:
        if b not in flow.learned:
            continue
        exprs = []
        for e in flow.force(b):
            if not z:
                exprs.append(e * m0)
                continue
            acc = []
            for t in polydiff.terms(e):
                split = polydiff.split_monomial(t, zset)
                if split is None or len(split[1]) > 2:
                    return None, msyms
                coeff, zs = split
                idx = sorted(zpos[v] for v in zs)
                if len(idx) == 0:
                    acc.append(coeff * m0)
                elif len(idx) == 1:
                    acc.append(coeff * m1[idx[0]])
                else:
                    acc.append(coeff * m2[(idx[0], idx[1])])
            exprs.append(sp.Add(*acc))
        out[b] = lambdify_list(tuple(shared_args) + msyms, exprs)
    return out, msyms


def moment_index(nz: int):
    """Order of the moment symbols (M0, M1_p…, M2_pq for p ≤ q) used by the moment kernels."""
    return [(p, q) for p, q in itertools.combinations_with_replacement(range(nz), 2)]
