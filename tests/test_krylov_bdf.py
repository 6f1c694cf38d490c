"""The matrix-free Newton–Krylov BDF ('BDF-krylov'): same trajectory as BDF with the assembled
Jacobian and as DOP853, chosen by method='auto' when the Jacobian is too large, and never a
silently wrong number when its preconditioner, its JVP or its GMRES is broken."""
import numpy as np
import pytest

from symcollapse.errors import DerivationCheckError, IntegrationError, InvalidParameterError
from symcollapse.literature import ufm
from symcollapse.models.couplings import balanced_couplings
from symcollapse.models.head import HeadModel
from symcollapse.numerics import krylov_bdf as kb
from symcollapse.numerics.integrate import integrate
from symcollapse.numerics.method_choice import choose
from symcollapse.numerics.sample_reduction import reduction
from symcollapse.tolerance import within


def _head(sg=True, eta_W=1.0):
    return HeadModel(balanced_couplings(2, 3, 1), d=3, eta_y=0.5, eta_W=eta_W, stop_gradient=sg)


def _err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


@pytest.mark.parametrize("sg", [True, False])
def test_head_equals_bdf_and_dop853(sg):
    m = _head(sg)
    kw = dict(n_points=4, rtol=1e-8, atol=1e-10, keep_states=True)
    kr = m.simulate(0.5, method="BDF-krylov", **kw)
    bdf = m.simulate(0.5, method="BDF", **kw)
    dop = m.simulate(0.5, method="DOP853", **kw)
    assert kr.extra["method"] == "BDF-krylov"
    st = kr.extra["krylov"]
    assert st["solves"] > 0 and st["iterations"] >= st["solves"] and st["failures"] == 0
    assert kr.extra["nsteps"] == bdf.extra["nsteps"]  # the same BDF steps and error control
    assert within(_err(kr.states, bdf.states), 1e-7)
    assert within(_err(kr.states, dop.states), 1e-6)
    assert within(_err(kr.d_min, dop.d_min), 1e-6)


def test_non_head_matrix_flow_equals_bdf_and_dop853():
    """The unconstrained-features model (samples + a shared W, per-sample data, no label block)."""
    ms = ufm.matrix_system(3, 2, 3, 0.03, 0.02)
    v0 = np.random.default_rng(5).normal(scale=0.5, size=ms.size)
    te = np.array([0.0, 2.0, 6.0])
    kw = dict(rtol=1e-10, atol=1e-12)
    kr = integrate(ms.flow_vector, v0, te, method="BDF-krylov", system=ms, **kw)
    bdf = integrate(ms.flow_vector, v0, te, jac=ms.jacobian, method="BDF", **kw)
    dop = integrate(ms.flow_vector, v0, te, method="DOP853", **kw)
    assert kr.stats["solves"] > 0
    assert within(_err(kr.y, bdf.y), 1e-8) and within(_err(kr.y, dop.y), 1e-8)


def test_auto_chooses_krylov_when_too_large_and_stiff():
    # d = 64: the assembled Jacobian (4096 dense W columns) is refused by the matrix system
    big = HeadModel(balanced_couplings(2, 2, 1), d=64, eta_y=0.5)
    ch = choose(big.system, big.pack(*big.initial_state(0)), 1e4)
    assert ch.method == "BDF-krylov" and "cannot be assembled" in ch.reason, ch.reason
    # more unknowns than the sparse-LU limit: the same choice, and the run equals plain BDF
    m = _head(eta_W=1e5)  # ρ(J)·t_end ≈ 6000: stiff
    v0 = m.pack(*m.initial_state(0))
    assert choose(m.system, v0, 0.005).method == "LSODA"  # small: dense LSODA (one seed)
    assert choose(m.system, v0, 0.005, seeds=2).method == "BDF-nodes"
    kw = dict(n_points=3, rtol=1e-6, atol=1e-9)
    tr = m.simulate(0.005, lu_limit=10, **kw)
    assert tr.extra["method"] == "BDF-krylov", tr.extra["method_reason"]
    assert "sparse-LU limit" in tr.extra["method_reason"] and tr.extra["stiffness"] > 2000
    ref = m.simulate(0.005, method="BDF", **kw)
    assert within(_err(tr.Z, ref.Z), 1e-6) and within(_err(tr.W, ref.W), 1e-6)
    # not stiff: explicit, whatever the size
    assert choose(big.system, big.pack(*big.initial_state(0)), 1.0).method == "DOP853"


def test_bad_input_refused_up_front():
    ms = ufm.matrix_system(2, 2, 2, 0.03, 0.02)
    v0 = np.zeros(ms.size)
    te = np.array([0.0, 1.0])
    with pytest.raises(InvalidParameterError, match="derived"):
        integrate(ms.flow_vector, v0, te, method="BDF-krylov")  # no system: no JVP
    with pytest.raises(InvalidParameterError, match="krylov options"):
        integrate(ms.flow_vector, v0, te, method="BDF-krylov", system=ms, krylov={"tol": 1e-3})
    with pytest.raises(InvalidParameterError, match="krylov_rtol"):
        integrate(ms.flow_vector, v0, te, method="BDF-krylov", system=ms, krylov={"krylov_rtol": 2.0})
    with pytest.raises(InvalidParameterError, match="entries"):
        integrate(ms.flow_vector, v0[:3], te, method="BDF-krylov", system=ms)


def test_wrong_preconditioner_block_is_an_error(monkeypatch):
    """A preconditioner block that does not match the derived JVP is refused, not used."""
    real = kb._shared_self_terms
    monkeypatch.setattr(kb, "_shared_self_terms",
                        lambda *a: [(L, R, t, 1.1 * k) for L, R, t, k in real(*a)])
    with pytest.raises(DerivationCheckError, match="diagonal Jacobian block"):
        _head().simulate(2.0, method="BDF-krylov", n_points=3)


def test_wrong_cached_jvp_is_an_error(monkeypatch):
    real = kb._FrozenJVP.__call__
    monkeypatch.setattr(kb._FrozenJVP, "__call__", lambda self, w: 0.9 * real(self, w))
    with pytest.raises(DerivationCheckError, match="cached JVP"):
        _head().simulate(2.0, method="BDF-krylov", n_points=3)


def test_poor_preconditioner_changes_the_cost_not_the_result(monkeypatch):
    """The solution of each Newton system is accepted on its true residual: a preconditioner that
    is only an approximation (here scaled by a varying factor) costs iterations, not accuracy."""
    m = _head()
    kw = dict(n_points=3, rtol=1e-8, atol=1e-10)
    good = m.simulate(0.1, method="BDF-krylov", **kw)
    real = kb.KrylovSolve.precondition
    monkeypatch.setattr(kb.KrylovSolve, "precondition",
                        lambda self, r: real(self, r) * (1.0 + 0.5 * np.cos(np.arange(len(r)))))
    poor = m.simulate(0.1, method="BDF-krylov", **kw)
    assert poor.extra["krylov"]["iterations"] > good.extra["krylov"]["iterations"]
    assert within(_err(poor.Z, good.Z), 1e-8) and within(_err(poor.W, good.W), 1e-8)


def test_gmres_not_converging_fails_the_newton_iteration():
    """A linear solve that misses its residual raises KrylovNotConverged, which the BDF Newton
    iteration turns into a failed iteration (BDF then recomputes J or halves the step)."""
    m = _head(eta_W=30.0)
    sysm = m.system
    v = m.pack(*m.initial_state(0))
    J = kb.FrozenJacobian(sysm, v)
    stats = dict(solves=0, iterations=0, max_iterations=0, failures=0)
    solve = kb.KrylovSolve(50.0 * J, np.ones(sysm.size), 1e-12, 1, stats)
    b = np.random.default_rng(0).normal(size=sysm.size)
    with pytest.raises(kb.KrylovNotConverged):
        solve.solve(b)
    assert stats["failures"] == 1
    conv, *_ = kb._newton(lambda t, y: sysm.flow_vector(y), 0.0, v, 50.0, np.zeros_like(v), solve,
                          lambda LU, r: LU.solve(r), np.ones(sysm.size), 1e-4)
    assert conv is False
    # in a run: every failed solve is counted, and the run either ends at the same state or fails
    kw = dict(n_points=3, rtol=1e-8, atol=1e-11)
    ref = m.simulate(0.01, method="BDF", **kw)
    try:  # at most 2 GMRES iterations for a residual of 1e-6: many solves fail
        sol = integrate(sysm.flow_vector, v, np.array([0.0, 0.01]), method="BDF-krylov", system=sysm,
                        krylov={"krylov_maxiter": 2, "krylov_rtol": 1e-6}, rtol=1e-8, atol=1e-11)
    except IntegrationError:
        return
    assert sol.stats["failures"] > 0
    assert within(_err(sol.y[-1], m.pack(ref.Z, ref.W)), 1e-6)


# --- the gauge coarse space of the stop-gradient head (docs/model.md §3.4) --------------------------

@pytest.fixture(scope="module")
def head_fixed_point():
    """A stop-gradient head at its fixed point (K = 4, n = 3, μ = 1, d = 6, ‖θ̇‖∞ ≤ 1e-9)."""
    m = HeadModel(balanced_couplings(4, 3, 1), d=6, eta_y=0.5, eta_W=1.0)
    tr = m.simulate(1e5, stop_residual=1e-9, n_points=3)
    assert tr.extra["stopped"]
    return m, m.pack(tr.Z, tr.W)


def _gmres_iterations(J, c, b, rtol=1e-6):
    stats = dict(solves=0, iterations=0, max_iterations=0, failures=0)
    solve = kb.KrylovSolve(c * J, np.ones(J.n), rtol, 500, stats)
    x = solve.solve(b)
    assert within(float(np.linalg.norm(b - solve.apply(x)) / np.linalg.norm(b)), rtol)
    return stats["iterations"]


def test_gauge_coarse_space_is_the_symmetry_tangent(head_fixed_point):
    """Π is a projector onto gauge vectors G(M) = (Z Mᵀ, MW − WM) with M = δZᵀ(Z⁺)ᵀ, of dimension
    d·rank Z; at the fixed point J Π = 0, so (I − cJ) P⁻¹ is the identity on range Π, where the block
    preconditioner alone is off by O(1)."""
    m, v = head_fixed_point
    J = kb.FrozenJacobian(m.system, v)
    g = J.gauge
    X, Y, W = m.system.unpack(v)["x"], m.system.unpack(v)["y"], m.system.unpack(v)["W"]
    Z = np.vstack([X, Y])
    sv = np.linalg.svd(Z, compute_uv=False)
    r = g.rank  # the dominant directions: s_k ≥ 0.2 s_1, no cluster split
    assert 0 < r <= np.linalg.matrix_rank(Z) and g.dim == 6 * r
    assert sv[r - 1] >= kb.GAUGE_REL_TOL * sv[0] and (r == len(sv) or sv[r] < kb.GAUGE_CLUSTER * sv[r - 1])
    rng = np.random.default_rng(0)
    u = rng.normal(size=m.system.size)
    t = g.project(u)
    M = g.coords(u)
    U, _, Vt = np.linalg.svd(Z, full_matrices=False)
    Zr_pinv = Vt[:r].T @ np.diag(1.0 / sv[:r]) @ U[:, :r].T  # the pseudo-inverse of Z's rank-r part
    assert within(_err(M, u[:Z.size].reshape(Z.shape).T @ Zr_pinv.T), 1e-10)
    full = kb.GaugeCoarse(m.system.layout, v, rel_tol=1e-6)  # every direction of rank Z: Z Mᵀ = Z Z⁺ δZ
    assert full.rank == np.linalg.matrix_rank(Z, tol=1e-6 * sv[0])
    assert within(_err(full.coords(u), u[:Z.size].reshape(Z.shape).T @ np.linalg.pinv(Z, rcond=1e-6).T), 1e-10)
    assert within(_err(t, np.concatenate([(Z @ M.T).ravel(), (M @ W - W @ M).ravel()])), 1e-12)
    assert within(_err(g.project(t), t), 1e-10)
    assert within(float(np.linalg.norm(J.matvec(t)) / np.linalg.norm(t)), 1e-6)  # J Π = 0 at the fixed point
    solve = kb.KrylovSolve(10.0 * J, np.ones(J.n), 1e-6, 500, dict(solves=0, iterations=0, max_iterations=0,
                                                                    failures=0))
    assert within(_err(solve.apply(solve.precondition(t)), t), 1e-6)
    assert not _err(solve.apply(solve.block_inverse(t)), t) <= 0.5


def test_gauge_coarse_space_cuts_gmres_iterations_near_the_fixed_point(head_fixed_point):
    """Near the fixed point the step is large and the block preconditioner misses the W ↔ node
    coupling along the gauge: with the coarse space GMRES needs at most half the iterations."""
    m, v = head_fixed_point
    b = np.random.default_rng(1).normal(size=m.system.size)
    with_coarse = kb.FrozenJacobian(m.system, v)
    without = kb.FrozenJacobian(m.system, v, coarse=False)
    assert with_coarse.gauge is not None and without.gauge is None
    for c in (10.0, 100.0):
        its, its0 = _gmres_iterations(with_coarse, c, b), _gmres_iterations(without, c, b)
        assert 2 * its <= its0, (c, its, its0)


def test_coarse_space_run_to_the_fixed_point_equals_bdf(head_fixed_point):
    """From near the fixed point (large steps) back to it, with and without the coarse space: the
    same end state as plain BDF with the assembled Jacobian, with fewer GMRES iterations."""
    m, v = head_fixed_point
    sysm = m.system
    v0 = v + 1e-3 * np.random.default_rng(2).normal(size=v.size)
    te = np.array([0.0, 1e5])
    kw = dict(rtol=1e-8, atol=1e-11, stop_residual=1e-9)
    on = integrate(sysm.flow_vector, v0, te, method="BDF-krylov", system=sysm, **kw)
    off = integrate(sysm.flow_vector, v0, te, method="BDF-krylov", system=sysm, krylov={"krylov_coarse": False}, **kw)
    ref = integrate(sysm.flow_vector, v0, te, jac=sysm.jacobian, method="BDF", **kw)
    assert on.stopped and off.stopped and ref.stopped
    assert on.stats["coarse_dim"] > 0 and off.stats["coarse_dim"] == 0
    assert on.stats["iterations"] / on.stats["solves"] < off.stats["iterations"] / off.stats["solves"]
    assert on.stats["max_iterations"] < off.stats["max_iterations"]
    for sol in (on, off):
        assert within(_err(sol.y[-1], ref.y[-1]), 1e-6)


def test_wrong_gauge_coarse_space_is_an_error(monkeypatch, head_fixed_point):
    """A coarse space that is not the flow's symmetry (wrong head part), not a projector (wrong
    coordinates) or not finite is refused with DerivationCheckError, never used."""
    m, v = head_fixed_point
    real_vec, real_coords = kb.GaugeCoarse.vector, kb.GaugeCoarse.coords

    def bad_head(self, M):
        out = real_vec(self, M)
        out[self.slices["W"][0]] = (M @ self.W + self.W @ M).ravel()
        return out
    for patch in (("vector", bad_head), ("coords", lambda self, u: 0.9 * real_coords(self, u)),
                  ("coords", lambda self, u: np.full_like(real_coords(self, u), np.nan))):
        with monkeypatch.context() as mp:
            mp.setattr(kb.GaugeCoarse, *patch)
            with pytest.raises(DerivationCheckError, match="gauge coarse space"):
                kb.FrozenJacobian(m.system, v)
            if patch[0] == "vector":  # in a run, too: refused at the first Jacobian
                with pytest.raises(DerivationCheckError, match="gauge coarse space"):
                    _head().simulate(2.0, method="BDF-krylov", n_points=3)


def test_krylov_coarse_option_checked():
    ms = _head().system
    v0 = np.zeros(ms.size)
    with pytest.raises(InvalidParameterError, match="krylov_coarse"):
        integrate(ms.flow_vector, v0, np.array([0.0, 1.0]), method="BDF-krylov", system=ms,
                  krylov={"krylov_coarse": "yes"})


@pytest.mark.parametrize("reduced", [False, True])
def test_sample_label_elimination_is_exact(reduced):
    """The block inverse solves the sample–label part of I − cJ (W held fixed) exactly, also for a
    sample-reduced system (docs/model.md §3.5), whose sample rows couple through diag(1/m) P while
    the labels see the weighted P; and such a run equals plain BDF."""
    m = HeadModel(balanced_couplings(3, 12, 2), d=3, eta_y=0.5, eta_W=1.0)
    sysm, v = m.system, m.pack(*m.initial_state(0))
    if reduced:
        red = reduction(sysm)
        assert red is not None and red.groups.N_reduced < red.groups.N
        sysm, v = red.system, red.reduce(v)[0]
    J = kb.FrozenJacobian(sysm, v)
    assert J.coupling is not None
    (ox, sx), (oy, sy) = sysm.layout["x"], sysm.layout["y"]
    assert oy == ox + sx[0] * sx[1]
    nodes = slice(ox, oy + sy[0] * sy[1])  # samples and labels; W held fixed
    c = 3.0
    w = np.zeros(sysm.size)
    w[nodes] = np.random.default_rng(4).normal(size=nodes.stop - nodes.start)
    r = np.zeros(sysm.size)
    r[nodes] = (w - c * J.matvec(w))[nodes]
    solve = kb.KrylovSolve(c * J, np.ones(sysm.size), 1e-6, 50, dict(solves=0, iterations=0, max_iterations=0,
                                                                    failures=0))
    assert solve.graph_solve is not None
    assert within(_err(solve.block_inverse(r)[nodes], w[nodes]), 1e-10)
    if reduced:
        kw = dict(rtol=1e-8, atol=1e-11)
        te = np.array([0.0, 0.5])
        kr = integrate(sysm.flow_vector, v, te, method="BDF-krylov", system=sysm, **kw)
        ref = integrate(sysm.flow_vector, v, te, jac=sysm.jacobian, method="BDF", **kw)
        assert within(_err(kr.y, ref.y), 1e-7)
