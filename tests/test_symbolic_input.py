"""Symbolic API input: what the engine cannot derive is refused with InvalidParameterError
before any derivation; nested stop-gradients collapse to one."""
from __future__ import annotations

import time

import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
from symcollapse.errors import InvalidParameterError


@pytest.mark.parametrize("bad", [sp.nan, sp.oo, -sp.oo, sp.zoo, sp.I, 1 + 2 * sp.I, sp.Float("nan")])
def test_non_finite_or_complex_loss_is_refused(bad):
    x, y = sc.vector("x", 2), sc.vector("y", 2)
    with pytest.raises(InvalidParameterError, match="expr must be"):
        sc.EdgeLoss(sc.sqnorm(x - y) + bad * x[0] ** 2, x, y)


def test_nested_stop_gradient_is_the_single_one():
    x, y = sc.vector("x", 2), sc.vector("y", 2)
    assert sc.sg(sc.sg(x[0])) == sc.sg(x[0])
    half = sp.Rational(1, 2)
    nested = sc.EdgeLoss(half * sc.sqnorm(sc.sg(sc.sg(x)) - y), x, y, name="nested_sg")
    single = sc.EdgeLoss(half * sc.sqnorm(sc.sg(x) - y), x, y, name="single_sg")
    f = sc.derive_flow(nested)
    assert f.force("y") == sp.ImmutableMatrix(x - y)
    assert f.force("x") == sp.zeros(2, 1)
    assert f.force("y") == sc.derive_flow(single).force("y")
    # an sg inside an sg's argument changes neither value nor derivative
    mixed = sc.EdgeLoss(half * sc.sqnorm(sc.sg(sc.sg(x) + x) - y), x, y, name="mixed_sg")
    assert sc.derive_flow(mixed).force("y") == sp.ImmutableMatrix(2 * x - y)
    compiled = sc.compile_loss(nested)  # compiles and passes its self-check (was a NameError)
    P = np.array([[1.0, 0.0], [0.0, 1.0]])
    sysm = sc.FlowSystem(compiled, P, rates={"x": 1.0, "y": 1.0})
    v = np.arange(sysm.size, dtype=float)
    st = sysm.unpack(v)
    np.testing.assert_allclose(sysm.flow_blocks(st)["y"], P.T @ st["x"] - st["y"], rtol=1e-12)


def _xy(d=2):
    return sc.vector("x", d), sc.vector("y", d)


@pytest.mark.parametrize("case", ["duplicate", "non-symbol", "eq", "bool", "list", "zoo", "complex",
                                  "string", "none", "matrix", "shared-dup", "data-dup"])
def test_bad_edge_loss_is_refused(case):
    x, y = _xy()
    W = sc.matrix("W", 2, 2)
    good = sc.sqnorm(x - y)
    kw = dict(expr=good, x=x, y=y)
    if case == "duplicate":
        kw["x"] = sp.Matrix([x[0], x[0]])
    elif case == "non-symbol":
        kw["x"] = sp.Matrix([x[0] + 1, x[1]])
    elif case == "eq":
        kw["expr"] = sp.Eq(x[0], y[0])
    elif case == "bool":
        kw["expr"] = True
    elif case == "list":
        kw["expr"] = [good]
    elif case == "zoo":
        kw["expr"] = good + sp.zoo * x[0]
    elif case == "complex":
        kw["expr"] = good + (1 + sp.I) * x[0] ** 2
    elif case == "string":
        kw["expr"] = "x_0**2"
    elif case == "none":
        kw["y"] = None
    elif case == "matrix":
        kw["expr"] = sp.Matrix([good, good])
    elif case == "shared-dup":
        kw["shared"] = (("W", W), ("V", W))
    elif case == "data-dup":
        kw["data"] = y
    with pytest.raises(InvalidParameterError):
        sc.EdgeLoss(**kw)


def test_edge_loss_rates_are_checked():
    x, y = _xy()
    with pytest.raises(InvalidParameterError, match="unknown blocks"):
        sc.EdgeLoss(sc.sqnorm(x - y), x, y, rates=(("W", sp.Symbol("eta_W", positive=True)),))
    for bad in (-1, "fast", sp.nan, sp.I, True):
        with pytest.raises(InvalidParameterError, match="rates"):
            sc.EdgeLoss(sc.sqnorm(x - y), x, y, rates=(("x", bad),))
    with pytest.raises(InvalidParameterError, match="rates"):
        sc.EdgeLoss(sc.sqnorm(x - y), x, y, rates=5)
    ok = sc.EdgeLoss(sc.sqnorm(x - y), x, y, rates=(("y", 2 * sp.Symbol("eta", positive=True)),))
    assert ok.rate("y") == 2 * sp.Symbol("eta", positive=True)


def test_high_powers_are_refused_before_expansion():
    x, y = _xy(1)
    with pytest.raises(InvalidParameterError, match="degree 40"):
        sc.EdgeLoss((x[0] - y[0]) ** 40, x, y)
    x4, y4 = _xy(4)
    with pytest.raises(InvalidParameterError, match="MAX_DEGREE"):
        sc.EdgeLoss(sc.sqnorm(x4 - y4) ** 20, x4, y4)
    # the limit is documented and a loss at it is accepted
    from symcollapse.symbolic.loss import MAX_DEGREE
    assert sc.EdgeLoss(sc.sqnorm(x - y) ** (MAX_DEGREE // 2), x, y).d == 1


@pytest.mark.parametrize("call", [
    lambda: sc.vector("x", -1), lambda: sc.vector("x", 0), lambda: sc.vector("x", 2.5),
    lambda: sc.vector(3, 2), lambda: sc.vector("x y", 2), lambda: sc.vector("x", True),
    lambda: sc.matrix("W", 0, 2), lambda: sc.matrix("W", 2, "2"), lambda: sc.vector("x", 10**9),
])
def test_symbol_constructors_validate(call):
    with pytest.raises(InvalidParameterError):
        call()


# --- variants, models and sectors: bad arguments refused before any derivation ------------------
def _P():
    return sc.balanced_couplings(2, 2, 1)


@pytest.mark.parametrize("call, name", [
    (lambda V: V.embedding_loss(2, rates={"x": -1}), "rates"),
    (lambda V: V.embedding_loss(2, rates={"x": object()}), "rates"),
    (lambda V: V.embedding_loss(2, rates=[("x", 1)]), "rates"),
    (lambda V: V.embedding_loss(2, rates={"W": "eta_W"}), "rates"),
    (lambda V: V.head_loss(2, learn_head="no"), "learn_head"),
    (lambda V: V.student_loss(2, 3, head="yes"), "head"),
    (lambda V: V.make_variant(V.embedding_loss(2), _P(), rates={"W": 1.0}), "unknown blocks"),
    (lambda V: V.make_variant(V.embedding_loss(2), _P(), rates={"x": -1.0}), "eta_x"),
    (lambda V: V.make_variant(V.embedding_loss(2), _P(), rates={"x": "fast"}), "eta_x"),
    (lambda V: V.make_variant(V.embedding_loss(2), _P(), frozen={"Q": np.eye(2)}), "frozen"),
    (lambda V: V.make_variant(V.head_loss(2), _P(), frozen={"W": np.eye(2)}), "frozen"),
    (lambda V: V.make_variant(V.embedding_loss(2), _P(), mean="yes"), "mean"),
    (lambda V: V.make_variant("loss", _P()), "loss"),
    (lambda V: sc.HeadModel(_P(), d=2, learn_head="no"), "learn_head"),
    (lambda V: sc.embedding_sector(omega=-1), "omega"),
    (lambda V: sc.embedding_sector(omega="a"), "omega"),
    (lambda V: sc.embedding_sector(omega=float("nan")), "omega"),
    (lambda V: sc.FlowSystem(sc.compile_loss(V.embedding_loss(2)), _P(), rates={"x": 1, "y": 1},
                             frozen={"Q": 1.0}), "frozen"),
])
def test_bad_variant_and_model_arguments(call, name):
    from symcollapse import variants

    with pytest.raises(InvalidParameterError, match=name):
        call(variants)


def test_sector_accepts_positive_omega():
    red = sc.embedding_sector(omega=1)
    assert red.matrix.shape == (3, 3)


# --- balanced couplings ---------------------------------------------------------------------
def _reference_couplings(K, n, mu, omega=2.0):
    """MODEL.md §1 row order, built pair by pair (independent of the vectorised builder)."""
    rows = [[1.0 if c == k else 0.0 for c in range(K)] for k in range(K) for _ in range(n)]
    for a in range(K):
        for b in range(a + 1, K):
            for _ in range(mu):
                rows.append([omega / 2 if c in (a, b) else 0.0 for c in range(K)])
    return np.array(rows)


@pytest.mark.parametrize("args", [(2, 1, 1), (3, 4, 2, 1.0), (5, 2, 3), (10, 3, 0), (7, 1, 4, 0.5)])
def test_balanced_couplings_row_order(args):
    np.testing.assert_array_equal(sc.balanced_couplings(*args), _reference_couplings(*args))


def test_balanced_couplings_refuses_absurd_sizes_before_allocating():
    from symcollapse.models.couplings import MAX_ENTRIES

    with pytest.raises(InvalidParameterError, match="MAX_ENTRIES"):
        sc.balanced_couplings(10**6, 1, 1)  # N·K ~ 5e17 entries
    with pytest.raises(InvalidParameterError, match="MAX_ENTRIES"):
        sc.balanced_couplings(2, MAX_ENTRIES, 0)
    # mu = 0 with many classes builds no pair list: a wide P is the consistent-sample identity
    P = sc.balanced_couplings(3000, 1, 0)
    assert P.shape == (3000, 3000) and P.sum() == 3000 and np.all(np.diag(P) == 1.0)
