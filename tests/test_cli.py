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
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("engine ")]
    assert len(rows) >= 10 and all(ln.rstrip().endswith("pass") for ln in rows)
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
