r"""Parameter sweeps of full simulations, on Dask or local processes, streamed and resumable.

A sweep evaluates a user function f(**point) -> {name: float} at every point of the grid
Π_k values_k (Cartesian product, row-major in the order the parameters are given). Each
finished point is appended to a JSON-lines file as soon as it completes (one line
{"id", "params", "result"} written by the coordinating process with a single write and
fsync); an interrupted sweep keeps its finished points and a rerun skips them. Backends:
Dask (``dask.distributed``: a LocalCluster of processes by default, or a running scheduler
by address) when installed, else ``concurrent.futures`` processes; ``"serial"`` runs in
this process. f must be importable by the workers (a module-level function). If f has a
``validate`` attribute, ``f.validate(**point)`` is called on every grid point before any work
starts (and before the results file is touched), so a bad value is refused at once.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from ..errors import InvalidParameterError, SymcollapseError
from ..validation import check_int, check_rate, check_real

BACKENDS = ("auto", "dask", "processes", "serial")


# --- the grid --------------------------------------------------------------------------------
def grid(params: Mapping) -> list[dict]:
    """The Cartesian product of ``{name: [values…]}`` as a list of points (dicts)."""
    if not isinstance(params, Mapping) or not params:
        raise InvalidParameterError("params must be a non-empty mapping {name: [values, …]}")
    names, values = [], []
    for name, vals in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidParameterError(f"parameter names must be identifiers; got {name!r}")
        if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
            vals = [vals]
        vals = list(vals)
        if not vals:
            raise InvalidParameterError(f"parameter {name!r} needs at least one value")
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise InvalidParameterError(
                    f"values of {name!r} must be numbers or strings; got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise InvalidParameterError(f"values of {name!r} must be finite; got {v}")
        if len(set(map(repr, vals))) != len(vals):
            raise InvalidParameterError(f"values of {name!r} must be distinct; got {vals}")
        names.append(name)
        values.append(vals)
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def check_names(fn: Callable, point: Mapping) -> None:
    """Every grid parameter must be an argument of ``fn`` (unless it takes **kwargs)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    kinds = {p.kind for p in sig.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return
    allowed = [n for n, p in sig.parameters.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [n for n in point if n not in allowed]
    if unknown:
        raise InvalidParameterError(f"unknown sweep parameter(s) {unknown}; "
                                    f"{getattr(fn, '__name__', 'the function')} takes {allowed}")


def point_id(point: Mapping) -> str:
    """A stable id of a grid point: sha1 of its canonical JSON (sorted keys)."""
    return hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]


# --- the results file ------------------------------------------------------------------------
def read_results(path) -> dict:
    """{id: record} of the complete lines of a results file; a torn last line (interrupted
    write) is cut off so that appending continues on a clean line boundary."""
    path = Path(path)
    if not path.exists():
        return {}
    raw = path.read_bytes()
    out, good_end, pos = {}, 0, 0
    for line in raw.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
            out[rec["id"]] = rec
        except (ValueError, KeyError, TypeError):
            raise SymcollapseError(
                f"results file {str(path)!r} has a malformed line at byte {pos - len(line)}; "
                "it is not a sweep output (use another --out)") from None
        good_end = pos
    if good_end < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return out


def _append(path: Path, record: dict) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_result(point: dict, value) -> dict:
    if not isinstance(value, Mapping) or not value:
        raise SymcollapseError(f"the sweep function must return a non-empty dict of floats; "
                               f"got {type(value).__name__} at {point}")
    out = {}
    for k, v in value.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise SymcollapseError(f"result {k!r} at {point} is not a number: {v!r}") from None
        if not math.isfinite(f):
            raise SymcollapseError(f"result {k!r} at {point} is not finite ({f}); "
                                   "a NaN is never recorded silently")
        out[str(k)] = f
    return out


# --- running -----------------------------------------------------------------------------------
def _call(fn, point):
    return fn(**point)


def _have_dask() -> bool:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run_sweep(fn: Callable, params: Mapping, out, *, scheduler: str | None = None,
              workers: int | None = None, backend: str = "auto", progress=None) -> list[dict]:
    """Evaluate ``fn(**point)`` on the grid of ``params``; stream and resume via ``out``.

    Returns the records {"id", "params", "result"} of every grid point in grid order.
    backend: 'auto' (Dask if installed or a scheduler is given, else processes), 'dask',
    'processes' or 'serial'. ``workers`` (default: CPU count) sizes the local pool.
    """
    if not callable(fn):
        raise InvalidParameterError("fn must be a callable f(**point) -> dict of floats")
    if backend not in BACKENDS:
        raise InvalidParameterError(f"backend must be one of {BACKENDS}; got {backend!r}")
    workers = check_int("workers", workers if workers is not None else (os.cpu_count() or 1), 1)
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise InvalidParameterError(
            f"scheduler must be an address such as 'tcp://host:8786'; got {scheduler!r}")
    points = grid(params)
    check_names(fn, points[0])
    validate = getattr(fn, "validate", None)
    if callable(validate):
        for p in points:
            validate(**p)
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise InvalidParameterError(f"out must be a non-empty file path; got {out!r}")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise InvalidParameterError(f"out must be a file path, not a folder: {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_results(out)
    todo = [p for p in points if point_id(p) not in done]
    if backend == "auto":
        backend = "dask" if (scheduler is not None or _have_dask()) else "processes"
    if scheduler is not None and backend != "dask":
        raise InvalidParameterError("a scheduler address needs backend 'dask' (or 'auto')")
    if backend == "dask" and not _have_dask():
        raise InvalidParameterError(
            "backend 'dask' needs the optional extra: pip install 'symcollapse[distributed]'")

    def record(point, value):
        rec = {"id": point_id(point), "params": point, "result": _check_result(point, value)}
        _append(out, rec)
        done[rec["id"]] = rec
        if progress is not None:
            progress(len(done), len(points), rec)

    if todo:
        if backend == "serial":
            for p in todo:
                try:
                    value = _call(fn, p)
                except Exception as exc:  # noqa: BLE001  (reported with its point)
                    raise _failed(p, exc) from exc
                record(p, value)
        elif backend == "processes":
            _run_processes(fn, todo, workers, record)
        else:
            _run_dask(fn, todo, workers, scheduler, record)
    return [done[point_id(p)] for p in points]


def _failed(point, exc) -> SymcollapseError:
    return SymcollapseError(f"sweep point {point} failed: {type(exc).__name__}: {exc} "
                            "(finished points are kept; rerun to resume)")


def _run_processes(fn, todo, workers, record):
    import multiprocessing as mp

    ctx = mp.get_context("spawn") if "fork" not in mp.get_all_start_methods() else mp.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
        pending = {pool.submit(_call, fn, p): p for p in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    p = pending.pop(fut)
                    try:
                        value = fut.result()
                    except Exception as exc:  # noqa: BLE001  (reported with its point)
                        raise _failed(p, exc) from exc
                    record(p, value)
        finally:
            for fut in pending:
                fut.cancel()


def _run_dask(fn, todo, workers, scheduler, record):
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if scheduler is None:
            # silence_logs: a failed point is raised here once, with its parameters, instead of
            # every worker printing a "Compute Failed" traceback
            cluster = LocalCluster(n_workers=min(workers, len(todo)), threads_per_worker=1,
                                   processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL)
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise SymcollapseError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            futures = {client.submit(_call, fn, p, pure=False): i for i, p in enumerate(todo)}
            try:
                for fut in as_completed(list(futures)):
                    p = todo[futures[fut]]
                    try:
                        value = fut.result()
                    except Exception as exc:  # noqa: BLE001
                        raise _failed(p, exc) from exc
                    record(p, value)
            finally:
                client.cancel(list(futures))
    finally:
        if cluster is not None:
            cluster.close()


# --- built-in models for the command line ---------------------------------------------------
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
    import numpy as np

    from ..models.couplings import balanced_couplings, frustration_fraction
    from ..models.embedding import EmbeddingModel

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


def parse_param(text: str) -> tuple[str, list]:
    """'name=v1,v2,…' -> (name, [values]) with ints, floats or strings."""
    if not isinstance(text, str) or "=" not in text:
        raise InvalidParameterError(f"--param must look like name=v1,v2,…; got {text!r}")
    name, _, vals = text.partition("=")
    name = name.strip()
    if not name.isidentifier():
        raise InvalidParameterError(f"--param name must be an identifier; got {name!r}")
    items = [v.strip() for v in vals.split(",")]
    if not vals.strip() or any(not v for v in items):
        raise InvalidParameterError(f"--param {name} needs comma-separated values; got {vals!r}")
    out = []
    for v in items:
        for conv in (int, float):
            try:
                out.append(conv(v))
                break
            except ValueError:
                continue
        else:
            out.append(v)
    return name, out


def model_function(name: str) -> Callable:
    """The built-in sweep function of a model (see MODELS)."""
    try:
        return MODELS[name]
    except KeyError:
        raise InvalidParameterError(f"--model must be one of {sorted(MODELS)}; got {name!r}") from None
