"""Every self-check rejects a non-finite error; losses the engine cannot derive are refused."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp

import symcollapse as sc
from symcollapse.errors import DerivationCheckError, InvalidParameterError
from symcollapse.tolerance import require_within, within
from symcollapse.verification import Check, close


@pytest.mark.parametrize("err, tol, ok", [
    (0.0, 0.0, True), (1e-7, 1e-6, True), (1e-6, 1e-6, True), (2e-6, 1e-6, False),
    (math.nan, 1e-6, False), (math.inf, 1e-6, False), (-math.inf, 1.0, False),
    (np.float64("nan"), 1.0, False), (mpmath.mpf("nan"), 1.0, False), (mpmath.mpf("1e-40"), 1e-30, True),
    (None, 1.0, False), ("0", 1.0, False), (True, 1.0, False), (0.5, math.nan, False),
    (np.array([1e-9, 2e-9]), 1e-8, True), (np.array([1e-9, np.nan]), 1e-8, False),
    (np.array([]), 1.0, False), ([1e-9, 1e-3], 1e-6, False),
])
def test_within(err, tol, ok):
    assert within(err, tol) is ok


def test_require_within_names_the_check():
    assert require_within(1e-9, 1e-6, "flow") == 1e-9
    with pytest.raises(DerivationCheckError, match="flow: relative error nan is not finite"):
        require_within(math.nan, 1e-6, "flow")
    with pytest.raises(DerivationCheckError, match=r"> 1e-06"):
        require_within(1.0, 1e-6, "flow")


def test_verification_rows_fail_on_nan():
    assert not Check("m", "c", "d", "r", math.nan, 1.0).passed
    assert not close("m", "c", [1.0, math.nan], [1.0, 1.0], 1e-3).passed
    assert close("m", "c", [1.0, 2.0], [1.0, 2.0], 1e-12).passed


def test_log_loss_does_not_pass_its_self_check_with_nan():
    x, y = sc.vector("x", 1), sc.vector("y", 1)
    with pytest.raises(DerivationCheckError, match="not finite"):
        sc.compile_loss(sc.EdgeLoss(sp.log(x[0] * y[0]), x, y, name="log_loss"))


class _NaNFlow:
    """A stand-in system whose analytic Jacobian is fine but whose flow is NaN."""

    size = 3

    def jacobian(self, v):
        import scipy.sparse as sps
        return sps.identity(3, format="csr")

    def flow_vector(self, v):
        return np.full(3, np.nan)


def test_linear_propagator_refuses_a_nan_linearity_error():
    from symcollapse.numerics.propagator import linear_propagator

    with pytest.raises(DerivationCheckError):
        linear_propagator(_NaNFlow())


def test_spectrum_counts_classifies_and_refuses_non_finite_eigenvalues():
    from symcollapse.errors import DerivationCheckError
    from symcollapse.tolerance import spectrum_counts

    assert spectrum_counts([-1.0, -2.0 + 1j], 1e-9) == (0, 0, "stable")
    assert spectrum_counts([-1.0, 1e-12, 3.0], 1e-9) == (1, 1, "saddle")
    assert spectrum_counts([-1.0, -1e-12], 1e-9) == (0, 1, "degenerate")
    for bad in (np.nan, np.inf, complex(0.0, np.nan)):
        # `Re λ > thr` and `|Re λ| <= thr` are both False for NaN: counting alone would say "stable"
        with pytest.raises(DerivationCheckError, match="not finite"):
            spectrum_counts([-1.0, bad], 1e-9)
