r"""The built-in sweep points of ``symcollapse sweep --model NAME`` (docs/model.md §2).

A sweep point f(**params) -> {name: float} runs one simulation; ``f.validate(**params)``
checks a grid point without building anything, so the command line refuses a bad grid before
SymPy, SciPy or a model is imported (its startup rule). Sweeps themselves (grids, backends,
resumable results) are :mod:`symcollapse.numerics.sweeps`.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import InvalidParameterError, SymcollapseError
from .models.couplings import balanced_couplings, frustration_fraction
from .validation import check_int, check_rate, check_real

MAX_RATE_RATIO = 1e12


def embedding_arguments(eps: float = 0.05, seed: int = 0, K: int = 3, n: int = 20, d: int = 2,
                        eta_x: float = 1.0, eta_y: float = 1.0, t_end: float = 5.0) -> dict:
    """The validated arguments of :func:`embedding_point` plus μ (cheap: no model is built).

    μ = round(ε K n / ((1 − ε) K(K−1)/2)); ε > 0 must give μ ≥ 1, i.e. ε ≥ q/(1+q) with
    q = K(K−1)/2 / (2Kn). Rates must be within a factor 1e12 of each other.
    """
    eps = check_real("eps", eps, 0.0, 1.0, strict_max=True)
    K, n, d = check_int("K", K, 2), check_int("n", n, 1), check_int("d", d, 1)
    seed = check_int("seed", seed, 0)
    eta_x, eta_y = check_rate("eta_x", eta_x), check_rate("eta_y", eta_y)
    if max(eta_x, eta_y) > MAX_RATE_RATIO * min(eta_x, eta_y):
        raise InvalidParameterError(f"eta_y/eta_x must be in [1e-12, 1e12]; got eta_x = {eta_x}, "
                                    f"eta_y = {eta_y}")
    t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
    pairs = K * (K - 1) // 2
    mu = int(round(eps * K * n / ((1 - eps) * pairs)))
    if eps > 0 and mu == 0:
        q = pairs / (2 * K * n)
        raise InvalidParameterError(
            f"eps = {eps} is too small for K = {K}, n = {n}: it gives no frustrated sample "
            f"(mu = round(eps K n / ((1 - eps) K(K-1)/2)) = 0); use eps = 0, eps >= {q / (1 + q):.3g}, "
            f"or a larger n")
    return dict(eps=eps, seed=seed, K=K, n=n, d=d, eta_x=eta_x, eta_y=eta_y, t_end=t_end, mu=mu)


def embedding_point(eps: float = 0.05, seed: int = 0, K: int = 3, n: int = 20, d: int = 2,
                    eta_x: float = 1.0, eta_y: float = 1.0, t_end: float = 5.0) -> dict:
    """One simulation of the embedding model on a balanced ensemble with frustration ≈ eps.

    μ = round(ε K n / ((1 − ε) K(K−1)/2)) frustrated samples per pair (ε = 0 allowed);
    integrated to t = t_end / r_s. Returns the realised ε, r_s (spectral), the fitted decay
    rate of Δ_min, and Δ_min, accuracy and loss at the end. Arguments are checked by
    :func:`embedding_arguments` (also ``embedding_point.validate``) before any work.
    """
    # the model (SymPy, SciPy) is imported here, not at the top: the command line validates every
    # grid point with embedding_arguments before the engine is loaded (its startup rule)
    from .models.embedding import EmbeddingModel

    a = embedding_arguments(eps, seed, K, n, d, eta_x, eta_y, t_end)
    K, n, mu, t_end = a["K"], a["n"], a["mu"], a["t_end"]
    P = balanced_couplings(K, n, mu)
    model = EmbeddingModel(P, d=a["d"], eta_x=a["eta_x"], eta_y=a["eta_y"])
    out = {"eps": float(frustration_fraction(K, n, mu)) if mu else 0.0, "mu": float(mu)}
    if mu:
        rs = model.slow_rate()
        if not rs > 0:
            raise SymcollapseError(f"the slow rate is {rs} at {a}: cannot integrate to t_end / r_s")
        traj = model.simulate(t_end / rs, seed=a["seed"], n_points=60)
        out.update(r_s=rs, fitted_rate=traj.fit_slow_rate())
    else:  # no frustration: nothing collapses; integrate over the fast scale only
        traj = model.simulate(t_end / min(a["eta_x"], a["eta_y"]), seed=a["seed"], n_points=60)
        out.update(r_s=0.0, fitted_rate=0.0)
    out.update(d_min_end=float(traj.d_min[-1]), accuracy_end=float(traj.accuracy[-1]),
               loss_end=float(traj.loss[-1]), d_min_start=float(traj.d_min[0]))
    return {k: float(np.asarray(v)) for k, v in out.items()}


embedding_point.validate = embedding_arguments


MODELS = {"embedding": embedding_point}


def model_function(name: str) -> Callable:
    """The built-in sweep function of a model (see MODELS)."""
    try:
        return MODELS[name]
    except KeyError:
        raise InvalidParameterError(f"--model must be one of {sorted(MODELS)}; got {name!r}") from None
