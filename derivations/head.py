"""Appendix-style derivation of the projection-head model with stop-gradient, run with the package.

    python derivations/head.py

loss → derived forces (with / without sg) → invariant and its time derivative → single-mode
fixed-point conditions → ν_sep from the separation sector of D⁻¹A → K = 2 mean-field reduction
(closure proof) → self-consistency and invariant-selected end state → stability of the fixed
points and the d-vs-2K boundary, each step printed; then the LaTeX of the same derivation is
written next to this file as head.tex (built by the job's LaTeX builder).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import sympy as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

from symcollapse.models.head import job  # noqa: E402
from symcollapse.models.couplings import balanced_couplings  # noqa: E402
from symcollapse.models.head import graph_modes, nu_sep  # noqa: E402
from symcollapse.models.head import stability as st  # noqa: E402
from symcollapse.outputs.io import atomic_write_text  # noqa: E402
from symcollapse.models.head import meanfield as mfm  # noqa: E402


def step(title: str) -> None:
    print(f"\n== {title} ==")


def main() -> int:
    step("1. Edge loss (d = 2) and its derived forces")
    fl, fl0 = job.flow(2, True), job.flow(2, False)
    print("ℓ =", fl.loss.expr)
    for b in ("x", "y", "W"):
        print(f"F_{b} (sg)    =", list(fl.force(b)))
    print("F_x (no sg) =", list(fl0.force("x")))

    step("2. Invariant I = Σ‖z‖²/η − ‖W‖²/η_W on the path graph x1–y1–f–y2–x2 (d = 1)")
    s1, s0 = job.path_system(True), job.path_system(False)
    print("dI/dt with sg    =", sp.simplify(s1.time_derivative(job.invariant_expr(s1))))
    print("dI/dt without sg =", sp.factor(s0.time_derivative(job.invariant_expr(s0))))

    step("3. Single-mode fixed-point condition c(a) = F_x(a, 0) + ν F_x(0, a) = 0")
    c1, a, W, nu = mfm.mode_condition(True, 2)
    c0, *_ = mfm.mode_condition(False, 2)
    print("with sg:    c =", list(c1))
    print("without sg: aᵀc =", sp.factor(sp.expand((a.T * c0)[0])))

    step("4. Class-separation sector of D⁻¹A and ν_sep²")
    M, _ = mfm.separation_sector()
    print("M =", M)
    expr, _ = mfm.separation_nu_squared()
    print("ν_sep² =", expr)
    P = balanced_couplings(4, 40, 3)
    vals, _ = graph_modes(P)
    print("K=4, n=40, μ=3: ν_sep =", nu_sep(4, 40, 3), " non-zero eigh(A, D):",
          np.round(vals[np.abs(vals) > 1e-9], 10))

    step("5. Mean-field reduction (K = 2, antisymmetric sector), closure")
    mf = mfm.derive_meanfield(True)
    for name, r in mf.closure:
        print(f"  {name}: residual {r}")
    for v, e in zip(mf.variables, mf.rhs):
        print(f"  d{v}/dt =", e)

    step("6. Self-consistency and end state")
    sol = mfm.self_consistency(True)
    print("w*² =", sol["w2"], "  Y*/X* =", sol["Y_over_X"])
    print("Y_∞² =", sol["Yinf2"])

    step("7. Stability: engine Jacobian with the fixed-point family removed (K = 2, n = 3, μ = 1)")
    P2 = balanced_couplings(2, 3, 1)
    v2, _ = graph_modes(P2)
    L = len(v2)
    for d, keep in ((1, [L - 1]), (1, [L - 2]), (2, [0, L - 1]), (2, [1, L - 2]), (3, [0, 1, L - 1]),
                    (4, [0, 1, L - 2, L - 1])):
        res, _ = st.analyse_fixed_point(P2, d, keep, eta=(1.0, 0.5, 1.0))
        print(f"  d={d} kept ν={np.round(v2[keep], 3)}: {res.kind:8s} (rule: {st.predicted_kind(v2, keep)}), "
              f"max Re λ = {res.max_real:.3g}")
    print("boundary K=4:", st.phase_boundary(4, nu_sep(4, 40, 3), 12))

    out = atomic_write_text(HERE / "head.tex", job.latex_document())
    print(f"\nwrote {out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
