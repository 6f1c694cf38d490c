"""Appendix-style derivation of the linear teacher–student model, run with the package.

    python derivations/teacher_student.py

(docs/model.md §4) loss in x → the map x = S u and its Jacobian → chain rule F_S = F_x uᵀ (checked against the
composite loss) → induced flow Ẋ = η_S G F_X → its Jacobian −blockdiag(η_S G, η_y I) L_G → slow
rate, invariants; each step printed. The LaTeX of the same derivation is written next to this
file as teacher_student.tex (the model job's document, so the two cannot diverge).
"""
from __future__ import annotations

import sys
from pathlib import Path

import sympy as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from symcollapse.models import teacher_student as ts  # noqa: E402
from symcollapse.models.teacher_student import TeacherStudentModel, job  # noqa: E402
from symcollapse.outputs.appendix import step, write_latex  # noqa: E402


def main() -> int:
    # 1. The edge loss, written in the sample embedding x (d = 1 for readability).
    lm = ts.derive_student_map(1, False, True, 2)
    step("edge loss in x")
    print("l(x, y) =", lm.base.loss.expr)
    print("F_x =", lm.base.force("x")[0], "   F_y =", lm.base.force("y")[0])

    # 2. The map x = S u: its Jacobian, derived from x_k = sum_j S_kj u_j.
    step("map Jacobian d(Su)/dvec(S)  (form delta_mk u_j: the same for every D)")
    sp.pprint(lm.map_jacobian)

    # 3. Chain rule, and the composite loss differentiated directly (they agree exactly).
    step("F_S = F_x u^T")
    sp.pprint(lm.force_S)
    print("composite-loss force minus chain rule:",
          sp.expand(sp.Matrix(lm.composite.force("S")) - sp.Matrix(lm.force_S)))
    lmh = ts.derive_student_map(1, True, True, 2)
    step("with the shared head and stop-gradient: F_S")
    sp.pprint(lmh.force_S)

    # 4. Induced flow on the path graph x1-y1-f-y2-x2, symbolic 3x3 inputs U.
    step("U S'^T - eta_S G F_X on the path graph (zero: X' = -eta_S G dL/dX)")
    print(list(ts.induced_flow_difference()))
    step("Jacobian of (X', Y') + blockdiag(eta_S G, eta_y I) L_G (zero)")
    print(set(ts.induced_jacobian_difference()))

    # 5. Invariants: one per connected component, with G^-1.
    for name, P in (("path graph", ts.PATH_P), ("eps = 0", ts.SPLIT_P)):
        system, basis, proposed = ts.component_invariants(P)
        step(f"linear invariants ({name}): {len(basis)} found")
        for I in proposed:
            print("I_C =", I, "   dI/dt =", system.time_derivative(I))
    step("head + sg: d/dt(|S|^2/eta_S + |Y|^2/eta_y - |W|^2/eta_W)")
    print(ts.norm_invariant_rate(True), "   (without sg it is not zero)")

    # 6. Numbers: slow rate vs the fitted decay of Delta_min.
    step("slow rate vs fitted decay of Delta_min (K = 2)")
    for eps in (0.05, 0.1):
        m = TeacherStudentModel(K=2, n_inputs=40, D=400, d=2, eps=eps)
        r = m.slow_rate()
        tr = m.simulate(22.0 / r, n_points=300)  # Δ_min falls by about e^{-22}
        print(f"eps = {eps}: r_s = {r:.10g}, fitted {tr.fit_slow_rate():.10g}, "
              f"model (a) on the same couplings {m.model_a_rate():.10g}")

    write_latex(__file__, job.latex_document())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
