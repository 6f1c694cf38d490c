"""Appendix-style derivation of the embedding-only model (docs/model.md §2), run with the package.

    python derivations/embedding.py

loss → flow → class-separation sector (closure proof) → characteristic polynomial → slow rate
→ its series, each step printed; then the LaTeX of the same derivation is written next to this
file as embedding.tex (the model job's document, so the two cannot diverge).
"""
from __future__ import annotations

import sys
from pathlib import Path

import sympy as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from symcollapse.models.couplings import balanced_couplings  # noqa: E402
from symcollapse.models.embedding import EmbeddingModel, embedding_loss, embedding_sector, job  # noqa: E402
from symcollapse.outputs.appendix import step, write_latex  # noqa: E402
from symcollapse.symbolic.flow import derive_flow  # noqa: E402
from symcollapse.symbolic.series import slow_rate_series  # noqa: E402


def main() -> int:
    step("1. The loss of one edge (i, c) of the sample–label graph, L = Σ P_ic ℓ(x_i, y_c)")
    loss = embedding_loss(1)
    print("ℓ(x, y) =", loss.expr)

    step("2. The gradient flow, derived by the engine: F_b = −∂ℓ/∂b")
    flow = derive_flow(loss)
    print("F_x =", flow.force("x")[0], "   F_y =", flow.force("y")[0])

    step("3. Closure of the ansatz X v_c, F (v_a + v_b), Y v_c with Σ_b v_b = 0 on B(K, n, μ, ω)")
    sector = embedding_sector()
    for p in sector.closure:
        print(f"node {p.node}: flow = ({p.coefficient}) · pattern   [residual {p.residual}]")
    print("sector matrix M on (X, F, Y), general ω:")
    sp.pprint(sector.matrix)

    step("4. The characteristic polynomial det(r I + M), ω = 2")
    sector2 = embedding_sector(omega=2)
    print(sp.collect(sector2.charpoly, sector2.r))

    step("5. The slow root: leading order in μ and the fast-label limit in ε = m/N")
    ser = slow_rate_series(sector, omega=2, order=3)
    print("leading order in μ:   r_s ≈", ser.leading_mu)
    print("fast labels (η_y → ∞):   r_s =", ser.fast_closed_form)
    print("series:   r_s =", ser.fast_series, f"+ O(ε^{ser.order + 1})")

    K, n, mu = 3, 40, 2
    step(f"6. Check (K = {K}, n = {n}, μ = {mu}): the sector root against the assembled flow")
    root = sector2.rates(dict(eta_x=1.0, eta_y=1.0, n=n, mu=mu, K=K))[0]
    full = EmbeddingModel(balanced_couplings(K, n, mu), d=1).slow_rate()
    print(f"sector root {root:.12g}   smallest nonzero eigenvalue of H L_G {full:.12g}")

    write_latex(__file__, job.latex_document())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
