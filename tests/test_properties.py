"""Property-based tests over random coupling graphs, and the 30-digit mpmath re-checks.

Every property is compared with an independent computation (a union-find over P written
here, the symmetric matrix H^{1/2} L_G H^{1/2}, docs/model.md's closed forms (§2, §3)), never with the
engine's own bookkeeping.
"""
from functools import cache

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from symcollapse.numerics.integrate import integrate, time_grid
import symcollapse.closed_forms as cf
from symcollapse.numerics.kernels import compile_loss
from symcollapse.numerics.system import FlowSystem
from symcollapse.symbolic import EdgeLoss, derive_flow
from symcollapse.symbolic.flow import EdgeFlow
from symcollapse.jobs.engine import balanced_slow_rate_engine, engine_checks
from symcollapse.symbolic.mpcheck import (balanced_sector_cubic, check_edge_jacobian,
                                          check_forces, check_identity, check_root,
                                          edge_hessian_asymmetry, embedding_loss,
                                          head_loss, invariant_rate, require)
from symcollapse.errors import DerivationCheckError

SETTINGS = settings(max_examples=25, deadline=None)


@cache
def emb(d):
    return compile_loss(embedding_loss(d))


@cache
def head(d, with_sg):
    return compile_loss(head_loss(d, with_sg))


@st.composite
def graphs(draw, max_n=12, max_k=4):
    """A random sparse P >= 0 (N <= 12, K <= 4, at least one edge), rates, d and a seed."""
    N = draw(st.integers(1, max_n))
    K = draw(st.integers(2, max_k))
    entry = st.one_of(st.just(0.0), st.just(0.0), st.floats(0.1, 3.0))
    P = np.array(draw(st.lists(entry, min_size=N * K, max_size=N * K))).reshape(N, K)
    if not P.any():
        P[draw(st.integers(0, N - 1)), draw(st.integers(0, K - 1))] = 1.0
    eta_x = draw(st.floats(0.2, 5.0))
    eta_y = draw(st.floats(0.2, 5.0))
    d = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    return P, eta_x, eta_y, d, seed


def components(P):
    """Component label of each of the N+K nodes by union-find over the edges of P."""
    N, K = P.shape
    parent = list(range(N + K))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, c in zip(*np.nonzero(P > 0)):
        parent[find(int(i))] = find(N + int(c))
    roots = [find(a) for a in range(N + K)]
    relabel = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([relabel[r] for r in roots])


def node_rates(P, eta_x, eta_y):
    N, K = P.shape
    return np.concatenate([np.full(N, eta_x), np.full(K, eta_y)])


def laplacian(P):
    N, K = P.shape
    A = np.zeros((N + K, N + K))
    A[:N, N:] = P
    A[N:, :N] = P.T
    return np.diag(A.sum(axis=1)) - A


def decay_rates(P, eta_x, eta_y, d):
    """Eigenvalues of −J for the embedding flow, from the engine's sparse Jacobian."""
    sysm = FlowSystem(emb(d), P, rates={"x": eta_x, "y": eta_y})
    J = sysm.jacobian(np.zeros(sysm.size)).toarray()
    return np.linalg.eigvals(-J)


# --- embedding model: linear invariants, spectrum, collapse --------------------------------
@SETTINGS
@given(graphs())
def test_component_invariants_conserved_along_trajectory(g):
    P, eta_x, eta_y, d, seed = g
    rng = np.random.default_rng(seed)
    sysm = FlowSystem(emb(d), P, rates={"x": eta_x, "y": eta_y})
    v0 = rng.normal(size=sysm.size)
    sol = integrate(sysm.flow_vector, v0, time_grid(5.0, 20), jac=sysm.jacobian)
    comp = components(P)
    eta = node_rates(P, eta_x, eta_y)[:, None]
    n_nodes = len(eta)

    def invariants(v):
        Z = v.reshape(n_nodes, d) / eta
        return np.array([Z[comp == c].sum(axis=0) for c in range(comp.max() + 1)])

    I0 = invariants(v0)
    scale = max(1.0, float(np.max(np.abs(v0.reshape(n_nodes, d) / eta))))
    moved = np.max(np.abs(sol.y[-1] - v0))
    for v in sol.y:
        assert np.max(np.abs(invariants(v) - I0)) <= 1e-9 * scale
    # the test can fail: the state does move (unless the graph has no edge between movers)
    assert moved > 1e-6


@SETTINGS
@given(graphs())
def test_decay_rates_real_nonnegative_and_zero_modes_count_components(g):
    P, eta_x, eta_y, d, _ = g
    lam = decay_rates(P, eta_x, eta_y, d)
    scale = max(1.0, float(np.max(np.abs(lam))))
    assert np.max(np.abs(lam.imag)) <= 1e-9 * scale
    assert np.min(lam.real) >= -1e-9 * scale
    n_comp = components(P).max() + 1
    assert np.sum(np.abs(lam) <= 1e-9 * scale) == d * n_comp
    # independent: −J = (H L_G) ⊗ I_d is similar to the symmetric H^½ L_G H^½ ⊗ I_d
    h = np.sqrt(node_rates(P, eta_x, eta_y))
    sym = h[:, None] * laplacian(P) * h[None, :]
    ref = np.repeat(np.linalg.eigvalsh(sym), d)
    np.testing.assert_allclose(np.sort(lam.real), np.sort(ref), rtol=0, atol=1e-9 * scale)


@SETTINGS
@given(graphs())
def test_labels_collapse_iff_the_graph_connects_them(g):
    P, eta_x, eta_y, d, seed = g
    N, K = P.shape
    rng = np.random.default_rng(seed)
    sysm = FlowSystem(emb(d), P, rates={"x": eta_x, "y": eta_y})
    lam = np.sort(np.abs(decay_rates(P, eta_x, eta_y, d).real))
    r_min = lam[lam > 1e-9 * max(1.0, lam[-1])][0]
    v0 = rng.normal(size=sysm.size)
    t_end = 60.0 / r_min  # e^{-60}: every non-zero mode has decayed
    sol = integrate(sysm.flow_vector, v0, time_grid(t_end, 30), jac=sysm.jacobian)
    Z0, Z = v0.reshape(N + K, d), sol.y[-1].reshape(N + K, d)
    comp = components(P)
    eta = node_rates(P, eta_x, eta_y)
    # docs/model.md §2: each component ends at its η-weighted mean Σ z_k(0)/η_k / Σ 1/η_k
    for c in range(comp.max() + 1):
        m = comp == c
        R = cf.weighted_mean(Z0[m], eta[m])
        np.testing.assert_allclose(Z[m], np.broadcast_to(R, Z[m].shape), rtol=0, atol=1e-7)
    Y = Z[N:]
    for a in range(K):
        for b in range(a + 1, K):
            gap = np.linalg.norm(Y[a] - Y[b])
            if comp[N + a] == comp[N + b]:
                assert gap <= 1e-7
            else:
                assert gap > 1e-7


@SETTINGS
@given(graphs())
def test_mean_loss_is_the_sum_loss_with_every_rate_divided_by_N(g):
    P, eta_x, eta_y, d, seed = g
    N = P.shape[0]
    v = np.random.default_rng(seed).normal(size=(N + P.shape[1]) * d)
    mean = FlowSystem(emb(d), P, rates={"x": eta_x, "y": eta_y}, scale=1.0 / N)
    slow = FlowSystem(emb(d), P, rates={"x": eta_x / N, "y": eta_y / N})
    np.testing.assert_allclose(mean.flow_vector(v), slow.flow_vector(v), rtol=1e-13, atol=1e-15)
    assert np.isclose(mean.loss_vector(v) * N, FlowSystem(emb(d), P, rates={"x": 1, "y": 1}).loss_vector(v),
                      rtol=1e-13)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 4), st.integers(1, 3), st.integers(1, 3), st.floats(0.1, 10.0),
       st.floats(0.1, 10.0))
def test_balanced_slow_rate_is_smallest_root_of_sector_cubic(K, n, mu, eta_x, eta_y):
    """docs/model.md §2: the smallest nonzero eigenvalue of H L_G is the smallest root of the cubic."""
    r = sp.Symbol("r")
    claimed = balanced_slow_rate_engine(K, n, mu, eta_x, eta_y)
    cubic = balanced_sector_cubic(r, K, n, mu, sp.Rational(eta_x), sp.Rational(eta_y))
    row = check_root("t", "r_s", cubic, r, claimed, which="smallest_positive", tol=1e-9)
    assert row.passed, row
    # and below the other sectors' rates (within-class η_x, frustrated 2η_x)
    assert claimed < eta_x


# --- head loss: gradient flow without sg, not with sg ----------------------------------------
@SETTINGS
@given(graphs(max_n=8, max_k=3), st.booleans())
def test_jacobian_symmetric_in_eta_metric_iff_no_stop_gradient(g, with_sg):
    P, eta_x, eta_y, d, seed = g
    rng = np.random.default_rng(seed)
    sysm = FlowSystem(head(d, with_sg), P, rates={"x": eta_x, "y": eta_y, "W": 0.7})
    v = rng.normal(size=sysm.size)
    M = sysm.jacobian(v).toarray() / sysm.rate_vector[:, None]  # H⁻¹ J
    asym = np.max(np.abs(M - M.T)) / max(np.max(np.abs(M)), 1e-300)
    if with_sg:
        assert asym > 1e-6
    else:
        assert asym <= 1e-10


@SETTINGS
@given(graphs(max_n=8, max_k=3))
def test_embedding_jacobian_symmetric_in_eta_metric(g):
    P, eta_x, eta_y, d, seed = g
    sysm = FlowSystem(emb(d), P, rates={"x": eta_x, "y": eta_y})
    v = np.random.default_rng(seed).normal(size=sysm.size)
    M = sysm.jacobian(v).toarray() / sysm.rate_vector[:, None]
    np.testing.assert_allclose(M, M.T, rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(M))))


@SETTINGS
@given(graphs(max_n=8, max_k=3), st.sampled_from(["embedding", "head"]))
def test_loss_decreases_along_gradient_flows(g, kind):
    """Without sg: dL/dt = ∇L·θ̇ = −Σ_k η_k (∂L/∂θ_k)² ≤ 0 (directional central difference)."""
    P, eta_x, eta_y, d, seed = g
    rng = np.random.default_rng(seed)
    if kind == "embedding":
        sysm = FlowSystem(emb(d), P, rates={"x": eta_x, "y": eta_y})
    else:
        sysm = FlowSystem(head(d, False), P, rates={"x": eta_x, "y": eta_y, "W": 0.7})
    v = rng.normal(size=sysm.size)
    f = sysm.flow_vector(v)
    h = 1e-4 / max(1.0, float(np.max(np.abs(f))))
    dLdt = (sysm.loss_vector(v + h * f) - sysm.loss_vector(v - h * f)) / (2 * h)
    expected = -np.sum(f**2 / sysm.rate_vector)
    assert expected <= 0
    assert abs(dLdt - expected) <= 1e-6 * max(1.0, abs(expected))


@settings(max_examples=10, deadline=None)
@given(graphs(max_n=6, max_k=3))
def test_stop_gradient_quadratic_invariant_along_trajectory(g):
    """I = Σ‖z_k‖²/η_k − ‖W‖²/η_W is conserved by the sg flow (docs/model.md §3)."""
    P, eta_x, eta_y, d, seed = g
    rng = np.random.default_rng(seed)
    rates = {"x": eta_x, "y": eta_y, "W": 0.7}
    sysm = FlowSystem(head(d, True), P, rates=rates)
    v0 = 0.5 * rng.normal(size=sysm.size)

    def inv(v):
        st_ = sysm.unpack(v)
        return cf.head_invariant(st_["x"], st_["y"], st_["W"], eta_x, eta_y, rates["W"])

    sol = integrate(sysm.flow_vector, v0, time_grid(2.0, 10), jac=sysm.jacobian,
                    rtol=1e-12, atol=1e-14)
    scale = np.sum(v0**2 / sysm.rate_vector)
    # the solver's local tolerance is 1e-12; allow 1e-8 of the invariant's terms over t <= 2
    drift = max(abs(inv(v) - inv(v0)) for v in sol.y)
    assert drift <= 1e-8 * scale


# --- 30-digit re-checks (symcollapse.symbolic.mpcheck) ------------------------------------------
def test_engine_checks_all_pass_and_cover_each_kind():
    rows = engine_checks()
    assert rows and all(r.passed for r in rows), [r for r in rows if not r.passed]
    claims = " | ".join(r.claim for r in rows)
    for piece in ("F_W", "edge Jacobian", "sg invariant", "symmetric", "slow rate"):
        assert piece in claims
    assert require(rows) is rows
    forces = [r for r in rows if r.claim.startswith("F_")]
    assert len(forces) == 8 and max(r.rel_error for r in forces) < 1e-25


def test_force_check_refuses_a_wrong_force():
    loss = head_loss(2, True)
    good = derive_flow(loss)
    bad_x = sp.ImmutableMatrix(good.force("x") + loss.x)  # an extra −x pull that ℓ does not have
    bad = EdgeFlow(loss, (("x", bad_x),) + good.forces[1:], good.forces_with_sg)
    rows = check_forces(loss, flow=bad)
    by = {r.claim.split()[0]: r for r in rows}
    assert not by["F_x"].passed and by["F_y"].passed and by["F_W"].passed
    with pytest.raises(DerivationCheckError, match="F_x"):
        require(rows)


def test_force_check_sees_the_stop_gradient():
    """The sg loss's forces are not −∇ of its value: checking them against the full gradient fails."""
    with_sg = head_loss(2, True)
    no_sg = head_loss(2, False)
    mixed = EdgeFlow(no_sg, derive_flow(with_sg).forces, ())
    assert not all(r.passed for r in check_forces(no_sg, flow=mixed))


@pytest.mark.parametrize("with_sg", [True, False])
def test_edge_jacobian_check_passes_and_refuses_a_missing_entry(with_sg):
    flow = derive_flow(head_loss(2, with_sg))
    assert check_edge_jacobian(flow).passed
    broken = EdgeFlow(flow.loss, flow.forces, flow.forces_with_sg)
    jac = dict(flow.edge_jacobian)
    jac[("W", "x")] = jac[("W", "x")][1:]  # drop one derived entry
    broken.__dict__["edge_jacobian"] = jac
    row = check_edge_jacobian(broken)
    assert not row.passed and row.rel_error > 1e-3


def test_identity_check_invariant_holds_with_sg_only():
    ok = check_identity("t", "sg", invariant_rate(derive_flow(head_loss(2, True))))
    bad = check_identity("t", "no sg", invariant_rate(derive_flow(head_loss(2, False))))
    assert ok.passed and ok.rel_error < 1e-25
    assert not bad.passed and bad.rel_error > 1e-3


def test_identity_check_hessian_symmetry_only_without_sg():
    assert check_identity("t", "", edge_hessian_asymmetry(derive_flow(head_loss(2, False)))).passed
    assert not check_identity("t", "", edge_hessian_asymmetry(derive_flow(head_loss(2, True)))).passed


def test_sector_cubic_is_the_characteristic_polynomial_of_model_md_sector_matrix():
    r, K, n, mu = sp.symbols("r K n mu", positive=True)
    ex, ey = sp.symbols("eta_x eta_y", positive=True)
    M = cf.sector_matrix(K, n, mu, ex, ey)
    charpoly = (r * sp.eye(3) + M).det()  # decay rates r: eigenvalues of −M
    row = check_identity("t", "cubic", charpoly - balanced_sector_cubic(r, K, n, mu, ex, ey))
    assert row.passed
    wrong = check_identity("t", "cubic", charpoly - balanced_sector_cubic(r, K + 1, n, mu, ex, ey))
    assert not wrong.passed


def test_root_check_exact_and_wrong_claims():
    r = sp.Symbol("r")
    p = balanced_sector_cubic(r, 2, 1, 1, 1, 1)  # (r − 2)(r² − 3r + 1): path graph P5
    exact = check_root("t", "", p, r, (3 - sp.sqrt(5)) / 2, which="smallest_positive")
    assert exact.passed and exact.rel_error < 1e-28
    assert check_root("t", "", p, r, 2.0, which="nearest").passed
    assert not check_root("t", "", p, r, 2.0, which="smallest_positive").passed
    assert not check_root("t", "", p, r, 0.3819, which="smallest_positive").passed
    no_pos = check_root("t", "", r**2 + 1, r, 1.0, which="smallest_positive")
    assert not no_pos.passed


def test_random_points_are_reproducible():
    a = check_identity("t", "", invariant_rate(derive_flow(head_loss(2, False))), seed=3)
    b = check_identity("t", "", invariant_rate(derive_flow(head_loss(2, False))), seed=3)
    c = check_identity("t", "", invariant_rate(derive_flow(head_loss(2, False))), seed=4)
    assert a == b and a.rel_error != c.rel_error


def test_forces_check_custom_loss_with_parameter_and_data():
    """A loss with a constant (weight decay λ) and per-sample data u: x = S u is not free here."""
    from symcollapse.symbolic import matrix, sqnorm, vector

    u, y, S = vector("u", 2), vector("y", 2), matrix("S", 2, 2)
    lam = sp.Symbol("lam", positive=True)
    expr = sp.Rational(1, 2) * sqnorm(S * u - y) + lam / 2 * sqnorm(S)
    loss = EdgeLoss(expr, None, y, shared=(("S", S),), data=u, name="ts")
    rows = check_forces(loss)
    assert {r.claim.split()[0] for r in rows} == {"F_y", "F_S"}
    assert all(r.passed for r in rows)
