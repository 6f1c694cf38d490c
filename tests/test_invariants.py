"""Invariant discovery: linear and quadratic conserved quantities are FOUND, then checked."""
import numpy as np
import pytest
import sympy as sp

from symcollapse.errors import InvalidParameterError
from symcollapse.numerics.integrate import integrate
from symcollapse.symbolic.assemble import assemble_symbolic
from symcollapse.symbolic.flow import derive_flow
from symcollapse.outputs.latex import invariants_latex
from symcollapse.symbolic.invariants import (invariant_check, linear_invariants, quadratic_invariants,
                                             verify_invariant)
from symcollapse.variants import embedding_loss, head_loss, make_variant

PATH = [[1, 0], [1, 1], [0, 1]]  # x0–y0–f–y1–x2: two classes and one frustrated sample


def _system(loss, P=PATH):
    return assemble_symbolic(derive_flow(loss), P)


def _model_md_invariant(S):
    """docs/model.md §3: I = Σ_k ‖z_k‖²/η_k − ‖W‖_F²/η_W, written from the blocks."""
    r = S.rates
    return sp.expand(sum(e**2 for e in S.blocks["x"]) / r["x"] + sum(e**2 for e in S.blocks["y"]) / r["y"]
                     - sum(e**2 for e in S.blocks["W"]) / r["W"])


@pytest.mark.parametrize("ansatz", ["diagonal", "block", "full"])
def test_head_invariant_is_found_with_stop_gradient(ansatz):
    S = _system(head_loss(1, "both"))
    found = quadratic_invariants(S, ansatz)
    assert len(found) == 1
    assert sp.simplify(found[0].expr - _model_md_invariant(S)) == 0
    assert verify_invariant(found[0].expr, S)
    assert invariant_check(found[0], S).passed


@pytest.mark.parametrize("sg", ["none", "label", "sample"])
def test_no_quadratic_invariant_without_full_stop_gradient(sg):
    S = _system(head_loss(1, sg))
    assert quadratic_invariants(S, "full") == []
    assert not verify_invariant(_model_md_invariant(S), S)


def test_head_d2_gram_invariants_contain_model_md_trace():
    """d = 2: the whole matrix Σ z zᵀ/η − WᵀW/η_W is conserved; its trace is docs/model.md §3's I."""
    S = _system(head_loss(2, "both"))
    found = quadratic_invariants(S, "block")
    assert len(found) == 3
    for inv in found:
        assert verify_invariant(inv.expr, S)
    # I lies in the span: I − Σ_k a_k I_k = 0 has a solution
    a = sp.symbols("a0:3")
    resid = sp.expand(_model_md_invariant(S) - sum(ak * inv.expr for ak, inv in zip(a, found)))
    coeffs = sp.Poly(resid, *S.state).coeffs()
    assert sp.solve(coeffs, a, dict=True)


def test_invariant_conserved_along_integrated_flow():
    """Independent numerics: the found I stays constant along the integrated head flow."""
    rates = {"x": 1.0, "y": 0.4, "W": 2.5}
    loss = head_loss(1, "both")
    S = _system(loss)
    inv = quadratic_invariants(S, "diagonal")[0]
    sysm = make_variant(loss, np.array(PATH, float), rates=rates).system()
    subs = {S.rates[b]: v for b, v in rates.items()}
    fn = sp.lambdify([S.state], inv.expr.subs(subs))
    rng = np.random.default_rng(0)
    v0 = rng.normal(size=sysm.size)
    # the state orders agree: X rows, Y rows, then W
    sol = integrate(sysm.flow_vector, v0, np.linspace(0, 5, 11), jac=sysm.jacobian)
    vals = np.array([fn(v) for v in sol.y])
    assert np.max(np.abs(vals - vals[0])) / abs(vals[0]) < 1e-8
    # and a wrong candidate (sign of the head term flipped) is not conserved
    wrong = sp.lambdify([S.state], (inv.expr + 2 * S.blocks["W"][0] ** 2 / S.rates["W"]).subs(subs))
    w = np.array([wrong(v) for v in sol.y])
    assert np.max(np.abs(w - w[0])) / abs(w[0]) > 1e-3


def test_embedding_linear_invariants_and_their_products():
    S = _system(embedding_loss(1), [[1, 0], [0, 1]])
    lin = linear_invariants(S)
    assert len(lin) == 2  # one per component: Σ z/η
    quad = quadratic_invariants(S, "full")
    assert len(quad) == 3  # the symmetric products of the two linear ones
    c0, c1 = [sp.Matrix(c) for c in lin]
    prods = [c0 * c0.T, c0 * c1.T + c1 * c0.T, c1 * c1.T]
    a = sp.symbols("a0:3")
    for inv in quad:  # each found Q is a combination of the products
        eqs = list(sp.Matrix(inv.Q) - sum((ak * p for ak, p in zip(a, prods)), sp.zeros(4, 4)))
        assert sp.solve(eqs, a, dict=True)
    assert quadratic_invariants(S, "diagonal") == []


def test_latex_and_bad_ansatz():
    S = _system(head_loss(1, "both"))
    tex = invariants_latex(quadratic_invariants(S))
    assert r"\eta_{W}" in tex and "I_{1}" in tex
    assert "No invariant" in invariants_latex([])
    with pytest.raises(InvalidParameterError, match="ansatz"):
        quadratic_invariants(S, "cubic")


def test_frozen_identity_head_has_the_embedding_invariants():
    """Variant.symbolic() substitutes the frozen W = I: the flow is model (a) on the path graph,
    so the linear invariants are the component sums Σ z/η (one component here)."""
    frozen = make_variant(head_loss(1, "both", learn_head=False), np.array(PATH, float)).symbolic()
    emb = make_variant(embedding_loss(1), np.array(PATH, float)).symbolic()
    assert frozen.state == emb.state
    assert sp.expand(sp.Matrix(frozen.flow) - sp.Matrix(emb.flow)) == sp.zeros(len(emb.state), 1)
    (c,) = linear_invariants(frozen)
    r = frozen.rates
    expected = sp.Matrix([1 / r["x"]] * 3 + [1 / r["y"]] * 2)
    assert sp.simplify(sp.Matrix(c) / c[0] - expected / expected[0]) == sp.zeros(5, 1)
