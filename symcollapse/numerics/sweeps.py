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

from ..deprecation import moved_names
from ..errors import InvalidParameterError, SymcollapseError
from ..validation import check_int

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


# the built-in sweep points build a model (a higher layer): symcollapse.sweep_points
MOVED = {name: "symcollapse.sweep_points" for name in
         ("MAX_RATE_RATIO", "MODELS", "embedding_arguments", "embedding_point", "model_function")}
__getattr__ = moved_names(__name__, MOVED)
