"""What the conserved quantities predict about the head model's end state (docs/model.md §3.2):
the matrix invariant Q is conserved; in the decoupled sector class and at d = 1 the end state's
amplitudes and Δ_min(∞) follow from Q(0) and the level reached (checked against integrated end
states); outside, two initial states with equal Q reach the same family with different Δ_min."""
import numpy as np
import pytest

import symcollapse as sc
from symcollapse.errors import InvalidParameterError
from symcollapse.models.head import end_state as ep
from symcollapse.numerics import families as fm
from symcollapse.numerics.basins import run_to_fixed_point
from symcollapse.numerics.metrics import d_min
from symcollapse.tolerance import within


def _model(K, n, mu, d, eta_W=1.0):
    return sc.HeadModel(sc.balanced_couplings(K, n, mu), d=d, eta_x=1.0, eta_y=0.1, eta_W=eta_W)


def test_matrix_invariant_is_conserved_along_a_trajectory():
    m = _model(2, 3, 1, 3)
    Z0, W0 = m.initial_state(2)
    tr = m.simulate(t_eval=np.array([0.0, 20.0]), Z0=Z0, W0=W0, rtol=1e-11, atol=1e-13, method="DOP853")
    Q0, Q1 = ep.matrix_invariant(m, Z0, W0), ep.matrix_invariant(m, tr.Z, tr.W)
    assert within(np.max(np.abs(Q1 - Q0)), 1e-8)
    assert within(abs(np.trace(Q0) - m.invariant(Z0, W0)), 1e-12)
    assert np.max(np.abs(Q0 - np.diag(np.diag(Q0)))) > 1e-3  # the off-diagonal entries are real quantities


def _decoupled_case(K, n, mu, sectors, seed):
    m = _model(K, n, mu, len(sectors))
    Z0, W0 = ep.decoupled_state(K, n, mu, sectors, seed=seed)
    Z, W, t, res = run_to_fixed_point(m, Z0, W0, tol=1e-9)
    signs = ep.reached_levels(m, K, n, mu, sectors, Z, W)
    amps, dpred = ep.predict_decoupled(m, K, n, mu, sectors, Z0, W0, signs)
    sim = ep.simulated_amplitudes(K, n, mu, sectors, Z, W, signs)
    return m, Z, W, res, signs, np.array(amps), np.array(sim), dpred, d_min(Z[m.N:])


def test_decoupled_state_final_separation_is_the_invariant_prediction():
    m, Z, W, res, signs, amps, sim, dpred, dsim = _decoupled_case(2, 5, 2, [("sep", 0), "uniform"], 0)
    assert within(res, 1e-9)
    assert signs == [1, 1]
    assert within(np.max(np.abs(amps - sim) / np.abs(sim)), 1e-6)
    assert within(abs(dpred - dsim) / dsim, 1e-6) and dsim > 0.1
    assert fm.classify_state(m, Z, W).kind == "stable"


def test_single_mode_amplitude_at_d1_for_a_general_initial_state():
    m = _model(2, 5, 2, 1)
    Z0, W0 = m.initial_state(0)
    Z, W, t, res = run_to_fixed_point(m, Z0, W0, tol=1e-9)
    fam, _ = fm.state_family(m.graph, Z)
    (lv,) = [lv for lv, r in zip(fm.nu_levels(m.graph), fam.ranks) if r]
    assert lv.m == 1
    phi = lv.phi[:, 0]
    ell = ep.single_mode_amplitude(m, Z0, W0, phi, lv.nu)
    got = abs(float(phi @ (m.graph.degree * Z[:, 0])))
    assert within(abs(ell - got) / got, 1e-6)


def test_outside_the_classes_equal_invariants_give_different_end_states():
    # d = 2, a general initial state: a second state with the same Q reaches the same family with a
    # different Δ_min(∞), so no function of the conserved quantities predicts it
    m = _model(2, 5, 2, 2)
    Z0, W0 = m.initial_state(0)
    Z0b, W0b = ep.equal_invariant_state(m, Z0, W0, angle=0.3, seed=0)
    assert within(np.max(np.abs(ep.matrix_invariant(m, Z0, W0) - ep.matrix_invariant(m, Z0b, W0b))), 1e-12)
    ends = [run_to_fixed_point(m, a, b, tol=1e-9) for a, b in ((Z0, W0), (Z0b, W0b))]
    fams = [fm.state_family(m.graph, Z)[0].key for Z, *_ in ends]
    seps = [d_min(Z[m.N:]) for Z, *_ in ends]
    assert fams[0] == fams[1]
    assert abs(seps[0] - seps[1]) > 1e-2


def test_bad_input():
    with pytest.raises(InvalidParameterError, match="sectors"):
        ep.decoupled_state(3, 2, 1, [("sep", 2)])
    with pytest.raises(InvalidParameterError, match="twice"):
        ep.decoupled_state(3, 2, 1, [("sep", 0), ("sep", 0)])
    m = _model(2, 5, 2, 2)
    Z0, W0 = m.initial_state(0)
    with pytest.raises(InvalidParameterError, match="decoupled"):
        ep.predict_decoupled(m, 2, 5, 2, [("sep", 0), "uniform"], Z0, W0, [1, 1])
    with pytest.raises(InvalidParameterError, match="d = 1"):
        ep.single_mode_amplitude(m, Z0, W0, np.zeros(m.N + m.K), 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("K, n, mu", [(3, 2, 1), (4, 2, 1)])
def test_decoupled_prediction_at_K3_K4(K, n, mu):
    sectors = [("sep", p) for p in range(K - 1)] + ["uniform"]
    for seed in (1, 2):
        m, Z, W, res, signs, amps, sim, dpred, dsim = _decoupled_case(K, n, mu, sectors, seed)
        assert within(res, 1e-9)
        assert within(abs(dpred - dsim) / max(dsim, 1e-300), 1e-6)


def test_the_discovered_invariant_is_the_closed_form_Q():
    # the engine finds exactly one matrix-level invariant; evaluated it is Zᵀ H⁻¹ Z − WᵀW/η_W
    m = _model(3, 2, 1, 3, eta_W=0.7)
    Z, W = m.initial_state(1)
    W = W + 0.3 * np.random.default_rng(0).normal(size=W.shape)
    H = np.concatenate([np.full(m.N, m.eta_x), np.full(m.K, m.eta_y)])
    closed = Z.T @ (Z / H[:, None]) - W.T @ W / m.eta_W
    assert within(np.max(np.abs(ep.matrix_invariant(m, Z, W) - closed)), 1e-12)
