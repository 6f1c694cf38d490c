r"""Invariant discovery on the head model (docs/model.md §3): the quadratic invariants of the
assembled flow on the path graph x₀–y₀–f–y₁–x₂, found (not supplied) for each sg placement.

With sg on both branches the engine finds I = Σ‖z_k‖²/η_k − ‖W‖_F²/η_W (d = 1) and, for
d = 2, the whole matrix Σ z zᵀ/η − WᵀW/η_W; without it (or with sg on one branch) none.
For the teacher–student variant (x = S u, docs/model.md §4, with the head) it finds
I = ‖S‖_F²/η_S + Σ‖y_c‖²/η_y − ‖W‖_F²/η_W: the same law with the student in place of x.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..symbolic.assemble import assemble_symbolic
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


def model_md_invariant(S) -> sp.Expr:
    """Σ‖z‖²/η − ‖W‖²/η_W written from the blocks of S (the reference, docs/model.md §3); for the
    student the sample term is ‖S‖_F²/η_S."""
    r = S.rates
    first = "x" if "x" in S.blocks else "S"
    return sp.expand(sum(e**2 for e in S.blocks[first]) / r[first] + sum(e**2 for e in S.blocks["y"]) / r["y"]
                     - sum(e**2 for e in S.blocks["W"]) / r["W"])


@lru_cache(maxsize=None)
def checks() -> tuple[Check, ...]:
    rows = []
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
