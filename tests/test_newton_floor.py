"""The noise-aware Newton test of every BDF of the package (docs/model.md §3.6)."""
import numpy as np
import pytest
from scipy.integrate import BDF
from scipy.linalg import expm, lu_factor, lu_solve

import symcollapse.numerics.newton_floor as nf
from symcollapse.errors import IntegrationError
from symcollapse.numerics.integrate import integrate

RTOL, ATOL = 1e-8, 1e-11


def _cancelling(mscale: float, n: int = 10, T: float = 10.0):
    """A stiff linear ODE ẏ = A y (eigenvalues −10⁻² … −10³) written as f = (A y + M y) − M y:
    the exact flow is A y, its computed round-off is ~u|M||y| (M ~ mscale)."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = Q @ np.diag(-np.geomspace(1e-2, 1e3, n)) @ Q.T
    M = mscale * rng.normal(size=(n, n))
    y0 = rng.normal(size=n)
    return A, M, y0, (lambda y: (A @ y + M @ y) - M @ y), expm(A * T) @ y0, T


def _scipy_steps(fun, jac, y0, T, cap):
    s = BDF(lambda t, y: fun(y), 0.0, y0, T, rtol=RTOL, atol=ATOL, jac=lambda t, y: jac)
    steps = 0
    while s.status == "running" and steps < cap:
        s.step()
        steps += 1
    return s, steps


def test_a_cancelling_flow_finishes_where_scipys_bdf_stalls():
    """(a) With M ~ 10⁷ the flow's round-off (~3·10⁻⁹ per entry) puts every Newton increment of a
    step with c ≳ 10⁻² at the floor: scipy's BDF needs more than 2× the package's steps (it took
    5484 steps and 1973 Jacobians when run to the end, the package's 1736 and 310). The package's BDF finishes with the exact
    solution e^{AT} y₀ to 10·rtol (max-norm, relative to ‖y₀‖∞): BDF's global error at rtol on this
    contracting system, which the noise-free run meets with 2e-10 (the floor's accepted iterates
    carry only the image of the flow's noise, docs/model.md §3.6)."""
    A, M, y0, f, exact, T = _cancelling(1e7)
    sol = integrate(f, y0, np.array([0.0, T]), jac=lambda y: A, method="BDF", rtol=RTOL, atol=ATOL)
    err = float(np.max(np.abs(sol.y[-1] - exact)) / np.max(np.abs(y0)))
    assert err <= 10 * RTOL, err
    assert sol.newton_floor["accepted"] > 0
    s, steps = _scipy_steps(f, A, y0, T, cap=2 * sol.nsteps)
    assert s.status == "running" and s.t < T, (s.t, steps, sol.nsteps)


def test_b_no_change_without_a_floor():
    """(c) The same ODE without the cancelling term (M = 0): no Newton iteration reaches the floor,
    so the package's BDF takes scipy's steps, Jacobians and LUs and ends at the same state, bit for
    bit."""
    A, M, y0, f, exact, T = _cancelling(0.0)
    sol = integrate(f, y0, np.array([0.0, T]), jac=lambda y: A, method="BDF", rtol=RTOL, atol=ATOL)
    s, steps = _scipy_steps(f, A, y0, T, cap=10 ** 6)
    assert s.status == "finished"
    assert sol.nsteps == steps and sol.njev == s.njev
    assert sol.newton_floor == {"checks": 0, "accepted": 0, "limited": 0}
    ours = nf.FloorBDF(lambda t, y: f(y), 0.0, y0, T, rtol=RTOL, atol=ATOL, jac=lambda t, y: A)
    while ours.status == "running":
        ours.step()
    assert (ours.nfev, ours.nlu) == (s.nfev, s.nlu) and np.array_equal(ours.y, s.y)


def _floor_runs(monkeypatch, run):
    """``run()`` with failures at the floor keeping J (the package) and handled as scipy does (a
    new J first: KEEP_JACOBIAN_AT_FLOOR = False)."""
    new = run()
    monkeypatch.setattr(nf, "KEEP_JACOBIAN_AT_FLOOR", False)
    old = run()
    monkeypatch.setattr(nf, "KEEP_JACOBIAN_AT_FLOOR", True)
    return new, old


def test_a_failure_at_the_floor_halves_h_without_a_new_jacobian(monkeypatch):
    """(e) On f = (A y + M y) − M y with M ~ 10⁷ the floor exceeds the bound 0.03 at the larger
    steps. J = A is constant, so scipy's response to such a failure — a new Jacobian, the same
    Newton iteration again, then h halved — repeats the failure exactly. The package halves h at
    once: the same steps and end state bit for bit, fewer Jacobians (measured 310 against 399), at
    most one saved per failure at the floor, and the exact solution to 10·rtol."""
    A, M, y0, f, exact, T = _cancelling(1e7)
    new, old = _floor_runs(monkeypatch, lambda: integrate(f, y0, np.array([0.0, T]), jac=lambda y: A,
                                                          method="BDF", rtol=RTOL, atol=ATOL))
    assert new.newton_floor["limited"] > 0 and old.newton_floor["limited"] == 0
    assert new.nsteps == old.nsteps and np.array_equal(new.y, old.y)
    assert new.newton_floor["accepted"] == old.newton_floor["accepted"]
    assert 0 < old.njev - new.njev <= new.newton_floor["limited"], (old.njev, new.njev)
    err = float(np.max(np.abs(new.y[-1] - exact)) / np.max(np.abs(y0)))
    assert err <= 10 * RTOL, err


def test_after_a_step_at_the_floor_h_grows_at_most_to_the_floor(monkeypatch):
    """(f) After a step whose iterate was accepted at the floor η, scipy's controller sees only a
    tiny error estimate and grows h (up to 10×) past the step size at which the floor — ∝ h on the
    slow and zero modes — exceeds the bound, and the next step fails there. The package grows h by
    at most floor_growth(η) = max(1, FLOOR_MAX/(2η)); without that cap the controller's growth
    exceeds it (checked on f = (A y + M y) − M y, M ~ 10⁷, both ways)."""
    assert np.isinf(nf.floor_growth(np.nan)) and nf.floor_growth(0.03) == 1.0
    assert nf.floor_growth(0.001) == pytest.approx(15.0)
    A, M, y0, f, exact, T = _cancelling(1e7)

    def worst(cap):
        monkeypatch.setattr(nf, "CAP_GROWTH_AT_FLOOR", cap)
        s = nf.FloorBDF(lambda t, y: f(y), 0.0, y0, T, rtol=RTOL, atol=ATOL, jac=lambda t, y: A)
        newton, seen = s._floor_newton, []

        def spy(*a, **k):
            out = newton(*a, **k)
            seen.append(out[5])
            return out
        s._floor_newton = spy
        excess = 0.0
        while s.status == "running":
            h = s.h_abs
            s.step()
            if s.h_abs > h and np.isfinite(seen[-1]):  # grown after a step accepted at the floor
                excess = max(excess, s.h_abs / h / max(1.0, nf.FLOOR_MAX / (nf.FLOOR_FACTOR * seen[-1])))
        assert s.status == "finished"
        err = float(np.max(np.abs(s.y - exact)) / np.max(np.abs(y0)))
        assert err <= 10 * RTOL, err
        return excess
    assert worst(True) <= 1 + 1e-12
    assert worst(False) > 1.5


def _seed_bdf(A, M, Y0, T):
    """The per-seed BDF (numerics/seed_bdf.py) on the rows of Y0 with the cancelling flow."""
    from symcollapse.numerics.seed_bdf import SeedBDF
    n = A.shape[0]
    s = SeedBDF(lambda seeds, Y: (Y @ A.T + Y @ M.T) - Y @ M.T, lambda seeds, Y: [A] * len(seeds),
                lambda Js, cs: [lu_factor(np.eye(n) - c * J) for J, c in zip(Js, cs)],
                lambda LUs, R: np.array([lu_solve(L, r) for L, r in zip(LUs, R)]), 0.0, Y0, T,
                rtol=RTOL, atol=ATOL)
    while np.any(s.t < T):
        s.step()
        s.retire(np.flatnonzero(s.t >= T))
    return s


def test_the_per_seed_bdf_halves_h_at_the_floor_without_a_new_jacobian(monkeypatch):
    """(e) The same for the per-seed BDF of ``simulate_many`` (two seeds, y₀ and −y₀/2): per seed
    the same steps and end state bit for bit, fewer Jacobians (measured 289, 213 against 389, 271),
    the exact solution to 10·rtol."""
    A, M, y0, f, exact, T = _cancelling(1e7)
    Y0 = np.array([y0, -0.5 * y0])
    new, old = _floor_runs(monkeypatch, lambda: _seed_bdf(A, M, Y0, T))
    assert np.all(new.floor_limited > 0) and np.all(old.floor_limited == 0)
    assert np.array_equal(new.nsteps, old.nsteps) and np.array_equal(new.y, old.y)
    assert np.all(old.njev > new.njev) and np.all(old.njev - new.njev <= new.floor_limited)
    for b, w in enumerate((1.0, -0.5)):
        err = float(np.max(np.abs(new.y[b] - w * exact)) / np.max(np.abs(w * y0)))
        assert err <= 10 * RTOL, (b, err)


def _stalled_newton(n=8, sigma=1e-6, seed=0):
    """A Newton iteration that stalls at its noise: f(y) = −y + σ·(fresh noise at every call), a
    factorised I − cJ with the exact J = −I."""
    rng = np.random.default_rng(seed)
    calls = []

    def fun(t, y):
        calls.append(y.copy())
        return -y + sigma * rng.normal(size=len(y))
    c = 0.5
    LU = lu_factor(np.eye(n) * (1 + c))
    return fun, c, LU, (lambda LU, b: lu_solve(LU, b)), calls


def test_d_a_nan_or_inf_floor_never_converges():
    """(d) A stalled iteration (increments at the noise, rate ≈ 1) is accepted at the floor; the
    same iteration with a NaN or inf in the probe's evaluations, in the floor or in the increment
    is not (NaN-safe comparisons)."""
    n, y0 = 8, np.zeros(8)  # the predictor is the solution of y = c f(y): increments are noise
    scale = np.full(n, 1e-4)  # noise image σc/(1 + c)/scale ≈ 0.003: below FLOOR_MAX
    psi = np.zeros(n)
    fun, c, LU, solve, calls = _stalled_newton()
    stats = nf.new_stats()
    ok, *_ = nf.solve_bdf_system(fun, 0.0, y0, c, psi, LU, solve, scale, 1e-4, stats=stats)
    assert ok and stats == {"checks": 1, "accepted": 1, "limited": 0}
    assert len(calls) == 6  # two iterations, then the probe f(y ± p), f(y ± 2p)
    for poison in (np.nan, np.inf):
        fun, c, LU, solve, calls = _stalled_newton()

        def bad(t, y, fun=fun, calls=calls, poison=poison):  # the probe's calls return NaN / inf
            return fun(t, y) * (poison if len(calls) >= 3 else 1.0)
        stats = nf.new_stats()
        ok, *_ = nf.solve_bdf_system(bad, 0.0, y0, c, psi, LU, solve, scale, 1e-4, stats=stats)
        assert not ok and stats == {"checks": 1, "accepted": 0, "limited": 0}
    assert not nf.at_floor(1e-3, np.nan) and not nf.at_floor(1e-3, np.inf)
    assert not nf.at_floor(np.nan, 1.0) and not nf.at_floor(np.inf, np.inf)
    assert nf.at_floor(1e-3, 1e-3) and not nf.at_floor(0.5, 10.0)  # above FLOOR_MAX: never
    assert list(nf.at_floor(np.array([1e-3, 1e-3, np.nan]), np.array([1e-3, np.nan, 1.0]))) == [True, False, False]


def test_floor_rows_nan_per_row_and_on_a_raising_hook():
    """The batched floor: a row whose probe is not finite gets NaN (the other rows their value);
    a hook that raises (non-finite flow, failed Krylov solve) makes every row NaN."""
    rng = np.random.default_rng(1)
    Y, F = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    scale = np.full((3, 5), 1e-8)
    signs = nf.noise_signs(5)

    def flows(X):
        out = -X + 1e-7 * rng.normal(size=X.shape)
        out[1, 0] = np.nan
        return out
    eta = nf.floor_rows(flows, lambda R: R, Y, F, np.ones(3), scale, np.full(3, 1e-3), signs)
    assert np.isnan(eta[1]) and np.all(np.isfinite(eta[[0, 2]])) and np.all(eta[[0, 2]] > 0)

    def raising(X):
        raise IntegrationError("non-finite flow")
    eta = nf.floor_rows(raising, lambda R: R, Y, F, np.ones(3), scale, np.full(3, 1e-3), signs)
    assert np.all(np.isnan(eta))


def test_the_noise_difference_cancels_linear_quadratic_and_cubic_parts():
    """Δ²f of a linear flow at a probe p is zero up to its rounding; of a quadratic flow it is
    f''(p, p) = 2 p∘p (f = y∘y); 4Δ²f(p) − Δ²f(2p) of a cubic flow is zero up to rounding: the
    floor sees neither J, however large, nor the curvature of a flow of degree ≤ 3."""
    rng = np.random.default_rng(2)
    A = 1e3 * rng.normal(size=(6, 6))
    y, p = rng.normal(size=6), 1e-3 * rng.normal(size=6)
    lin = nf.second_difference(A @ (y + p), A @ (y - p), A @ y)
    assert np.max(np.abs(lin)) <= 64 * np.finfo(float).eps * np.max(np.abs(A) @ np.abs(y))
    quad = nf.second_difference((y + p) ** 2, (y - p) ** 2, y ** 2)
    assert np.max(np.abs(quad - 2 * p * p)) <= 1e-12

    def cubic(v):
        return A @ v + 50.0 * v * v - 7.0 * v ** 3
    Fs = [cubic(y + a * p) for a in (1.0, -1.0, 2.0, -2.0)]
    nd = nf.noise_difference(*Fs, cubic(y))
    assert np.max(np.abs(nd)) <= 256 * np.finfo(float).eps * np.max(np.abs(A) @ np.abs(y) + 60 * y * y + 8 * np.abs(y) ** 3)
    assert np.max(np.abs(nf.second_difference(Fs[0], Fs[1], cubic(y)))) >= 1e3 * np.max(np.abs(nd))


def _head(K, n, mu, d, rates=(1.0, 0.5, 1.0)):
    """The balanced head of benchmark row 10 (K classes of n samples, μ frustrated per pair)."""
    from symcollapse.models.couplings import balanced_couplings
    from symcollapse.models.head import HeadModel
    return HeadModel(balanced_couplings(K, n, mu), d=d, eta_x=rates[0], eta_y=rates[1], eta_W=rates[2])


def _head_to_fixed_point(rtol, monkeypatch):
    import symcollapse.numerics.method_choice as mc

    m = _head(4, 2376, 83, 4)  # N = 10002, ε = 0.05 (row 10's case)
    with monkeypatch.context() as mp:  # auto's BDF on the 50 pseudo-samples (it takes LSODA at this size)
        mp.setattr(mc, "SMALL_DENSE_SIZE", 0)
        tr = m.simulate(1e5, seed=0, stop_residual=1e-9, n_points=3, rtol=rtol, atol=rtol * 1e-3)
    assert tr.extra["method"] == "BDF-nodes"
    assert tr.extra["stopped"] and tr.extra["residual"] <= 1e-9
    assert tr.extra["newton_floor"]["accepted"] > 0 and tr.extra["newton_floor"]["limited"] > 0
    # the end state (lifted from the pseudo-samples) is a fixed point of the full flow of all N
    # samples (the stop is measured on it; measured 9.90e-10 at rtol 1e-7)
    full = float(np.max(np.abs(m.system.flow_vector(m.pack(tr.Z, tr.W)))))
    assert full <= 1e-9, full
    ref = m.simulate(1e5, seed=0, stop_residual=1e-9, n_points=3, rtol=1e-6, atol=1e-9)  # auto: LSODA
    assert ref.extra["stopped"]
    rel = abs(tr.d_min[-1] - ref.d_min[-1]) / ref.d_min[-1]
    assert rel <= 1e-4, rel
    return tr


def test_head_at_ten_thousand_samples_reaches_its_fixed_point(monkeypatch):
    """(b) K = 4, d = 4, N = 10⁴ with the summed-loss rates (1, 0.5, 1) at rtol 10⁻⁷: the flow's terms
    are ~10⁶, its round-off ~2·10⁻¹⁰; with scipy's test this run had not reached the stop after
    14 minutes (wall, load 3; at rtol 10⁻⁸: 28 000 steps and 11 700 Jacobians to t = 3198 of
    ~2.6·10⁴). With the noise-aware test it stops at ‖θ̇‖∞ ≤ 10⁻⁹ (measured: 1402 steps), some
    iterates accepted at the floor and some failures at a floor above the bound (h halved without
    a new Jacobian: 254 Jacobians against 330 without that), at a fixed point of the full flow and
    at the end state (Δ_min to 10⁻⁴ relative, the stop's own accuracy at these rates) of the run at
    rtol 10⁻⁶, where scipy's test itself works."""
    tr = _head_to_fixed_point(1e-7, monkeypatch)
    assert tr.extra["nsteps"] < 3000


@pytest.mark.slow
def test_head_at_ten_thousand_samples_reaches_its_fixed_point_at_rtol_1e8(monkeypatch):
    """(b) The same at row 10's rtol 10⁻⁸ (measured: 4874 steps, 22 s CPU)."""
    tr = _head_to_fixed_point(1e-8, monkeypatch)
    assert tr.extra["nsteps"] < 10000


@pytest.mark.parametrize("method,t_end,stop", [("BDF", 1e5, 1e-9), ("BDF-nodes", 1e5, 1e-9), ("auto", 1e5, 1e-9),
                                               ("BDF-krylov", 0.05, None)])
def test_normal_head_runs_take_scipys_steps(method, t_end, stop, monkeypatch):
    """(c) A head run without a floor (K = 3, N = 30, d = 4, to the fixed point; BDF-krylov, the
    costliest per step, to t = 0.05): every BDF of the package takes the same steps and Jacobians
    and ends at the same state as with the noise-aware test turned off (FLOOR_MAX = 0: scipy's test
    exactly); no iterate is accepted at the floor."""
    import symcollapse.numerics.method_choice as mc

    monkeypatch.setattr(mc, "SMALL_DENSE_SIZE", 0)  # 'auto' would take LSODA (not a BDF) at this size
    m = _head(3, 9, 1, 4)  # N = 30
    kw = dict(seed=0, stop_residual=stop, n_points=3, rtol=1e-8, atol=1e-11, method=method)
    on = m.simulate(t_end, **kw)
    monkeypatch.setattr(nf, "FLOOR_MAX", 0.0)
    off = m.simulate(t_end, **kw)
    assert on.extra["newton_floor"]["accepted"] == 0 and off.extra["newton_floor"]["checks"] == 0
    assert on.extra["nsteps"] == off.extra["nsteps"] and on.extra["njev"] == off.extra["njev"]
    assert np.array_equal(on.Z, off.Z)


@pytest.mark.parametrize("poison", [1.0, np.nan])
def test_krylov_newton_accepts_at_the_floor_and_never_on_nan(poison):
    """BDF-krylov's Newton iteration (GMRES solves, docs/model.md §3.4) on a head flow with added
    noise σ = 10⁻⁶ whose predictor solves the BDF system exactly (ψ = c f(y)): its increments are the
    noise's image, the rate test fails, and the floor — measured through a GMRES solve too — accepts
    the iterate; with NaN in the probe's evaluations nothing is accepted."""
    import symcollapse.numerics.krylov_bdf as kb
    m = _head(3, 9, 1, 4)
    sysm = m.system
    v = m.pack(*m.initial_state(0))
    c = 0.01
    J = kb.FrozenJacobian(sysm, v)
    st = dict(solves=0, iterations=0, max_iterations=0, failures=0)
    scale = np.full(sysm.size, 2e-6)
    solve = kb.KrylovSolve(c * J, scale, kb.KRYLOV_RTOL, kb.KRYLOV_MAXITER, st)
    rng = np.random.default_rng(4)
    calls = []

    def fun(t, y):
        calls.append(1)
        out = sysm.flow_vector(y) + 1e-6 * rng.normal(size=len(y))
        return out * (poison if len(calls) >= 3 else 1.0)
    stats = nf.new_stats()
    ok, *_ = kb._newton(fun, 0.0, v, c, c * sysm.flow_vector(v), solve, lambda LU, r: LU.solve(r), scale,
                        1e-4, stats=stats)
    assert stats["checks"] == 1
    assert ok == (poison == 1.0) and stats["accepted"] == int(poison == 1.0)


@pytest.mark.parametrize("limit", [True, False])
def test_krylov_newton_reports_a_failure_at_a_floor_above_the_bound(limit):
    """The same with noise σ = 5·10⁻⁵ (floor ≈ 0.35 > FLOOR_MAX): the iteration fails, and — where
    the step's Jacobian is not current (``limit``) — it is reported as a failure at the floor (the
    step then halves h without a new Jacobian); with a current Jacobian nothing is measured."""
    import symcollapse.numerics.krylov_bdf as kb
    m = _head(3, 9, 1, 4)
    sysm = m.system
    v = m.pack(*m.initial_state(0))
    c = 0.01
    st = dict(solves=0, iterations=0, max_iterations=0, failures=0)
    scale = np.full(sysm.size, 2e-6)
    solve = kb.KrylovSolve(c * kb.FrozenJacobian(sysm, v), scale, kb.KRYLOV_RTOL, kb.KRYLOV_MAXITER, st)
    rng = np.random.default_rng(4)
    stats = nf.new_stats()
    ok, it, y, d, limited, eta = kb._newton(lambda t, y: sysm.flow_vector(y) + 5e-5 * rng.normal(size=len(y)), 0.0, v,
                                       c, c * sysm.flow_vector(v), solve, lambda LU, r: LU.solve(r), scale, 1e-4,
                                       stats=stats, limit=limit)
    assert not ok and limited == limit and np.isnan(eta)
    assert stats == ({"checks": 1, "accepted": 0, "limited": 1} if limit else nf.new_stats())


def test_rebind_refuses_a_name_the_function_does_not_use():
    """Installing the test replaces the global ``solve_bdf_system`` of scipy's BDF step; a function
    that does not use a replaced name raises (a future scipy would otherwise run without the floor)."""
    def step():
        return 1
    with pytest.raises(RuntimeError, match="solve_bdf_system"):
        nf.rebind(step, solve_bdf_system=lambda *a: None)
    assert nf.rebind(BDF._step_impl, solve_bdf_system=nf.solve_bdf_system).__code__ is BDF._step_impl.__code__


@pytest.mark.parametrize("method", ["BDF", "BDF-Schur", "BDF-nodes", "BDF-krylov"])
def test_every_scipy_based_bdf_takes_the_floor_step(method):
    """'BDF', 'BDF-Schur', 'BDF-nodes' and 'BDF-krylov' step with :func:`.newton_floor.floor_step_impl`
    (the failure at the floor keeps J) and its noise-aware Newton iteration."""
    from symcollapse.numerics.integrate import NodeBDF, SchurBDF, node_blocks
    from symcollapse.numerics.krylov_bdf import KrylovBDF
    m = _head(3, 9, 1, 4)
    sysm = m.system
    v = m.pack(*m.initial_state(0))
    fun = lambda t, y: sysm.flow_vector(y)  # noqa: E731
    jac = lambda t, y: sysm.jacobian(y)  # noqa: E731
    solver = {"BDF": lambda: nf.FloorBDF(fun, 0.0, v, 1.0, jac=jac),
              "BDF-Schur": lambda: SchurBDF(fun, 0.0, v, 1.0, jac=jac),
              "BDF-nodes": lambda: NodeBDF(fun, 0.0, v, 1.0, jac=jac, node_blocks=node_blocks(sysm)),
              "BDF-krylov": lambda: KrylovBDF(fun, 0.0, v, 1.0, system=sysm)}[method]()
    assert solver._step_impl.__func__ is nf.floor_step_impl and solver.newton_floor == nf.new_stats()
    assert solver.step() is None and solver.t > 0
