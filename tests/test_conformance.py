"""Conformance of every registered model to the model contract (symcollapse.models.base.Model):
flows against finite differences, invariants along a trajectory, the simulate/fit/invariants
contract. Parametrised over the registry, so a newly registered model is tested here at once."""
import numpy as np
import pytest

from symcollapse.errors import InvalidParameterError
from symcollapse.models.base import Model
from symcollapse.models.registry import MODELS, get_model, model_names
from symcollapse.numerics.finite_differences import central_jacobian
from symcollapse.numerics.metrics import d_min
from symcollapse.numerics.terms import ComposedSystem


def _instances():
    out = [(name, get_model(name).example()) for name in model_names()]
    head = get_model("head")
    out.append(("head-no-sg", head(head.example().P, d=2, eta_x=1.0, eta_y=0.5, eta_W=0.8, stop_gradient=False)))
    return out


INSTANCES = _instances()
IDS = [n for n, _ in INSTANCES]


def _reference_flow(model, v):
    """The flow from an independent path: −s η ∂L/∂θ by central differences of the loss with every
    sg held at v (plus, for composed systems, each relaxation term's definition)."""
    sysm = model.system
    if isinstance(sysm, ComposedSystem):
        ref = sysm.terms[0].reference(v)
        base = sysm.gradient.unpack(v)
        for t in sysm.terms[1:]:
            target, val = t.reference_blocks(base)
            ref[target.indices(sysm.layout)] += val.ravel()
        return ref
    return -getattr(sysm, "scale", 1.0) * sysm.rate_vector * sysm.frozen_loss_gradient_fd(v)


def test_registry_lists_every_model_with_a_package_and_a_job():
    assert {"embedding", "head", "teacher_student", "ema"} <= set(model_names())
    for name, entry in MODELS.items():
        cls = entry.load()
        assert issubclass(cls, Model), name
        job = entry.load_job()
        assert job is None or (callable(job.checks) and callable(job.write_latex) and job.MODEL == name)
    with pytest.raises(InvalidParameterError, match="model must be one of"):
        get_model("nope")


@pytest.mark.parametrize("name,model", INSTANCES, ids=IDS)
def test_flow_and_jacobian_against_finite_differences(name, model):
    rng = np.random.default_rng(3)
    st = model.initial_blocks(2)
    v = model.vector(st) + 0.3 * rng.normal(size=model.system.size)
    f = model.system.flow_vector(v)
    ref = _reference_flow(model, v)
    assert np.max(np.abs(f - ref)) <= 1e-6 * max(1.0, np.max(np.abs(ref)))
    J = model.system.jacobian(v).toarray()
    Jfd = central_jacobian(model.system.flow_vector, v)
    assert np.max(np.abs(J - Jfd)) <= 1e-6 * max(1.0, np.max(np.abs(Jfd)))
    # the protocol's flow in the block convention is the same vector
    fb = model.flow(model.system.unpack(v))
    assert np.array_equal(model.vector(fb), f)


@pytest.mark.parametrize("name,model", INSTANCES, ids=IDS)
def test_state_convention_round_trip_and_loss(name, model):
    st0 = model.initial_state(1)
    blocks = model.blocks(st0)
    assert set(blocks) == set(model.block_names)
    v = model.vector(blocks)
    again = model.system.unpack(v)
    for b in model.block_names:
        assert np.array_equal(again[b], blocks[b])
    assert model.loss_value(blocks) == model.loss_value(st0)
    assert np.isfinite(model.loss_value(blocks)) and model.loss_value(blocks) >= 0
    # a flow given in a model's own form comes back in that form
    out = model.flow(st0)
    assert type(out) is type(st0)
    with pytest.raises(InvalidParameterError):
        model.vector({"y": blocks["y"]}) if "x" in blocks else model.vector({})


@pytest.mark.parametrize("name,model", INSTANCES, ids=IDS)
def test_simulate_fit_and_invariants_contract(name, model):
    kw = dict(coordinates="S") if name == "teacher_student" else {}
    tr = model.simulate(20.0, n_points=12, keep_states=True, rtol=1e-11, atol=1e-13, **kw)
    n = len(tr.t)
    assert n == 12 and tr.t[0] == 0.0 and np.all(np.diff(tr.t) > 0) and abs(tr.t[-1] - 20.0) < 1e-9
    assert tr.d_min.shape == tr.loss.shape == tr.accuracy.shape == (n,)
    assert tr.states.shape == (n, model.system.size)
    st0 = model.system.unpack(tr.states[0])
    assert abs(tr.loss[0] - model.loss_value(st0)) <= 1e-12 * max(1.0, tr.loss[0])
    assert abs(tr.d_min[0] - d_min(st0["y"])) <= 1e-12
    inv = np.array([model.invariants(model.system.unpack(v)) for v in tr.states])
    if inv[0].size:
        drift = np.max(np.abs(inv - inv[0]))
        assert drift <= 1e-8 * max(1.0, np.max(np.abs(inv[0])))
    else:  # only the stop-gradient-free head provides none
        assert name == "head-no-sg"
    # invariants can fail: they change when the state leaves the flow
    if inv[0].size:
        kicked = {b: a + 0.1 for b, a in st0.items() if b in model.block_names}
        assert np.max(np.abs(model.invariants(kicked) - inv[0])) > 1e-3
    fit = tr.fit_slow_rate(floor=1e-12, fraction=0.5)
    assert np.isfinite(fit)
