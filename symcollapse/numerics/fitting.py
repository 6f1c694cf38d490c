"""Rate fitting: slopes of log-decays."""
from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from ..validation import check_real


def fit_exponential_rate(t, y, *, floor: float = 1e-6, fraction: float = 0.5,
                         t_min: float | None = None) -> float:
    """r in y(t) ≈ A e^{−r t}, by least squares on log y over the last ``fraction`` of the
    time span in which y/y(0) > floor (and t ≥ t_min, if given: after the fast transients).

    The window is a fraction of *time*, not of points, so a log-spaced record is not fitted
    over its early transients.
    """
    floor = check_real("floor", floor, 0.0, 1.0, strict_min=True, strict_max=True)
    fraction = check_real("fraction", fraction, 0.0, 1.0, strict_min=True)
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.shape != y.shape or t.ndim != 1:
        raise InvalidParameterError(f"t and y must be 1-D arrays of equal length; got {t.shape} and {y.shape}")
    ok = np.isfinite(y) & (y > floor * y[0])
    if t_min is not None:
        ok &= t >= check_real("t_min", t_min, 0.0, None)
    idx = np.flatnonzero(ok)
    if len(idx) < 4:
        raise InvalidParameterError("too few points above the floor to fit a rate; lower 'floor' or t_end")
    t_lo, t_hi = t[idx[0]], t[idx[-1]]
    tail = idx[t[idx] >= t_hi - fraction * (t_hi - t_lo)]
    if len(tail) < 3:
        tail = idx[-3:]
    slope = np.polyfit(t[tail], np.log(y[tail]), 1)[0]
    return float(-slope)
