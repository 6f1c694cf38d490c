"""'LSODA-BDF-nodes' (numerics/method_choice.py item 3): a single stiff run starts in LSODA's
Adams mode (no Jacobian) and hands over to 'BDF-nodes' where LSODA switches to BDF. Checked
against the other integrators (dense LSODA, BDF-nodes alone, an exact linear solution), across
the hand-over: requested times, states, the stop at the fixed point, the sample reduction."""
import numpy as np
import pytest
from scipy.integrate import LSODA
from scipy.linalg import expm

import symcollapse as sc
from symcollapse.errors import InvalidParameterError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.numerics import integrate as ig
from symcollapse.numerics import method_choice as mc


def test_lsoda_until_stiff_ends_at_its_switch_on_an_exact_linear_flow(monkeypatch):
    """θ̇ = Aθ with eigenvalues −1 … −1e4: LSODA's Adams mode resolves the fast transient, then
    switches to BDF; the run ends there (no Jacobian evaluated), the states at the requested
    times before it and at the switch equal expm(tA)θ₀, and LSODA's work array is O(n), not n²."""
    rng = np.random.default_rng(0)
    n = 60
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = -(Q * np.geomspace(1.0, 1e4, n)) @ Q.T
    y0 = rng.normal(size=n)
    sizes = []

    class Spy(LSODA):
        def _step_impl(self):
            sizes.append(len(self._lsoda_solver._integrator.rwork))
            return super()._step_impl()

    monkeypatch.setitem(ig.METHOD_CLASSES, "LSODA", Spy)
    t_eval = np.array([0.0, 1e-3, 1e-2, 10.0])
    sol = ig.integrate(lambda y: A @ y, y0, t_eval, method="LSODA", rtol=1e-10, atol=1e-13, until_stiff=True)
    assert sol.switched and not sol.stopped and sol.njev == 0
    t_h = sol.t[-1]
    assert 0.0 < t_h < 10.0 and sol.t[-1] not in t_eval[1:]
    np.testing.assert_array_equal(sol.t[:-1], t_eval[t_eval < t_h])
    for t, y in zip(sol.t, sol.y):
        want = expm(t * A) @ y0
        assert np.max(np.abs(y - want)) <= 1e-7 * np.max(np.abs(y0)), t
    assert max(sizes) <= 22 + 20 * n < n * n  # banded (bandwidth 0): no n×n Jacobian storage
    with pytest.raises(InvalidParameterError, match="until_stiff"):
        ig.integrate(lambda y: A @ y, y0, t_eval, method="BDF", until_stiff=True)
    # without until_stiff LSODA runs to the end in its BDF mode
    full = ig.integrate(lambda y: A @ y, y0, t_eval, method="LSODA", rtol=1e-10, atol=1e-13)
    assert not full.switched and len(full.t) == len(t_eval)


def _small_head():
    return sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5)


def test_handover_agrees_with_the_other_integrators_across_the_switch(monkeypatch):
    h = _small_head()
    kw = dict(seed=1, n_points=8, rtol=1e-10, atol=1e-12, stop_residual=1e-9, keep_states=True)
    monkeypatch.setattr(mc, "ADAMS_FIRST_SIZE", h.system.size - 1)
    monkeypatch.setattr(mc, "SMALL_DENSE_SIZE", h.system.size - 1)
    tr = h.simulate(3000.0, **kw)  # auto
    assert tr.extra["method"] == "LSODA-BDF-nodes" and tr.extra["methods"] == ["LSODA", "BDF-nodes"]
    assert "Adams" in tr.extra["method_reason"] and tr.extra["stiffness"] > 2000
    t_h = tr.extra["handover_t"]
    assert tr.extra["stopped"] and tr.extra["residual"] <= 1e-9 and tr.extra["lsoda_steps"] > 0
    assert tr.extra["nsteps"] > tr.extra["lsoda_steps"] and tr.extra["njev"] >= 1
    before, after = tr.t[:-1][tr.t[:-1] < t_h], tr.t[:-1][tr.t[:-1] > t_h]
    assert len(before) >= 2 and len(after) >= 1  # requested times on both sides of the hand-over
    assert len(tr.t) == len(tr.d_min) == len(tr.accuracy) == len(tr.loss) == len(tr.states)
    dZ, dW = h.flow(tr.Z, tr.W)  # a fixed point of the derived flow
    assert max(np.max(np.abs(dZ)), np.max(np.abs(dW))) <= 1e-9
    np.testing.assert_array_equal(tr.states[-1], h.pack(tr.Z, tr.W))
    for meth in ("BDF-nodes", "LSODA"):  # the same trajectory at the requested times
        other = h.simulate(tr.t[-1], method=meth, **{**kw, "stop_residual": None, "t_eval": tr.t})
        scale = np.max(np.abs(other.states))
        assert np.max(np.abs(other.states - tr.states)) <= 1e-6 * scale, meth
        np.testing.assert_allclose(tr.d_min, other.d_min, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(tr.loss, other.loss, rtol=1e-5, atol=1e-9)


def test_handover_without_a_switch_and_without_a_stop(monkeypatch):
    """A short run LSODA ends in its Adams mode records methods ['LSODA'] and no hand-over; the
    explicit method name runs the same; a run to t_end (no stop) records every requested time."""
    h = _small_head()
    short = h.simulate(0.5, seed=1, n_points=5, rtol=1e-10, atol=1e-12, method="LSODA-BDF-nodes")
    assert short.extra["methods"] == ["LSODA"] and short.extra["handover_t"] is None
    ref = h.simulate(0.5, seed=1, t_eval=short.t, rtol=1e-10, atol=1e-12, method="DOP853")
    assert np.max(np.abs(short.Z - ref.Z)) <= 1e-7 * np.max(np.abs(ref.Z))
    t_eval = np.array([0.0, 1.0, 50.0, 100.0, 200.0])
    long_ = h.simulate(200.0, seed=1, t_eval=t_eval, rtol=1e-10, atol=1e-12, method="LSODA-BDF-nodes")
    assert long_.extra["methods"] == ["LSODA", "BDF-nodes"] and not long_.extra["stopped"]
    np.testing.assert_array_equal(long_.t, t_eval)
    ref = h.simulate(200.0, seed=1, t_eval=t_eval, rtol=1e-10, atol=1e-12, method="BDF-nodes")
    assert np.max(np.abs(long_.Z - ref.Z)) <= 1e-6 * np.max(np.abs(ref.Z))
    np.testing.assert_allclose(long_.d_min, ref.d_min, rtol=1e-5, atol=1e-9)


def test_choice_single_runs_above_adams_first_size_only(monkeypatch):
    h = _small_head()
    v0 = h.pack(*h.initial_state(1))
    n = h.system.size
    monkeypatch.setattr(mc, "SMALL_DENSE_SIZE", 0)
    monkeypatch.setattr(mc, "ADAMS_FIRST_SIZE", n - 1)
    assert mc.choose(h.system, v0, 3000.0).method == "LSODA-BDF-nodes"
    assert mc.choose(h.system, v0, 3000.0, seeds=2).method == "BDF-nodes"  # batched seeds
    assert mc.choose(h.system, v0, 2.0).method == "DOP853"  # not stiff over this time
    monkeypatch.setattr(mc, "ADAMS_FIRST_SIZE", n)
    assert mc.choose(h.system, v0, 3000.0).method == "BDF-nodes"


def test_handover_on_the_sample_reduced_system(monkeypatch):
    """A reducible head: the hand-over runs on the pseudo-samples with the lifted stop norm; the
    lifted end state is a fixed point of the full flow and Δ_min agrees with LSODA's run."""
    m = sc.HeadModel(balanced_couplings(3, 30, 2), d=2, eta_x=1.0, eta_y=0.5)
    kw = dict(seed=0, n_points=6, rtol=1e-9, atol=1e-12, stop_residual=1e-9)
    ref = m.simulate(1e4, **kw)  # auto on the reduced system: dense LSODA at this size
    monkeypatch.setattr(mc, "ADAMS_FIRST_SIZE", 0)
    monkeypatch.setattr(mc, "SMALL_DENSE_SIZE", 0)
    tr = m.simulate(1e4, **kw)
    assert ref.extra["method"] == "LSODA" and tr.extra["method"] == "LSODA-BDF-nodes"
    assert "sample_reduction" in tr.extra and tr.extra["stopped"]
    full = float(np.max(np.abs(m.system.flow_vector(m.pack(tr.Z, tr.W)))))
    assert full <= 1e-9 * (1 + 1e-6), full
    assert abs(tr.d_min[-1] - ref.d_min[-1]) <= 1e-5 * ref.d_min[0]
    np.testing.assert_allclose(tr.t[:-1], ref.t[:-1])
