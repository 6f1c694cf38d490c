"""Fixed-point families of the stop-gradient head model and their derived stability: every
representative is a fixed point of the derived flow; the symmetry tangent is in the Jacobian's
kernel; the classification agrees with integrated perturbations (independent numerics)."""
import numpy as np
import pytest

import symcollapse as sc
from symcollapse.errors import InvalidParameterError
from symcollapse.numerics import families as fm

P = sc.balanced_couplings(2, 5, 2)  # the referee's case: nu = -1, -nu_sep, 0 (x10), nu_sep, 1


@pytest.fixture(scope="module")
def m4():
    return sc.HeadModel(P, d=4, eta_x=1.0, eta_y=0.1, eta_W=1.0)


def test_levels_and_enumeration():
    levels = fm.nu_levels(P)
    nus = [lv.nu for lv in levels]
    ns = sc.nu_sep(2, 5, 2)
    assert np.allclose(nus, [-1, -ns, 0, ns, 1], atol=1e-12)
    assert [lv.m for lv in levels] == [1, 1, 10, 1, 1]
    fams = fm.enumerate_families(P, 4)
    # brute force: rank vectors with r <= m, sum <= d
    brute = sum(1 for a in range(2) for b in range(2) for c in range(5) for e in range(2) for f in range(2)
                if a + b + c + e + f <= 4)
    assert len(fams) == brute == len({f.ranks for f in fams})
    assert all(f.rank <= 4 for f in fams)


@pytest.mark.parametrize("ranks", [(1, 1, 0, 1, 1), (1, 0, 0, 1, 1), (0, 0, 2, 1, 0), (0, 0, 0, 0, 0)])
def test_representative_is_a_fixed_point_of_its_family(m4, ranks):
    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(P)), ranks)
    Z, W = fm.representative(P, 4, fam, seed=2, spare=0.3)
    dZ, dW = m4.flow(Z, W)
    assert np.max(np.abs(dZ)) <= 1e-12 and np.max(np.abs(dW)) <= 1e-12
    got, _ = fm.state_family(P, Z)
    assert got.ranks == ranks
    # W a_k = nu_k a_k on the kept directions: eigenvalues of W include every kept nu
    ev = np.sort(np.linalg.eigvals(W).real)
    for nu, r in zip(fam.nus, ranks):
        assert np.sum(np.abs(ev - nu) < 1e-9) >= r
    # one spare head eigenvalue per free direction: W's spectrum is the kept ν's plus exactly those
    spares = np.linspace(-0.7, 1.3, 4 - fam.rank)
    Z, W = fm.representative(P, 4, fam, seed=2, spare=spares, lengths=np.linspace(1.0, 3.0, fam.rank))
    dZ, dW = m4.flow(Z, W)
    assert np.max(np.abs(dZ)) <= 1e-12 and np.max(np.abs(dW)) <= 1e-12
    kept = [nu for nu, r in zip(fam.nus, ranks) for _ in range(r)]
    assert np.allclose(np.sort(np.linalg.eigvals(W).real), np.sort(kept + list(spares)), atol=1e-9)


def test_full_rank_spectrum_splits_into_symmetry_zeros_and_the_rest(m4):
    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(P)), (1, 1, 0, 1, 1))
    res = fm.classify_family(m4, fam)
    assert res.kind == "stable" and res.n_symmetry == 16  # gauge only: Z has full column rank
    Z, W = fm.representative(P, 4, fam)
    J = m4.system.jacobian(m4.pack(Z, W)).toarray()
    ev = np.linalg.eigvals(J)
    assert np.sum(np.abs(ev) < 1e-8) == res.n_symmetry  # independent: eig of the assembled J
    assert res.invariant_residual < 1e-12


def test_rank_deficient_attractor_depends_on_the_spare_head_eigenvalue(m4):
    """Referee: rank-3 end states at d = 4 (one -nu_sep mode dropped) are attractors: stable for a
    spare eigenvalue s > 0, a saddle for -nu_sep < s < 0."""
    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(P)), (1, 0, 0, 1, 1))
    assert fm.classify_family(m4, fam, spare=0.5).kind == "stable"
    sad = fm.classify_family(m4, fam, spare=-0.5)
    assert sad.kind == "saddle" and sad.n_unstable == 1


def test_classification_agrees_with_integrated_perturbations():
    """Independent numerics: along the unstable eigenvector a perturbation grows at Re lambda_max."""
    m1 = sc.HeadModel(P, d=1, eta_x=1.0, eta_y=0.5, eta_W=1.0)
    levels = fm.nu_levels(P)
    fam = fm.Family(tuple(lv.nu for lv in levels), (0, 0, 0, 1, 0))  # the mean-field (fig 6) state
    res = fm.classify_family(m1, fam)
    assert res.kind == "saddle" and res.n_unstable == 1
    Z, W = fm.representative(P, 1, fam)
    v = m1.pack(Z, W)
    J = m1.system.jacobian(v).toarray()
    ev, V = np.linalg.eig(J)
    k = int(np.argmax(ev.real))
    assert abs(ev[k].real - res.max_real) < 1e-10
    u = np.real(V[:, k])
    t = np.array([0.0, 5.0, 10.0])
    tr = m1.simulate(t_eval=t, Z0=m1.unpack(v + 1e-7 * u)[0], W0=m1.unpack(v + 1e-7 * u)[1],
                     keep_states=True, rtol=1e-12, atol=1e-16)
    d1, d2 = (np.linalg.norm(s - v) for s in tr.states[1:])
    rate = np.log(d2 / d1) / 5.0
    assert abs(rate - res.max_real) < 1e-3 * abs(res.max_real) + 1e-4
    # the only stable d = 1 families keep nu = +1 or nu = -1 (all labels equal): labels collapse
    stable = [f.key for f in fm.enumerate_families(P, 1) if fm.classify_family(m1, f).kind == "stable"]
    assert sorted(stable) == ["+1.0000x1", "-1.0000x1"]


def test_bad_input(m4):
    with pytest.raises(InvalidParameterError, match="fixed point"):
        fm.classify_state(m4, *m4.initial_state(0))
    with pytest.raises(InvalidParameterError, match="d"):
        fm.enumerate_families(P, 0)
    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(P)), (1, 1, 0, 1, 1))
    with pytest.raises(InvalidParameterError, match="family"):
        fm.representative(P, 3, fam)
    with pytest.raises(InvalidParameterError, match="spare"):
        fm.representative(P, 4, fam, spare=[0.5, 0.5])  # rank 4 = d: no free direction
    with pytest.raises(InvalidParameterError, match="lengths"):
        fm.representative(P, 4, fam, lengths=[1.0, -1.0, 1.0, 1.0])


def test_member_scan_zero_state_attracts_only_with_a_large_spare_head():
    """Z = 0, W = sI: Zdot = -s H (sD - A) Z, so it attracts iff |s| > 1 (sD - A > 0)."""
    m2 = sc.HeadModel(P, d=2, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    zero = fm.Family(tuple(lv.nu for lv in fm.nu_levels(P)), (0, 0, 0, 0, 0))
    verdict, bounded, labels = fm.scan_family(m2, zero)
    assert verdict == "stable" and bounded != "stable"
    assert dict(labels)[0.5].startswith("saddle") or dict(labels)[0.5] == "degenerate"
    assert fm.classify_family(m2, zero, spare=1.5).kind == "stable"


def test_near_fixed_point_with_remnant_noise_is_classified_not_refused():
    # a simulated end state stops at residual ~1e-9: O(1e-10) errors of a rank-deficient state's head
    # must not enter the symmetry tangent (with the raw W they made it leave the Jacobian's kernel:
    # 7 of 20 such states were refused before)
    m = sc.HeadModel(sc.balanced_couplings(2, 3, 1), d=3, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    rng = np.random.default_rng(0)
    for ranks in [(0, 0, 0, 1, 1), (0, 0, 0, 1, 0)]:
        fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(m.graph)), ranks)
        Z, W = fm.representative(m.graph, 3, fam, seed=1, spare=0.5)
        exact = fm.classify_state(m, Z, W)
        for _ in range(10):
            st = fm.classify_state(m, Z + 5e-10 * rng.normal(size=Z.shape), W + 5e-10 * rng.normal(size=W.shape))
            assert st.label == exact.label and st.n_symmetry == exact.n_symmetry


def test_collapsed_state_noise_is_not_a_kept_mode():
    m = sc.HeadModel(sc.balanced_couplings(3, 2, 1), d=2, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    Z = 1e-15 * np.random.default_rng(1).normal(size=(m.N + m.K, 2))
    fam, _ = fm.state_family(m.graph, Z)
    assert fam.rank == 0
    st = fm.classify_state(m, np.zeros_like(Z), np.diag([0.9, 1.0]))
    assert st.kind == "saddle"
    assert fm.classify_state(m, Z, np.diag([0.9, 1.0])).label == st.label


def test_a_non_finite_spectrum_is_an_error_not_a_verdict(monkeypatch):
    # the counts `Re λ > thr`, `|Re λ| <= thr` do not see a NaN eigenvalue: without the guard a
    # spectrum with one NaN would be called "stable"
    from symcollapse.errors import DerivationCheckError
    from symcollapse.models.head import stability as hst

    m = sc.HeadModel(sc.balanced_couplings(2, 3, 1), d=3, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(m.graph)), (0, 0, 0, 1, 1))
    Z, W = fm.representative(m.graph, 3, fam, seed=1, spare=0.5)
    assert fm.classify_state(m, Z, W).kind == "stable"
    true_eigvals = np.linalg.eigvals
    monkeypatch.setattr(np.linalg, "eigvals", lambda a: np.append(true_eigvals(a)[:-1], np.nan))
    with pytest.raises(DerivationCheckError, match="not finite"):
        fm.classify_state(m, Z, W)
    with pytest.raises(DerivationCheckError, match="not finite"):
        hst.classify(m, Z, W)
