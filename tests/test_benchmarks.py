"""The benchmark script runs (``--smoke``: tiny sizes, every registered benchmark, both sides of
each comparison checked to agree), so it cannot rot between recorded runs."""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"


def _load():
    if "bench_run" in sys.modules:
        return sys.modules["bench_run"]
    spec = importlib.util.spec_from_file_location("bench_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod  # dataclasses look their module up while the script executes
    spec.loader.exec_module(mod)
    return mod


# Row 3 compares the spectral propagator with BDF; it once missed part of a degenerate slow
# cluster in some ARPACK runs and is now checked by a deflated Lanczos run (missed_mode).
SPECTRAL_ROWS = {3}


def _smoke(*only):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    args = [a for k in only for a in ("--only", str(k))]
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_smoke_runs_every_registered_benchmark():
    bench = _load()
    want = {r for b in bench.REGISTRY.values() for r in b.rows} - SPECTRAL_ROWS
    res = _smoke(*sorted(want))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    got = {int(line.split("|")[1]) for line in rows}
    assert got == want, (got, want)
    assert "every comparison agreed" in res.stdout
    # row 10 runs the package as filed (exported from git history) where the history is there
    history = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", bench.FILED_COMMIT + "^{commit}"],
                             capture_output=True).returncode == 0
    filed = [line for line in rows if f"filed package {bench.FILED_COMMIT[:7]}" in line]
    assert filed, "row 10 has no filed-package baseline"
    assert all(("not available" in line) != history for line in filed), filed
    for b in bench.REGISTRY.values():  # every benchmark has both sizes, with the same keywords
        assert set(b.smoke) == set(b.full), b.name


def test_agreement_check_rejects_disagreement_and_nan():
    bench = _load()
    bench.agree("equal", 1e-13, 1e-12)
    for bad in (1e-3, math.nan, math.inf):
        with pytest.raises(AssertionError, match="disagree"):
            bench.agree("x", bad, 1e-12)
    assert math.isnan(bench.max_rel([1.0, math.nan], [1.0, 1.0]))


def test_registry_refuses_a_duplicate_row():
    bench = _load()
    with pytest.raises(ValueError, match="already registered"):
        bench.benchmark(rows=(1,), full={}, smoke={})(lambda: [])


def test_smoke_results_are_not_recorded(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--markdown", str(tmp_path / "r.md")],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert res.returncode == 2 and not (tmp_path / "r.md").exists()


def test_smoke_integration_row():
    res = _smoke(*sorted(SPECTRAL_ROWS))
    assert res.returncode == 0, res.stderr[-3000:]


def test_filed_package_failure_names_its_last_source_line():
    """Row 10 records the filed package running out of memory by the failing source line, not by
    Python 3.11's caret line under it (nor by an empty string)."""
    run = _load()
    tb = ('Traceback (most recent call last):\n  File "linsolve.py", line 433, in splu\n'
          '    return _superlu.gstrf(N, A.nnz, A.data)\n           ^^^^^^^^^^^^^^^^^^^^^^\nMemoryError\n')
    assert run._last_frame(tb) == "return _superlu.gstrf(N, A.nnz, A.data)"
    assert run._last_frame("MemoryError\n") == ""
