r"""Invariant discovery on the head model (docs/model.md §3, §7).

Matrix level (every d, every graph; :func:`matrix_level`): with sg on both targets the engine finds
the matrix Σ_i x_i x_iᵀ/η_x + Σ_c y_c y_cᵀ/η_y − WᵀW/η_W, none with sg on one target or none, and
for the student with the head S Sᵀ/η_S + Σ_c y_c y_cᵀ/η_y − WᵀW/η_W; each is proved by the trace
calculus, cross-checked against the component discovery at d = 1, 2, 3, and checked numerically
along a d = 6 trajectory. Component level (the cross-check): the quadratic invariants of the
assembled flow on the path graph x₀–y₀–f–y₁–x₂, found (not supplied) for each sg placement.

With sg on both branches the engine finds I = Σ‖z_k‖²/η_k − ‖W‖_F²/η_W (d = 1) and, for
d = 2, the whole matrix Σ z zᵀ/η − WᵀW/η_W; without it (or with sg on one branch) none.
For the teacher–student variant (x = S u, docs/model.md §4, with the head) it finds
I = ‖S‖_F²/η_S + Σ‖y_c‖²/η_y − ‖W‖_F²/η_W: the same law with the student in place of x.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

import numpy as np

from ..models.head import HeadModel
from ..models.couplings import balanced_couplings
from ..symbolic import losses
from ..symbolic.assemble import assemble_symbolic
from ..symbolic.matrix_flow import derive_matrix_flow
from ..symbolic.matrix_invariants import cross_check_invariants, matrix_invariants
from ..symbolic.flow import derive_flow
from ..symbolic.invariants import quadratic_invariants, verify_invariant
from ..variants import head_loss, student_loss
from ..verification import Check

MODEL = "invariant discovery"
PATH = ((1, 0), (1, 1), (0, 1))
INPUTS = ((1, 0), (1, 1), (0, 1))  # per-sample inputs u_i of the student case (D = 2)


@lru_cache(maxsize=None)
def discovered() -> tuple:
    """((label, sg, ansatz, system, [invariants]), …) for the cases reported."""
    out = []
    P = [list(r) for r in PATH]
    for d, sg, ansatz in ((1, "both", "full"), (1, "none", "full"), (1, "label", "full"),
                          (1, "sample", "full"), (2, "both", "block"), (2, "none", "block")):
        S = assemble_symbolic(derive_flow(head_loss(d, sg)), P)
        out.append((f"head, d = {d}", sg, ansatz, S, tuple(quadratic_invariants(S, ansatz))))
    for sg in ("both", "none"):
        S = assemble_symbolic(derive_flow(student_loss(1, 2, head=True, sg=sg)), P,
                              data=[list(r) for r in INPUTS])
        out.append(("student x = S u with head, d = 1, D = 2", sg, "block", S,
                    tuple(quadratic_invariants(S, "block"))))
    return tuple(out)


MATRIX_CASES = (("head, sg on both targets", losses.head_matrix_loss("both", True)),
                ("head, sg on the labels only", losses.head_matrix_loss("labels", True)),
                ("head, sg on the samples only", losses.head_matrix_loss("samples", True)),
                ("head, no sg", losses.head_matrix_loss("none", True)),
                ("student x = S u with head, sg on both", losses.student_matrix_loss(True, "both")))


@lru_cache(maxsize=None)
def matrix_level() -> tuple:
    """((label, matrix flow, invariants), …): the matrix-level discovery, each invariant proved by
    the trace calculus (the component cross-check is a row of :func:`checks`)."""
    return tuple((label, derive_matrix_flow(ml), matrix_invariants(derive_matrix_flow(ml), check=False))
                 for label, ml in MATRIX_CASES)


def _terms(inv) -> dict:
    return {(c.block, c.form): sp.simplify(k) for c, k in inv.terms}


def trajectory_drift(d: int = 6, t_end: float = 10.0) -> tuple[float, float]:
    """(max_t |I(t) − I(0)| / max|I(0)|, max |θ(t_end) − θ(0)|) for the d×d matrix invariant of a
    sg head on B(3, 2, 1), integrated by DOP853 (docs/model.md §7)."""
    flow = derive_matrix_flow(losses.head_matrix_loss("both", True))
    (inv,) = matrix_invariants(flow, check=False)
    rates = {"x": 1.0, "y": 0.5, "W": 0.8}
    m = HeadModel(balanced_couplings(3, 2, 1), d=d, eta_x=rates["x"], eta_y=rates["y"], eta_W=rates["W"])
    tr = m.simulate(t_end=t_end, seed=1, n_points=12, keep_states=True, method="DOP853", rtol=1e-11, atol=1e-13)
    sub = {flow.loss.rate(b): v for b, v in rates.items()}
    vals = [sum(float(k.xreplace(sub)) * inv_term(c, m.system.unpack(v)[c.block]) for c, k in inv.terms)
            for v in tr.states]
    drift = max(float(np.max(np.abs(I - vals[0]))) for I in vals) / float(np.max(np.abs(vals[0])))
    return drift, float(np.max(np.abs(tr.states[-1] - tr.states[0])))


def inv_term(cand, A) -> np.ndarray:
    """A candidate term on numeric blocks: Σ n nᵀ = Aᵀ A for node rows, M, M Mᵀ, MᵀM."""
    A = np.asarray(A, dtype=float)
    if cand.block in ("x", "y"):
        return A.T @ A if cand.form == "gram" else A.sum(axis=0)[:, None]
    return {"sum": A, "gram": A @ A.T, "gramT": A.T @ A}[cand.form]


def _matrix_rows() -> list[Check]:
    rows = []
    for label, flow, invs in matrix_level():
        loss = flow.loss
        r = {b: loss.rate(b) for b in loss.learned}
        if "both" in label and "student" not in label:
            want = {("x", "gram"): 1 / r["x"], ("y", "gram"): 1 / r["y"], ("W", "gramT"): -1 / r["W"]}
            ref = "Σ x xᵀ/η_x + Σ y yᵀ/η_y − WᵀW/η_W (trace: docs/model.md §3)"
        elif "student" in label:
            want = {("S", "gram"): 1 / r["S"], ("y", "gram"): 1 / r["y"], ("W", "gramT"): -1 / r["W"]}
            ref = "S Sᵀ/η_S + Σ y yᵀ/η_y − WᵀW/η_W"
        else:
            want, ref = None, "none (no sg on both targets)"
        ok = (not invs) if want is None else (len(invs) == 1 and invs[0].level == "matrix" and _terms(invs[0]) == want)
        rows.append(Check(MODEL, f"matrix level (every d), {label}: invariants found and proved", f"{len(invs)} found",
                          ref, 0.0 if ok else float("inf"), 0.0))
    for label, flow, invs in matrix_level():
        if invs:  # raises DerivationCheckError on a disagreement
            rep = cross_check_invariants(flow, invs)
            rows.append(Check(MODEL, f"{label}: matrix invariant = component discovery at d = 1, 2, 3",
                              f"{sum(rep.values())} entries conserved and in the span",
                              "component quadratic invariants (path graph)",
                              0.0 if rep == {1: 1, 2: 4, 3: 9} else float("inf"), 0.0))
    drift, moved = trajectory_drift()
    rows.append(Check(MODEL, f"matrix invariant along a DOP853 trajectory (d = 6, state moved by {moved:.2f})",
                      f"{drift:.1e}", "constant", drift, 1e-8))
    return rows


def model_md_invariant(S) -> sp.Expr:
    """Σ‖z‖²/η − ‖W‖²/η_W written from the blocks of S (the reference, docs/model.md §3); for the
    student the sample term is ‖S‖_F²/η_S."""
    r = S.rates
    first = "x" if "x" in S.blocks else "S"
    return sp.expand(sum(e**2 for e in S.blocks[first]) / r[first] + sum(e**2 for e in S.blocks["y"]) / r["y"]
                     - sum(e**2 for e in S.blocks["W"]) / r["W"])


@lru_cache(maxsize=None)
def checks() -> tuple[Check, ...]:
    rows = _matrix_rows()
    for label, sg, ansatz, S, inv in discovered():
        claim = f"{label}, sg = {sg}: quadratic invariants found ({ansatz} ansatz)"
        ref = model_md_invariant(S)
        if sg == "both":
            expected = 3 if "d = 2" in label else 1
            # docs/model.md §3's I must lie in the span of what was found, and each must be conserved
            coeffs = sp.symbols(f"c0:{len(inv)}")
            resid = sp.expand(ref - sum(c * i.expr for c, i in zip(coeffs, inv)))
            in_span = bool(inv) and bool(sp.solve(sp.Poly(resid, *S.state).coeffs(), coeffs, dict=True))
            ok = len(inv) == expected and in_span and all(verify_invariant(i.expr, S) for i in inv)
            rows.append(Check(MODEL, claim, f"{len(inv)} found", f"{expected}, spanning Σ‖z‖²/η − ‖W‖²/η_W",
                              0.0 if ok else float("inf"), 0.0))
        else:
            rows.append(Check(MODEL, claim, f"{len(inv)} found", "none (no sg on both branches)",
                              0.0 if not inv else float("inf"), 0.0))
    return tuple(rows)
