"""The EMA-target model (docs/model.md §6) and the composable engine terms it is built from:
derived forces = the closed form, each term against its own reference, the derived invariant and
end state, the separation-sector rates against the assembled spectrum."""
import numpy as np
import pytest
import sympy as sp

import symcollapse.closed_forms as cf
from symcollapse.errors import DerivationCheckError, InvalidParameterError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.models.ema import TAU, EMATargetModel, ema_loss, ema_symbolic_system
from symcollapse.models.registry import MODELS
from symcollapse.numerics.finite_differences import central_jacobian
from symcollapse.numerics.kernels import compile_loss
from symcollapse.numerics.system import FlowSystem
from symcollapse.numerics.terms import BlockColumns, ComposedSystem, RelaxationTerm, verify_terms
from symcollapse.symbolic.flow import derive_flow
from symcollapse.symbolic.invariants import linear_invariants


def test_derived_forces_equal_the_closed_form():
    d = 2
    loss = ema_loss(d)
    fl = derive_flow(loss)
    fx, fy, fxi_x, fxi_y = cf.ema_edge_forces(loss.x[:d, :], loss.y[:d, :], loss.x[d:, :], loss.y[d:, :])
    assert sp.expand(sp.Matrix(fl.force("x")) - sp.Matrix.vstack(fx, fxi_x)) == sp.zeros(2 * d, 1)
    assert sp.expand(sp.Matrix(fl.force("y")) - sp.Matrix.vstack(fy, fxi_y)) == sp.zeros(2 * d, 1)


def test_terms_pass_their_check_and_a_wrong_term_is_caught():
    m = EMATargetModel(balanced_couplings(3, 2, 1), d=2, eta_x=1.0, eta_y=0.6, tau=0.4)
    errs = m.verify(seed=1)
    assert set(errs) == {"gradient", "EMA target of x", "EMA target of y", "jacobian"}
    assert all(e <= 1e-6 for e in errs.values())

    class Wrong(RelaxationTerm):  # relaxes the wrong way: τ(ξ − θ)
        def flow_vector(self, v):
            return -super().flow_vector(v)

    g = m.gradient_system
    bad = ComposedSystem(g, [Wrong(g.layout, BlockColumns("x", 2, 4), 0.4, BlockColumns("x", 0, 2), name="bad")])
    with pytest.raises(DerivationCheckError, match="bad"):
        verify_terms(bad, np.random.default_rng(0).normal(size=bad.size))


def test_weight_decay_term_is_minus_lambda_theta():
    g = FlowSystem(compile_loss(ema_loss(1)), balanced_couplings(2, 1, 1), rates={"x": 1.0, "y": 1.0})
    decay = RelaxationTerm(g.layout, BlockColumns("y"), 0.3, name="weight decay")
    sysm = ComposedSystem(g, [decay])
    v = np.random.default_rng(2).normal(size=sysm.size)
    Y = g.unpack(v)["y"]
    dv = decay.flow_vector(v)
    assert np.array_equal(g.unpack(dv)["y"], -0.3 * Y) and not np.any(g.unpack(dv)["x"])
    errs = verify_terms(sysm, v)
    assert errs["weight decay"] == 0.0 and errs["jacobian"] <= 1e-8
    assert np.allclose(sysm.jacobian(v).toarray(), central_jacobian(sysm.flow_vector, v), atol=1e-8)


def test_bad_parameters_are_refused_before_work():
    P = balanced_couplings(2, 2, 1)
    for kw, word in ((dict(tau=0.0), "tau"), (dict(tau=float("nan")), "tau"), (dict(d=0), "d"),
                     (dict(eta_x=-1.0), "eta_x")):
        with pytest.raises(InvalidParameterError, match=word):
            EMATargetModel(P, **kw)
    m = EMATargetModel(P, d=2)
    with pytest.raises(InvalidParameterError, match="xi_x"):
        m.flow({"x": np.zeros((m.N, 2)), "y": np.zeros((m.K, 2)), "xi_y": np.zeros((m.K, 2))})
    with pytest.raises(InvalidParameterError, match="columns"):
        BlockColumns("x", 0, 9).indices(m.gradient_system.layout)


def test_derived_invariant_is_the_closed_form():
    P = np.array([[1, 0], [0, 1], [1, 1]])
    ps = ema_symbolic_system(P)
    invs = linear_invariants(ps)
    assert len(invs) == 1
    ex, ey = ps.rates["x"], ps.rates["y"]
    deg = list(P.sum(1)) + list(P.sum(0))
    ref = []
    for k, e in enumerate([ex] * 3 + [ey] * 2):
        ref += [1 / e, deg[k] / TAU]
    c = sp.Matrix(invs[0])
    assert sp.simplify(c / c[0] - sp.Matrix(ref) / ref[0]) == sp.zeros(10, 1)


def test_sector_rates_are_in_the_assembled_spectrum_and_tend_to_model_a():
    K, n, mu, ex, ey, tau = 3, 2, 1, 1.0, 0.6, 0.4
    m = EMATargetModel(balanced_couplings(K, n, mu), d=1, eta_x=ex, eta_y=ey, tau=tau)
    spec = m.decay_rates()
    roots = cf.ema_sector_rates(K, n, mu, ex, ey, tau)
    assert len(roots) == 6
    assert max(np.min(np.abs(spec - r)) for r in roots) <= 1e-10
    slow = roots[0].real
    assert abs(np.sort(spec.real[spec.real > 1e-9])[0] - slow) <= 1e-10
    r_a = cf.slow_rate(K, n, mu, ex, ey)
    assert slow < r_a  # the EMA target slows collapse
    assert abs(cf.ema_sector_rates(K, n, mu, ex, ey, 1e6)[0].real - r_a) <= 1e-5 * r_a


def test_registered_with_one_line_and_its_job_writes_latex(tmp_path):
    assert MODELS["ema"].load() is EMATargetModel
    job = MODELS["ema"].load_job()
    (path,) = job.write_latex(tmp_path)
    text = path.read_text()
    assert path.name == "ema.tex" and r"\operatorname{sg}" in text and "\\tau" in text
    assert "\\begin{document}" in text and text.rstrip().endswith("\\end{document}")
