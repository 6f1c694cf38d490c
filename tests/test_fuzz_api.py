"""Fuzz the public Python API with wrong types, NaN/inf, bad shapes and sizes (hypothesis).

Every call either returns finite numbers or raises a SymcollapseError; an unknown keyword is a
plain TypeError. Sizes are drawn small or absurd (never large-but-valid) so a run takes seconds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import symcollapse as sc
from symcollapse.errors import SymcollapseError
from symcollapse.numerics import spectra

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

bad_scalars = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, -1, 0, 10**12, 2**64,
                               1e308, 5e-324, 1j, 1 + 2j, True, False, None, "2", "abc", b"x", [],
                               [1], (2,), {}, object(), np.nan, np.float64(np.inf), sp.nan, sp.oo,
                               sp.zoo, sp.I, sp.Symbol("a")])
small_ints = st.integers(min_value=-3, max_value=6)
small_reals = st.floats(min_value=-2.0, max_value=5.0, allow_nan=False)
ints = st.one_of(small_ints, bad_scalars)
reals = st.one_of(small_reals, bad_scalars)


@st.composite
def arrays(draw):
    """Arrays of random small shapes, sometimes with NaN/inf/negative/complex entries."""
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    a = draw(st.sampled_from([0.0, 1.0, 0.5])) + np.zeros(shape)
    kind = draw(st.sampled_from(["ok", "nan", "inf", "neg", "complex", "list", "str"]))
    if a.size:
        a.flat[draw(st.integers(0, a.size - 1))] = {"ok": 1.0, "nan": np.nan, "inf": np.inf,
                                                      "neg": -1.0}.get(kind, 1.0)
    if kind == "complex":
        return a + 1j
    if kind == "list":
        return a.tolist()
    if kind == "str":
        return np.full(shape, "x")
    return a


_balanced = st.builds(lambda K, n, mu: sc.balanced_couplings(K, n, mu),
                      st.integers(2, 3), st.integers(1, 2), st.integers(0, 1))
couplings = st.one_of(arrays(), bad_scalars, _balanced, _balanced, _balanced)
rates = st.one_of(st.floats(0.1, 5.0), st.floats(0.1, 5.0), st.floats(0.1, 5.0), small_reals, bad_scalars)
dims = st.one_of(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), bad_scalars)


@st.composite
def states(draw, shape):
    """An array of ``shape`` (sometimes with one NaN/inf), or a random wrong one."""
    if draw(st.integers(0, 3)) == 0:
        return draw(arrays())
    a = np.asarray(draw(st.lists(st.floats(-2, 2), min_size=int(np.prod(shape)),
                                 max_size=int(np.prod(shape)))), dtype=float).reshape(shape)
    if a.size and draw(st.booleans()):
        a.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


def _finite(value) -> bool:
    """True if every number in ``value`` (scalar, array, tuple, dict) is finite."""
    if isinstance(value, (bool, str, type(None))):
        return True
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return True  # not numeric (an object): nothing to be NaN
    return bool(np.all(np.isfinite(a)))


def _run(fn, *args, **kwargs):
    """Call ``fn``; a result must be finite, a failure a SymcollapseError."""
    try:
        out = fn(*args, **kwargs)
    except SymcollapseError:
        return None
    assert _finite(out), f"{getattr(fn, '__name__', fn)} returned non-finite {out!r}"
    return out


@SETTINGS
@given(K=ints, n=ints, mu=ints, omega=reals)
def test_balanced_couplings_and_nu_sep(K, n, mu, omega):
    _run(sc.balanced_couplings, K, n, mu, omega)
    _run(sc.nu_sep, K, n, mu, omega)


@SETTINGS
@given(name=st.one_of(st.sampled_from(["x", "W", "u"]), bad_scalars), a=ints, b=ints)
def test_symbols(name, a, b):
    _run(sc.vector, name, a)
    _run(sc.matrix, name, a, b)


_x, _y = sc.vector("x", 2), sc.vector("y", 2)
losses = st.one_of(bad_scalars, st.sampled_from([sc.sqnorm(_x - _y), sp.Eq(_x[0], _y[0]), [_x[0]],
                                                 _x[0] ** 30, sp.log(_x[0]), _x, sc.sg(_x[0]) * _y[0]]))
blocks = st.one_of(bad_scalars, st.sampled_from([_x, _y, sp.Matrix([_x[0], _x[0]]),
                                                 sp.Matrix([_x[0] + 1]), sp.zeros(2, 1)]))


@SETTINGS
@given(expr=losses, x=blocks, y=blocks, rates=st.one_of(bad_scalars, st.just({"x": -1}),
                                                        st.just((("q", sp.Symbol("q")),))))
def test_edge_loss(expr, x, y, rates):
    _run(sc.EdgeLoss, expr, x, y)
    _run(sc.EdgeLoss, sc.sqnorm(_x - _y), _x, _y, rates=rates)
    _run(sc.sg, expr)


@SETTINGS
@given(P=couplings, d=dims, ex=rates, ey=rates,
       method=st.one_of(st.sampled_from(["auto", "dense", "schur", "sparse", "qr"]), bad_scalars),
       data=st.data())
def test_embedding_model(P, d, ex, ey, method, data):
    _run(spectra.slow_rate, P, ex, ey, method=method)
    m = _run(sc.EmbeddingModel, P, d, ex, ey)
    event("model built" if m is not None else "model refused")
    if m is not None:
        Z = data.draw(states((m.N + m.K, m.d)))
        _run(m.slow_rate, method)
        _run(m.flow, Z)
        _run(m.loss, Z)
        _run(m.invariants, Z)
        _run(m.end_state, Z)
        _run(m.initial_state, d)


@SETTINGS
@given(P=couplings, d=dims, eta=rates,
       sg=st.one_of(st.sampled_from([True, False, "labels", "both", "no"]), bad_scalars),
       learn=st.one_of(st.booleans(), st.booleans(), bad_scalars), data=st.data())
def test_head_model(P, d, eta, sg, learn, data):
    _run(sc.head_loss, d, "both", learn_head=learn)
    _run(sc.self_consistent_head, P, data.draw(arrays()))
    m = _run(sc.HeadModel, P, d=d, eta_W=eta, stop_gradient=sg, learn_head=learn)
    event("model built" if m is not None else "model refused")
    if m is not None:
        Z = data.draw(states((m.N + m.K, m.d)))
        W = data.draw(states((m.d, m.d)))
        _run(sc.self_consistent_head, P, Z)
        _run(m.flow, Z, W)
        _run(m.loss, Z, W) if hasattr(m, "loss") and callable(m.loss) else None


@SETTINGS
@given(P=couplings, rates=st.one_of(bad_scalars, st.just({"x": math.nan}), st.just({"W": 1.0})),
       frozen=st.one_of(bad_scalars, st.just({"Q": 1.0})), mean=st.one_of(st.booleans(), bad_scalars))
def test_make_variant(P, rates, frozen, mean):
    from symcollapse import variants

    _run(sc.make_variant, variants.embedding_loss(2), P, rates=rates, frozen=frozen, mean=mean)


@SETTINGS
@given(eps=reals, K=ints, n=ints, D=ints, d=ints)
def test_teacher_student_arguments(eps, K, n, D, d):
    # only invalid combinations are constructed (a valid one would run the derivation)
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 1 for v in (K, n, D, d)) \
            and isinstance(eps, float) and 0 <= eps < 1:
        return
    _run(sc.TeacherStudentModel, eps=eps, K=K, n_inputs=n, D=D, d=d)


@pytest.mark.parametrize("call", [
    lambda: sc.balanced_couplings(2, 1, 1, colour=3),
    lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 1, 1), speed=2),
    lambda: sc.vector("x", 2, size=3),
])
def test_unknown_keyword_is_a_type_error(call):
    with pytest.raises(TypeError):
        call()


@SETTINGS
@given(obj=st.one_of(bad_scalars, st.just(sc.sqnorm(_x - _y)), arrays()), flag=st.one_of(st.booleans(), bad_scalars))
def test_engine_entry_points_refuse_non_losses(obj, flag):
    from symcollapse.variants import embedding_loss

    _run(sc.derive_flow, obj)
    _run(sc.compile_loss, obj)
    _run(sc.compile_loss, embedding_loss(2), flag)
    _run(sc.quadratic_invariants, obj)
    _run(sc.sqnorm, obj)
    _run(sc.FlowSystem, obj, sc.balanced_couplings(2, 1, 1), rates={"x": 1.0, "y": 1.0})
    _run(sc.CouplingGraph.from_couplings, obj)
    if not isinstance(obj, (str, bytes)) and obj is not None:  # a str would name a real folder
        _run(sc.write_report, obj, modules=[])
