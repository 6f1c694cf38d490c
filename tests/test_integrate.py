"""The BDF-Schur and BDF-nodes solvers: the same trajectory as plain BDF on a head model with
dense W columns; the node-block elimination solves I − cJ exactly."""
import numpy as np
import pytest

import symcollapse as sc
from symcollapse.numerics.integrate import integrate, time_grid


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_bdf_schur_matches_bdf_on_a_head_model(stop_gradient):
    m = sc.HeadModel(sc.balanced_couplings(3, 4, 1), d=3, eta_x=1.0, eta_y=0.3, eta_W=1.0,
                     stop_gradient=stop_gradient)
    Z0, W0 = m.initial_state(1)
    v0 = m.pack(Z0, W0)
    t = time_grid(20.0, 30)
    kw = dict(jac=m.system.jacobian, rtol=1e-10, atol=1e-12)
    a = integrate(m.system.flow_vector, v0, t, method="BDF", **kw)
    b = integrate(m.system.flow_vector, v0, t, method="BDF-Schur", **kw)
    n = integrate(m.system.flow_vector, v0, t, method="BDF-nodes", node_blocks=(m.N, 3), **kw)
    scale = np.max(np.abs(a.y))
    assert np.max(np.abs(a.y - b.y)) / scale < 1e-7
    assert np.max(np.abs(a.y - n.y)) / scale < 1e-7
    # and both follow the flow: an explicit high-order solver agrees too
    c = integrate(m.system.flow_vector, v0, t, method="DOP853", rtol=1e-11, atol=1e-13)
    assert np.max(np.abs(b.y[-1] - c.y[-1])) / scale < 1e-7


def test_node_block_lu_solves_exactly_and_refuses_a_coupled_sample_block():
    import scipy.sparse as sps

    from symcollapse.numerics.integrate import NodeBlockLU

    m = sc.HeadModel(sc.balanced_couplings(3, 4, 2), d=3, eta_x=1.0, eta_y=0.3, eta_W=0.7)
    v = m.pack(*m.initial_state(4)) + 0.1
    A = sps.identity(m.system.size, format="csc") - 0.37 * m.system.jacobian(v)
    b = np.random.default_rng(1).normal(size=m.system.size)
    x = NodeBlockLU(A, m.N, 3).solve(b)
    ref = np.linalg.solve(A.toarray(), b)
    assert np.max(np.abs(x - ref)) <= 1e-12 * np.max(np.abs(ref))
    C = A.tolil()
    C[0, 3] = 0.5  # sample 0 coupled to sample 1: not block diagonal
    with pytest.raises(ValueError, match="block diagonal"):
        NodeBlockLU(C.tocsc(), m.N, 3)
    with pytest.raises(sc.InvalidParameterError, match="node_blocks"):
        integrate(m.system.flow_vector, v, time_grid(1.0, 3), method="BDF-nodes", jac=m.system.jacobian)
