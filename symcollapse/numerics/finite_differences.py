"""Central differences, the independent reference every compiled kernel is checked against."""
from __future__ import annotations

import numpy as np


def central_gradient(fun, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """∂f/∂v_k ≈ (f(v + h e_k) − f(v − h e_k)) / 2h for a scalar function f."""
    g = np.empty_like(v, dtype=float)
    for k in range(len(v)):
        e = np.zeros_like(v, dtype=float)
        e[k] = h
        g[k] = (fun(v + e) - fun(v - e)) / (2 * h)
    return g


def central_jacobian(fun, v: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """∂f_i/∂v_k ≈ (f(v + h e_k) − f(v − h e_k)) / 2h for a vector function f."""
    J = np.empty((len(v), len(v)))
    for k in range(len(v)):
        e = np.zeros_like(v, dtype=float)
        e[k] = h
        J[:, k] = (fun(v + e) - fun(v - e)) / (2 * h)
    return J
