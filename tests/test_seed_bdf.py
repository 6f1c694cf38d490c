"""The many-seed BDF (numerics/seed_bdf.py): every seed takes the steps of its own scipy-BDF run.

Reference: scipy's BDF itself (``integrate(method='BDF-nodes')`` is scipy's BDF with the same
Newton-system solver), run seed by seed — an independent implementation of the step, order and
Jacobian decisions. A lockstep BDF over the stacked seeds fails these tests: its steps are the
union of every seed's step-size demands."""
import numpy as np
import pytest
from scipy.integrate._ivp.bdf import change_D as scipy_change_D

import symcollapse as sc
from symcollapse.models.couplings import balanced_couplings
from symcollapse.numerics import batched as bt
from symcollapse.numerics.integrate import integrate, node_blocks
from symcollapse.numerics.seed_bdf import change_D


def test_change_D_equals_scipy_seed_by_seed():
    rng = np.random.default_rng(3)
    orders = np.array([1, 2, 3, 4, 5, 3])
    factors = rng.uniform(0.2, 10.0, size=len(orders))
    D = rng.normal(size=(len(orders), 8, 7))
    got = change_D(D, orders, factors)
    for b, (q, f) in enumerate(zip(orders, factors)):
        want = D[b].copy()
        scipy_change_D(want, int(q), float(f))
        assert np.max(np.abs(got[b] - want)) <= 1e-13 * np.max(np.abs(want))


@pytest.mark.parametrize("stop_gradient,n_seeds", [(True, 4), (False, 2)])
def test_every_seed_takes_the_steps_of_its_own_scipy_run(stop_gradient, n_seeds):
    """Seeds to the fixed point (‖θ̇‖_∞ ≤ 1e-9) in one batch: each seed's accepted steps,
    Jacobians, stop time and end state are those of scipy's BDF on that seed alone (measured:
    the same counts, e.g. 443/443/439/563 steps; the old lockstep batch took the union)."""
    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5, stop_gradient=stop_gradient)
    sysm = h.system
    seeds = range(n_seeds)
    V0 = np.array([h.pack(*h.initial_state(s)) for s in seeds])
    t_eval = np.array([0.0, 1.0, 1e5])
    tol = dict(rtol=1e-8, atol=1e-11)
    recs = bt.integrate_many(sysm, V0, t_eval, stop_residual=1e-9, **tol)
    steps = []
    for v0, r in zip(V0, recs):
        ref = integrate(sysm.flow_vector, v0, t_eval, jac=sysm.jacobian, method="BDF-nodes",
                        stop_residual=1e-9, node_blocks=node_blocks(sysm), **tol)
        assert ref.stopped and r["stopped"] and r["batch"] == n_seeds
        steps.append((r["nsteps"], ref.nsteps))
        assert abs(r["nsteps"] - ref.nsteps) <= max(2, 0.02 * ref.nsteps)
        assert abs(r["njev"] - ref.njev) <= 2
        assert abs(r["t"][-1] / ref.t[-1] - 1) <= 1e-5  # the same step (its time to round-off of h)
        assert np.max(np.abs(r["y"][1] - ref.y[1])) <= 1e-8 * np.max(np.abs(ref.y[1]))  # at t = 1
        assert np.max(np.abs(r["y"][-1] - ref.y[-1])) <= 1e-7 * np.max(np.abs(ref.y[-1]))
    assert len({s for s, _ in steps}) > 1  # the seeds really differ (and kept their own steps)


def test_a_seed_alone_equals_the_same_seed_in_a_batch():
    """Batching changes nothing for a seed but round-off (a one-seed run evaluates the flow with
    the single-state kernels): its record in a batch equals its one-seed run (the same steps, stop
    time and states to round-off), and a seed starting at a fixed point stops at t = 0."""
    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5)
    sysm = h.system
    V0 = np.array([h.pack(*h.initial_state(s)) for s in range(2)])
    t_eval = np.array([0.0, 0.5, 2.0, 1e5])
    kw = dict(rtol=1e-9, atol=1e-11, stop_residual=1e-9)
    many = bt.integrate_many(sysm, V0, t_eval, **kw)
    for b in range(2):
        one = bt.integrate_many(sysm, V0[b:b + 1], t_eval, **kw)[0]
        assert one["stopped"] and abs(one["nsteps"] - many[b]["nsteps"]) <= 2
        assert one["t"][:-1] == many[b]["t"][:-1] and abs(one["t"][-1] / many[b]["t"][-1] - 1) <= 1e-6
        assert np.max(np.abs(np.array(one["y"]) - np.array(many[b]["y"]))) <= 1e-9 * np.max(np.abs(one["y"]))
    rest = bt.integrate_many(sysm, np.array([many[0]["y"][-1], V0[1]]), t_eval, **kw)
    assert rest[0]["stopped"] and rest[0]["t"] == [0.0] and rest[0]["nsteps"] == 0
    assert abs(rest[1]["nsteps"] - many[1]["nsteps"]) <= 2 and abs(rest[1]["t"][-1] / many[1]["t"][-1] - 1) <= 1e-6


def _assembled(D, J12, J21, J22):
    N, k = D.shape[:2]
    Dd = np.zeros((N * k, N * k))
    for i in range(N):
        Dd[i * k:(i + 1) * k, i * k:(i + 1) * k] = D[i]
    return np.block([[Dd, J12], [J21, J22]])


def test_batched_jacobian_blocks_equal_the_assembled_jacobian():
    """jacobian_blocks (the derived δF chains batched over states, dense blocks) = the sparse
    assembled Jacobian state by state: with and without stop-gradient, a frozen head, other rates,
    and a sample-reduced system (pseudo-samples with multiplicities, docs/model.md §3.5)."""
    from symcollapse.numerics.sample_reduction import reduction

    rng = np.random.default_rng(1)
    systems = [sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=0.7, **kw).system for kw in
               (dict(), dict(stop_gradient=False), dict(learn_head=False, W_frozen=rng.normal(size=(3, 3))),
                dict(eta_W=1.3, eta_y=0.4))]
    red = reduction(sc.HeadModel(balanced_couplings(4, 40, 3), d=3, eta_y=0.5).system)
    assert red is not None and red.system.multiplicity is not None
    systems.append(red.system)
    for sysm in systems:
        V = rng.normal(size=(3, sysm.size))
        blocks = bt.jacobian_blocks(sysm, V)
        for b in range(3):
            A = sysm.jacobian(V[b]).toarray()
            got = _assembled(*(X[b] for X in blocks))
            assert np.max(np.abs(got - A)) <= 1e-13 * np.max(np.abs(A))


def test_newton_solves_from_the_seed_store_equal_the_dense_solve():
    """The batched Newton solves (:func:`batched.solve_seeds_jvp`) with the per-seed arrays taken
    from a :class:`batched.SeedStore` and J₂₁u, J₁₂x₂ from the Jacobians' factors
    (:class:`batched.ApplyFactors`) — all seeds, and a non-consecutive subset — equal
    (I − cJ)⁻¹r from the assembled Jacobian (dense solve), as do the solves through JVPs; and
    the factors' products equal those with the dense blocks, for every head variant."""
    from symcollapse.numerics.sample_reduction import reduction

    rng = np.random.default_rng(5)
    variants = [sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=0.7, **kw).system for kw in
                (dict(), dict(stop_gradient=False), dict(learn_head=False, W_frozen=rng.normal(size=(3, 3))),
                 dict(eta_W=1.3, eta_y=0.4))]
    red = reduction(sc.HeadModel(balanced_couplings(4, 40, 3), d=3, eta_y=0.5).system)
    for sysm in variants + [red.system]:
        V = rng.normal(size=(3, sysm.size))
        D, J12, J21, J22 = bt.jacobian_blocks(sysm, V)
        F = bt.jacobian_blocks(sysm, V, factored="apply")[4]
        st12, st21 = F.structure()[:2]
        x2, u = rng.normal(size=(3, J22.shape[1])), rng.normal(size=(3, J12.shape[1]))
        got12 = bt.ApplyFactors.j12(F.U, [op[4] for op in F.ops12], st12, x2, F.k)
        got21 = bt.ApplyFactors.j21(F.V, [op[4] for op in F.ops21], st21, u, F.k, F.m)
        want12, want21 = np.einsum("bij,bj->bi", J12, x2), np.einsum("bij,bj->bi", J21, u)
        assert np.max(np.abs(got12 - want12)) <= 1e-13 * np.max(np.abs(want12))
        assert np.max(np.abs(got21 - want21)) <= 1e-13 * np.max(np.abs(want21))

    sysm = red.system
    B = 5
    V = rng.normal(size=(B, sysm.size))
    D, (U, S), (Vf, T), J22, F = bt.jacobian_blocks(sysm, V, factored="apply")
    Js, store = [], bt.SeedStore(B)
    for b in range(B):
        J = bt.BlockJacobian.from_blocks(D[b:b + 1].copy(), None, None, J22[b:b + 1].copy(), point=V[b].copy(),
                                         factors=((U[b:b + 1], S[b:b + 1]), (Vf[b:b + 1], T[b:b + 1])))
        assert J.groups is not None and J.groups.basis is not None
        J.slot = b
        Js.append(J)
    slots = np.arange(B)
    store.put("basis", slots, np.concatenate([J.groups.basis for J in Js]))
    store.put_factors(slots, F)
    cs = rng.uniform(0.05, 2.0, size=B)
    LUs = bt.factor_seeds(Js, cs)
    store.put("c", slots, cs)
    store.put("w", slots, np.concatenate([LU.w_rows for LU in LUs]))
    store.put("Sinv", slots, np.concatenate([LU.Sinv for LU in LUs]))
    R = rng.normal(size=V.shape)
    for sel in (list(range(B)), [0, 2, 3]):
        got = bt.solve_seeds_jvp(sysm, [LUs[i] for i in sel], R[sel], store)
        plain = bt.solve_seeds_jvp(sysm, [LUs[i] for i in sel], R[sel])
        for row, i in enumerate(sel):
            A = np.eye(sysm.size) - cs[i] * sysm.jacobian(V[i]).toarray()
            want = np.linalg.solve(A, R[i])
            assert np.max(np.abs(got[row] - want)) <= 1e-10 * np.max(np.abs(want))
            assert np.max(np.abs(plain[row] - want)) <= 1e-10 * np.max(np.abs(want))


def test_grouped_schur_terms_from_the_jacobian_factors_equal_the_dense_ones():
    """The factored Jacobian (J₁₂ = U S, J₂₁ = V T per sample: jacobian_blocks(factored=True))
    gives the same grouped Schur terms C_uj = Σ_{i∈u} (J₂₁,i q_j)(q_jᵀ J₁₂,i) and the same LU
    solves as the dense blocks, for a sample-reduced head and one without stop-gradient."""
    from symcollapse.numerics.sample_reduction import reduction

    rng = np.random.default_rng(7)
    red = reduction(sc.HeadModel(balanced_couplings(4, 40, 3), d=3, eta_y=0.5).system)
    for sysm in (red.system, sc.HeadModel(balanced_couplings(3, 5, 1), d=3, stop_gradient=False).system):
        V = rng.normal(size=(3, sysm.size))
        D, J12, J21, J22 = bt.jacobian_blocks(sysm, V)
        Df, (U, S), (Vf, T), J22f = bt.jacobian_blocks(sysm, V, factored=True)
        assert S.shape[1] + T.shape[1] < D.shape[1] * D.shape[2]  # few factors (else no gain)
        for b in range(3):
            dense = bt.BlockJacobian.from_blocks(D[b:b + 1].copy(), J12[b:b + 1], J21[b:b + 1], J22[b:b + 1].copy())
            fac = bt.BlockJacobian.from_blocks(Df[b:b + 1].copy(), None, None, J22f[b:b + 1].copy(),
                                               factors=((U[b:b + 1], S[b:b + 1]), (Vf[b:b + 1], T[b:b + 1])))
            assert dense.groups is not None and fac.groups is not None
            Cd, Cf = dense.groups.C, fac.groups.C
            assert np.max(np.abs(Cf - Cd)) <= 1e-12 * np.max(np.abs(Cd))
            A = np.eye(sysm.size) - 0.7 * sysm.jacobian(V[b]).toarray()
            r = rng.normal(size=sysm.size)
            LU = bt.factor_seeds([fac], [0.7])[0]
            assert np.max(np.abs(LU.Sinv[0] - bt.factor_seeds([dense], [0.7])[0].Sinv[0])) <= 1e-10 * np.max(np.abs(LU.Sinv))
            fac.point = V[b]
            x = bt.solve_seeds_jvp(sysm, [LU], r[None])[0]
            assert np.max(np.abs(A @ x - r)) <= 1e-10 * np.max(np.abs(r))


def test_label_flow_alone_equals_the_label_block_of_the_flow():
    """batched.batched_label_flow (the stop test's first, cheaper look: ‖θ̇‖_∞ ≥ max |ẏ|) is the
    label block of θ̇, from the batched kernels and from the single-state flow, for head variants and
    a sample-reduced system (label rows Pᵀ weighted by the multiplicities)."""
    from symcollapse.numerics.sample_reduction import reduction

    rng = np.random.default_rng(4)
    systems = [sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=0.7, **kw).system for kw in
               (dict(), dict(stop_gradient=False), dict(eta_W=1.3, eta_y=0.4))]
    systems.append(reduction(sc.HeadModel(balanced_couplings(4, 40, 3), d=3, eta_y=0.5).system).system)
    for sysm in systems:
        V = rng.normal(size=(3, sysm.size))
        o, (K, d) = sysm.layout["y"]
        got = bt.batched_label_flow(sysm, V)
        assert got.shape == (3, K * d)
        full = bt.batched_flow(sysm, V)[:, o:o + K * d]
        single = np.array([sysm.flow_vector(v)[o:o + K * d] for v in V])
        assert np.max(np.abs(got - full)) <= 1e-14 * np.max(np.abs(full))
        assert np.max(np.abs(got - single)) <= 1e-13 * np.max(np.abs(single))
