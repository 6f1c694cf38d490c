"""slow_rate keeps 1e-10 relative accuracy for rate ratios up to 1e14 (and refuses what it
cannot compute): against the sector cubic and the full spectrum at high precision (mpmath)."""
from __future__ import annotations

import mpmath
import numpy as np
import pytest

import symcollapse as sc
import symcollapse.closed_forms as cf
from symcollapse.errors import InvalidParameterError
from symcollapse.models.couplings import frustration_fraction
from symcollapse.numerics import spectra

K, n, mu = 3, 4, 1


def cubic_root(eta_x: float, eta_y: float) -> float:
    """Smallest root of the docs/model.md §2 sector cubic at 80 digits, in units of η_x
    (r_s(η_x, η_y) = η_x r_s(1, η_y/η_x)), times η_x."""
    with mpmath.workdps(80):
        ex, ey = mpmath.mpf(1), mpmath.mpf(eta_y) / mpmath.mpf(eta_x)
        coeffs = cf.sector_cubic_coefficients(K, n, mu, ex, ey)  # mpmath numbers: 80 digits
        roots = mpmath.polyroots(coeffs, maxsteps=400, extraprec=400)
        return float(mpmath.mpf(eta_x) * min(mpmath.re(r) for r in roots))


RATIOS = [1.0, 1e4, 1e10, 1e14, 1e-4, 1e-10, 1e-14]


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("method", ["auto", "schur"])
def test_slow_rate_matches_the_sector_cubic(ratio, method):
    P = sc.balanced_couplings(K, n, mu)
    r = spectra.slow_rate(P, 1.0, ratio, method=method)
    ref = cubic_root(1.0, ratio)
    assert abs(r / ref - 1) < 1e-10, (r, ref)


def test_issue_example_eta_y_1e15():
    r = sc.EmbeddingModel(sc.balanced_couplings(K, n, mu), eta_y=1e15).slow_rate()
    assert abs(r / cubic_root(1.0, 1e15) - 1) < 1e-10  # was 0.2305 (true 0.26260)


def test_tiny_rates_are_not_rounded_to_zero():
    P = sc.balanced_couplings(K, n, mu)
    eps = frustration_fraction(K, n, mu)
    # labels infinitely faster than samples (η_y/η_x = 1e300): the docs/model.md §2 closed form
    fast_labels = cf.slow_rate_fast_labels(K, eps, 1.0)
    r = sc.EmbeddingModel(P, eta_x=1e-300).slow_rate()
    assert r > 0 and abs(r / (1e-300 * fast_labels) - 1) < 1e-10
    both = spectra.slow_rate(P, 1e-300, 1e-300)
    assert abs(both / (1e-300 * spectra.slow_rate(P, 1.0, 1.0)) - 1) < 1e-12


def test_out_of_range_rates_are_refused():
    P = sc.balanced_couplings(K, n, mu)
    with pytest.raises(InvalidParameterError, match="floating-point range"):
        spectra.slow_rate(P, 1e-200, 1e200)
    with pytest.raises(InvalidParameterError, match="DENSE_MAX_RATIO"):
        spectra.slow_rate(P, 1.0, 1e10, method="dense")
    with pytest.raises(InvalidParameterError, match="positive normal"):
        spectra.slow_rate(P, 1e-310, 1e-310)  # r_s would be subnormal


def _high_precision_rate(P, eta_x, eta_y, dps=60):
    """Smallest nonzero eigenvalue of S = H^½ L_G H^½ by mpmath.eigsy at ``dps`` digits."""
    g = sc.CouplingGraph.from_couplings(P)
    L = g.laplacian.toarray()
    with mpmath.workdps(dps):
        h = [mpmath.sqrt(mpmath.mpf(eta_x))] * g.N + [mpmath.sqrt(mpmath.mpf(eta_y))] * g.K
        S = mpmath.matrix(len(h))
        for a in range(len(h)):
            for b in range(len(h)):
                if L[a, b]:
                    S[a, b] = h[a] * mpmath.mpf(float(L[a, b])) * h[b]
        ev = sorted(mpmath.eigsy(S, eigvals_only=True))
        return float(ev[g.components[0]])


@pytest.mark.parametrize("ratio", [1e8, 1e14, 1e-12])
def test_unbalanced_graph_against_high_precision_spectrum(ratio):
    rng = np.random.default_rng(7)
    N, Kc = 14, 3
    P = np.zeros((N, Kc))
    P[np.arange(N), rng.integers(0, Kc, N)] = rng.uniform(0.5, 1.5, N)
    P[:4, :] += rng.uniform(0.1, 0.6, (4, Kc))  # a few frustrated samples connect the classes
    ref = _high_precision_rate(P, 1.0, ratio)
    for method in ("auto", "schur", "sparse"):
        r = spectra.slow_rate(P, 1.0, ratio, method=method)
        assert abs(r / ref - 1) < 1e-10, (method, r, ref)
