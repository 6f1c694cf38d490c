"""The exact propagator exp(J t) v0 of a linear flow: equals dense expm, a stiff integration
and docs/model.md §2's end state (η-weighted component means); non-linear flows are refused."""
import numpy as np
import pytest
import scipy.linalg

from symcollapse.errors import DerivationCheckError, InvalidParameterError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.models.embedding import EmbeddingModel
from symcollapse.models.head import head_loss
from symcollapse.numerics.integrate import integrate
from symcollapse.numerics.kernels import compile_loss
from symcollapse.numerics.propagator import linear_propagator
from symcollapse.numerics.system import FlowSystem
from symcollapse.tolerance import within


def _model():
    return EmbeddingModel(balanced_couplings(3, 2, 1), d=2, eta_x=1.0, eta_y=0.4)


def test_propagator_equals_dense_expm_and_bdf():
    m = _model()
    prop = linear_propagator(m.system)
    v0 = m.initial_state(3).ravel()
    t = 2.5
    dense = scipy.linalg.expm(prop.J.toarray() * t) @ v0
    np.testing.assert_allclose(prop(v0, t), dense, rtol=1e-10, atol=1e-12)
    sol = integrate(m.system.flow_vector, v0, np.array([0.0, t]), method="BDF",
                    jac=lambda y: prop.J, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(prop(v0, t), sol.y[-1], rtol=1e-7, atol=1e-9)
    traj = prop.trajectory(v0, [0.0, 1.0, t])
    np.testing.assert_allclose(traj[0], v0)
    np.testing.assert_allclose(traj[-1], dense, rtol=1e-10, atol=1e-12)


def test_propagator_reaches_model_md_end_state():
    m = _model()
    v0 = m.initial_state(5).ravel()
    late = linear_propagator(m.system)(v0, 60.0 / m.slow_rate())
    np.testing.assert_allclose(late.reshape(-1, 2), m.end_state(v0.reshape(-1, 2)), atol=1e-9)


def test_nonlinear_flow_and_bad_input_are_refused():
    P = balanced_couplings(2, 2, 1)
    sysm = FlowSystem(compile_loss(head_loss(2)), P, rates={"x": 1.0, "y": 1.0, "W": 1.0})
    with pytest.raises(DerivationCheckError, match="not linear"):
        linear_propagator(sysm)
    prop = linear_propagator(_model().system)
    n = prop.J.shape[0]
    with pytest.raises(InvalidParameterError, match="t must be"):
        prop(np.zeros(n), -1.0)
    with pytest.raises(InvalidParameterError, match="v0"):
        prop(np.full(n, np.nan), 1.0)
    with pytest.raises(InvalidParameterError, match="t_eval"):
        prop.trajectory(np.zeros(n), [1.0, 0.5])


def test_spectral_propagator_equals_dense_expm_with_few_modes():
    from symcollapse.numerics.propagator import spectral_propagator

    m = EmbeddingModel(balanced_couplings(4, 6, 1), d=2, eta_x=1.0, eta_y=0.5)
    t = 40.0 / m.slow_rate()  # late: only the zero and slow modes are above e^{-λt} = 1e-12
    sp_ = spectral_propagator(m.system, t_min=t, tol=1e-12)
    assert len(sp_.rates) < m.system.size // 4  # it really truncates
    v0 = m.initial_state(2).ravel()
    J = linear_propagator(m.system).J.toarray()
    np.testing.assert_allclose(sp_(v0, t), scipy.linalg.expm(J * t) @ v0, rtol=1e-9, atol=1e-11)
    with pytest.raises(InvalidParameterError, match="t must be"):
        sp_(v0, t / 2)  # before t_min the dropped modes are not negligible


def test_spectral_propagator_refuses_a_non_symmetrisable_flow():
    from symcollapse.numerics.propagator import spectral_propagator

    P = balanced_couplings(2, 2, 1)
    W = np.array([[1.0, 0.4], [-0.3, 0.8]])
    sysm = FlowSystem(compile_loss(head_loss(2, True, False)), P, rates={"x": 1.0, "y": 1.0},
                      frozen={"W": W})
    linear_propagator(sysm)  # linear (W frozen) …
    with pytest.raises(DerivationCheckError, match="not symmetrisable"):
        spectral_propagator(sysm, t_min=1.0)  # … but stop-gradient breaks the symmetry


def test_spectral_propagator_never_misses_a_mode_of_a_degenerate_cluster():
    """The balanced K = 10 graph has a 9-fold degenerate slow cluster per column; shift-invert
    Lanczos used to return part of it in about 1 call of 3 (relative error ~1e-2). The deflated
    check (numerics/propagator.missed_mode) must catch every miss: each call equals dense expm."""
    import scipy.linalg as sl

    from symcollapse.numerics.propagator import spectral_propagator

    m = EmbeddingModel(balanced_couplings(10, 30, 1), d=2)
    t = 5.0 / m.slow_rate()
    v0 = m.initial_state(0).ravel()
    ref = sl.expm(m.system.jacobian(np.zeros(m.system.size)).toarray() * t) @ v0
    for _ in range(8):
        out = spectral_propagator(m.system, t_min=t, tol=1e-12)(v0, t)
        err = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
        assert within(err, 1e-10), err


def test_metric_propagator_equals_dense_expm_and_refuses_a_non_symmetrisable_operator():
    """e^{At} for A = −H L, H dense SPD, L a graph Laplacian (the teacher–student node flow,
    docs/model.md §4) against scipy's dense expm; a generic A is refused by 'spectral'."""
    import scipy.linalg

    from symcollapse.errors import DerivationCheckError
    from symcollapse.numerics.column_flow import metric_propagator

    rng = np.random.default_rng(3)
    n, d = 9, 2
    W = rng.uniform(size=(n, n)) * (rng.uniform(size=(n, n)) < 0.5)
    W = np.triu(W, 1) + np.triu(W, 1).T
    L = np.diag(W.sum(1)) - W
    B = rng.normal(size=(n, n))
    H = B @ B.T / n + 0.3 * np.eye(n)
    A = -H @ L
    Z0 = rng.normal(size=(n, d))
    for method in ("auto", "spectral", "expm"):
        prop = metric_propagator(A, H, 5.0, d, method)
        assert prop.method == ("spectral" if method == "auto" else method)
        got = list(prop.states(Z0, np.array([0.0, 0.7, 5.0])))
        for t, Z in zip((0.0, 0.7, 5.0), got):
            want = scipy.linalg.expm(A * t) @ Z0
            assert np.max(np.abs(Z - want)) <= 1e-11 * np.max(np.abs(Z0)), (method, t)
    G = rng.normal(size=(n, n))
    with pytest.raises(DerivationCheckError):
        metric_propagator(G, H, 5.0, d, "spectral")
    assert metric_propagator(G, H, 5.0, d, "auto").method == "expm"
    with pytest.raises(DerivationCheckError):  # H not positive definite
        metric_propagator(A, H - 2 * np.eye(n) * np.linalg.eigvalsh(H).max(), 5.0, d, "spectral")
