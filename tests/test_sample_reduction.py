"""The exact sample reduction (docs/model.md §3.5): groups of samples with one coupling row
replaced by d + 1 weighted pseudo-samples, checked against the full flow and full trajectories."""
import numpy as np
import pytest

import symcollapse as sc
from symcollapse.errors import DerivationCheckError, InvalidParameterError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.models.embedding import EmbeddingModel
from symcollapse.numerics.batched import batched_flow, batched_jvp
from symcollapse.numerics.finite_differences import central_jacobian
from symcollapse.numerics.sample_reduction import (SampleReduction, group_lift, reduction, sample_groups,
                                                   simplex)
from symcollapse.numerics.trajectory import simulate_system


@pytest.mark.parametrize("n, d, rank", [(40, 3, 3), (9, 4, 4), (30, 4, 2)])
def test_pseudo_samples_carry_the_group_moments_and_span_its_samples(n, d, rank):
    rng = np.random.default_rng(n + d)
    X = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + rng.normal(size=d)  # affine rank `rank`
    U, a = group_lift(X, d + 1)
    w = n / (d + 1)
    assert U.shape == (d + 1, d) and a.shape == (n, d + 1)
    np.testing.assert_allclose(w * U.sum(axis=0), X.sum(axis=0), rtol=0, atol=1e-12 * n)
    np.testing.assert_allclose(w * U.T @ U, X.T @ X, rtol=0, atol=1e-11 * np.abs(X.T @ X).max())
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(a @ U, X, rtol=0, atol=1e-12 * np.abs(X).max())
    S = simplex(d + 1)
    np.testing.assert_allclose(S.sum(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(S.T @ S, (d + 1) * np.eye(d), atol=1e-12)


def test_groups_follow_the_coupling_rows():
    P = balanced_couplings(3, 10, 2)  # 3 classes of 10, 3 pairs of 2 frustrated samples
    g = sample_groups(P, d=4)
    assert sorted(len(m) for m in g.members) == [2, 2, 2, 10, 10, 10]
    assert sorted(g.q) == [2, 2, 2, 5, 5, 5] and g.N_reduced == 21 and g.N == 36
    for idx in g.members:
        assert np.all(P[idx] == P[idx[0]])


@pytest.mark.parametrize("kw", [dict(), dict(stop_gradient=False), dict(stop_gradient="labels")])
def test_reduced_flow_jacobian_and_batched_kernels_are_the_full_ones(kw):
    h = sc.HeadModel(balanced_couplings(3, 12, 2), d=3, eta_x=0.8, eta_y=0.4, eta_W=1.3, **kw)
    red = reduction(h.system)
    assert red is not None and red.groups.N_reduced == 3 * 4 + 3 * 2
    rng = np.random.default_rng(1)
    v = rng.normal(size=h.system.size)
    vr, lift = red.reduce(v)
    assert red.check(v, vr, lift) <= 1e-12
    J = red.system.jacobian(vr).toarray()
    Jfd = central_jacobian(red.system.flow_vector, vr, 1e-6)
    assert np.max(np.abs(J - Jfd)) <= 1e-7 * np.max(np.abs(J))
    w = rng.normal(size=vr.size)
    assert np.max(np.abs(red.system.jvp(vr, w) - J @ w)) <= 1e-12 * np.max(np.abs(J @ w))
    assert np.max(np.abs(batched_flow(red.system, vr[None])[0] - red.system.flow_vector(vr))) <= 1e-12 * np.max(
        np.abs(red.system.flow_vector(vr)))
    assert np.max(np.abs(batched_jvp(red.system, vr[None], w[None])[0] - J @ w)) <= 1e-12 * np.max(np.abs(J @ w))
    # the lifted residual norm is the full flow's ‖θ̇‖_∞
    full = np.max(np.abs(h.system.flow_vector(red.expand(vr, lift))))
    assert abs(red.full_norm(red.system.flow_vector(vr), lift) / full - 1) <= 1e-12
    vr2, lift2 = red.reduce(rng.normal(size=h.system.size))
    F = np.array([red.system.flow_vector(vr), red.system.flow_vector(vr2)])
    np.testing.assert_allclose(red.full_norms(F, [lift, lift2]),
                               [red.full_norm(F[0], lift), red.full_norm(F[1], lift2)], rtol=1e-14)
    # with ``above``: exact where the norm is ≤ above, else a lower bound still > above
    (off, (n, k)) = red.system.layout["x"]
    G = F.copy()
    G[0, off + n * k:] *= 1e-9 / np.max(np.abs(G[0, off + n * k:]))  # labels/shared small, samples not
    exact = np.array([red.full_norm(G[0], lift), red.full_norm(G[1], lift2)])
    for above in (0.5 * exact.min(), 2.0 * exact.max(), 1e-8):
        got = red.full_norms(G, [lift, lift2], above=above)
        assert np.all(got <= exact * (1 + 1e-14)) and np.all((got <= above) == (exact <= above))
        np.testing.assert_allclose(got[exact <= above], exact[exact <= above], rtol=1e-14)
    assert red.full_norms(G, [lift, lift2], above=1e-8)[0] == exact[0]  # lifted: its samples decide


def test_a_wrong_reduction_is_refused():
    """Multiplicities that do not carry the groups' sizes give a flow that is not the full one:
    the exactness check must raise, not integrate it."""
    h = sc.HeadModel(balanced_couplings(2, 12, 1), d=2)
    red = reduction(h.system)
    m = red.system.multiplicity
    P = red.system.graph.P
    P = P.toarray() if hasattr(P, "toarray") else np.asarray(P)
    bad = type(red.system)(red.system.compiled, P / m[:, None], rates=dict(red.system.rates), dims=dict(red.system.dims),
                           check=False, multiplicity=np.ones_like(m))
    wrong = SampleReduction(h.system, bad, red.groups)
    v = h.pack(*h.initial_state(0))
    vr, lift = wrong.reduce(v)
    with pytest.raises(DerivationCheckError, match="sample reduction"):
        wrong.check(v, vr, lift)
    # a NaN anywhere in the comparison fails the check (here the reduced loss)
    vr, lift = red.reduce(v)
    red.system.loss = lambda st: float("nan")
    try:
        with pytest.raises(DerivationCheckError, match="sample reduction"):
            red.check(v, vr, lift)
    finally:
        del red.system.loss
    with pytest.raises(InvalidParameterError, match="multiplicity"):
        type(red.system)(red.system.compiled, P, rates=dict(red.system.rates), dims=dict(red.system.dims),
                         check=False, multiplicity=-m)
    with pytest.raises(InvalidParameterError, match="component"):
        red.system.component


def test_auto_run_on_pseudo_samples_equals_the_full_run():
    """K = 3 head, 3 × 12 consistent + 3 × 2 frustrated samples, d = 2: 'auto' integrates 15 pseudo-
    samples and lifts them; the full BDF-nodes run gives the same metrics and end state, and the stop
    is a fixed point of the full flow."""
    h = sc.HeadModel(balanced_couplings(3, 12, 2), d=2, eta_x=1.0, eta_y=0.5)
    kw = dict(stop_residual=1e-9, n_points=6, rtol=1e-10, atol=1e-12, keep_states=True)
    tr = h.simulate(3000.0, seed=2, **kw)
    info = tr.extra["sample_reduction"]
    assert info["samples"] == h.N == 42 and info["pseudo_samples"] == 3 * 3 + 3 * 2
    assert info["exactness_t0"] <= 1e-12 and "pseudo-samples" in tr.extra["method_reason"]
    assert tr.extra["stopped"] and tr.extra["residual"] <= 1e-9
    dZ, dW = h.flow(tr.Z, tr.W)
    assert max(np.max(np.abs(dZ)), np.max(np.abs(dW))) <= 1e-9
    ref = h.simulate(3000.0, seed=2, method=tr.extra["method"], t_eval=tr.t, **{k: v for k, v in kw.items()
                                                                               if k not in ("n_points", "stop_residual")})
    assert "sample_reduction" not in ref.extra
    scale = np.max(np.abs(ref.states))
    assert tr.states.shape == ref.states.shape
    assert np.max(np.abs(tr.states - ref.states)) <= 1e-6 * scale
    np.testing.assert_allclose(tr.d_min, ref.d_min, rtol=0, atol=1e-6 * np.max(ref.d_min))
    np.testing.assert_allclose(tr.loss, ref.loss, rtol=0, atol=1e-6 * np.max(ref.loss))
    np.testing.assert_array_equal(tr.accuracy, ref.accuracy)


def test_simulate_many_reduces_every_seed_and_equals_its_single_run():
    h = sc.HeadModel(balanced_couplings(2, 10, 1), d=2, eta_x=1.0, eta_y=0.5)
    kw = dict(stop_residual=1e-9, n_points=4, rtol=1e-10, atol=1e-12)
    many = h.simulate_many(seeds=[0, 5], t_end=3000.0, **kw)
    for s, tr in zip([0, 5], many):
        one = h.simulate(3000.0, seed=s, **kw)
        assert tr.extra["sample_reduction"]["pseudo_samples"] == one.extra["sample_reduction"]["pseudo_samples"] == 2 * 3 + 1
        assert tr.extra["batch"] == 2 and tr.extra["method"] == "BDF-nodes"
        assert tr.extra["stopped"] and tr.extra["residual"] <= 1e-9
        assert np.max(np.abs(tr.Z - one.Z)) <= 1e-7 * np.max(np.abs(one.Z))
        assert np.max(np.abs(tr.W - one.W)) <= 1e-7 * np.max(np.abs(one.W))


def test_reduction_is_not_used_where_it_does_not_apply():
    # linear flows keep their exact solution; small groups are not reduced; explicit methods run as asked
    emb = EmbeddingModel(balanced_couplings(2, 20, 1), d=2)
    assert reduction(emb.system) is not None  # the engine could reduce it ...
    tr = emb.simulate(50.0, n_points=3)
    assert tr.extra["method"].startswith("exact") and "sample_reduction" not in tr.extra  # ... auto does not
    small = sc.HeadModel(balanced_couplings(2, 3, 1), d=2)
    assert reduction(small.system) is None
    big = sc.HeadModel(balanced_couplings(2, 12, 1), d=2)
    v0 = big.pack(*big.initial_state(0))
    off = simulate_system(big.system, v0, 5.0, labels=big.labels, head="W", n_points=3, method="auto",
                          reduce_samples=False)
    assert "sample_reduction" not in off.extra
    on = simulate_system(big.system, v0, 5.0, labels=big.labels, head="W", n_points=3, method="auto")
    assert on.extra["sample_reduction"]["pseudo_samples"] == 2 * 3 + 1
    assert np.max(np.abs(on.Z - off.Z)) <= 1e-7 * np.max(np.abs(off.Z))


def test_exactness_check_near_a_fixed_point_and_for_degenerate_groups():
    """Near a fixed point the flow cancels far below its terms: the check measures the gap on the
    terms' scale (a generic reduced state with the same lift). A group whose samples coincide
    (zero covariance) is still lifted exactly."""
    h = sc.HeadModel(balanced_couplings(2, 12, 1), d=2, eta_x=1.0, eta_y=0.5)
    tr = h.simulate(3000.0, seed=1, stop_residual=1e-11, n_points=3, rtol=1e-10, atol=1e-13)
    red = reduction(h.system)
    v = h.pack(tr.Z, tr.W)
    vr, lift = red.reduce(v)
    assert np.max(np.abs(h.system.flow_vector(v))) <= 1e-10
    assert red.check(v, vr, lift) <= 1e-12
    Z, W = h.initial_state(0)
    Z[:12] = Z[0]  # class 0: twelve equal samples
    v = h.pack(Z, W)
    vr, lift = red.reduce(v)
    g0 = next(g for g, m in enumerate(red.groups.members) if 0 in m)
    assert not lift.generic[g0] and all(lift.generic[g] for g in range(len(lift.generic)) if g != g0)
    assert red.check(v, vr, lift) <= 1e-12
    tr = h.simulate(50.0, Z0=Z, W0=W, n_points=3)
    ref = h.simulate(50.0, Z0=Z, W0=W, n_points=3, method=tr.extra["method"])
    assert "sample_reduction" in tr.extra
    assert np.max(np.abs(tr.Z - ref.Z)) <= 1e-7 * np.max(np.abs(ref.Z))
