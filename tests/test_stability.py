"""Linear stability of the head model's fixed points: engine Jacobian with the fixed-point family
removed vs the mode-competition rule; reduced Jacobian; the d-vs-2K phase boundary."""
import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
from symcollapse.errors import InvalidParameterError
from symcollapse.models.head import graph_modes
from symcollapse.models.head import stability as st
from symcollapse.models.head import meanfield as mfm

P2 = sc.balanced_couplings(2, 3, 1)


def _rule(vals, keep):
    with pytest.deprecated_call():  # the typed-in rule still works, with a warning
        return st.predicted_kind(vals, keep)


def _boundary(K, nu, d_max):
    with pytest.deprecated_call():
        return st.phase_boundary(K, nu, d_max)


def _cases():
    vals, _ = graph_modes(P2)
    L = len(vals)
    z = int(np.flatnonzero(np.abs(vals) < 1e-9)[0])
    return [(1, [L - 1]), (1, [L - 2]), (2, [0, L - 1]), (2, [L - 2, L - 1]), (2, [1, L - 2]),
            (2, [z, L - 1]), (3, [0, 1, L - 1]), (3, [1, L - 2, L - 1]), (4, [0, 1, L - 2, L - 1])]


@pytest.mark.parametrize("d,keep", _cases())
def test_jacobian_classification_matches_mode_competition_rule(d, keep):
    res, vals = st.analyse_fixed_point(P2, d, keep, eta=(1.0, 0.5, 1.0))
    assert res.kind == _rule(vals, keep)
    assert res.n_family >= d * d - d or res.n_family >= 1
    if res.kind == "saddle":
        assert res.max_real > 1e-3
    if res.kind == "stable":
        assert res.max_real < -1e-3


def test_k3_full_head_is_stable_and_missing_top_mode_is_saddle():
    P = sc.balanced_couplings(3, 2, 1)
    vals, _ = graph_modes(P)
    nz = [k for k in range(len(vals)) if abs(vals[k]) > 1e-9]
    res, _ = st.analyse_fixed_point(P, 6, nz, eta=(1.0, 0.3, 1.0))
    assert res.kind == "stable" and res.n_rotation == 15
    top = int(np.argmax(vals))
    res2, _ = st.analyse_fixed_point(P, 5, [k for k in nz if k != top], eta=(1.0, 0.3, 1.0))
    assert res2.kind == "saddle"


def test_rotations_are_zero_modes_of_the_engine_jacobian():
    Z, W, phi, vals = st.exact_fixed_point(P2, 3, [0, 1, len(vals_ := graph_modes(P2)[0]) - 1], seed=3)
    m = sc.HeadModel(P2, d=3)
    J = m.system.jacobian(m.pack(Z, W)).toarray()
    for p, q in ((0, 1), (0, 2), (1, 2)):
        S = np.zeros((3, 3))
        S[p, q], S[q, p] = 1.0, -1.0
        v = m.pack(Z @ S.T, S @ W - W @ S)
        assert np.max(np.abs(J @ v)) < 1e-10 * np.max(np.abs(v))
    assert len(vals_) == len(vals)


def test_reduced_jacobian_at_self_consistent_point():
    Jr = mfm.reduced_jacobian(True)
    sol = mfm.self_consistency(True)
    w = sp.sqrt(sol["w2"])
    X = sp.Symbol("X0", positive=True)
    at = {mfm.X_: X, mfm.Y_: sol["Y_over_X"] * X, mfm.s2_: 0, mfm.t2_: 0, mfm.w_: w}
    J = Jr.subs(at)
    vals = {mfm.n_: 5, mfm.m_: 2, mfm.omega_: 2, mfm.eta_x: 1, mfm.eta_y: sp.Rational(1, 2), mfm.eta_W: 1, X: 1}
    ev = np.linalg.eigvals(np.array(J.subs(vals), dtype=float))
    ev = ev[np.argsort(ev.real)]
    w2 = 5 / 7
    assert np.sum(np.abs(ev) < 1e-12) == 1  # the family of fixed points along the invariant
    assert np.min(np.abs(ev + 2 * w2)) < 1e-12 and np.min(np.abs(ev + 4 * w2)) < 1e-12  # σ², τ²
    assert np.all(ev.real < 1e-12)  # stable within the ansatz …
    # … but a saddle of the full d = 1 flow: the ν = +1 mode is absent and |ν_sep| < 1
    vals_g, _ = graph_modes(sc.balanced_couplings(2, 5, 2))
    k = int(np.argmin(np.abs(vals_g - np.sqrt(w2))))
    assert _rule(vals_g, [k]) == "saddle"
    res, _ = st.analyse_fixed_point(sc.balanced_couplings(2, 5, 2), 1, [k])
    assert res.kind == "saddle"


@pytest.mark.parametrize("K", [2, 3, 4])
def test_phase_boundary_d_vs_2k(K):
    b = _boundary(K, sc.nu_sep(K, 5, 1), 3 * K)
    assert b == {"d_collapse": 2, "d_full": 2 * K}


def test_bad_input():
    with pytest.raises(InvalidParameterError, match="keep"):
        st.exact_fixed_point(P2, 1, [0, 1])
    with pytest.raises(InvalidParameterError, match="fixed point"):
        m = sc.HeadModel(P2, d=2)
        st.classify(m, *m.initial_state(0))
    with pytest.raises(InvalidParameterError, match="d"):
        with pytest.deprecated_call():
            st.stable_mode_counts(2, 0, 0.5)


def test_rule_on_random_kept_sets_k3():
    P = sc.balanced_couplings(3, 2, 1)
    vals, _ = graph_modes(P)
    rng = np.random.default_rng(11)
    kinds = set()
    for trial in range(8):
        d = int(rng.integers(1, 5))
        keep = [int(k) for k in rng.choice(len(vals), size=d, replace=False)]
        res, _ = st.analyse_fixed_point(P, d, keep, eta=(1.0, 0.5, 1.0), seed=trial)
        assert res.kind == _rule(vals, keep)
        kinds.add(res.kind)
    assert "saddle" in kinds


def test_non_normal_member_of_a_stable_family_can_be_a_saddle():
    """Stability depends on the family member: the rule is for symmetric heads (orthogonal a_k)."""
    vals, _ = graph_modes(P2)
    L = len(vals)
    a = np.random.default_rng(0).normal(size=(2, 2))  # non-orthogonal amplitudes: W not normal
    res, _ = st.analyse_fixed_point(P2, 2, [L - 2, L - 1], eta=(1.0, 0.5, 1.0), amplitudes=a)
    assert res.kind == "saddle"
    res2, _ = st.analyse_fixed_point(P2, 2, [L - 2, L - 1], eta=(1.0, 0.5, 1.0), seed=0)
    assert res2.kind == "stable"


def test_vectorised_closed_forms_match_scalar_derivations():
    from symcollapse.models.head.phase import final_separation_grid, nu_sep_grid

    K, n, mu = np.meshgrid([2, 3, 5], [1, 4], [0, 1, 7], indexing="ij")
    grid = nu_sep_grid(K, n, mu, 1.5)
    ref = np.vectorize(lambda k, nn, m: sc.nu_sep(int(k), int(nn), int(m), 1.5))(K, n, mu)
    assert grid.shape == K.shape and np.max(np.abs(grid - ref)) < 1e-14
    sol = mfm.self_consistency(True)
    w, Y = final_separation_grid(10, np.array([0, 3, 8]), 1.0, 0.5, 2.0, 3.0)
    for k, m in enumerate((0, 3, 8)):
        vals = {mfm.n_: 10, mfm.m_: m, mfm.omega_: 2, mfm.eta_x: 1, mfm.eta_y: sp.Rational(1, 2),
                mfm.eta_W: 2, sol["I0"]: 3}
        assert abs(w[k] - float(sp.sqrt(sol["w2"].subs(vals)))) < 1e-14
        assert abs(Y[k] - float(sp.sqrt(sol["Yinf2"].subs(vals)))) < 1e-14
    assert abs(w[0] - 1.0) < 1e-15  # no frustration: w* = 1
    _, Yc = final_separation_grid(10, 20, 1.0, 0.5, 0.1, 4.0 - 10.0)  # I₀ + w*²/η_W < 0
    assert Yc == 0.0
    model = sc.HeadModel(sc.balanced_couplings(2, 10, 20), d=1, eta_x=1.0, eta_y=0.5, eta_W=0.1)
    Z0, W0 = mfm.ansatz_state(10, 20, 0.0, 1.0, np.zeros(10), np.zeros(20), 1.0, 1)
    tr = model.simulate(t_eval=np.array([0.0, 60.0]), Z0=Z0, W0=W0)
    assert abs(tr.Z[-1, 0]) < 1e-6  # the simulation collapses too


@pytest.mark.slow
def test_collapse_grid_follows_phase_boundary():
    from symcollapse.models.head.phase import collapse_grid

    rho = collapse_grid(2, 6, [0, 6], [1, 4], seeds=(0, 1), t_end=500.0)
    assert rho[0, 0] > 0.3 and rho[0, 1] > 0.3  # ε = 0: no collapse for any d
    assert rho[1, 0] < 1e-3  # d = 1 < 3 under frustration: collapse
    assert rho[1, 1] > 0.3  # d = 2K: every non-zero mode kept
