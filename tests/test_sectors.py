"""Sector reduction, slow-rate series and fixed points of the embedding-only model (docs/model.md §2).

docs/model.md §2's closed forms come from symcollapse.closed_forms (written once, from the spec), the
reference the derived objects must equal.
"""
import itertools

import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
import symcollapse.closed_forms as cf
from symcollapse.errors import DerivationCheckError
from symcollapse.models.couplings import frustration_fraction
from symcollapse.models.embedding import embedding_loss
from symcollapse.symbolic.assemble import assemble_symbolic
from symcollapse.symbolic.fixedpoints import end_state, linear_fixed_points
from symcollapse.symbolic.invariants import linear_invariants, verify_invariant
from symcollapse.symbolic.sectors import (PATTERN, NodeType, QuotientEnsemble,
                                          affine_coefficients, balanced_ansatz,
                                          balanced_separation_ensemble, reduce_sector)
from symcollapse.symbolic.series import perturbative_root, slow_rate_series


@pytest.fixture(scope="module")
def sector2():
    return sc.embedding_sector(omega=2)


@pytest.fixture(scope="module")
def sector_omega():
    return sc.embedding_sector()


@pytest.fixture(scope="module")
def series(sector_omega):
    return slow_rate_series(sector_omega, omega=2, order=3)


def _syms(s):
    S = s.symbols
    return [S[k] for k in ("eta_x", "eta_y", "n", "mu", "K", "r")]


def test_sector_matrix_equals_model_md(sector2):
    ex, ey, n, mu, K, _ = _syms(sector2)
    ref = cf.sector_matrix(K, n, mu, ex, ey)
    assert sp.simplify(sp.Matrix(sector2.matrix) - ref) == sp.zeros(3, 3)
    assert [a.name for a in sector2.amplitudes] == ["X", "F", "Y"]


def test_charpoly_equals_model_md_cubic(sector2):
    ex, ey, n, mu, K, r = _syms(sector2)
    cubic = cf.sector_cubic(r, K, n, mu, ex, ey)
    assert sp.expand(sector2.charpoly - cubic) == 0


def test_closure_is_proved_with_symbolic_sums(sector_omega):
    proofs = {p.node: p for p in sector_omega.closure}
    assert set(proofs) == {"x", "f", "y"}
    assert all(p.residual == 0 for p in proofs.values())
    # the label's neighbour sum over the other classes is a genuine SymPy Sum before evaluation
    assert proofs["y"].flow.has(sp.Sum) and not proofs["y"].reduced.has(sp.Sum)
    assert sector_omega.coefficients == {("x", "x"): -1, ("x", "y"): 1, ("y", "x"): 1, ("y", "y"): -1}
    assert "omega" in sector_omega.symbols


@pytest.mark.parametrize("K,n,mu,omega", [(3, 2, 1, 1.0), (4, 3, 2, 2.0), (5, 1, 3, 0.5)])
def test_sector_matrix_matches_full_flow_on_ansatz(sector_omega, K, n, mu, omega):
    """Independent numerics: the full compiled flow maps the ansatz to the ansatz with M·a."""
    rng = np.random.default_rng(7)
    d = 2
    v = rng.normal(size=(K, d))
    v -= v.mean(axis=0)
    amps = rng.normal(size=3)
    P = sc.balanced_couplings(K, n, mu, omega)
    m = sc.EmbeddingModel(P, d=d, eta_x=0.7, eta_y=1.3)
    M = sector_omega.numeric_matrix(dict(eta_x=0.7, eta_y=1.3, n=n, mu=mu, K=K, omega=omega))
    got = m.flow(balanced_ansatz(K, n, mu, v, amps))
    want = balanced_ansatz(K, n, mu, v, M @ amps)
    assert np.max(np.abs(got - want)) < 1e-12 * max(1.0, np.max(np.abs(want)))
    # and its decay rates are eigenvalues of the full H·L_G
    full = m.decay_rates()
    for rate in sector_omega.rates(dict(eta_x=0.7, eta_y=1.3, n=n, mu=mu, K=K, omega=omega)):
        assert np.min(np.abs(full - rate)) < 1e-9 * max(rate, 1.0)


def test_unclosed_ansatz_is_refused():
    loss = embedding_loss(1)
    good = balanced_separation_ensemble(loss, omega=2)
    a, b = sp.symbols("a b", integer=True)
    F = sp.Symbol("F", real=True)
    types = list(good.node_types)
    types[1] = NodeType("f", "x", F, PATTERN[a], (a, b), "wrong: frustrated sample at F v_a")
    bad = QuotientEnsemble(tuple(types), good.neighbours, good.n_classes, good.symbols)
    with pytest.raises(DerivationCheckError, match="not closed"):
        reduce_sector(sc.derive_flow(loss), bad)


def test_affine_coefficients_refuse_a_matrix_head_and_accept_a_scalar_one():
    d = 2
    x, y, W = sc.vector("x", d), sc.vector("y", d), sc.matrix("W", d, d)
    loss = sc.EdgeLoss(sp.Rational(1, 2) * (sc.sqnorm(W * x - sc.sg(y)) + sc.sqnorm(W * y - sc.sg(x))),
                       x, y, shared=(("W", W),), name="head_sector_test")
    flow = sc.derive_flow(loss)
    with pytest.raises(DerivationCheckError, match="scalar"):
        affine_coefficients(flow)
    w = sp.Symbol("w", real=True)
    A = affine_coefficients(flow, {W[i, j]: (w if i == j else 0) for i in range(d) for j in range(d)})
    assert sp.simplify(A[("x", "x")] + w**2) == 0 and sp.simplify(A[("x", "y")] - w) == 0


def test_perturbative_slow_root_leading_order(series, sector2):
    ex, ey, n, mu, K, _ = _syms(sector2)
    assert sp.simplify(series.leading_mu - cf.slow_rate_leading_mu(K, n, mu, ex, ey)) == 0


def test_fast_label_closed_form_and_series(series, sector2):
    ex, _, _, _, K, _ = _syms(sector2)
    e = series.eps
    ref = cf.slow_rate_fast_labels(K, e, ex)
    assert sp.simplify(series.fast_closed_form - ref) == 0
    assert sp.simplify(series.fast_closed_form.subs(K, 2) - cf.slow_rate_k2_fast_labels(e, ex)) == 0
    lead2 = cf.slow_rate_fast_labels_series(K, e, ex)
    assert sp.simplify(series.fast_series - lead2 - series.fast_series.coeff(e, 3) * e**3) == 0
    ref3 = sp.series(ref, e, 0, 4).removeO().coeff(e, 3)
    for k in (2, 3, 7):  # exact at concrete K (the reference keeps sqrt((K-1)^2) unsimplified)
        assert sp.simplify((series.fast_series.coeff(e, 3) - ref3).subs(K, k)) == 0
    assert series.fast_series.coeff(e, 3) != 0


def test_series_approach_the_exact_root(series, sector2):
    """The leading order is accurate to O(μ), the fast-label form to O(1/η_y)."""
    ex, ey, n, mu, K, _ = _syms(sector2)
    vals = dict(eta_x=1.0, eta_y=0.5, n=40, K=3)
    errs = []
    for m in (1e-3, 1e-4):
        exact = sector2.rates({**vals, "mu": m})[0]
        lead = float(series.leading_mu.subs({ex: 1.0, ey: 0.5, n: 40, K: 3, mu: m}))
        errs.append(abs(lead / exact - 1))
    assert errs[0] < 1e-2 and errs[1] < errs[0] / 5
    Kn, nn, mm = 4, 30, 3
    eps = frustration_fraction(Kn, nn, mm)
    closed = float(series.fast_closed_form.subs({ex: 1.0, K: Kn, series.eps: eps}))
    exact = sector2.rates(dict(eta_x=1.0, eta_y=1e7, n=nn, mu=mm, K=Kn))[0]
    assert abs(closed / exact - 1) < 1e-6


def test_perturbative_root_refuses_non_root_and_double_root():
    r, e = sp.symbols("r e")
    with pytest.raises(DerivationCheckError):
        perturbative_root(r**2 - 1 + e, r, e, 0, 1)
    with pytest.raises(DerivationCheckError, match="multiple"):
        perturbative_root(r**2 + e, r, e, 0, 1)
    # a regular case: r² − 1 − e = 0 near r = 1 gives 1 + e/2 − e²/8
    assert sp.expand(perturbative_root(r**2 - 1 - e, r, e, 1, 2) - (1 + e / 2 - e**2 / 8)) == 0


# --- the smallest symbolic instance: the path graph x₁–y₁–f–y₂–x₂ -------------------------------
@pytest.fixture(scope="module")
def path_system():
    P = sc.balanced_couplings(2, 1, 1, 2.0).astype(int)
    return assemble_symbolic(sc.derive_flow(embedding_loss(1)), P)


def test_path_graph_fixed_points_are_consensus(path_system):
    fps = linear_fixed_points(path_system)
    assert fps.dimension == 1
    v = sp.Matrix(fps.basis[0])
    assert all(sp.simplify(e - v[0]) == 0 for e in v) and v[0] != 0


def test_path_graph_invariant_and_end_state(path_system):
    ex, ey = embedding_loss(1).rate("x"), embedding_loss(1).rate("y")
    invs = linear_invariants(path_system)
    assert len(invs) == 1
    c = sp.Matrix(invs[0])
    weights = sp.Matrix([1 / ex] * 3 + [1 / ey] * 2)
    assert sp.simplify(c / c[-1] - weights / weights[-1]) == sp.zeros(5, 1)
    I = sum(s / (ex if s.name.startswith("x") else ey) for s in path_system.state)
    assert verify_invariant(I, path_system)
    final = end_state(path_system)
    z0 = [sp.Symbol(f"{s.name}^0", real=True) for s in path_system.state]
    w = [1 / ex] * 3 + [1 / ey] * 2
    mean = sum(wk * zk for wk, zk in zip(w, z0)) / sum(w)
    assert all(sp.simplify(final[s] - mean) == 0 for s in path_system.state)


def test_unfrustrated_end_state_is_R_c():
    """ε = 0, two samples per class: every node of class c ends at R_c (docs/model.md §2)."""
    P = sc.balanced_couplings(2, 2, 0).astype(int)
    sysm = assemble_symbolic(sc.derive_flow(embedding_loss(1)), P)
    ex, ey = embedding_loss(1).rate("x"), embedding_loss(1).rate("y")
    final = end_state(sysm)
    z0 = {s.name: sp.Symbol(f"{s.name}^0", real=True) for s in sysm.state}
    for c, samples in ((0, ("x0_0", "x1_0")), (1, ("x2_0", "x3_0"))):
        R = cf.class_end_point([z0[s] for s in samples], z0[f"y{c}_0"], ex, ey)
        for name in samples + (f"y{c}_0",):
            sym = next(s for s in sysm.state if s.name == name)
            assert sp.simplify(final[sym] - R) == 0


@pytest.mark.parametrize("K,n,mu", list(itertools.product([2, 3], [1, 2], [1])))
def test_sector_slow_root_is_the_smallest_nonzero_eigenvalue(sector2, K, n, mu):
    m = sc.EmbeddingModel(sc.balanced_couplings(K, n, mu), d=1, eta_x=1.0, eta_y=0.3)
    root = sector2.rates(dict(eta_x=1.0, eta_y=0.3, n=n, mu=mu, K=K))[0]
    assert abs(m.slow_rate() / root - 1) < 1e-10


@pytest.mark.parametrize("K,n,mu,omega,ex,ey", [(3, 4, 2, 2.0, 1.0, 0.3), (4, 3, 1, 1.0, 0.7, 1.9),
                                                (5, 2, 2, 0.5, 1.0, 1.0)])
def test_sectors_account_for_the_whole_spectrum(sector_omega, K, n, mu, omega, ex, ey):
    """K ≥ 3: separation sector ×(K−1), centre sector ×1, within-class deviations at η_x ×K(n−1),
    frustrated modes that do not touch the labels at ωη_x ×(m−K) (docs/model.md §2) = all N+K rates."""
    from symcollapse.symbolic.sectors import balanced_centre_sector

    centre = balanced_centre_sector(embedding_loss(1))
    vals = dict(eta_x=ex, eta_y=ey, n=n, mu=mu, K=K, omega=omega)
    m = mu * K * (K - 1) // 2
    predicted = np.sort(np.concatenate([
        np.repeat(sector_omega.rates(vals), K - 1), centre.rates(vals),
        np.full(K * (n - 1), ex), np.full(m - K, omega * ex)]))
    model = sc.EmbeddingModel(sc.balanced_couplings(K, n, mu, omega), d=1, eta_x=ex, eta_y=ey)
    full = model.decay_rates()
    assert len(predicted) == len(full)
    assert np.max(np.abs(predicted - full)) < 1e-9 * max(1.0, full.max())
    assert abs(centre.rates(vals)[0]) < 1e-25  # the conserved weighted mean
