"""Appendix-style derivation of the projection-head model with stop-gradient (docs/model.md §3),
run with the package.

    python derivations/head.py

loss → derived forces (with / without sg) → invariant and its time derivative → single-mode
fixed-point conditions → ν_sep from the separation sector of D⁻¹A → K = 2 mean-field reduction
(closure proof) → self-consistency and invariant-selected end state → derived stability of the
fixed-point families, each step printed; then the LaTeX of the same derivation is written next
to this file as head.tex (the model job's document).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import sympy as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from symcollapse import closed_forms as cf  # noqa: E402
from symcollapse.models.couplings import balanced_couplings  # noqa: E402
from symcollapse.models.head import HeadModel, graph_modes, head_loss, job, nu_sep  # noqa: E402
from symcollapse.models.head import meanfield, sector  # noqa: E402
from symcollapse.numerics import families  # noqa: E402
from symcollapse.outputs.appendix import step, write_latex  # noqa: E402
from symcollapse.symbolic.assemble import assemble_symbolic  # noqa: E402
from symcollapse.symbolic.flow import derive_flow  # noqa: E402

PATH_P = [[1, 0], [0, 1], [1, 1]]  # x1–y1–f–y2–x2


def main() -> int:
    step("1. Edge loss (d = 2) and its derived forces")
    fl, fl0 = derive_flow(head_loss(2, True)), derive_flow(head_loss(2, False))
    print("ℓ =", fl.loss.expr)
    for b in ("x", "y", "W"):
        print(f"F_{b} (sg)    =", list(fl.force(b)))
    print("F_x (no sg) =", list(fl0.force("x")))

    step("2. Invariant I = Σ‖z‖²/η − ‖W‖²/η_W on the path graph x1–y1–f–y2–x2 (d = 1)")
    for sg in (True, False):
        s = assemble_symbolic(derive_flow(head_loss(1, sg)), PATH_P)
        rates = (s.rates[b] for b in ("x", "y", "W"))
        inv = cf.head_invariant(s.blocks["x"], s.blocks["y"], s.blocks["W"], *rates)
        print(f"dI/dt {'with' if sg else 'without'} sg =", sp.factor(sp.simplify(s.time_derivative(inv))))

    step("3. Single-mode fixed-point condition c(a) = F_x(a, 0) + ν F_x(0, a) = 0")
    c1, a, W, nu = meanfield.mode_condition(True, 2)
    c0, *_ = meanfield.mode_condition(False, 2)
    print("with sg:    c =", list(c1))
    print("without sg: aᵀc =", sp.factor(sp.expand((a.T * c0)[0])))

    step("4. Class-separation sector of D⁻¹A and ν_sep²")
    M, _ = sector.separation_sector()
    print("M =", M)
    print("ν_sep² =", sector.separation_nu_squared()[0])
    vals, _ = graph_modes(balanced_couplings(4, 40, 3))
    print("K = 4, n = 40, μ = 3: ν_sep =", nu_sep(4, 40, 3), "  non-zero eigenvalues of Aφ = νDφ:",
          np.round(vals[np.abs(vals) > 1e-9], 10))

    step("5. Mean-field reduction (K = 2, antisymmetric sector), closure")
    mf = meanfield.derive_meanfield(True)
    for name, r in mf.closure:
        print(f"  {name}: residual {r}")
    for v, e in zip(mf.variables, mf.rhs):
        print(f"  d{v}/dt =", e)

    step("6. Self-consistency and end state")
    sol = meanfield.self_consistency(True)
    print("w*² =", sol["w2"], "  Y*/X* =", sol["Y_over_X"])
    print("Y_∞² =", sol["Yinf2"])

    step("7. Derived stability of the fixed-point families (B(2, 3, 1), engine Jacobian, symmetries removed)")
    P2 = balanced_couplings(2, 3, 1)
    for d in (1, 2, 3):
        model = HeadModel(P2, d=d, eta_x=1.0, eta_y=0.5, eta_W=1.0)
        kinds = {f.key: families.classify_family(model, f, spare=0.5 if f.rank < d else 0.0).kind
                 for f in families.enumerate_families(P2, d)}
        print(f"  d = {d}: stable {[k for k, v in kinds.items() if v == 'stable']}, "
              f"{sum(v == 'saddle' for v in kinds.values())} saddle, "
              f"{sum(v == 'degenerate' for v in kinds.values())} degenerate")

    write_latex(__file__, job.latex_document())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
