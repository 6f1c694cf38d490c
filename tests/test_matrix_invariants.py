"""Matrix-level invariants (docs/model.md §7): found for every d and graph, proved by the trace
calculus, cross-checked against component-level discovery, and conserved along trajectories."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
from symcollapse.errors import DerivationCheckError
from symcollapse.symbolic import losses
from symcollapse.symbolic.matrix_flow import derive_matrix_flow
from symcollapse.symbolic.matrix_invariants import (Candidate, MatrixInvariant, cross_check_invariants,
                                                    matrix_invariants, prove)


def _terms(inv):
    return {(c.block, c.form): sp.simplify(k) for c, k in inv.terms}


def test_head_with_sg_has_the_gram_invariant_of_docs_model_3():
    """sg on both targets, learned head: exactly one matrix invariant,
    Σ_i x_i x_iᵀ/η_x + Σ_c y_c y_cᵀ/η_y − WᵀW/η_W, whose trace is docs/model.md §3's I;
    cross-checked against the component discovery at d = 1, 2, 3."""
    flow = derive_matrix_flow(losses.head_matrix_loss("both", True))
    invs = matrix_invariants(flow, check=False)
    assert len(invs) == 1 and invs[0].level == "matrix"
    ex, ey, eW = (flow.loss.rate(b) for b in ("x", "y", "W"))
    assert _terms(invs[0]) == {("x", "gram"): 1 / ex, ("y", "gram"): 1 / ey, ("W", "gramT"): -1 / eW}
    assert cross_check_invariants(flow, invs) == {1: 1, 2: 4, 3: 9}  # every entry of the d×d matrix
    tex = invs[0].latex()
    assert r"\sum_{i} x_{i} x_{i}^{T}" in tex and r"W^{T} W" in tex


@pytest.mark.parametrize("sg", ["none", "labels", "samples"])
def test_head_without_sg_on_both_targets_has_no_invariant(sg):
    flow = derive_matrix_flow(losses.head_matrix_loss(sg, True))
    assert matrix_invariants(flow, check=False) == ()


def test_embedding_and_student_invariants():
    """Model (a): Σ x/η_x + Σ y/η_y (the linear law); the student with head (docs/model.md §4):
    S Sᵀ/η_S + Σ y yᵀ/η_y − WᵀW/η_W, the head's law with the student in place of x."""
    emb = derive_matrix_flow(losses.embedding_matrix_loss())
    (inv,) = matrix_invariants(emb, check=False)
    ex, ey = emb.loss.rate("x"), emb.loss.rate("y")
    assert _terms(inv) == {("x", "sum"): 1 / ex, ("y", "sum"): 1 / ey}
    assert cross_check_invariants(emb, (inv,), sizes=(1, 2)) == {1: 1, 2: 2}
    st = derive_matrix_flow(losses.student_matrix_loss(True))
    (inv,) = matrix_invariants(st, check=False)
    eS, ey, eW = (st.loss.rate(b) for b in ("S", "y", "W"))
    assert _terms(inv) == {("S", "gram"): 1 / eS, ("y", "gram"): 1 / ey, ("W", "gramT"): -1 / eW}


def test_a_wrong_invariant_is_refused_by_the_proof_and_by_the_component_check():
    flow = derive_matrix_flow(losses.head_matrix_loss("both", True))
    ex, ey, eW = (flow.loss.rate(b) for b in ("x", "y", "W"))
    d = sp.Symbol("d", integer=True, positive=True)
    wrong = MatrixInvariant(flow, ((Candidate("x", "gram", (d, d)), 1 / ex), (Candidate("y", "gram", (d, d)), 1 / ey),
                                   (Candidate("W", "gram", (d, d)), -1 / eW)), "matrix")  # W Wᵀ, not WᵀW
    with pytest.raises(DerivationCheckError, match="not conserved"):
        prove(wrong)
    with pytest.raises(DerivationCheckError, match="not conserved"):
        cross_check_invariants(flow, (wrong,), sizes=(2,))


def test_gram_invariant_is_conserved_along_a_simulated_trajectory():
    """Numerically: the d×d matrix I(t) of a d = 5 head with sg stays at I(0) to 1e-8 (relative)
    while the state moves by O(1)."""
    flow = derive_matrix_flow(losses.head_matrix_loss("both", True))
    (inv,) = matrix_invariants(flow, check=False)
    m = sc.HeadModel(sc.balanced_couplings(3, 2, 1), d=5, eta_x=1.0, eta_y=0.5, eta_W=0.8)
    tr = m.simulate(t_end=10.0, seed=1, n_points=12, keep_states=True, method="DOP853", rtol=1e-11, atol=1e-13)
    rates = {flow.loss.rate(b): v for b, v in (("x", 1.0), ("y", 0.5), ("W", 0.8))}
    vals = []
    for v in tr.states:
        st = m.system.unpack(v)
        I = sum(float(k.xreplace(rates)) * _num(c, st[c.block]) for c, k in inv.terms)
        vals.append(I)
    I0 = vals[0]
    drift = max(float(np.max(np.abs(I - I0))) for I in vals) / float(np.max(np.abs(I0)))
    moved = float(np.max(np.abs(tr.states[-1] - tr.states[0])))
    assert moved > 0.1 and drift <= 1e-8


def _num(cand, A):
    A = np.asarray(A, dtype=float)
    if cand.block in ("x", "y"):
        return A.T @ A if cand.form == "gram" else A.sum(axis=0)[:, None]
    return {"sum": A, "gram": A @ A.T, "gramT": A.T @ A}[cand.form]
