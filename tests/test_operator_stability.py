"""Matrix-free classification (JVP LinearOperator + ARPACK with symmetry modes shifted away and
Schur deflation of found eigenvalues) against the dense classification of the same states."""
import numpy as np
import pytest

import symcollapse as sc
from symcollapse.errors import InvalidParameterError
from symcollapse.numerics import families as fm
from symcollapse.numerics import operator_stability as osb


@pytest.fixture(scope="module")
def m3():
    return sc.HeadModel(sc.balanced_couplings(3, 2, 1), d=4, eta_x=1.0, eta_y=0.1, eta_W=1.0)


@pytest.mark.parametrize("ranks", [(1, 1, 0, 1, 1), (0, 0, 0, 0, 0), (0, 1, 0, 1, 0), (0, 0, 1, 1, 1)])
def test_operator_classification_equals_dense(m3, ranks):
    # (0,0,0,0,0): 12 unstable eigenvalues in repeated clusters, which one Krylov space cannot count
    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(m3.graph)), ranks)
    Z, W = fm.representative(m3.graph, 4, fam, seed=1, spare=0.5)
    dense = fm.classify_state(m3, Z, W)
    op = osb.classify_state_operator(m3, Z, W)
    assert op.label == dense.label
    assert op.n_symmetry == dense.n_symmetry
    assert abs(op.max_real - dense.max_real) <= 1e-8 * max(1.0, abs(dense.max_real))
    uns = np.sort_complex(dense.eigenvalues[dense.eigenvalues.real > 1e-6])
    assert np.allclose(np.sort_complex(op.eigenvalues[op.eigenvalues.real > 1e-6]), uns, atol=1e-8)


def test_operator_refuses_a_non_fixed_point(m3):
    Z, W = m3.initial_state(0)
    with pytest.raises(InvalidParameterError, match="not a fixed point"):
        osb.classify_state_operator(m3, Z, W)


@pytest.mark.slow
def test_k10_d24_operator_classification_equals_the_derived_blocks():
    # K = 10, d = 24 (state 2856): a stable and a saddle member, against the Jacobian-free prediction
    from symcollapse.models.head import sector_stability as ss

    m = sc.HeadModel(sc.balanced_couplings(10, 4, 1), d=24, eta_x=1.0, eta_y=0.1, eta_W=1.0)
    R = np.linalg.qr(np.random.default_rng(0).normal(size=(24, 24)))[0]
    for ranks, spare in (((0, 0, 0, 9, 1), 1.5), ((0, 0, 0, 8, 1), 0.5)):
        mem = ss.aligned_member(10, 4, 1, 24, ranks, spares=[spare] * (24 - sum(ranks)))
        pred = ss.predict(mem, 1.0, 0.1, 1.0)
        op = osb.classify_state_operator(m, *ss.member_state(mem, R))
        assert op.label == pred.label
        assert abs(op.max_real - float(np.max(pred.eigenvalues.real))) <= 1e-7


def test_a_jvp_that_turns_non_finite_inside_arpack_is_refused(m3, monkeypatch):
    """A NaN from the JVP during the ARPACK rounds must raise DerivationCheckError: a NaN eigenvalue
    fails 'Re λ > −σ/2' and would be dropped before the spectrum verdict saw it."""
    from scipy.sparse.linalg import LinearOperator

    from symcollapse.errors import DerivationCheckError

    fam = fm.Family(tuple(lv.nu for lv in fm.nu_levels(m3.graph)), (1, 1, 0, 1, 1))
    Z, W = fm.representative(m3.graph, 4, fam, seed=1, spare=0.5)
    real = m3.system.linear_operator
    calls = [0]

    def poisoned(v):
        J = real(v)

        def mv(x):
            calls[0] += 1
            y = J.matvec(x)
            if calls[0] > 80:  # after the tangent probe and the spectral-radius estimate
                y = y.copy()
                y[0] = np.nan
            return y
        return LinearOperator(J.shape, matvec=mv, dtype=float)

    monkeypatch.setattr(type(m3.system), "linear_operator", lambda self, v: poisoned(v))
    with pytest.raises(DerivationCheckError, match="not finite"):
        osb.classify_state_operator(m3, Z, W)
