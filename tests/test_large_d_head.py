"""A stop-gradient head at a realistic size (d = 64, K = 10, N ≈ 10⁴) run to its fixed point with
the dimension-free engine: the head's eigenvalues against ±1 and ±ν_sep (docs/model.md §3) and
the slowest decay rates from the JVP LinearOperator. Slow (minutes); the default run checks the
LinearOperator spectrum against the assembled Jacobian at d = 8
(tests/test_matrix_path.py::test_slowest_modes_from_the_linear_operator_equal_the_assembled_jacobian_at_d8)."""
import numpy as np
import pytest

import symcollapse as sc


def _run(K, n, mu, d, c, t_end, stop):
    P = sc.balanced_couplings(K, n, mu)
    N = P.shape[0]
    # every block relaxes at O(1) per node (η_y = 1/n per label degree, η_W = c/N per Gram scale),
    # so the explicit DOP853 is not stiff at N ≈ 10⁴
    m = sc.HeadModel(P, d=d, eta_x=1.0, eta_y=1.0 / n, eta_W=c / N)
    tr = m.simulate(t_end=t_end, method="DOP853", stop_residual=stop, n_points=20, rtol=1e-10, atol=1e-13)
    return m, tr


@pytest.mark.slow
def test_sg_head_d64_k10_n1e4_reaches_its_fixed_point():
    K, n, mu, d = 10, 950, 11, 64
    m, tr = _run(K, n, mu, d, c=1.0, t_end=400.0, stop=1e-9)
    assert m.N == 9995 and tr.extra["stopped"] and tr.extra["residual"] <= 1e-9
    ev = np.linalg.eigvals(tr.W)
    nu = sc.nu_sep(K, n, mu)
    for target, mult in ((1.0, 1), (nu, K - 1)):
        assert np.sort(np.abs(ev - target))[mult - 1] <= 1e-6, target
    # the labels stay apart (Δ_min of the end state is of the order of its start)
    assert tr.d_min[-1] >= 0.5 * tr.d_min[0]
    sm = m.system.slowest_modes(m.pack(tr.Z, tr.W), k=4)
    assert len(sm["eigenvalues"]) == 4 and np.all(sm["eigenvalues"].real < 0)
