"""Appendix-style derivation of the embedding-only model, run with the package.

    python derivations/embedding.py

loss → flow → class-separation sector (closure proof) → characteristic polynomial → slow rate
→ its series, each step printed; then the LaTeX of the same derivation is written next to this
file as embedding.tex (built by the job's LaTeX builder, so the two cannot diverge).
"""
from __future__ import annotations

import sys
from pathlib import Path

import sympy as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

from symcollapse.models.embedding import job  # noqa: E402
from symcollapse.models.embedding import EmbeddingModel, embedding_loss  # noqa: E402
from symcollapse.models.couplings import balanced_couplings  # noqa: E402
from symcollapse.outputs.io import atomic_write_text  # noqa: E402
from symcollapse.symbolic.flow import derive_flow  # noqa: E402


def step(title: str) -> None:
    print(f"\n== {title} ==")


def main() -> int:
    # 1. The loss: one edge (i, c) of the sample–label graph, L = Σ P_ic ℓ(x_i, y_c).
    loss = embedding_loss(1)
    step("edge loss")
    print("l(x, y) =", loss.expr)

    # 2. The gradient flow, derived by the engine.
    flow = derive_flow(loss)
    step("derived forces F_b = -dl/db")
    print("F_x =", flow.force("x")[0], "   F_y =", flow.force("y")[0])

    # 3. The class-separation sector of B(K, n, mu, omega): closure proved symbolically.
    s = job.sector()
    step("closure of the ansatz X v_c, F (v_a + v_b), Y v_c with sum_b v_b = 0")
    for p in s.closure:
        print(f"node {p.node}: flow = ({p.coefficient}) * pattern   [residual {p.residual}]")
    step("sector matrix M on (X, F, Y), general omega")
    sp.pprint(s.matrix)

    # 4. The characteristic polynomial det(r I + M) (omega = 2).
    s2 = job.sector(2)
    step("det(r I + M), omega = 2")
    print(sp.collect(s2.charpoly, s2.r))

    # 5. The slow rate: its leading order in mu, and the fast-label limit in epsilon = m/N.
    ser = job.series()
    step("slow root")
    print("leading order in mu:   r_s ~", ser.leading_mu)
    print("fast labels (eta_y -> oo):   r_s =", ser.fast_closed_form)
    print("series:   r_s =", ser.fast_series, f"+ O(epsilon^{ser.order + 1})")

    # 6. A numerical cross-check: sector root vs spectrum of the assembled flow.
    K, n, mu = 3, 40, 2
    root = job.sector_rates(K, n, mu)[0]
    full = EmbeddingModel(balanced_couplings(K, n, mu), d=1).slow_rate()
    step(f"check (K={K}, n={n}, mu={mu})")
    print(f"sector root {root:.12g}   smallest nonzero eigenvalue of H L_G {full:.12g}")

    out = atomic_write_text(HERE / "embedding.tex", job.latex_document())
    print(f"\nwrote {out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
