"""method='auto', the exact linear solutions, stop-at-fixed-point and the sparse-LU size guard.

Every method is compared with the others and with an independent solution (dense expm of the
assembled derived Jacobian, docs/model.md §2: Ż = −s·H L_G Z) on small cases."""
import numpy as np
import pytest
import scipy.linalg

import symcollapse as sc
from symcollapse.errors import InvalidParameterError, ProblemTooLargeError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.models.embedding import EmbeddingModel
from symcollapse.numerics.column_flow import column_propagator, degree_reduction, node_operator


def _random_P(seed=0, N=9, K=3):
    rng = np.random.default_rng(seed)
    P = rng.uniform(0.2, 1.5, size=(N, K)) * (rng.uniform(size=(N, K)) < 0.5)
    P[np.arange(N), np.arange(N) % K] += 1.0
    return P


@pytest.mark.parametrize("P", [balanced_couplings(3, 4, 1), _random_P()], ids=["balanced", "random"])
def test_exact_methods_equal_dense_expm_and_integrators(P):
    m = EmbeddingModel(P, d=2, eta_x=1.0, eta_y=0.4, scale=0.7)
    Z0 = m.initial_state(3)
    t_end = 4.0 / m.slow_rate()
    J = m.jacobian().toarray()
    runs = {meth: m.simulate(t_end, Z0=Z0, method=meth, n_points=25, keep_states=True,
                             rtol=1e-11, atol=1e-13)
            for meth in ("auto", "exact-spectral", "exact-expm", "BDF", "DOP853")}
    assert runs["auto"].extra["method"] == "exact-spectral"
    assert "linear flow" in runs["auto"].extra["method_reason"]
    t = runs["auto"].t
    dense = np.array([scipy.linalg.expm(J * tk) @ Z0.ravel() for tk in t])
    scale = np.max(np.abs(dense))
    for meth, tr in runs.items():
        np.testing.assert_array_equal(tr.t, t)
        tol = 1e-11 if meth.startswith("exact") or meth == "auto" else 1e-7
        err = np.max(np.abs(tr.states - dense)) / scale
        assert err <= tol, (meth, err)
        assert tr.extra["method"] == (meth if meth != "auto" else "exact-spectral")
    # the recorded loss (−½ Σ z·(AZ)/η on the exact path) is the compiled derived loss
    want = [m.loss(v.reshape(-1, 2)) for v in runs["auto"].states]
    np.testing.assert_allclose(runs["auto"].loss, want, rtol=1e-10, atol=1e-14)
    # Δ_min(t) of the exact solution equals that of the dense reference to 1e-8 relative
    Y = dense.reshape(len(t), -1, 2)[:, m.N:]
    dm = np.array([sc.numerics.metrics.d_min(y) for y in Y])
    assert np.max(np.abs(runs["auto"].d_min / dm - 1)) <= 1e-8


def test_degree_reduction_is_small_and_exact():
    P = balanced_couplings(4, 50, 2)
    m = EmbeddingModel(P, d=3, eta_x=1.3, eta_y=0.2)
    A = node_operator(m.system)
    red = degree_reduction(A, m.N, m.K)
    assert red.m <= 3 * m.K  # two degree groups, rank ≤ K each, plus the K labels
    h = np.concatenate([np.full(m.N, 1.3), np.full(m.K, 0.2)])
    prop = column_propagator(A, m.N, m.K, h=h)
    Z0 = m.initial_state(0)
    t = 7.0
    want = scipy.sparse.linalg.expm_multiply(A * t, Z0)
    assert np.max(np.abs(prop(Z0, t) - want)) <= 1e-11 * np.max(np.abs(Z0))


def test_node_operator_refuses_a_nonlinear_flow():
    from symcollapse.errors import DerivationCheckError

    m = sc.HeadModel(balanced_couplings(2, 2, 1), d=2)
    with pytest.raises(DerivationCheckError):
        node_operator(m.system)


def test_stop_at_fixed_point_linear_and_nonlinear():
    m = EmbeddingModel(balanced_couplings(3, 4, 1), d=2, eta_x=1.0, eta_y=0.4)
    Z0 = m.initial_state(1)
    tol = 1e-9
    tr = m.simulate(1e4, Z0=Z0, stop_residual=tol)
    assert tr.extra["stopped"] and tr.extra["residual"] <= tol
    assert tr.t[-1] == tr.extra["t_reached"] < 1e4
    assert np.max(np.abs(m.flow(tr.Z))) <= tol
    # it is the first time the residual falls below tol: just before, it was above
    before = m.simulate(tr.t[-1] * (1 - 1e-4), Z0=Z0, n_points=3)
    assert np.max(np.abs(m.flow(before.Z))) > tol
    np.testing.assert_allclose(tr.Z, m.end_state(Z0), atol=1e-8)
    # the same test through an integrator, and not stopped when t_end comes first
    bdf = m.simulate(1e4, Z0=Z0, stop_residual=tol, method="BDF")
    assert bdf.extra["stopped"] and bdf.extra["residual"] <= tol
    assert abs(bdf.t[-1] - tr.t[-1]) <= 0.05 * tr.t[-1]
    short = m.simulate(1.0, Z0=Z0, stop_residual=tol)
    assert not short.extra["stopped"] and short.t[-1] == 1.0 and short.extra["residual"] > tol


def test_large_linear_problem_never_reaches_sparse_lu(monkeypatch):
    """docs/model.md §2 at N = 2·10⁵, d = 16 (3.2·10⁶ unknowns): the issue's SUPERLU_MALLOC case."""
    import scipy.integrate._ivp.bdf as bdf
    import scipy.sparse.linalg as sla

    import symcollapse.numerics.integrate as integ

    def no_lu(*a, **k):
        raise AssertionError("sparse LU called for a linear flow")

    for mod in (sla, bdf, integ):
        monkeypatch.setattr(mod, "splu", no_lu)
    m = EmbeddingModel(balanced_couplings(10, 20000, 10), d=16)
    tr = m.simulate(1.0, n_points=3)
    assert tr.extra["method"] == "exact-spectral"
    assert np.all(np.isfinite(tr.d_min)) and tr.d_min[-1] < tr.d_min[0]


def test_sparse_lu_beyond_the_limit_is_refused_with_a_clear_error():
    m = EmbeddingModel(balanced_couplings(3, 4, 1), d=2)
    with pytest.raises(ProblemTooLargeError, match=r"36×36 sparse Jacobian.*lu_limit = 10 unknowns.*method='auto'"):
        m.simulate(1.0, method="BDF", lu_limit=10)
    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=2)
    with pytest.raises(ProblemTooLargeError, match="unknowns"):
        h.simulate(1.0, method="BDF-Schur", lu_limit=5)
    # the default limit is far above what a sparse LU of these sizes needs
    assert m.simulate(1.0, method="BDF", n_points=3).extra["method"] == "BDF"


@pytest.mark.parametrize("bad", [dict(stop_residual=-1.0), dict(stop_residual=float("nan")),
                                 dict(method="bogus"), dict(lu_limit=0, method="BDF")])
def test_bad_options_are_refused(bad):
    m = EmbeddingModel(balanced_couplings(2, 2, 1), d=2)
    with pytest.raises(InvalidParameterError):
        m.simulate(1.0, **bad)


def test_spectral_radius_estimate_matches_eigenvalues():
    from symcollapse.numerics.method_choice import spectral_radius

    m = sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=1.0, eta_y=0.3)
    v = m.pack(*m.initial_state(2))
    J = m.system.jacobian(v).toarray()
    rho = np.max(np.abs(np.linalg.eigvals(J)))
    est = spectral_radius(m.system.linear_operator(v))
    assert 0.5 * rho <= est <= 2.0 * rho  # an order-of-magnitude stiffness measure


def test_head_auto_choices_agree_with_the_other_integrators(monkeypatch):
    import symcollapse.numerics.method_choice as mc

    m = sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=1.0, eta_y=0.3)
    short = m.simulate(2.0, seed=1, n_points=8, rtol=1e-10, atol=1e-12)
    small = sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5)
    kw = dict(seed=1, n_points=8, rtol=1e-10, atol=1e-12, stop_residual=1e-9)
    dense = small.simulate(3000.0, **kw)
    monkeypatch.setattr(mc, "SMALL_DENSE_SIZE", small.system.size - 1)
    long_ = small.simulate(3000.0, **kw)
    assert short.extra["method"] == "DOP853" and short.extra["stiffness"] <= 2000
    # stiff and small: LSODA with the dense analytic Jacobian
    assert dense.extra["method"] == "LSODA" and dense.extra["stiffness"] > 2000
    assert "dense" in dense.extra["method_reason"] and dense.extra["stopped"]
    # stiff, above SMALL_DENSE_SIZE: the sample rows are eliminated in closed form (block-diagonal sample block)
    assert long_.extra["method"] == "BDF-nodes" and long_.extra["stiffness"] > 2000
    assert long_.extra["schur_size"] == small.K * 2 + 4
    assert "ρ(J)·t_end" in long_.extra["method_reason"]
    # several seeds keep the batched BDF-nodes whatever the size
    monkeypatch.setattr(mc, "SMALL_DENSE_SIZE", 10**6)
    assert mc.choose(small.system, small.pack(*small.initial_state(1)), 3000.0, seeds=2).method == "BDF-nodes"
    assert abs(dense.t[-1] / long_.t[-1] - 1) <= 0.05  # the fixed point reached at about the same time
    for mod, ref, T, others in ((m, short, 2.0, ("BDF", "LSODA", "BDF-Schur")),
                                (small, long_, long_.t[-1], ("BDF", "BDF-Schur", "LSODA"))):
        for meth in others:
            other = mod.simulate(T, seed=1, t_eval=ref.t, rtol=1e-10, atol=1e-12, method=meth)
            scale = np.max(np.abs(ref.Z))
            assert np.max(np.abs(other.Z - ref.Z)) <= 1e-6 * scale, meth
            assert np.max(np.abs(other.W - ref.W)) <= 1e-6 * np.max(np.abs(ref.W)), meth
    # the stopped run ends at a fixed point of the derived flow
    assert long_.extra["stopped"] and long_.extra["residual"] <= 1e-9
    dZ, dW = small.flow(long_.Z, long_.W)
    assert max(np.max(np.abs(dZ)), np.max(np.abs(dW))) <= 1e-9


def test_simulate_many_equals_single_runs():
    m = EmbeddingModel(balanced_couplings(3, 4, 1), d=2, eta_x=1.0, eta_y=0.4)
    many = m.simulate_many(seeds=[0, 4, 7], t_end=1e4, stop_residual=1e-9, keep_states=True)
    for s, tr in zip([0, 4, 7], many):
        one = m.simulate(1e4, seed=s, stop_residual=1e-9, keep_states=True)
        np.testing.assert_allclose(tr.t, one.t, rtol=1e-12)
        assert np.max(np.abs(tr.states - one.states)) <= 1e-12
        assert tr.extra["stopped"] and tr.extra["batch"] == 3
    # the head model: all seeds in one BDF over the stacked state (batched kernels, per-seed
    # Newton blocks and error norms): each seed equals its single run to the integrator tolerance
    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5)
    kw = dict(stop_residual=1e-9, n_points=5, rtol=1e-10, atol=1e-12)
    many = h.simulate_many(seeds=[1, 2], t_end=2000.0, **kw)
    for s, tr in zip([1, 2], many):
        assert tr.extra["method"] == "BDF-nodes" and tr.extra["batch"] == 2
        one = h.simulate(2000.0, seed=s, method=tr.extra["method"], **kw)  # the documented equality
        assert one.extra["method"] == "BDF-nodes"
        assert tr.extra["stopped"] and one.extra["stopped"]
        np.testing.assert_allclose(tr.t[:-1], one.t[:-1], rtol=1e-12)  # the requested times
        assert abs(tr.t[-1] / one.t[-1] - 1) <= 0.05  # the fixed point reached at about the same time
        assert np.max(np.abs(tr.Z - one.Z)) <= 1e-7 * np.max(np.abs(one.Z))
        assert np.max(np.abs(tr.W - one.W)) <= 1e-7 * np.max(np.abs(one.W))
        dZ, dW = h.flow(tr.Z, tr.W)  # a fixed point of the derived flow
        assert max(np.max(np.abs(dZ)), np.max(np.abs(dW))) <= 1e-9
    with pytest.raises(InvalidParameterError, match="seeds"):
        h.simulate_many(seeds=[])
    with pytest.raises(InvalidParameterError, match="seeds"):
        m.simulate_many(seeds=[1, -2])


def test_single_stiff_run_takes_the_batched_integrator_where_its_blocks_fit(monkeypatch):
    """A single 'BDF-nodes' run goes through the batched integrator with one seed whenever one
    seed's dense coupling blocks (2·n₁·m doubles) fit SINGLE_BLOCK_BYTES, whatever n² is; else
    through scipy's BDF with the node-block LU. Both give the same trajectory."""
    import symcollapse.numerics.trajectory as traj

    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5)
    n1 = h.N * h.d
    need = 16.0 * n1 * (h.system.size - n1)
    kw = dict(t_end=20.0, n_points=5, rtol=1e-9, atol=1e-11, keep_states=True, method="BDF-nodes")
    monkeypatch.setattr(traj, "DENSE_JACOBIAN_ENTRIES", 0)  # the old n² rule would refuse both
    monkeypatch.setattr(traj, "SINGLE_BLOCK_BYTES", need)
    fits = h.simulate(seed=1, **kw)
    monkeypatch.setattr(traj, "SINGLE_BLOCK_BYTES", need - 1)
    sparse = h.simulate(seed=1, **kw)
    assert fits.extra["batch"] == 1 and "batch" not in sparse.extra
    assert np.max(np.abs(fits.states - sparse.states)) <= 1e-6 * np.max(np.abs(sparse.states))


def test_batched_kernels_equal_the_flow_seed_by_seed():
    """The batch axis of the matrix kernels: θ̇ of B stacked states = flow_vector state by state
    (with and without stop-gradient, learned and frozen head)."""
    from symcollapse.numerics.batched import batched_flow

    rng = np.random.default_rng(2)
    for kw in (dict(), dict(stop_gradient=False), dict(learn_head=False, W_frozen=rng.normal(size=(3, 3)))):
        h = sc.HeadModel(_random_P(1, N=8, K=3), d=3, eta_x=0.7, eta_y=0.4, eta_W=1.3, **kw)
        V = rng.normal(size=(5, h.system.size))
        ref = np.array([h.system.flow_vector(v) for v in V])
        assert np.max(np.abs(batched_flow(h.system, V) - ref)) <= 1e-13 * np.max(np.abs(ref))


def test_batched_seeds_without_stop_and_with_a_frozen_head_equal_single_runs():
    """simulate_many through the batched BDF also records every requested time (no stop) and
    handles a frozen head (no W block); each seed = its single run to the integrator tolerance."""
    P = balanced_couplings(2, 3, 1)
    rng = np.random.default_rng(0)
    for h in (sc.HeadModel(P, d=2, eta_x=1.0, eta_y=0.5),
              sc.HeadModel(P, d=2, eta_x=1.0, eta_y=0.5, learn_head=False, W_frozen=np.eye(2) + 0.3 * rng.normal(size=(2, 2)))):
        kw = dict(t_end=20.0, n_points=5, rtol=1e-9, atol=1e-11, keep_states=True, method="BDF-nodes")
        many = h.simulate_many(seeds=[0, 3], **kw)
        for s, tr in zip([0, 3], many):
            one = h.simulate(seed=s, **kw)
            assert tr.extra["method"] == one.extra["method"] == "BDF-nodes" and tr.extra["batch"] == 2
            np.testing.assert_array_equal(tr.t, one.t)
            assert not tr.extra["stopped"]
            assert np.max(np.abs(tr.states - one.states)) <= 1e-6 * np.max(np.abs(one.states))
            np.testing.assert_allclose(tr.d_min, one.d_min, rtol=0, atol=1e-6 * np.max(np.abs(one.states)))


def test_batched_jvp_jacobians_equal_the_assembled_jacobian():
    from symcollapse.numerics.batched import batched_jvp, dense_jacobians

    rng = np.random.default_rng(4)
    h = sc.HeadModel(_random_P(2, N=7, K=3), d=3, eta_x=0.8, eta_y=0.4, eta_W=1.2)
    V, dV = rng.normal(size=(3, h.system.size)), rng.normal(size=(3, h.system.size))
    ref = np.array([h.system.jvp(v, w) for v, w in zip(V, dV)])
    assert np.max(np.abs(batched_jvp(h.system, V, dV) - ref)) <= 1e-13 * np.max(np.abs(ref))
    J = dense_jacobians(h.system, V)
    for b in range(3):
        A = h.system.jacobian(V[b]).toarray()
        assert np.max(np.abs(J[b] - A)) <= 1e-13 * np.max(np.abs(A))


def test_head_simulate_never_builds_the_component_path():
    """The metrics of a matrix-level run must not touch the component-level system (its
    derivation grows with d and is refused above d = 24)."""
    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=30)
    tr = h.simulate(0.2, n_points=3)
    assert np.all(np.isfinite(tr.d_min)) and "component" not in h.system.__dict__


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_batched_newton_solve_equals_dense_solve_grouped_or_not(stop_gradient):
    """(I − cJ)⁻¹ r of the batched integrator (samples eliminated; the Schur complement from
    groups of equal sample blocks, docs/model.md §3, or formed directly) = numpy's dense solve,
    seed by seed, from the sparse assembled Jacobian and from the batched-JVP dense one."""
    import symcollapse.numerics.batched as bt

    rng = np.random.default_rng(5)
    h = sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=0.8, eta_y=0.4, eta_W=1.2,
                     stop_gradient=stop_gradient)
    sysm = h.system
    N, k = bt.node_blocks(sysm)
    V = np.array([h.pack(*h.initial_state(s)) for s in range(3)])
    n = sysm.size
    dense = bt.dense_jacobians(sysm, V)
    c = 0.37
    rhs = rng.normal(size=3 * n)
    want = np.concatenate([np.linalg.solve(np.eye(n) - c * dense[b], rhs[b * n:(b + 1) * n])
                           for b in range(3)])
    active = np.ones(3, dtype=bool)
    for mats in ([sysm.jacobian(v) for v in V], list(dense)):
        J = bt.BlockJacobian(mats, N, k, active)
        assert J.groups is not None and len(J.groups.offsets) - 1 == 3 * 2  # 2 sample degrees per seed
        got = bt.BatchedNodeLU(c * J).solve(rhs)
        assert np.max(np.abs(got - want)) <= 1e-11 * np.max(np.abs(want))
        J.groups = None  # the direct Schur complement
        got = bt.BatchedNodeLU(c * J).solve(rhs)
        assert np.max(np.abs(got - want)) <= 1e-11 * np.max(np.abs(want))
    # sample blocks that all differ (symmetric: one group per sample) or are not symmetric (no
    # grouping): the same answer as the dense solve of the changed matrix
    for sym in (True, False):
        E = 1e-2 * rng.normal(size=(3, N, k, k))
        E = E + np.swapaxes(E, -1, -2) if sym else E
        mod = dense.copy()
        for b in range(3):
            for i in range(N):
                mod[b, i * k:(i + 1) * k, i * k:(i + 1) * k] += E[b, i]
        J = bt.BlockJacobian(list(mod), N, k, active)
        assert (J.groups is not None and len(J.groups.offsets) - 1 == 3 * N) if sym else J.groups is None
        want = np.concatenate([np.linalg.solve(np.eye(n) - c * mod[b], rhs[b * n:(b + 1) * n])
                               for b in range(3)])
        got = bt.BatchedNodeLU(c * J).solve(rhs)
        assert np.max(np.abs(got - want)) <= 1e-11 * np.max(np.abs(want))
