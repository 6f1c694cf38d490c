"""The loss-first engine: stop-gradient, derived forces, compiled kernels and their self-checks."""
import numpy as np
import pytest
import sympy as sp

import symcollapse.closed_forms as cf
from symcollapse.errors import DerivationCheckError
from symcollapse.numerics.kernels import compile_flow, compile_loss, verify_compiled
from symcollapse.numerics.system import FlowSystem
from symcollapse.symbolic import EdgeLoss, derive_flow, matrix, sg, sqnorm, stop_gradient, vector
from symcollapse.symbolic.flow import EdgeFlow


def test_stop_gradient_value_derivative_and_latex():
    a = sp.Symbol("a")
    e = stop_gradient(a**2) * a
    assert sp.diff(e, a) == stop_gradient(a**2)
    assert sp.latex(stop_gradient(a)) == r"\operatorname{sg}\left(a\right)"
    from symcollapse.symbolic import strip_stop_gradient
    assert strip_stop_gradient(e) == a**3


def _head_loss(d, with_sg=True):
    x, y, W = vector("x", d), vector("y", d), matrix("W", d, d)
    s = sg if with_sg else (lambda v: v)
    expr = sp.Rational(1, 2) * (sqnorm(W * x - s(y)) + sqnorm(W * y - s(x)))
    return EdgeLoss(expr, x, y, shared=(("W", W),), name=f"head{d}{with_sg}")


def test_embedding_forces_are_mse_forces():
    x, y = vector("x", 2), vector("y", 2)
    flow = derive_flow(EdgeLoss(sp.Rational(1, 2) * sqnorm(x - y), x, y))
    assert sp.simplify(flow.force("x") - (y - x)) == sp.zeros(2, 1)
    assert sp.simplify(flow.force("y") - (x - y)) == sp.zeros(2, 1)


@pytest.mark.parametrize("with_sg", [True, False])
def test_head_forces_match_model_md(with_sg):
    d = 2
    loss = _head_loss(d, with_sg)
    x, y, W = loss.x, loss.y, loss.block("W")
    flow = derive_flow(loss)
    fx, fy, fW = cf.head_edge_forces(x, y, W, ("x", "y") if with_sg else ())
    assert sp.expand(flow.force("x") - fx) == sp.zeros(d, 1)
    assert sp.expand(flow.force("y") - fy) == sp.zeros(d, 1)
    assert sp.expand(flow.force("W") - fW) == sp.zeros(d, d)


@pytest.mark.parametrize("d", [1, 3])
def test_compiled_head_passes_self_checks(d):
    errs = verify_compiled(compile_loss(_head_loss(d)))
    assert max(errs.values()) < 1e-6
    assert "moment path vs edge path" in errs


def test_wrong_kernel_is_refused():
    """A force that is not −∂ℓ/∂θ must fail the finite-difference check."""
    x, y = vector("x", 2), vector("y", 2)
    loss = EdgeLoss(sp.Rational(1, 2) * sqnorm(x - y), x, y, name="wrong")
    good = derive_flow(loss)
    bad_x = sp.ImmutableMatrix(good.force("x") * 2)
    bad = EdgeFlow(loss, (("x", bad_x), ("y", good.force("y"))), good.forces_with_sg)
    with pytest.raises(DerivationCheckError):
        compile_flow(bad)


def test_moment_path_equals_edge_path_on_random_graph():
    rng = np.random.default_rng(3)
    cp = compile_loss(_head_loss(3))
    P = rng.uniform(size=(30, 4)) * (rng.uniform(size=(30, 4)) < 0.5)
    P[:, 0] += 0.1
    rates = {"x": 1.0, "y": 0.3, "W": 0.7}
    a = FlowSystem(cp, P, rates=rates, path="moment")
    b = FlowSystem(cp, P, rates=rates, path="edge")
    v = rng.normal(size=a.size)
    np.testing.assert_allclose(a.flow_vector(v), b.flow_vector(v), rtol=1e-12, atol=1e-12)


def test_canonical_construction_equals_sympy_expression():
    """polydiff.as_expr builds Add/Mul in canonical order by hand: it must equal SymPy's own."""
    import random

    from sympy import QQ
    from sympy.polys.rings import ring

    from symcollapse.symbolic import polydiff

    x, y, z = sp.symbols("x y z")
    R = ring([x, y, z], QQ)[0]
    rnd = random.Random(0)
    for _ in range(30):
        e = sp.expand(sum(rnd.randint(-3, 3) * x**rnd.randint(0, 3) * y**rnd.randint(0, 2)
                          * z**rnd.randint(0, 2) for _ in range(6)) + sp.Rational(rnd.randint(-2, 2), 3))
        p = R.from_expr(e)
        assert sp.srepr(polydiff.as_expr(p)) == sp.srepr(p.as_expr())
