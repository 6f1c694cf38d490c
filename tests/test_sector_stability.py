"""Derived per-sector stability conditions of the head model's families (docs/model.md §3.1):
the spectrum assembled from the derived block polynomials equals the eigenvalues of the engine's
Jacobian (independent numerics), the Hurwitz conditions give the same verdict, and the verdict
flips where the derived amplitude condition says it does."""
import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
from symcollapse.errors import InvalidParameterError
from symcollapse.models.head import sector_blocks as hs
from symcollapse.models.head import sector_stability as ss

ROT = np.linalg.qr(np.random.default_rng(4).normal(size=(2, 2)))[0]


@pytest.mark.parametrize("eta_W, kind", [(1.0, "stable"), (0.1, "saddle")])
def test_kept_level_beyond_the_head_eigenvalue_flips_with_eta_W(eta_W, kind):
    # K = 2, keep +nu_s and +1 at d = 2: the head direction nu_s has the kept nu = 1 beyond it
    model = sc.HeadModel(sc.balanced_couplings(2, 5, 2), d=2, eta_x=1.0, eta_y=0.1, eta_W=eta_W)
    mem = ss.aligned_member(2, 5, 2, 2, (0, 0, 0, 1, 1))
    out = ss.compare_with_jacobian(model, mem, rotation=ROT)
    assert out["sizes"][0] == out["sizes"][1]
    assert out["match"] <= 1e-9
    assert out["pred"].kind == out["numeric"].kind == kind
    assert out["pred"].n_symmetry == out["numeric"].n_symmetry
    assert ss.hurwitz_stable(out["pred"]) == (kind == "stable")


def test_dropped_level_beyond_a_kept_one_is_a_saddle_with_the_counted_directions():
    # keep -nu_s and +nu_s (d = 2, no spare): the dropped nu = +1 lies beyond w = nu_s, -1 beyond -nu_s
    model = sc.HeadModel(sc.balanced_couplings(2, 5, 2), d=2, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    out = ss.compare_with_jacobian(model, ss.aligned_member(2, 5, 2, 2, (0, 1, 0, 1, 0)))
    assert out["match"] <= 1e-9
    assert out["pred"].label == out["numeric"].label == "saddle(2)"


def test_kept_nu_zero_mode_makes_a_degenerate_head_direction():
    # a kept ν = 0 mode (a within-class deviation) gives the head eigenvalue w = 0: its u-block vanishes
    model = sc.HeadModel(sc.balanced_couplings(2, 5, 2), d=2, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    out = ss.compare_with_jacobian(model, ss.aligned_member(2, 5, 2, 2, (0, 0, 1, 0, 1)), rotation=ROT)
    assert out["match"] <= 1e-9
    assert out["pred"].label == out["numeric"].label == "degenerate"


def test_level_swap_zero_of_a_degenerate_level_is_a_symmetry_not_a_condition():
    # K = 3: +nu_s has multiplicity 2; keeping one pattern leaves a zero root in the other pattern's
    # block of the head direction w = nu_s (a level swap), which the Hurwitz test must not count
    model = sc.HeadModel(sc.balanced_couplings(3, 1, 1), d=2, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    mem = ss.aligned_member(3, 1, 1, 2, (0, 0, 0, 1, 1))
    out = ss.compare_with_jacobian(model, mem, rotation=ROT)
    assert out["match"] <= 1e-9
    assert out["pred"].label == out["numeric"].label == "stable"
    assert out["pred"].n_symmetry == out["numeric"].n_symmetry
    assert ss.hurwitz_stable(out["pred"])
    # the separation block without kept modes in direction w = nu_s: its conditions are those of the
    # deflated polynomial, bounded away from 0 (the undeflated c0 is 0 up to rounding)
    swap = [vals for i, name, mult, kept, vals in out["pred"].hurwitz if i == 0 and name == "sep" and kept == ()]
    assert swap and min(swap[0]) > 1e-3


def test_unkept_sector_block_obeys_the_inertia_count():
    # no kept mode: p(λ) = det(λ + w H_s D_s (w − M)); roots real, #positive = #{modes: w(w − ν) < 0}
    b = hs.derive_block("uniform", ())
    vals = {hs.K_: 3, hs.n_: 2, hs.mu_: 1, hs.omega_: 2, hs.eta_x: 1, hs.eta_y: sp.Rational(1, 10), hs.eta_W: 1}
    for w in (sp.Rational(1, 2), sp.Rational(-3, 10), sp.Rational(3, 2)):
        p = sp.Poly(b.in_parameters(b.polynomial()).subs(vals).subs(hs.w_, w), hs.lam_)
        roots = np.roots([float(c) for c in p.all_coeffs()])
        assert np.max(np.abs(roots.imag)) <= 1e-12
        expected = sum(1 for nu in (1, 0, -1) if w * (w - nu) < 0)
        assert int(np.sum(roots.real > 0)) == expected


def test_gauge_factor_and_fixed_point_are_proven_for_every_block_kind():
    for name, kept in (("sep2", (1,)), ("xdev", (0,)), ("fdev", (0,))):
        b = hs.derive_block(name, kept)
        assert b.degree == len(b.sector.coords)
        assert len(b.hurwitz) == b.degree


def test_bad_input():
    with pytest.raises(InvalidParameterError, match="ranks"):
        ss.aligned_member(2, 5, 2, 2, (0, 0, 0, 2, 1))
    with pytest.raises(InvalidParameterError, match="lengths"):
        ss.aligned_member(2, 5, 2, 2, (0, 0, 0, 1, 1), lengths=[1.0])
    with pytest.raises(InvalidParameterError, match="mu"):
        ss.aligned_member(2, 5, 0, 2, (0, 0, 0, 1, 1))
    with pytest.raises(InvalidParameterError, match="signs"):
        hs.derive_block("xdev", (1,))
    with pytest.raises(InvalidParameterError, match="sector"):
        hs.sector("nope")


@pytest.mark.slow
@pytest.mark.parametrize("K, n, mu, d", [(3, 2, 1, 4), (4, 2, 1, 5), (3, 2, 1, 6)])
def test_every_listed_family_member_matches_the_jacobian(K, n, mu, d):
    model = sc.HeadModel(sc.balanced_couplings(K, n, mu), d=d, eta_x=1.0, eta_y=0.1, eta_W=0.7)
    R = np.linalg.qr(np.random.default_rng(1).normal(size=(d, d)))[0]
    for ranks in [(1, 1, 0, 1, 1), (0, 0, 0, 1, 1), (1, 0, 0, 1, 1), (0, 1, 0, 1, 0), (0, 0, 1, 1, 1),
                  (0, 0, 0, 0, 0), (0, 0, 0, 2, 1)]:
        mem = ss.aligned_member(K, n, mu, d, ranks, lengths=np.linspace(0.7, 1.6, sum(ranks)))
        out = ss.compare_with_jacobian(model, mem, rotation=R)
        assert out["match"] <= 1e-9, ranks
        assert out["pred"].label == out["numeric"].label, ranks
        assert ss.hurwitz_stable(out["pred"]) == (out["pred"].kind == "stable"), ranks
