"""The structured zero-mode projection of a stop-gradient head fixed point (docs/model.md §3.3)
against the exactly assembled Jacobian at small d, and the checks that refuse a wrong tangent."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

import symcollapse as sc
from symcollapse.errors import DerivationCheckError, InvalidParameterError
from symcollapse.numerics import matrix_system, zero_modes
from symcollapse.numerics.zero_modes import head_tangent, is_sg_head


@lru_cache(maxsize=None)
def _both_sign_fixed_point(K=3, n=4, mu=1, d=8):
    """A head started with both signs, W(0) = diag(+I, −I), run to its fixed point (rates 1, 1/n, 1/N)."""
    P = sc.balanced_couplings(K, n, mu)
    m = sc.HeadModel(P, d=d, eta_x=1.0, eta_y=1.0 / n, eta_W=1.0 / P.shape[0])
    Z0, _ = m.initial_state(0)
    W0 = np.diag(np.r_[np.ones(d // 2), -np.ones(d - d // 2)])
    tr = m.simulate(t_end=4000.0, Z0=Z0, W0=W0, method="DOP853", stop_residual=1e-11, n_points=3,
                    rtol=1e-11, atol=1e-14)
    assert tr.extra["stopped"]
    return m, m.pack(tr.Z, tr.W)


def _dense_projector(m, v):
    st = m.system.unpack(v)
    tan = head_tangent(m.system.layout, st["x"], st["y"], st["W"])
    return tan, np.column_stack([tan.project(c) for c in np.eye(v.size)])


def test_projected_jacobian_has_exactly_the_nonzero_spectrum_of_the_assembled_jacobian():
    """J̃ = (I − P) J (I − P) − σP with the structured tangent P (gauge + free head, d² directions)
    built as a dense matrix: its spectrum is −σ (d²-fold) plus J's eigenvalues with d² zeros removed,
    J the exactly assembled Jacobian at d = 8, K = 3 (a both-sign head; one level-swap zero mode
    of the dropped −ν_sep mode is outside T and stays a zero of J̃)."""
    m, v = _both_sign_fixed_point()
    tan, Pm = _dense_projector(m, v)
    d = m.d
    J = m.system.jacobian(v).toarray()
    ev = np.linalg.eigvals(J)
    rho = float(np.max(np.abs(ev)))
    assert np.max(np.abs(Pm - Pm.T)) <= 1e-12 and np.max(np.abs(Pm @ Pm - Pm)) <= 1e-12
    assert abs(np.trace(Pm) - d * d) <= 1e-9 and tan.dim == d * d
    assert np.max(np.abs(J @ Pm)) <= 1e-9 * rho  # T is a null space of J
    sigma = 2 * rho + 1
    Q = np.eye(v.size) - Pm
    et = np.linalg.eigvals(Q @ J @ Q - sigma * Pm)
    shifted = np.abs(et + sigma) <= 1e-8 * rho
    assert int(np.sum(shifted)) == d * d
    rest, zero = np.sort_complex(et[~shifted]), np.abs(ev) <= 1e-9 * rho
    assert int(np.sum(zero)) == d * d + 1  # the tangent and one level swap
    ref = np.sort_complex(np.concatenate([ev[~zero], [0.0]]))
    assert rest.size == ref.size and np.max(np.abs(rest - ref)) <= 1e-8 * rho


def test_slowest_modes_through_the_tangent_equal_the_assembled_jacobian_with_multiplicity():
    """The default (structured tangent) LinearOperator path gives the assembled Jacobian's k
    rightmost nonzero eigenvalues, repeated ones counted, each eigenpair checked through the JVP."""
    m, v = _both_sign_fixed_point()
    ev = np.linalg.eigvals(m.system.jacobian(v).toarray())
    rho = float(np.max(np.abs(ev)))
    nonzero = np.array(sorted(ev[np.abs(ev) > 1e-9 * rho], key=lambda e: -e.real))
    k = 6
    res = m.system.slowest_modes(v, k=k)
    assert res["zero_modes"] == "tangent" and res["n_tangent"] == m.d ** 2 and res["n_locked"] == 1
    assert nonzero[0].real < 0 and abs(nonzero[k - 2] - nonzero[k - 1]) <= 1e-9 * rho  # a repeated one
    assert np.max(np.abs(res["eigenvalues"] - nonzero[:k])) <= 1e-8 * rho
    assert np.max(res["residuals"]) <= 1e-8 and res["null_check"] <= 1e-8


def test_a_wrong_tangent_is_refused(monkeypatch):
    """A valid orthogonal projector onto the wrong subspace (the gauge built with Wᵀ instead of W)
    must fail the null-space check, not deflate nonzero modes silently."""
    m, v = _both_sign_fixed_point()
    right = zero_modes.head_tangent

    def poisoned(layout, X, Y, W, **kw):
        return right(layout, X, Y, np.asarray(W).T, **kw)

    monkeypatch.setattr(matrix_system, "head_tangent", poisoned)
    with pytest.raises(DerivationCheckError, match="null space"):
        m.system.slowest_modes(v, k=2)


def test_a_tangent_that_drops_a_kept_mode_is_refused():
    """A rank threshold that drops kept modes from Z's row space puts kept directions into the
    'free head': no longer zero modes, the check refuses."""
    m, v = _both_sign_fixed_point()
    with pytest.raises(DerivationCheckError, match="null space"):
        m.system.slowest_modes(v, k=2, rank_tol=0.9)


def test_slowest_modes_refuses_bad_options_and_picks_the_tangent_only_for_the_sg_head():
    m, v = _both_sign_fixed_point()
    with pytest.raises(InvalidParameterError, match="zero_modes"):
        m.system.slowest_modes(v, zero_modes="structured")
    with pytest.raises(InvalidParameterError, match="k"):
        m.system.slowest_modes(v, k=0)
    with pytest.raises(InvalidParameterError, match="v"):
        m.system.slowest_modes(v[:-1])
    assert is_sg_head(m.system.compiled.loss)
    assert not is_sg_head(sc.HeadModel(m.graph, d=2, stop_gradient=False).system.compiled.loss)
    frozen = sc.HeadModel(m.graph, d=2, learn_head=False)
    assert not is_sg_head(frozen.system.compiled.loss)
    Z, _ = frozen.initial_state(0)
    with pytest.raises(InvalidParameterError, match="tangent"):
        frozen.system.slowest_modes(frozen.pack(Z), zero_modes="tangent")


def test_a_non_finite_jacobian_vector_product_is_refused_not_dropped():
    """A NaN in the JVP made ARPACK fail inside LAPACK (an ArpackError after 'DLASCL illegal value'),
    and a NaN eigenvalue fails every comparison (ν > −σ/2, |ν| ≤ thr) and would be dropped: the
    search must refuse with DerivationCheckError instead."""
    from symcollapse.numerics.slow_spectrum import rightmost_nonzero

    rng = np.random.default_rng(0)
    A = -np.diag(np.linspace(0.1, 2.0, 30)) + 0.01 * rng.normal(size=(30, 30))

    def poisoned(w):
        out = A @ w
        out[3] = np.nan
        return out

    good = rightmost_nonzero(lambda w: A @ w, 30, 2, rho=2.1)
    assert np.all(np.isfinite(good["eigenvalues"])) and len(good["eigenvalues"]) == 2
    with pytest.raises(DerivationCheckError, match="not finite"):
        rightmost_nonzero(poisoned, 30, 2, rho=2.1)
