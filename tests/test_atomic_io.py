"""Atomic writes leave no temp file behind: not on SIGINT, and a SIGKILLed writer's temp is
swept by the next write to the folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from symcollapse.outputs import io as sio

ROOT = Path(__file__).resolve().parents[1]

# The child blocks *right after the temp file exists*: in whichever of mkstemp (older code,
# before the try) or os.fdopen (inside the try) runs first, then the parent signals it.
# SIGINT is restored to Python's KeyboardInterrupt handler first: a child started from a
# background job of a non-interactive shell inherits SIGINT ignored, and would never see the signal.
CHILD = textwrap.dedent("""
    import os, signal, sys, tempfile, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
    def hold():
        print("ready", flush=True)
        time.sleep(60)
    def mkstemp(*a, **k):
        out = real_mkstemp(*a, **k)
        hold()
        return out
    def fdopen(*a, **k):
        fh = real_fdopen(*a, **k)
        hold()
        return fh
    tempfile.mkstemp, os.fdopen = mkstemp, fdopen
    from symcollapse.outputs.io import atomic_write_bytes
    atomic_write_bytes(sys.argv[1], b"x" * 100000)
""")


def _writer(target: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


def _temps(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigint_mid_write_leaves_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    proc = _writer(target)
    assert _temps(tmp_path), "the temp file exists while the child is held"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert _temps(tmp_path) == []
    assert not target.exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigkilled_writer_temp_is_swept_by_next_write(tmp_path):
    target = tmp_path / "out.bin"
    proc = _writer(target)
    proc.kill()
    proc.wait(timeout=30)
    left = _temps(tmp_path)
    assert len(left) == 1  # SIGKILL cannot be cleaned up by the dying process
    sio.atomic_write_bytes(tmp_path / "other.bin", b"ok")  # another file in the same folder
    assert _temps(tmp_path) == []
    assert (tmp_path / "other.bin").read_bytes() == b"ok"


def test_sweep_keeps_live_and_foreign_temps(tmp_path):
    own = tmp_path / f".a.{sio._HOST}.{os.getpid()}-abc123.tmp"
    foreign = tmp_path / ".a.00000000.1-abc123.tmp"  # another host: only age removes it
    unrelated = tmp_path / ".editor.tmp"  # not our format: never touched
    for p in (own, foreign, unrelated):
        p.write_bytes(b"")
    assert sio.sweep_stale_temps(tmp_path) == 0
    old = time.time() - 2 * sio.STALE_TEMP_AGE
    os.utime(foreign, (old, old))
    os.utime(unrelated, (old, old))
    assert sio.sweep_stale_temps(tmp_path) == 1
    assert own.exists() and unrelated.exists() and not foreign.exists()


def test_gitignore_ignores_temps():
    assert "*.tmp" in (ROOT / ".gitignore").read_text().split()
