r"""Numerical self-checks of compiled component-level kernels: flow = −η ∂L/∂θ by central
differences of the compiled loss (sg held), moment path = edge path, Jacobian = differences of
the flow. A disagreement raises :class:`~symcollapse.errors.DerivationCheckError`."""
from __future__ import annotations

import numpy as np

from ..errors import DerivationCheckError
from ..tolerance import within
from .system import FlowSystem


def relative_error(a, b) -> float:
    """‖a − b‖_∞ / max(‖b‖_∞, 1e-300)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-300)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def _check_instance(compiled, seed: int):
    """A small random graph, rates, data and frozen blocks for the self-checks."""
    rng = np.random.default_rng(seed)
    loss = compiled.loss
    N, K = 5, 3
    P = rng.uniform(0.2, 1.0, size=(N, K)) * (rng.uniform(size=(N, K)) < 0.7)
    P[np.arange(N), np.arange(N) % K] += 1.0
    kw = dict(
        rates={b: float(rng.uniform(0.5, 1.5)) for b in loss.blocks},
        params={p.name: float(rng.uniform(0.5, 1.5)) for p in loss.parameters},
        data=rng.normal(size=(N, len(loss.data_symbols))) if loss.data_symbols else None,
        frozen={b: rng.normal(size=loss.block(b).shape) for b in loss.shared_names
                if b not in compiled.flow.learned},
    )
    return rng, P, kw


def verify_flow(compiled, seed: int = 12345, tol: float = 1e-6,
                paths: tuple | None = None) -> dict:
    """Check the flow kernels at random points on a small random graph; raise on disagreement.

    flow = −η ∂L/∂θ by central differences of the compiled loss with every sg held at its
    value, on each evaluation path (default: all that apply); moment path = edge path.
    Returns the relative errors.
    """

    rng, P, kw = _check_instance(compiled, seed)
    name = compiled.loss.name
    errors = {}
    ref = None
    if paths is None:
        paths = ("edge", "moment") if compiled.fast else ("edge",)
    for path in paths:
        sysm = FlowSystem(compiled, P, path=path, **kw)
        if ref is None:
            v = rng.normal(size=sysm.size)
        f = sysm.flow_vector(v)
        if not np.all(np.isfinite(f)):
            raise DerivationCheckError(f"{name}: the compiled flow is not finite at a random point")
        fd = -sysm.rate_vector * sysm.frozen_loss_gradient_fd(v)
        if not np.all(np.isfinite(fd)):
            raise DerivationCheckError(
                f"{name}: the loss is not finite near a random real point, so the compiled flow "
                "cannot be checked (is the loss defined for all real x, y and parameters?)")
        err = relative_error(f, fd)
        errors[f"flow ({path} path) vs central differences of the loss"] = err
        if not within(err, tol):
            raise DerivationCheckError(
                f"{name}: compiled flow ({path} path) disagrees with finite differences of the "
                f"loss: relative error {err:.3e} > {tol:g}")
        if ref is not None:
            err = relative_error(f, ref)
            errors["moment path vs edge path"] = err
            if not within(err, 1e-10):
                raise DerivationCheckError(
                    f"{name}: moment path and edge path disagree: relative error {err:.3e}")
        ref = f
    return errors


def verify_jacobian(compiled, seed: int = 54321, tol: float = 1e-6) -> dict:
    """Check the assembled Jacobian against central differences of the compiled flow."""
    rng, P, kw = _check_instance(compiled, seed)
    sysm = FlowSystem(compiled, P, **kw)
    v = rng.normal(size=sysm.size)
    err = relative_error(sysm.jacobian(v).toarray(), sysm.flow_jacobian_fd(v))
    if not within(err, tol):
        raise DerivationCheckError(
            f"{compiled.loss.name}: compiled Jacobian disagrees with finite differences of the "
            f"flow: relative error {err:.3e} > {tol:g}")
    return {"jacobian vs central differences of the flow": err}


def verify_compiled(compiled) -> dict:
    """Both checks: the flow at compile time, the Jacobian (builds its kernels)."""
    errs = verify_flow(compiled)
    compiled.edge_jac  # noqa: B018  (building it runs verify_jacobian)
    errs.update(verify_jacobian(compiled))
    return errs
