"""The command line: bad arguments give one line on stderr and exit status 2 (no traceback);
failed verification gives exit status 1; a good run prints the verification table."""
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import symcollapse.jobs
from symcollapse import cli
from symcollapse.errors import DerivationCheckError
from symcollapse.verification import Check

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "symcollapse.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=300)


class _Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_here(capsys, *args):
    """The same as :func:`run`, in this process (cheaper: no fresh interpreter)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return _Done(code, cap.out, cap.err)


def assert_one_line_error(proc, *pieces, status=2):
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("symcollapse: "), lines[0]
    for p in pieces:
        assert p in lines[0], lines[0]


def test_unknown_subcommand():
    assert_one_line_error(run("frobnicate"), "invalid choice", "frobnicate", "reproduce", "check")


def test_unknown_option(capsys):
    assert_one_line_error(run_here(capsys, "check", "--bogus"), "unrecognized arguments", "--bogus")


def test_no_subcommand_prints_help_and_exits_2():
    proc = run()
    assert proc.returncode == 2
    assert "reproduce" in proc.stdout and "check" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_unknown_model_for_check():
    assert_one_line_error(run("check", "--model", "no-such-model"), "--model", "no-such-model",
                          "engine")


def test_unknown_model_for_reproduce_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert_one_line_error(run_here(capsys, "reproduce", "--model", "nope", "--out", str(out)),
                          "--model", "nope")
    assert not out.exists()


def test_unwritable_out_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run("reproduce", "--model", "engine", "--out", str(blocker / "sub"))
    assert_one_line_error(proc, "--out", str(blocker / "sub"))
    assert blocker.read_text() == "not a folder"


def test_check_engine_passes_and_prints_table():
    proc = run("check", "--model", "engine")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("engine (")
    rows = [ln for ln in lines if ln.startswith(("  pass ", "  FAIL "))]
    assert len(rows) >= 10 and all(ln.startswith("  pass ") for ln in rows)
    assert max(map(len, lines)) <= 100  # the table fits 100 columns (it was 240 wide)
    assert f"{len(rows)} passed, 0 failed" in proc.stdout


def test_reproduce_engine_writes_folders(tmp_path, capsys):
    proc = run_here(capsys, "reproduce", "--model", "engine", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "derivations").is_dir() and (tmp_path / "figures").is_dir()


def test_report_refuses_unknown_model_and_unwritable_out(tmp_path, capsys):
    out = tmp_path / "rep"
    assert_one_line_error(run_here(capsys, "report", "--model", "nope", "--out", str(out)),
                          "--model", "nope")
    assert not out.exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_one_line_error(run_here(capsys, "report", "--model", "engine", "--out", str(blocker / "r")),
                          "--out")


# --- exit status 1 for failed verification (in-process, with a stand-in job) ------------------
def _job(name, checks, write_latex=lambda folder: [], write_figures=lambda folder: []):
    return types.SimpleNamespace(MODEL=name, ORDER=0, checks=checks, write_latex=write_latex,
                                 write_figures=write_figures)


def test_failed_check_row_exits_1(monkeypatch, capsys):
    bad = Check("fake", "claim", "1", "2", 0.5, 1e-9)
    monkeypatch.setattr(symcollapse.jobs, "job_modules", lambda: [_job("fake", lambda: [bad])])
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 passed, 1 failed" in out


def test_derivation_error_exits_1_with_one_line(monkeypatch, capsys):
    def boom():
        raise DerivationCheckError("fake: flow disagrees with finite differences")

    monkeypatch.setattr(symcollapse.jobs, "job_modules", lambda: [_job("fake", boom)])
    assert cli.main(["check"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("[")]
    assert err == ["symcollapse: verification failed: fake: flow disagrees with finite differences"]


def test_os_error_while_writing_exits_1_with_one_line(monkeypatch, capsys, tmp_path):
    def disk_full(folder):
        raise OSError(28, "No space left on device")

    job = _job("fake", lambda: [], write_latex=disk_full)
    monkeypatch.setattr(symcollapse.jobs, "job_modules", lambda: [job])
    assert cli.main(["reproduce", "--out", str(tmp_path)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("[")]
    assert len(err) == 1 and "No space left on device" in err[0]


@pytest.mark.parametrize("argv", [["frobnicate"], ["check", "--model"]])
def test_parser_errors_exit_2_in_process(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- every bad argument: exit 2, one line naming it, before any work ---------------------------
# (argv, a piece of the message). Each is run in ONE fresh interpreter (below), which also reports
# whether SymPy / SciPy / matplotlib / Dask were imported before the refusal (they must not be:
# validation comes first) and how long each refusal took (measured and printed, not asserted).
BAD_ARGUMENTS = [
    (["check", "--model", "nope"], "--model"),
    (["reproduce", "--model", "nope", "--out", "{tmp}/r"], "--model"),
    (["report", "--model", "nope", "--out", "{tmp}/p"], "--model"),
    (["reproduce", "--out", ""], "--out"),
    (["reproduce", "--out", "  "], "--out"),
    (["report", "--out", ""], "--out"),
    (["sweep", "--model", "embedding", "--param", "eps=0.1", "--out", ""], "--out"),
    (["sweep", "--model", "nope", "--param", "eps=0.1", "--out", "{tmp}/s.jsonl"], "--model"),
    (["sweep", "--model", "embedding", "--param", "eps=abc", "--out", "{tmp}/s.jsonl"], "eps"),
    (["sweep", "--model", "embedding", "--param", "seed=-1", "--out", "{tmp}/s.jsonl"], "seed"),
    (["sweep", "--model", "embedding", "--param", "K=1", "--out", "{tmp}/s.jsonl"], "K must be"),
    (["sweep", "--model", "embedding", "--param", "t_end=-1", "--out", "{tmp}/s.jsonl"], "t_end"),
    (["sweep", "--model", "embedding", "--param", "eps=0.01", "--out", "{tmp}/s.jsonl"], "eps = 0.01 is too small"),
    (["sweep", "--model", "embedding", "--param", "eta_x=1e-300", "--out", "{tmp}/s.jsonl"], "eta_y/eta_x"),
    (["sweep", "--model", "embedding", "--param", "eps=0.1,0.2,1.5", "--out", "{tmp}/s.jsonl"], "eps"),
    (["sweep", "--model", "embedding", "--param", "d=0", "--out", "{tmp}/s.jsonl"], "d must be"),
    (["sweep", "--model", "embedding", "--param", "eps=0.1", "--workers", "0", "--out", "{tmp}/s.jsonl"], "workers"),
    (["sweep", "--model", "embedding", "--param", "eps=0.1", "--scheduler", "host", "--out", "{tmp}/s.jsonl"], "scheduler"),
    (["sweep", "--model", "embedding", "--param", "eps=0.1", "--out", "{tmp}"], "folder"),
    (["sweep", "--model", "embedding", "--param", "eps=0.1", "--workers", "two", "--out", "{tmp}/s.jsonl"], "--workers"),
]

_PROBE = r"""
import contextlib, io, json, sys, time
from symcollapse.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    heavy = sorted(m for m in ("sympy", "scipy", "matplotlib", "dask", "distributed") if m in sys.modules)
    out.append({"code": code, "err": err.getvalue(), "heavy": heavy, "s": time.perf_counter() - t})
print(json.dumps(out))
"""


def test_every_bad_argument_exits_2_before_any_work(tmp_path):
    import json

    argvs = [[a.replace("{tmp}", str(tmp_path)) for a in argv] for argv, _ in BAD_ARGUMENTS]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for (argv, piece), res in zip(BAD_ARGUMENTS, results):
        assert res["code"] == 2, (argv, res)
        lines = [ln for ln in res["err"].splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("symcollapse: error: "), (argv, res["err"])
        assert piece in lines[0], (argv, lines[0])
        assert res["heavy"] == [], (argv, f"imported {res['heavy']} before refusing")
    assert list(tmp_path.iterdir()) == []  # nothing written: no folder, no results file, nothing in cwd
    print("refusal times (s): " + ", ".join(f"{r['s']:.3f}" for r in results))


def test_bad_argument_exit_status_of_the_real_command(tmp_path):
    import time

    t = time.perf_counter()
    proc = run("sweep", "--model", "embedding", "--param", "eps=abc", "--out", str(tmp_path / "s.jsonl"))
    elapsed = time.perf_counter() - t
    assert_one_line_error(proc, "eps must be a real number")
    assert not (tmp_path / "s.jsonl").exists()
    print(f"fresh interpreter, bad sweep value refused in {elapsed:.2f} s")


def test_version():
    import tomllib

    proc = run("--version")
    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert proc.returncode == 0 and proc.stdout.strip() == f"symcollapse {want}", proc


def test_job_names_read_without_import_equal_the_modules():
    from symcollapse.jobs import job_modules, job_names

    assert job_names() == [m.MODEL for m in job_modules()]
