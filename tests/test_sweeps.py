"""Sweeps: a LocalCluster (2 workers) and local processes give the serial result; results
stream to JSON lines; an interrupted sweep resumes without recomputing; clear errors."""
import json
import math

import numpy as np
import pytest

import symcollapse.closed_forms as cf
from symcollapse.cli import main
from symcollapse.errors import InvalidParameterError, SymcollapseError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.numerics import spectra
from symcollapse.numerics.sweeps import grid, parse_param, point_id, read_results, run_sweep


def rate_point(mu: int, seed: int) -> dict:
    """Cheap but real: the slow rate of B(3, 4, μ) with η_y drawn from the seed, and the
    smallest root of docs/model.md §2's sector cubic for the same rates (they must agree)."""
    eta_y = float(np.random.default_rng(seed).uniform(0.5, 2.0))
    K, n = 3, 4
    rs = spectra.slow_rate(balanced_couplings(K, n, mu), 1.0, eta_y, method="dense")
    return {"r_s": rs, "cubic_root": cf.slow_rate(K, n, mu, 1.0, eta_y), "eta_y": eta_y}


CALLS = []


def counting_point(mu: int, seed: int) -> dict:
    CALLS.append((mu, seed))
    return rate_point(mu, seed)


def failing_point(mu: int, seed: int) -> dict:
    if mu == 3:
        raise RuntimeError("solver blew up")
    return rate_point(mu, seed)


def nan_point(mu: int, seed: int) -> dict:
    return {"r_s": math.nan}


GRID = {"mu": [1, 2, 3], "seed": [0, 1]}


def test_grid_order_and_ids():
    pts = grid(GRID)
    assert pts == [{"mu": m, "seed": s} for m in (1, 2, 3) for s in (0, 1)]
    assert point_id({"seed": 0, "mu": 1}) == point_id({"mu": 1, "seed": 0})
    assert len({point_id(p) for p in pts}) == 6


def test_serial_results_are_right_and_streamed(tmp_path):
    out = tmp_path / "s.jsonl"
    recs = run_sweep(rate_point, GRID, out, backend="serial")
    assert [r["params"] for r in recs] == grid(GRID)
    for r in recs:  # the values are the physics, not just bookkeeping
        assert abs(r["result"]["r_s"] - r["result"]["cubic_root"]) < 1e-10 * r["result"]["r_s"]
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and {json.loads(x)["id"] for x in lines} == {r["id"] for r in recs}


def test_local_cluster_with_two_workers_equals_serial(tmp_path):
    pytest.importorskip("dask.distributed")
    serial = run_sweep(rate_point, GRID, tmp_path / "s.jsonl", backend="serial")
    dask = run_sweep(rate_point, GRID, tmp_path / "d.jsonl", backend="dask", workers=2)
    assert dask == serial
    assert read_results(tmp_path / "d.jsonl") == {r["id"]: r for r in serial}


def test_process_pool_equals_serial(tmp_path):
    serial = run_sweep(rate_point, GRID, tmp_path / "s.jsonl", backend="serial")
    procs = run_sweep(rate_point, GRID, tmp_path / "p.jsonl", backend="processes", workers=2)
    assert procs == serial


def test_interrupted_sweep_keeps_finished_points_and_resumes(tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(SymcollapseError, match=r"mu': 3.*solver blew up"):
        run_sweep(failing_point, GRID, out, backend="serial")
    kept = read_results(out)
    assert len(kept) == 4  # μ = 1, 2 finished before the failure
    # a torn last line (killed during a write) is cut off, not trusted
    with open(out, "ab") as fh:
        fh.write(b'{"id": "abc", "params": {"mu"')
    CALLS.clear()
    recs = run_sweep(counting_point, GRID, out, backend="serial")
    assert sorted(CALLS) == [(3, 0), (3, 1)]  # only the missing points ran
    assert recs == run_sweep(rate_point, GRID, tmp_path / "fresh.jsonl", backend="serial")
    CALLS.clear()
    run_sweep(counting_point, GRID, out, backend="serial")
    assert CALLS == []  # nothing left to do
    assert len(out.read_text().splitlines()) == 6


def test_bad_arguments_give_clear_errors(tmp_path):
    out = tmp_path / "x.jsonl"
    cases = [
        (dict(params={}), "non-empty mapping"),
        (dict(params={"mu": []}), "at least one value"),
        (dict(params={"m u": [1]}), "identifiers"),
        (dict(params={"mu": [1, 1]}), "distinct"),
        (dict(params={"mu": [float("nan")]}), "finite"),
        (dict(params={"mu": [None]}), "numbers or strings"),
        (dict(params={"mu": [1], "nope": [1]}), r"unknown sweep parameter\(s\) \['nope'\]"),
        (dict(params=GRID, backend="gpu"), "backend must be one of"),
        (dict(params=GRID, workers=0), "workers must be an integer >= 1"),
        (dict(params=GRID, scheduler="localhost"), "tcp://host:8786"),
        (dict(params=GRID, scheduler="tcp://h:1", backend="processes"), "needs backend 'dask'"),
    ]
    for kw, msg in cases:
        with pytest.raises(InvalidParameterError, match=msg):
            run_sweep(rate_point, out=out, **kw)
    with pytest.raises(InvalidParameterError, match="not a folder"):
        run_sweep(rate_point, GRID, tmp_path, backend="serial")
    with pytest.raises(InvalidParameterError, match="callable"):
        run_sweep("rate_point", GRID, out)
    with pytest.raises(SymcollapseError, match="not finite"):
        run_sweep(nan_point, GRID, out, backend="serial")
    assert read_results(out) == {}  # a NaN is never recorded
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not a sweep\n")
    with pytest.raises(SymcollapseError, match="malformed line"):
        run_sweep(rate_point, GRID, bad, backend="serial")


def test_parse_param():
    assert parse_param("eps=0.01,0.05") == ("eps", [0.01, 0.05])
    assert parse_param("seed=0,1,2") == ("seed", [0, 1, 2])
    assert parse_param("kind=a,b") == ("kind", ["a", "b"])
    for bad in ("eps", "eps=", "eps=1,,2", "1x=2"):
        with pytest.raises(InvalidParameterError):
            parse_param(bad)


def test_cli_sweep_runs_resumes_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    argv = ["sweep", "--model", "embedding", "--param", "eps=0.2", "--param", "seed=0,1",
            "--param", "K=2", "--param", "n=2", "--param", "t_end=2", "--out", str(out),
            "--backend", "serial"]
    assert main(argv) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["params"]["seed"] for r in recs] == [0, 1]
    for r in recs:  # μ = 1 per pair: ε = 1/5, r_s from the spectrum, Δ_min decayed
        assert r["result"]["eps"] == pytest.approx(0.2)
        assert r["result"]["r_s"] > 0
        assert r["result"]["d_min_end"] < r["result"]["d_min_start"]
    assert main(argv) == 0 and len(out.read_text().splitlines()) == 2  # resumed: nothing new
    for bad, msg in ((["--model", "nope", "--param", "a=1"], "--model must be one of"),
                     (["--model", "embedding"], "at least one --param"),
                     (["--model", "embedding", "--param", "eps"], "name=v1,v2"),
                     (["--model", "embedding", "--param", "eps=0.1", "--param", "eps=0.2"], "twice"),
                     (["--model", "embedding", "--param", "zeta=1"], "unknown sweep parameter")):
        capsys.readouterr()
        assert main(["sweep", *bad, "--out", str(tmp_path / "e.jsonl")]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1


def test_builtin_point_is_validated_on_every_grid_point_before_any_work(tmp_path):
    """A bad value anywhere in the grid is refused before the first point runs (it used to
    be found by the worker that reached it, after the earlier points were computed)."""
    from symcollapse.sweep_points import embedding_point

    out = tmp_path / "v.jsonl"
    for params, msg in (({"eps": [0.2, "abc"]}, "eps must be a real number"),
                        ({"eps": [0.2], "seed": [0, -1]}, "seed must be an integer >= 0"),
                        ({"K": [2, 1]}, "K must be an integer >= 2"),
                        ({"t_end": [1, -1]}, "t_end must be > 0"),
                        ({"eta_x": [1e-300]}, r"eta_y/eta_x must be in \[1e-12, 1e12\]"),
                        ({"eps": [0.01]}, r"too small for K = 3, n = 20.*eps >= 0.0244")):
        with pytest.raises(InvalidParameterError, match=msg):
            run_sweep(embedding_point, params, out, backend="serial")
        assert not out.exists()
    # the smallest eps the message names does give a frustrated sample (and the next lower one not)
    from symcollapse.sweep_points import embedding_arguments
    assert embedding_arguments(eps=0.0244)["mu"] == 1
    with pytest.raises(InvalidParameterError):
        embedding_arguments(eps=0.0243)


def test_dask_failure_is_one_error_without_worker_tracebacks(tmp_path):
    """A point that fails on a Dask worker is raised once with its parameters; the workers do
    not print 'Compute Failed' tracebacks (the README sweep printed them)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys; sys.path.insert(0, 'tests'); from test_sweeps import failing_point, GRID; "
            "from symcollapse.numerics.sweeps import run_sweep; "
            f"run_sweep(failing_point, {{'mu': [3], 'seed': [0]}}, {str(tmp_path / 'd.jsonl')!r}, backend='dask', workers=1)")
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          env=env, timeout=300)
    assert proc.returncode != 0
    assert "sweep point {'mu': 3, 'seed': 0} failed: RuntimeError: solver blew up" in proc.stderr
    assert "Compute Failed" not in proc.stderr, proc.stderr
