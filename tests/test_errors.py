"""Bad input is refused with one exception hierarchy and a message naming the parameter."""
import math
import re

import numpy as np
import pytest
import scipy.sparse as sps
import sympy as sp

from symcollapse.errors import (DerivationCheckError, IntegrationError, InvalidParameterError,
                                SymcollapseError)
from symcollapse.models.couplings import balanced_couplings
from symcollapse.numerics.graph import CouplingGraph
from symcollapse.numerics.integrate import integrate, time_grid
from symcollapse.numerics.kernels import compile_loss
from symcollapse.numerics.system import FlowSystem
from symcollapse.symbolic import EdgeLoss, matrix, sqnorm, vector
from symcollapse.symbolic.mpcheck import check_root, embedding_loss, head_loss, polynomial_roots
from symcollapse.validation import check_array, check_int, check_rate, check_real


def test_hierarchy():
    assert issubclass(InvalidParameterError, SymcollapseError)
    assert issubclass(InvalidParameterError, ValueError)
    for cls in (DerivationCheckError, IntegrationError):
        assert issubclass(cls, SymcollapseError) and not issubclass(cls, ValueError)


# --- balanced_couplings ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name, allowed", [
    (dict(K=1, n=1, mu=0), "K", ">= 2"),
    (dict(K=0, n=1, mu=0), "K", ">= 2"),
    (dict(K=2, n=0, mu=0), "n", ">= 1"),
    (dict(K=2, n=1, mu=-1), "mu", ">= 0"),
    (dict(K=2, n=1, mu=1, omega=0.0), "omega", "> 0"),
    (dict(K=2, n=1, mu=1, omega=-1.0), "omega", "> 0"),
    (dict(K=2.5, n=1, mu=1), "K", "integer"),
    (dict(K="2", n=1, mu=1), "K", "integer"),
    (dict(K=True, n=1, mu=1), "K", "integer"),
    (dict(K=None, n=1, mu=1), "K", "integer"),
    (dict(K=2, n=1.5, mu=1), "n", "integer"),
    (dict(K=2, n=1, mu=0.5), "mu", "integer"),
    (dict(K=float("nan"), n=1, mu=1), "K", "integer"),
    (dict(K=2, n=float("nan"), mu=1), "n", "integer"),
    (dict(K=2, n=1, mu=1, omega=float("nan")), "omega", "finite"),
    (dict(K=2, n=1, mu=1, omega=float("inf")), "omega", "finite"),
    (dict(K=2, n=1, mu=1, omega="2"), "omega", "real number"),
])
def test_balanced_couplings_refuses(kwargs, name, allowed):
    with pytest.raises(InvalidParameterError) as info:
        balanced_couplings(**kwargs)
    msg = str(info.value)
    assert msg.startswith(f"{name} must"), msg
    assert allowed in msg


def test_balanced_couplings_accepts_integral_floats_and_numpy_ints():
    a = balanced_couplings(np.int64(3), 2.0, 1, omega=np.float64(1.0))
    assert a.shape == (3 * 2 + 3, 3)
    assert np.allclose(a[6:].sum(axis=1), 1.0)


# --- coupling matrix P ------------------------------------------------------------------------
BAD_P = [
    (-np.ones((2, 2)), "non-negative"),
    (np.array([[1.0, -1e-12]]), "non-negative"),
    (np.array([[np.nan, 1.0]]), "finite"),
    (np.array([[np.inf, 1.0]]), "finite"),
    (np.ones(3), "2-D"),
    (np.ones((2, 2, 2)), "2-D"),
    (np.zeros((0, 2)), "empty"),
    (np.zeros((3, 2)), "positive entry"),
    ([[1, "a"]], "numeric"),
    ("abc", "numeric"),
    (None, "2-D"),
    (np.array([[1 + 1j, 0]]), "real"),
    (sps.csr_matrix(np.array([[1.0, -2.0]])), "non-negative"),
]


@pytest.mark.parametrize("P, allowed", BAD_P)
def test_coupling_graph_refuses_bad_P(P, allowed):
    with pytest.raises(InvalidParameterError, match=r"^P must") as info:
        CouplingGraph.from_couplings(P)
    assert allowed in str(info.value)


@pytest.mark.parametrize("P, allowed", BAD_P)
def test_flow_system_refuses_bad_P(P, allowed):
    with pytest.raises(InvalidParameterError, match=r"^P must") as info:
        FlowSystem(compile_loss(embedding_loss(1)), P, rates={"x": 1.0, "y": 1.0})
    assert allowed in str(info.value)


def test_coupling_graph_accepts_sparse_and_is_read_only():
    g = CouplingGraph.from_couplings(sps.csr_matrix(balanced_couplings(2, 1, 1)))
    assert g.n_edges == 4 and g.components[0] == 1
    assert CouplingGraph.from_couplings(g) is g
    with pytest.raises(ValueError):
        g.P[0, 0] = 5.0


# --- rates and other FlowSystem arguments -------------------------------------------------------
@pytest.mark.parametrize("rates, name, allowed", [
    ({"x": -1.0, "y": 1.0}, "eta_x", "> 0"),
    ({"x": 0.0, "y": 1.0}, "eta_x", "> 0"),
    ({"x": 1.0, "y": float("nan")}, "eta_y", "finite"),
    ({"x": float("inf"), "y": 1.0}, "eta_x", "finite"),
    ({"x": "fast", "y": 1.0}, "eta_x", "real number"),
    ({"x": 1.0}, "eta_y", "must be given"),
    ({}, "eta_x", "must be given"),
])
def test_flow_system_refuses_bad_rates(rates, name, allowed):
    with pytest.raises(InvalidParameterError) as info:
        FlowSystem(compile_loss(embedding_loss(1)), balanced_couplings(2, 1, 1), rates=rates)
    msg = str(info.value)
    assert msg.startswith(name) and allowed in msg, msg


def test_flow_system_refuses_bad_head_rate_scale_path_and_frozen_block():
    cp = compile_loss(head_loss(2, True))
    P = balanced_couplings(2, 1, 1)
    ok = {"x": 1.0, "y": 1.0, "W": 1.0}
    with pytest.raises(InvalidParameterError, match=r"^eta_W"):
        FlowSystem(cp, P, rates={"x": 1.0, "y": 1.0})
    with pytest.raises(InvalidParameterError, match=r"^eta_W must be > 0"):
        FlowSystem(cp, P, rates={**ok, "W": -0.1})
    with pytest.raises(InvalidParameterError, match=r"^scale must be > 0"):
        FlowSystem(cp, P, rates=ok, scale=0.0)
    with pytest.raises(InvalidParameterError, match=r"^scale must be finite"):
        FlowSystem(cp, P, rates=ok, scale=float("nan"))
    with pytest.raises(InvalidParameterError, match=r"^path must be"):
        FlowSystem(cp, P, rates=ok, path="fast")
    frozen = compile_loss(head_loss(2, True).with_learned({"x", "y"}))
    with pytest.raises(InvalidParameterError, match=r"frozen block 'W'"):
        FlowSystem(frozen, P, rates=ok)
    with pytest.raises(InvalidParameterError, match=r"^W must have shape \(2, 2\)"):
        FlowSystem(frozen, P, rates=ok, frozen={"W": np.eye(3)})
    with pytest.raises(InvalidParameterError, match=r"^W must contain only finite"):
        FlowSystem(frozen, P, rates=ok, frozen={"W": np.full((2, 2), np.nan)})


def test_flow_system_refuses_missing_or_bad_loss_parameters_and_data():
    u, y, S = vector("u", 2), vector("y", 2), matrix("S", 2, 2)
    lam = sp.Symbol("lam", positive=True)
    loss = EdgeLoss(sp.Rational(1, 2) * sqnorm(S * u - y) + lam / 2 * sqnorm(S), None, y,
                    shared=(("S", S),), data=u, name="ts_errors")
    cp = compile_loss(loss)
    P = balanced_couplings(2, 1, 1)
    rates = {"y": 1.0, "S": 1.0}
    data = np.ones((P.shape[0], 2))
    with pytest.raises(InvalidParameterError, match=r"lam"):
        FlowSystem(cp, P, rates=rates, data=data)
    with pytest.raises(InvalidParameterError, match=r"^lam must be finite"):
        FlowSystem(cp, P, rates=rates, data=data, params={"lam": float("inf")})
    with pytest.raises(InvalidParameterError, match=r"^data must be"):
        FlowSystem(cp, P, rates=rates, params={"lam": 0.1})
    with pytest.raises(InvalidParameterError, match=r"^data must have shape"):
        FlowSystem(cp, P, rates=rates, params={"lam": 0.1}, data=np.ones((2, 2)))
    with pytest.raises(InvalidParameterError, match=r"^data must contain only finite"):
        FlowSystem(cp, P, rates=rates, params={"lam": 0.1}, data=np.full((P.shape[0], 2), np.nan))


# --- integrate and time_grid --------------------------------------------------------------------
def _decay(y):
    return -y


@pytest.mark.parametrize("t_eval, allowed", [
    ([0.0], "at least two"),
    ([1.0, 0.0], "increasing"),
    ([0.0, 0.0, 1.0], "increasing"),
    ([-1.0, 0.0, 1.0], "non-negative"),
    ([[0.0, 1.0]], "1-D"),
    ([0.0, np.nan], "finite"),
    ([0.0, np.inf], "finite"),
    ("soon", "numeric"),
    (None, "1-D"),
    ([], "empty"),
])
def test_integrate_refuses_bad_t_eval(t_eval, allowed):
    with pytest.raises(InvalidParameterError, match=r"^t_eval must") as info:
        integrate(_decay, np.ones(2), t_eval)
    assert allowed in str(info.value)


@pytest.mark.parametrize("y0, allowed", [
    (np.array([1.0, np.nan]), "finite"),
    (np.array([np.inf]), "finite"),
    (np.ones((2, 1)), "1-D"),
    ([], "empty"),
])
def test_integrate_refuses_bad_initial_state(y0, allowed):
    with pytest.raises(InvalidParameterError, match=r"^y0 must") as info:
        integrate(_decay, y0, [0.0, 1.0])
    assert allowed in str(info.value)


def test_integrate_refuses_state_of_wrong_size_and_bad_options():
    sysm = FlowSystem(compile_loss(embedding_loss(1)), balanced_couplings(2, 1, 1),
                      rates={"x": 1.0, "y": 1.0})
    with pytest.raises(InvalidParameterError, match=r"^y0 of shape \(2,\)"):
        integrate(sysm.flow_vector, np.zeros(2), [0.0, 1.0])
    with pytest.raises(InvalidParameterError, match=r"^fun\(y0\) must have the shape of y0"):
        integrate(lambda y: np.zeros(3), np.zeros(2), [0.0, 1.0])
    with pytest.raises(InvalidParameterError, match=r"^method must be one of"):
        integrate(_decay, np.ones(2), [0.0, 1.0], method="Euler")
    with pytest.raises(InvalidParameterError, match=r"^rtol must be"):
        integrate(_decay, np.ones(2), [0.0, 1.0], rtol=0.0)
    with pytest.raises(InvalidParameterError, match=r"^atol must be finite"):
        integrate(_decay, np.ones(2), [0.0, 1.0], atol=float("nan"))


def _reached(msg: str) -> float:
    m = re.search(r"t = ([0-9.eE+-]+) of", msg)
    assert m, msg
    return float(m.group(1))


@pytest.mark.parametrize("method", ["BDF", "RK45"])
def test_integrate_blow_up_raises_with_time_reached(method):
    """ẏ = y², y(0) = 1 blows up at t = 1: an error naming t ≈ 1, never a partial trajectory."""
    result = None
    with pytest.raises(IntegrationError) as info:
        result = integrate(lambda y: y**2, np.ones(1), [0.0, 0.5, 2.0], method=method,
                           jac=lambda y: np.diag(2 * y))
    assert result is None
    t = _reached(str(info.value))
    assert 0.9 < t <= 1.0 + 1e-6
    assert "no trajectory returned" in str(info.value)


def test_integrate_non_finite_flow_raises_with_time_reached():
    """ẏ = y while y < 10, NaN beyond: y = e^t leaves the domain at t = ln 10."""
    fun = lambda y: np.where(y < 10.0, y, np.nan)  # noqa: E731
    with pytest.raises(IntegrationError, match="non-finite") as info:
        integrate(fun, np.ones(1), [0.0, 1.0, 5.0])
    t = _reached(str(info.value))
    assert 1.0 < t <= math.log(10.0) + 1e-9


def test_integrate_non_finite_flow_at_start():
    with pytest.raises(IntegrationError, match=r"t = 0"):
        integrate(lambda y: y * np.nan, np.ones(2), [0.0, 1.0])


def test_integrate_good_input_is_accurate():
    """The control case: ẏ = −y is integrated to e^{−t} (so the refusals above are specific)."""
    t = time_grid(3.0, 10)
    sol = integrate(_decay, np.array([1.0, -2.0]), t)
    np.testing.assert_allclose(sol.y, np.exp(-t)[:, None] * [1.0, -2.0], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("args, kwargs, name", [
    ((0.0,), {}, "t_end"), ((-1.0,), {}, "t_end"), ((float("nan"),), {}, "t_end"),
    ((1.0, 2), {}, "n_points"), ((1.0, 10.5), {}, "n_points"),
    ((1.0, 10), {"t_first": 2.0}, "t_first"), ((1.0, 10), {"t_first": -1.0}, "t_first"),
    ((1.0, 10), {"t_first": float("nan")}, "t_first"),
])
def test_time_grid_refuses(args, kwargs, name):
    with pytest.raises(InvalidParameterError, match=rf"^{name} must"):
        time_grid(*args, **kwargs)


# --- EdgeLoss ---------------------------------------------------------------------------------
def _edge(**kw):
    x, y = vector("x", 1), vector("y", 1)
    return EdgeLoss(sp.Rational(1, 2) * sqnorm(x - y), x, y, **kw)


@pytest.mark.parametrize("kw, pattern", [
    (dict(shared=(("x", sp.Matrix([[sp.Symbol("w")]])),)), r"^shared block names"),
    (dict(shared=(("y", sp.Matrix([[sp.Symbol("w")]])),)), r"^shared block names"),
    (dict(shared=(("W", sp.Matrix([[sp.Symbol("w")]])), ("W", sp.Matrix([[sp.Symbol("v")]])))),
     r"^shared block names"),
    (dict(learned={"Q"}), r"^learned must name blocks"),
])
def test_edge_loss_refuses_bad_block_names(kw, pattern):
    with pytest.raises(InvalidParameterError, match=pattern):
        _edge(**kw)


def test_edge_loss_refuses_unknown_block_and_matrix_expression():
    with pytest.raises(InvalidParameterError, match=r"^block must be one of \('x', 'y'\); got 'W'"):
        _edge().block("W")
    x, y = vector("x", 2), vector("y", 2)
    with pytest.raises(InvalidParameterError, match=r"^expr must be a scalar"):
        EdgeLoss(x - y, x, y)


# --- validation helpers and the 30-digit checks -----------------------------------------------
def test_validation_helpers_name_the_parameter():
    with pytest.raises(InvalidParameterError, match=r"^d must be an integer in \[1, 8\]; got 9"):
        check_int("d", 9, 1, 8)
    with pytest.raises(InvalidParameterError, match=r"^eps must be in \[0.0, 1.0\)"):
        check_real("eps", 1.0, 0.0, 1.0, strict_max=True)
    with pytest.raises(InvalidParameterError, match=r"^eta_W must be >= 0"):
        check_rate("eta_W", -1.0, allow_zero=True)
    assert check_rate("eta_W", 0.0, allow_zero=True) == 0.0
    with pytest.raises(InvalidParameterError, match=r"^Z must have shape \(\*, 3\)"):
        check_array("Z", np.ones((4, 2)), shape=(None, 3))
    with pytest.raises(InvalidParameterError, match=r"^Z must be real"):
        check_array("Z", np.ones(2) * 1j)


def test_mpcheck_refuses_bad_input():
    r = sp.Symbol("r")
    with pytest.raises(InvalidParameterError, match=r"^poly must have numeric coefficients"):
        polynomial_roots(r**2 - sp.Symbol("a"), r)
    with pytest.raises(InvalidParameterError, match=r"^poly must have degree >= 1"):
        polynomial_roots(sp.Integer(3) + 0 * r, r)
    with pytest.raises(InvalidParameterError, match=r"^which must be"):
        check_root("m", "c", r**2 - 2, r, 1.4, which="largest")
    with pytest.raises(InvalidParameterError, match=r"^dps must be"):
        check_root("m", "c", r**2 - 2, r, 1.4, dps=5)


# --- model classes ------------------------------------------------------------------------------
def _embedding(P=None, **kw):
    from symcollapse import EmbeddingModel

    return EmbeddingModel(balanced_couplings(2, 2, 1) if P is None else P, **kw)


@pytest.mark.parametrize("kw, name, allowed", [
    (dict(d=0), "d", ">= 1"), (dict(d=1.5), "d", "integer"), (dict(d=None), "d", "integer"),
    (dict(eta_x=0.0), "eta_x", "> 0"), (dict(eta_x=-1.0), "eta_x", "> 0"),
    (dict(eta_y=float("nan")), "eta_y", "finite"), (dict(eta_y=float("inf")), "eta_y", "finite"),
    (dict(eta_x="1"), "eta_x", "real number"),
    (dict(scale=0.0), "scale", "> 0"), (dict(scale=float("nan")), "scale", "finite"),
])
def test_embedding_model_refuses_bad_parameters(kw, name, allowed):
    with pytest.raises(InvalidParameterError) as info:
        _embedding(**kw)
    msg = str(info.value)
    assert msg.startswith(f"{name} must") and allowed in msg, msg


@pytest.mark.parametrize("P, allowed", BAD_P[:9] + [(np.ones((3, 1)), "K >= 2")])
def test_embedding_model_refuses_bad_P(P, allowed):
    with pytest.raises(InvalidParameterError, match=r"^P must") as info:
        _embedding(P, d=1)
    assert allowed in str(info.value)


@pytest.mark.parametrize("kw, name", [
    (dict(t_end=0.0), "t_end"), (dict(t_end=-1.0), "t_end"), (dict(t_end=float("nan")), "t_end"),
    (dict(t_end=float("inf")), "t_end"), (dict(t_end="long"), "t_end"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(n_points=2), "n_points"),
    (dict(Z0=np.zeros((3, 1))), "Z0"), (dict(Z0=np.full((7, 1), np.nan)), "Z0"),
    (dict(rtol=0.0), "rtol"), (dict(atol=-1.0), "atol"),
    (dict(t_eval=[0.0, 1.0, 0.5]), "t_eval"), (dict(t_eval=[0.0, np.nan]), "t_eval"),
])
def test_embedding_simulate_refuses_bad_arguments(kw, name):
    model = _embedding(d=1)
    kw = {"t_end": 1.0, **kw}
    with pytest.raises(InvalidParameterError, match=rf"^{name} must"):
        model.simulate(**kw)


def test_embedding_model_refuses_bad_state():
    model = _embedding(d=2)
    with pytest.raises(InvalidParameterError, match=r"^Z must have shape \(7, 2\)"):
        model.flow(np.zeros((2, 2)))
    with pytest.raises(InvalidParameterError, match=r"^Z must contain only finite"):
        model.loss(np.full((7, 2), np.inf))


def _head(P=None, **kw):
    from symcollapse import HeadModel

    return HeadModel(balanced_couplings(2, 2, 1) if P is None else P, **{"d": 2, **kw})


@pytest.mark.parametrize("kw, name, allowed", [
    (dict(d=0), "d", ">= 1"), (dict(d=2.5), "d", "integer"),
    (dict(eta_x=-1.0), "eta_x", "> 0"), (dict(eta_y=float("inf")), "eta_y", "finite"),
    (dict(eta_W=0.0), "eta_W", "> 0"), (dict(eta_W=float("nan")), "eta_W", "finite"),
    (dict(stop_gradient="maybe"), "stop_gradient", "'labels'"),
    (dict(stop_gradient=None), "stop_gradient", "'samples'"),
    (dict(learn_head="yes"), "learn_head", "True or False"),
    (dict(W_frozen=np.eye(3)), "W_frozen", "shape (2, 2)"),
    (dict(W_frozen=np.full((2, 2), np.nan)), "W_frozen", "finite"),
    (dict(scale=-1.0), "scale", "> 0"),
])
def test_head_model_refuses_bad_parameters(kw, name, allowed):
    with pytest.raises(InvalidParameterError) as info:
        _head(**kw)
    msg = str(info.value)
    assert msg.startswith(f"{name} must") and allowed in msg, msg


@pytest.mark.parametrize("P, allowed", BAD_P[:9])
def test_head_model_refuses_bad_P(P, allowed):
    with pytest.raises(InvalidParameterError, match=r"^P must") as info:
        _head(P)
    assert allowed in str(info.value)


@pytest.mark.parametrize("kw, name", [
    (dict(t_end=0.0), "t_end"), (dict(t_end=float("nan")), "t_end"), (dict(t_end=float("inf")), "t_end"),
    (dict(t_end="long"), "t_end"), (dict(seed=-1), "seed"), (dict(n_points=2), "n_points"),
    (dict(rtol=0.0), "rtol"), (dict(method="Euler"), "method"),
    (dict(t_eval=[0.0, 1.0, 0.5]), "t_eval"), (dict(t_eval=[0.0, np.nan]), "t_eval"),
    (dict(Z0=np.zeros((3, 2))), "Z0"), (dict(Z0=np.zeros((7, 2)), W0=np.eye(3)), "W0"),
    (dict(Z0=np.zeros((7, 2)), W0=np.full((2, 2), np.nan)), "W0"),
])
def test_head_simulate_refuses_bad_arguments(kw, name):
    with pytest.raises(InvalidParameterError, match=rf"^{name} must"):
        _head().simulate(**{"t_end": 1.0, **kw})


def test_head_model_refuses_bad_state():
    model = _head()
    with pytest.raises(InvalidParameterError, match=r"^Z must have shape \(7, 2\)"):
        model.flow(np.zeros((2, 2)), np.eye(2))
    with pytest.raises(InvalidParameterError, match=r"^W must"):
        model.flow(np.zeros((7, 2)), np.full((2, 2), np.nan))


def _teacher_student(**kw):
    from symcollapse import TeacherStudentModel

    return TeacherStudentModel(**{"D": 20, "n_inputs": 12, "K": 3, "d": 2, **kw})


@pytest.mark.parametrize("kw, name, allowed", [
    (dict(K=1), "K", ">= 2"), (dict(n_inputs=2), "n_inputs", ">= 3"),
    (dict(D=10, n_inputs=12), "D", ">= n_inputs"), (dict(D=2.5), "D", "integer"),
    (dict(d=0), "d", ">= 1"),
    (dict(eps=1.0), "eps", "[0.0, 1.0)"), (dict(eps=-0.1), "eps", "[0.0, 1.0)"),
    (dict(eps=float("nan")), "eps", "finite"),
    (dict(eta_S=0.0), "eta_S", "> 0"), (dict(eta_y=float("inf")), "eta_y", "finite"),
    (dict(eta_W=-1.0), "eta_W", "> 0"),
    (dict(head="yes"), "head", "True or False"), (dict(stop_gradient=None), "stop_gradient", "True or False"),
    (dict(seed=-1), "seed", ">= 0"), (dict(n_test=0), "n_test", ">= 1"),
])
def test_teacher_student_model_refuses_bad_parameters(kw, name, allowed):
    with pytest.raises(InvalidParameterError) as info:
        _teacher_student(**kw)
    msg = str(info.value)
    assert msg.startswith(f"{name} must") and allowed in msg, msg


@pytest.mark.parametrize("kw, name", [
    (dict(t_end=0.0), "t_end"), (dict(t_end=float("nan")), "t_end"), (dict(t_end=-1.0), "t_end"),
    (dict(n_points=2), "n_points"), (dict(t_eval=[1.0, 0.0]), "t_eval"),
    (dict(t_eval=[0.0, np.nan]), "t_eval"), (dict(method="Euler"), "method"),
    (dict(coordinates="polar"), "coordinates"), (dict(rtol=0.0), "rtol"),
])
def test_teacher_student_simulate_refuses_bad_arguments(kw, name):
    with pytest.raises(InvalidParameterError, match=rf"^{name} must"):
        _teacher_student().simulate(**{"t_end": 1.0, **kw})


# --- gaps found in review: rates container, unknown rate blocks, block names, empty y -------------
def test_flowsystem_rates_must_be_a_dict_naming_known_blocks():
    x, y = vector("x", 1), vector("y", 1)
    cp = compile_loss(EdgeLoss(sp.Rational(1, 2) * sqnorm(x - y), x, y, name="rates-check"))
    P = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(InvalidParameterError, match="rates"):
        FlowSystem(cp, P, rates=None)
    with pytest.raises(InvalidParameterError, match=r"unknown blocks \['z'\]"):
        FlowSystem(cp, P, rates={"x": 1.0, "y": 1.0, "z": 1.0})


@pytest.mark.parametrize("name", ["", "W 1", "1W"])
def test_edgeloss_shared_names_must_be_identifiers(name):
    x, y, W = vector("x", 1), vector("y", 1), matrix("W", 1, 1)
    with pytest.raises(InvalidParameterError, match="identifiers"):
        EdgeLoss(sp.S.Zero, x, y, shared=((name, W),))


def test_edgeloss_needs_a_label_vector():
    with pytest.raises(InvalidParameterError, match="y must have at least one component"):
        EdgeLoss(sp.S.Zero, vector("x", 1), sp.ImmutableMatrix(0, 1, []))


def test_head_model_refuses_one_label_and_names_missing_or_bad_states():
    import symcollapse as sc

    with pytest.raises(InvalidParameterError, match="K >= 2"):
        sc.HeadModel(np.ones((3, 1)), d=2)
    m = sc.HeadModel(balanced_couplings(2, 2, 1), d=2)
    Z = np.zeros((m.N + m.K, 2))
    with pytest.raises(InvalidParameterError, match="W must be given"):
        m.flow(Z)
    with pytest.raises(InvalidParameterError, match="Z0"):
        m.simulate(t_end=1.0, Z0=np.zeros((m.N + m.K, 3)), W0=np.eye(2))
    with pytest.raises(InvalidParameterError, match="W0"):
        m.simulate(t_end=1.0, Z0=Z, W0=np.full((2, 2), np.nan))
