"""Public names that nothing inside the package referenced keep working (issue: extend, don't rename)."""
import warnings

import numpy as np
import sympy as sp

import symcollapse.closed_forms as cf

import symcollapse as sc
from symcollapse.jobs import job_names, job_modules
from symcollapse.numerics import spectra
from symcollapse.numerics.kernels import moment_index
from symcollapse.symbolic.flow import derive_flow, gradient_of_value


def test_decay_modes_are_eigenvectors_of_H_L_G():
    m = sc.EmbeddingModel(sc.balanced_couplings(2, 2, 1), d=1, eta_x=1.0, eta_y=0.4)
    r, V = m.decay_modes()
    H = np.diag(m.eta)
    L = m.graph.laplacian.toarray() if hasattr(m.graph.laplacian, "toarray") else m.graph.laplacian
    assert np.max(np.abs(H @ L @ V - V * r[None, :])) <= 1e-12
    assert np.allclose(r, m.decay_rates(), atol=1e-12)
    r2, _ = spectra.decay_modes(m.graph, 1.0, 0.4)
    assert np.array_equal(r, r2)


def test_job_names_gradient_of_value_and_moment_index():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert job_names() == [mod.MODEL for mod in job_modules()]
    loss = sc.head_loss(2, True)
    full = gradient_of_value(loss, "x")  # ∂ℓ/∂x with sg removed: the full gradient
    fx_full = cf.head_edge_forces(loss.x, loss.y, loss.block("W"), ())[0]
    assert sp.expand(sp.Matrix(full) + fx_full) == sp.zeros(2, 1)
    assert sp.expand(sp.Matrix(derive_flow(loss).force("x")) - fx_full) != sp.zeros(2, 1)  # sg acts
    assert moment_index(2) == [(0, 0), (0, 1), (1, 1)]


def test_moved_modules_and_names_keep_working():
    """The model packages keep every name of the old modules; the old paths warn and are the same objects."""
    import importlib

    import pytest

    from symcollapse.models.head import (SG_VARIANTS, HeadModel, graph_modes, head_loss, head_matrix_loss,  # noqa: F401
                                         nu_sep, require_frustration, self_consistent_head)
    from symcollapse.models.head import meanfield, phase, sector, stability

    assert sc.HeadModel is HeadModel and sc.write_report.__module__ == "symcollapse.jobs"
    assert meanfield.separation_nu_squared is sector.separation_nu_squared
    assert phase.nu_sep_grid is sector.nu_sep_grid
    old = {"symcollapse.symbolic.meanfield": meanfield, "symcollapse.numerics.phase": phase,
           "symcollapse.numerics.stability": stability}
    for path, new in old.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert importlib.import_module(path) is new
    from symcollapse.symbolic import mpcheck

    with pytest.warns(DeprecationWarning, match="jobs.engine"):
        assert mpcheck.engine_checks is importlib.import_module("symcollapse.jobs.engine").engine_checks
