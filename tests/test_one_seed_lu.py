"""The single run of 'BDF-nodes' factorises its Schur complement (getrf) and solves with getrs
instead of inverting it (batched.factor_seeds(..., lu=True)): the Newton solves must equal the
dense solve of (I − cJ) x = r with the assembled Jacobian, whichever path (seed store and
Jacobian factors, JVPs, dense blocks) takes them, and a singular Schur complement must raise as
the inverse did."""
import numpy as np
import pytest

import symcollapse as sc
from symcollapse.models.couplings import balanced_couplings
from symcollapse.numerics import batched as bt
from symcollapse.numerics.sample_reduction import reduction


def _systems():
    rng = np.random.default_rng(11)
    yield sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=0.7, eta_y=0.4).system
    yield sc.HeadModel(balanced_couplings(3, 4, 1), d=3, eta_x=0.7, stop_gradient=False).system
    yield sc.HeadModel(balanced_couplings(3, 4, 1), d=3, learn_head=False, W_frozen=rng.normal(size=(3, 3))).system
    yield reduction(sc.HeadModel(balanced_couplings(4, 40, 3), d=3, eta_y=0.5).system).system


def _dense_solve(sysm, v, c, r):
    return np.linalg.solve(np.eye(sysm.size) - c * sysm.jacobian(v).toarray(), r)


def test_one_seed_lu_solves_equal_the_dense_solve_on_every_path():
    rng = np.random.default_rng(3)
    checked = 0
    for sysm in _systems():
        v = rng.normal(size=sysm.size)
        r = rng.normal(size=(1, sysm.size))
        c = 0.37
        want = _dense_solve(sysm, v, c, r[0])
        scale = np.max(np.abs(want))
        D, J12, J21, J22 = bt.jacobian_blocks(sysm, v[None])
        dense = bt.BlockJacobian.from_blocks(D.copy(), J12, J21, J22.copy(), point=v.copy())
        LU = bt.factor_seeds([dense], [c], lu=True)[0]
        assert LU.Sinv is None or dense.groups is None  # grouped: factors, not the inverse
        got = bt.solve_seeds([LU], r)[0]
        assert np.max(np.abs(got - want)) <= 1e-10 * scale
        if dense.groups is None:
            continue
        assert LU.luS is not None
        # the same through JVPs at the Jacobian's point (no store)
        assert np.max(np.abs(bt.solve_seeds_jvp(sysm, [LU], r)[0] - want)) <= 1e-10 * scale
        # and from the seed store with the factors of the Jacobian (the integrator's path)
        Df, (U, S), (Vf, T), J22f, F = bt.jacobian_blocks(sysm, v[None], factored="apply")
        J = bt.BlockJacobian.from_blocks(Df.copy(), None, None, J22f.copy(), point=v.copy(),
                                         factors=((U, S), (Vf, T)))
        if J.groups is None or J.groups.basis is None:
            continue
        J.slot = 0
        store = bt.SeedStore(1)
        store.put("basis", [0], J.groups.basis)
        store.put_factors([0], F)
        LUf = bt.factor_seeds([J], [c], lu=True)[0]
        store.put("c", [0], [c])
        store.put("w", [0], LUf.w_rows)
        got = bt.solve_seeds_jvp(sysm, [LUf], r, store)[0]
        assert np.max(np.abs(got - want)) <= 1e-10 * scale
        inv = bt.factor_seeds([J], [c])[0]  # the inverse (the many-seed path) gives the same solve
        assert inv.luS is None and inv.Sinv is not None
        assert np.max(np.abs(bt.solve_seeds_jvp(sysm, [inv], r)[0] - want)) <= 1e-10 * scale
        checked += 1
    assert checked >= 2  # the store path was exercised


def test_singular_schur_complement_raises_as_the_inverse_does():
    S = np.ones((3, 3))
    with pytest.raises(np.linalg.LinAlgError):
        bt._factor(S.copy())
    with pytest.raises(np.linalg.LinAlgError):
        bt._inverse(S.copy())


def test_single_run_lu_path_equals_the_many_seed_inverse_path():
    """A single 'BDF-nodes' run (LU factors) takes the steps of the same seed in the batched
    integrator with inverses, to round-off: same step count, same end state to 1e-9."""
    h = sc.HeadModel(balanced_couplings(2, 3, 1), d=2, eta_x=1.0, eta_y=0.5)
    sysm = h.system
    v0 = h.pack(*h.initial_state(1))
    t_eval = np.array([0.0, 1.0, 2000.0])
    kw = dict(rtol=1e-10, atol=1e-12, stop_residual=1e-9)
    lu = bt.integrate_many(sysm, v0[None], t_eval, schur_lu=True, **kw)[0]
    inv = bt.integrate_many(sysm, v0[None], t_eval, **kw)[0]
    assert lu["stopped"] and inv["stopped"] and lu["nlu"] > 0
    assert lu["nsteps"] == inv["nsteps"] and lu["nlu"] == inv["nlu"]
    assert np.max(np.abs(np.array(lu["y"]) - np.array(inv["y"]))) <= 1e-9 * np.max(np.abs(inv["y"]))
