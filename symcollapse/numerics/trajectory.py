r"""Simulate an assembled flow and record the collapse metrics: Δ_min(t), accuracy(t), L(t)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidParameterError
from ..symbolic.loss import LABEL, SAMPLE
from .integrate import integrate, time_grid
from .metrics import accuracy, d_min
from .system import FlowSystem


@dataclass(frozen=True)
class Trajectory:
    """Recorded metrics at times t; Z (N+K, d) and W (or None) are the final state.

    ``states`` holds the full flat states at every t when recorded (small systems only).
    """

    t: np.ndarray
    d_min: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray
    Z: np.ndarray
    W: np.ndarray | None = None
    states: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def fit_slow_rate(self, floor: float = 1e-6, fraction: float = 0.5, t_min: float | None = None) -> float:
        """r from log Δ_min(t) ≈ a − r t, least squares over the late part of the record.

        Uses the last ``fraction`` of the time span in which Δ_min/Δ_min(0) > ``floor`` (so the
        solver's absolute error does not enter) and, if given, t ≥ ``t_min`` (after the fast modes).
        """
        from .fitting import fit_exponential_rate

        return fit_exponential_rate(self.t, self.d_min, floor=floor, fraction=fraction, t_min=t_min)


def simulate_system(system: FlowSystem, v0: np.ndarray, t_end: float, *, labels: np.ndarray,
                    n_points: int = 200, head: str | None = None, method: str = "BDF",
                    rtol: float = 1e-10, atol: float = 1e-12, use_jacobian: bool = True,
                    keep_states: bool = False, t_eval: np.ndarray | None = None) -> Trajectory:
    """Integrate from v0 to t_end and record Δ_min, accuracy (nearest label, through the head
    block named ``head`` if given) and the loss on a log-spaced time grid."""
    if t_eval is None:
        t_eval = time_grid(t_end, n_points)
    elif t_eval[-1] <= 0:
        raise InvalidParameterError("t_end must be > 0")
    jac = system.jacobian if use_jacobian else None
    sol = integrate(system.flow_vector, v0, t_eval, jac=jac, method=method, rtol=rtol, atol=atol)
    dm, acc, ls = [], [], []
    for v in sol.y:
        st = system.unpack(v)
        X = st.get(SAMPLE)
        Y = st[LABEL]
        W = st.get(head) if head else None
        dm.append(d_min(Y))
        acc.append(accuracy(X, Y, labels, W) if X is not None and X.shape[1] == Y.shape[1] else np.nan)
        ls.append(system.loss(st))
    final = system.unpack(sol.y[-1])
    X = final.get(SAMPLE)
    Z = np.vstack([X, final[LABEL]]) if X is not None and X.shape[1] == final[LABEL].shape[1] else final[LABEL]
    return Trajectory(sol.t, np.array(dm), np.array(acc), np.array(ls), Z,
                      final.get(head) if head else None, sol.y if keep_states else None)
