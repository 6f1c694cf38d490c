"""Embedding-only model (docs/model.md §1–§2): the engine-built flow, its spectrum, the slow collapse rate,
the end states, invariants and input validation."""
import itertools

import numpy as np
import pytest

import symcollapse as sc
import symcollapse.closed_forms as cf
from symcollapse.errors import InvalidParameterError
from symcollapse.numerics import spectra


@pytest.fixture(scope="module")
def sector():
    return sc.embedding_sector(omega=2)


def _laplacian(P):
    """L_G = D − A built directly from P (independent of the package's graph code)."""
    N, K = P.shape
    A = np.zeros((N + K, N + K))
    A[:N, N:] = P
    A[N:, :N] = P.T
    return np.diag(A.sum(1)) - A


def test_flow_is_minus_H_L_G_Z():
    rng = np.random.default_rng(3)
    P = rng.uniform(0, 1, size=(9, 3)) * (rng.uniform(size=(9, 3)) < 0.6)
    P[np.arange(9), np.arange(9) % 3] += 0.5
    m = sc.EmbeddingModel(P, d=3, eta_x=0.4, eta_y=1.7)
    Z = rng.normal(size=(12, 3))
    H = np.diag([0.4] * 9 + [1.7] * 3)
    want = -H @ _laplacian(P) @ Z
    assert np.max(np.abs(m.flow(Z) - want)) < 1e-13 * np.max(np.abs(want))
    X, Y = Z[:9], Z[9:]
    want_loss = 0.5 * sum(P[i, c] * np.sum((X[i] - Y[c])**2) for i in range(9) for c in range(3))
    assert abs(m.loss(Z) / want_loss - 1) < 1e-13
    J = m.jacobian().toarray()
    assert np.max(np.abs(J - np.kron(-H @ _laplacian(P), np.eye(3)))) < 1e-13


def test_mean_loss_scales_every_rate():
    P = sc.balanced_couplings(3, 4, 1)
    N = P.shape[0]
    a = sc.EmbeddingModel(P, d=2)
    b = sc.EmbeddingModel(P, d=2, scale=1.0 / N)
    Z = a.initial_state(5)
    assert np.max(np.abs(b.flow(Z) - a.flow(Z) / N)) < 1e-15
    assert abs(b.slow_rate() * N / a.slow_rate() - 1) < 1e-12


def test_decay_rates_are_the_real_nonnegative_spectrum_of_H_L_G():
    P = sc.balanced_couplings(3, 5, 2)
    m = sc.EmbeddingModel(P, d=2, eta_x=1.0, eta_y=0.05)
    rates = m.decay_rates()
    assert rates.shape == (m.N + m.K,) and np.all(np.diff(rates) >= 0) and rates[0] >= 0
    H = np.diag([1.0] * m.N + [0.05] * m.K)
    ev = np.sort(np.linalg.eigvals(H @ _laplacian(P)).real)
    assert np.max(np.abs(rates - ev)) < 1e-10
    assert abs(m.slow_rate() - ev[1]) < 1e-10  # one component: one zero mode


def test_initial_state_follows_model_md():
    m = sc.EmbeddingModel(sc.balanced_couplings(2, 3, 1), d=4)
    Z = m.initial_state(11)
    rng = np.random.default_rng(11)
    X = 0.1 * rng.standard_normal((m.N, 4))
    Y = rng.standard_normal((m.K, 4))
    assert np.array_equal(Z, np.vstack([X, Y]))


@pytest.mark.parametrize("method", ["schur", "sparse"])
def test_structured_slow_rate_matches_dense(method):
    P = sc.balanced_couplings(5, 100, 2)  # N + K = 525
    dense = spectra.slow_rate(P, 1.0, 0.3, method="dense")
    assert abs(spectra.slow_rate(P, 1.0, 0.3, method=method) / dense - 1) < 1e-9


def _random_couplings(seed):
    """Random sparse P with varied weights, sometimes an empty sample row or label column."""
    rng = np.random.default_rng(seed)
    N, K = int(rng.integers(3, 60)), int(rng.integers(2, 8))
    P = (rng.uniform(size=(N, K)) < rng.uniform(0.05, 0.5)) * rng.choice([1.0, 0.5, 2.0], size=(N, K))
    P[rng.integers(N)] = 0.0
    if seed % 2:
        P[:, rng.integers(K)] = 0.0
    P[0, 0] = max(P[0, 0], 1.0)
    return P, *rng.uniform(0.1, 3.0, 2)


@pytest.mark.parametrize("seed", range(12))
def test_structured_slow_rates_on_random_disconnected_graphs(seed):
    """Schur elimination and deflated Lanczos vs the dense spectrum, with many zero modes."""
    P, ex, ey = _random_couplings(seed)
    dense = spectra.slow_rate(P, ex, ey, method="dense")
    assert abs(spectra.slow_rate(P, ex, ey, method="schur") / dense - 1) < 1e-9
    assert abs(spectra.slow_rate(P, ex, ey, method="sparse") / dense - 1) < 1e-9


def test_sparse_slow_rate_large_balanced(sector):
    P = sc.balanced_couplings(10, 2000, 2)  # N + K = 20100
    root = sector.rates(dict(eta_x=1.0, eta_y=0.5, n=2000, mu=2, K=10))[0]
    assert abs(spectra.slow_rate(P, 1.0, 0.5, method="sparse") / root - 1) < 1e-9


def test_large_balanced_slow_rate_equals_sector_root(sector):
    P = sc.balanced_couplings(10, 20000, 3)  # N = 200135
    r = sc.EmbeddingModel(P, d=1, eta_x=1.0, eta_y=0.5).slow_rate()
    root = sector.rates(dict(eta_x=1.0, eta_y=0.5, n=20000, mu=3, K=10))[0]
    assert abs(r / root - 1) < 1e-8


@pytest.mark.slow
def test_million_sample_slow_rate_equals_sector_root(sector):
    """Issue target: N ≈ 10^6, K = 10, within 1e-8 of the sector root (samples eliminated)."""
    P = sc.balanced_couplings(10, 99955, 1)  # N = 999595
    r = spectra.slow_rate(P, 1.0, 0.5)
    root = sector.rates(dict(eta_x=1.0, eta_y=0.5, n=99955, mu=1, K=10))[0]
    assert abs(r / root - 1) < 1e-8


CASES = list(itertools.product([2, 3, 4], [1, 4], [1.0, 0.02]))


@pytest.mark.parametrize("K,mu,eta_y", CASES)
def test_slow_rate_sector_spectrum_and_fit_agree(sector, K, mu, eta_y):
    """Acceptance: sector root = smallest nonzero eigenvalue = fitted decay of Δ_min (rel. 1e-4)."""
    n = 40
    m = sc.EmbeddingModel(sc.balanced_couplings(K, n, mu), d=2, eta_x=1.0, eta_y=eta_y)
    roots = sector.rates(dict(eta_x=1.0, eta_y=eta_y, n=n, mu=mu, K=K))
    r_s = roots[0]
    assert abs(m.slow_rate() / r_s - 1) < 1e-10
    t_fit = 30.0 / (roots[1] - r_s)  # fast sector modes down by e^-30
    t_end = t_fit + 10.0 / r_s
    t_eval = np.concatenate([[0.0], np.geomspace(1e-3, t_fit, 30)[:-1], np.linspace(t_fit, t_end, 60)])
    tr = m.simulate(t_end=t_end, seed=1, t_eval=t_eval)
    assert abs(tr.fit_slow_rate(t_min=t_fit, fraction=1.0) / r_s - 1) < 1e-4


def test_fast_accuracy_then_slow_collapse(sector):
    K, n, mu = 3, 40, 2
    m = sc.EmbeddingModel(sc.balanced_couplings(K, n, mu), d=2)
    r_s = sector.rates(dict(eta_x=1.0, eta_y=1.0, n=n, mu=mu, K=K))[0]
    tr = m.simulate(t_end=12.0 / r_s, seed=0, n_points=200)
    reached = np.flatnonzero(tr.accuracy == 1.0)
    assert len(reached) and tr.t[reached[0]] < 0.2 / r_s  # accuracy 1 on the fast scale …
    assert np.all(tr.accuracy[reached[0]:] == 1.0)  # … and it stays there …
    late = tr.t > 1.0 / r_s
    assert tr.d_min[-1] < 1e-4 * tr.d_min[0]  # … while the classes merge
    assert np.all(np.diff(tr.d_min[late]) < 0)
    assert np.all(np.diff(tr.loss) <= 1e-12 * tr.loss[0])  # gradient flow: L never increases
    # the loss decays at 2 r_s once the classes merge
    sel = tr.t > 4.0 / r_s
    slope = np.polyfit(tr.t[sel], np.log(tr.loss[sel]), 1)[0]
    assert abs(-slope / (2 * r_s) - 1) < 1e-3


def test_no_frustration_no_collapse_end_state_is_R_c():
    K, n = 3, 5
    eta_x, eta_y = 1.0, 0.4
    m = sc.EmbeddingModel(sc.balanced_couplings(K, n, 0), d=2, eta_x=eta_x, eta_y=eta_y)
    Z0 = m.initial_state(2)
    tr = m.simulate(t_end=60.0, Z0=Z0, keep_states=True, n_points=60)
    inv0 = m.invariants(Z0)  # one row per class component: Σ_{k∈C} z_k/η_k
    assert inv0.shape == (K, 2)
    eta = np.array([eta_x] * (K * n) + [eta_y] * K)
    assert np.max(np.abs(inv0 - cf.embedding_invariants(Z0, eta, m.graph.components))) < 1e-12
    drift = max(np.max(np.abs(m.invariants(v.reshape(Z0.shape)) - inv0)) for v in tr.states)
    assert drift < 1e-9 * np.max(np.abs(inv0))
    X0, Y0 = Z0[:K * n], Z0[K * n:]
    R = np.array([cf.class_end_point(X0[c * n:(c + 1) * n], Y0[c], eta_x, eta_y) for c in range(K)])
    assert np.max(np.abs(tr.Z[K * n:] - R)) < 1e-8
    assert np.max(np.abs(tr.Z[:K * n] - np.repeat(R, n, axis=0))) < 1e-8
    dR = min(np.linalg.norm(R[a] - R[b]) for a, b in itertools.combinations(range(K), 2))
    assert abs(tr.d_min[-1] / dR - 1) < 1e-8 and dR > 0.1
    assert tr.accuracy[-1] == 1.0
    assert np.max(np.abs(m.end_state(Z0) - tr.Z)) < 1e-8


def test_connected_frustration_ends_at_weighted_mean_and_conserves_invariants():
    m = sc.EmbeddingModel(sc.balanced_couplings(2, 3, 2), d=2, eta_x=1.0, eta_y=3.0)
    Z0 = m.initial_state(4)
    eta = np.array([1.0] * m.N + [3.0] * m.K)
    mean = cf.weighted_mean(Z0, eta)
    tr = m.simulate(t_end=400.0, Z0=Z0, keep_states=True, n_points=80)
    assert np.max(np.abs(tr.Z - mean[None, :])) < 1e-8
    inv0 = cf.embedding_invariants(Z0, eta)  # one component: Σ_k z_k/η_k (docs/model.md §2)
    for v in tr.states:
        inv = cf.embedding_invariants(v.reshape(Z0.shape), eta)
        assert np.max(np.abs(inv - inv0)) < 1e-9 * np.max(np.abs(inv0))
    assert np.max(np.abs(m.invariants(Z0) - inv0)) < 1e-12


@pytest.mark.parametrize("call,param", [
    (lambda: sc.balanced_couplings(1, 3, 1), "K"),
    (lambda: sc.balanced_couplings(3, 0, 1), "n"),
    (lambda: sc.balanced_couplings(3, 3, -1), "mu"),
    (lambda: sc.balanced_couplings(3, 3, 1, omega=0.0), "omega"),
    (lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1), eta_x=-1.0), "eta_x"),
    (lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1), eta_y=float("nan")), "eta_y"),
    (lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1), d=0), "d"),
    (lambda: sc.EmbeddingModel(-sc.balanced_couplings(2, 2, 1)), "P"),
    (lambda: sc.EmbeddingModel(np.array([[1.0, np.nan], [0.0, 1.0]])), "P"),
    (lambda: sc.EmbeddingModel(np.ones(4)), "P"),
    (lambda: sc.EmbeddingModel(np.ones((4, 1))), "K"),
    (lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1)).simulate(t_end=0.0), "t_end"),
    (lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1)).flow(np.zeros((3, 2))), "Z"),
    (lambda: sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1)).slow_rate(method="qr"), "method"),
])
def test_bad_input_names_the_parameter(call, param):
    with pytest.raises(InvalidParameterError, match=param):
        call()


def test_job_is_registered_and_writes_the_derivation(tmp_path):
    from symcollapse.jobs import job_modules
    from symcollapse.models.embedding import job
    from symcollapse.outputs.latex import tex

    assert job in job_modules() and job.MODEL == "embedding" and job.ORDER == 10
    (path,) = job.write_latex(tmp_path)
    text = path.read_text()
    assert text.startswith("\\documentclass") and text.rstrip().endswith("\\end{document}")
    assert text.count("{") == text.count("}")
    assert tex(job.sector(2).matrix) in text  # printed from the derived object
    assert tex(job.series().fast_closed_form) in text
    assert "\\sum_{s=0}^{K - 1}" in text  # the closure proof shows the symbolic neighbour sum


def test_figures_are_written_atomically_and_reproducibly(tmp_path):
    import numpy as np

    from symcollapse.outputs.figures import label_axes, new_figure, plot_embedding, save_figure

    def draw(path):
        fig, axes = new_figure(1, 2)
        axes[0, 0].plot([1, 2, 3], [3, 1, 2], label="a")
        label_axes(axes[0, 0], "t", "y", "panel")
        rng = np.random.default_rng(0)
        plot_embedding(axes[0, 1], rng.normal(size=(6, 2)), rng.normal(size=(2, 2)),
                       np.array([0, 0, 1, 1, -1, -1]), limits=3.0)
        return save_figure(fig, path)

    a, b = draw(tmp_path / "a.png"), draw(tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))
