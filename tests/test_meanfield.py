"""Mean-field reduction of the head model: closure, docs/model.md §3's equations, self-consistency,
invariant-selected end state, and agreement with the full simulation."""
import mpmath
import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
import symcollapse.closed_forms as cf
from symcollapse.models.head import graph_modes
from symcollapse.numerics.integrate import integrate
from symcollapse.models.head import meanfield as mfm

N_, M_ = mfm.n_, mfm.m_


def test_reduction_is_closed_and_equals_model_md():
    mf = mfm.derive_meanfield(True)
    assert len(mf.closure) >= 4 and all(r == 0 for _, r in mf.closure)
    diff = (mf.rhs.subs(mfm.omega_, 2) - mfm.model_md_reduced()).applyfunc(sp.simplify)
    assert diff == sp.zeros(5, 1)


def test_reduced_invariant_is_conserved_with_sg_only():
    for sgv, zero in ((True, True), (False, False)):
        mf = mfm.derive_meanfield(sgv)
        assert (mfm.reduced_time_derivative(mf, mfm.reduced_invariant()) == 0) is zero


def test_self_consistency_and_final_separation_closed_forms():
    sol = mfm.self_consistency(True)
    w2 = sol["w2"].subs(mfm.omega_, 2)
    assert sp.simplify(w2 - cf.meanfield_w_star_squared(N_, M_)) == 0
    assert sp.simplify(sol["Y_over_X"].subs(mfm.omega_, 2) - cf.meanfield_y_over_x(sp.sqrt(w2))) == 0  # X* = Y*/w*
    I0 = sol["I0"]
    ref = cf.meanfield_y_inf_squared(I0, N_, M_, mfm.eta_x, mfm.eta_y, mfm.eta_W)
    assert sp.simplify(sol["Yinf2"].subs(mfm.omega_, 2) - ref) == 0
    # without stop-gradient there is no fixed point with w > 0 and Y ≠ 0
    assert mfm.self_consistency(False)["w2"] is None


def _full_vs_reduced(n, m, omega, rates, d, t_end=30.0):
    ex, ey, eW = rates
    P = sc.balanced_couplings(2, n, m, omega)
    model = sc.HeadModel(P, d=d, eta_x=ex, eta_y=ey, eta_W=eW)
    rng = np.random.default_rng(7)
    Z0, W0 = mfm.ansatz_state(n, m, 0.3, 1.1, 0.2 * rng.normal(size=n), 0.3 * rng.normal(size=m), 0.8, d)
    t = np.linspace(0, t_end, 25)
    tr = model.simulate(t_eval=t, Z0=Z0, W0=W0, keep_states=True, method="BDF", rtol=1e-12, atol=1e-14)
    proj = np.array([mfm.project_ansatz(n, m, *model.unpack(v)) for v in tr.states])
    mf = mfm.derive_meanfield(True, omega)
    f = mfm.reduced_rhs_function(mf, {"n": n, "m": m, "omega": omega, "eta_x": ex, "eta_y": ey, "eta_W": eW})
    red = integrate(f, proj[0], t, method="BDF", rtol=1e-12, atol=1e-14).y
    return proj, red, model, tr


@pytest.mark.parametrize("n,m,omega,rates,d", [(5, 2, 2, (1.0, 0.5, 1.0), 1), (4, 3, 1, (1.0, 0.3, 2.0), 2)])
def test_reduced_flow_matches_full_simulation(n, m, omega, rates, d):
    proj, red, _, _ = _full_vs_reduced(n, m, omega, rates, d)
    err = np.max(np.abs(proj - red)) / np.max(np.abs(red))
    assert err < 1e-8


def test_end_state_from_invariant_and_self_consistency():
    n, m, omega, (ex, ey, eW) = 4, 3, 1, (1.0, 0.3, 2.0)
    # t = 60 (σ², τ² decayed by e^{-80}); much later, round-off in the symmetric (ν = 1) mode grows:
    # in d = 1 this fixed point is a saddle of the full flow (see test_stability)
    proj, red, model, tr = _full_vs_reduced(n, m, omega, (ex, ey, eW), 1, t_end=60.0)
    sol = mfm.self_consistency(True, omega)
    vals = {mfm.n_: n, mfm.m_: m, mfm.eta_x: ex, mfm.eta_y: ey, mfm.eta_W: eW}
    w_star = float(sp.sqrt(sol["w2"].subs(vals)))
    I0 = float(mfm.reduced_invariant().subs(vals).subs(dict(zip(
        (mfm.X_, mfm.Y_, mfm.s2_, mfm.t2_, mfm.w_), proj[0]))))
    Yinf = float(sp.sqrt(sol["Yinf2"].subs(vals).subs(sol["I0"], I0)))
    assert abs(proj[-1, 4] - w_star) < 1e-7 * w_star
    assert abs(abs(proj[-1, 1]) - Yinf) < 1e-7 * Yinf
    assert abs(proj[-1, 0] - proj[-1, 1] / w_star) < 1e-7 * Yinf


def test_self_consistency_without_closed_form_by_findroot_30_digits():
    """An unbalanced graph: ν² are roots of a cubic, solved by mpmath.findroot to 30 digits."""
    P = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1], [0.5, 0, 1.5]])
    roots, poly = mfm.self_consistency_roots_mp(P, dps=30)
    assert poly.degree() == 3
    with mpmath.workdps(40):
        f = sp.lambdify(poly.gens[0], poly.as_expr(), "mpmath")
        for r in roots:
            assert abs(f(r * r)) < mpmath.mpf(10) ** -30
    vals, _ = graph_modes(P)
    pos = np.sort(vals[vals > 1e-9])
    assert np.allclose(np.array([float(r) for r in roots]), np.unique(np.round(pos, 12)), atol=1e-12)
