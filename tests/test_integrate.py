"""The BDF-Schur solver: the same trajectory as plain BDF on a head model with dense W columns."""
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
    scale = np.max(np.abs(a.y))
    assert np.max(np.abs(a.y - b.y)) / scale < 1e-7
    # and both follow the flow: an explicit high-order solver agrees too
    c = integrate(m.system.flow_vector, v0, t, method="DOP853", rtol=1e-11, atol=1e-13)
    assert np.max(np.abs(b.y[-1] - c.y[-1])) / scale < 1e-7
