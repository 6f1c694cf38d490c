"""Outputs are atomic and reproducible: a failed write leaves the old file and no temporary
file; the same inputs give byte-identical LaTeX, PNG and verification-table text, also in
fresh interpreters with different hash seeds (set iteration order must not leak out)."""
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from symcollapse.errors import InvalidParameterError  # noqa: E402
from symcollapse import atomic  # noqa: E402  (the writers: symcollapse.atomic, re-exported by outputs.io)
from symcollapse.outputs.io import atomic_savefig, atomic_write_bytes, atomic_write_text  # noqa: E402
from symcollapse.jobs.engine import engine_checks  # noqa: E402
from symcollapse.verification import format_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --- atomic writes ------------------------------------------------------------------------------
def _listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a.tex"
    atomic_write_text(p, "first\n")
    atomic_write_text(p, "second ∂ℓ\n")
    assert p.read_text(encoding="utf-8") == "second ∂ℓ\n"
    assert _listing(tmp_path) == ["a.tex"]
    assert (p.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_during_write_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch, where, exc):
    p = tmp_path / "table.txt"
    atomic_write_text(p, "old content\n")

    def fail(*args, **kwargs):
        raise exc

    data = b"new content that must not appear\n"
    if where == "write":
        real_fdopen = atomic.os.fdopen

        def half_writing_fdopen(fd, mode):
            fh = real_fdopen(fd, mode)
            return _HalfWriter(fh, exc)

        monkeypatch.setattr(atomic.os, "fdopen", half_writing_fdopen)
    else:
        monkeypatch.setattr(atomic.os, where, fail)
    with pytest.raises(type(exc)):
        atomic_write_bytes(p, data)
    assert p.read_text() == "old content\n"
    assert _listing(tmp_path) == ["table.txt"]


class _HalfWriter:
    """A file whose write() puts half of the data on disk, then fails (disk full, Ctrl-C)."""

    def __init__(self, fh, exc):
        self.fh, self.exc = fh, exc

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.fh.close()

    def fileno(self):
        return self.fh.fileno()

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise self.exc


def test_failure_before_first_write_creates_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "x.bin", "a str is not bytes")
    fig, ax = plt.subplots()
    try:
        with pytest.raises((TypeError, ValueError)):
            atomic_savefig(fig, tmp_path / "f.png", dpi="high")
    finally:
        plt.close(fig)
    assert _listing(tmp_path) == []


def test_atomic_write_refuses_a_directory_target_and_a_file_as_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InvalidParameterError, match="is a directory"):
        atomic_write_text(tmp_path / "d", "x")
    (tmp_path / "f").write_text("keep")
    with pytest.raises(InvalidParameterError, match="output folder"):
        atomic_write_text(tmp_path / "f" / "x.tex", "x")
    assert (tmp_path / "f").read_text() == "keep"


# --- byte-identical outputs ----------------------------------------------------------------------
def _small_figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    t = np.linspace(0, 5, 50)
    ax.semilogy(t, np.exp(-0.3 * t), label=r"$\Delta_{\min}$")
    ax.set_xlabel("t")
    ax.legend()
    return fig


def _png_chunks(data: bytes) -> list:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def test_png_bytes_identical_and_free_of_time_and_software(tmp_path):
    paths = []
    for name in ("a.png", "b.png"):
        fig = _small_figure()
        try:
            paths.append(atomic_savefig(fig, tmp_path / name))
        finally:
            plt.close(fig)
    a, b = (p.read_bytes() for p in paths)
    assert a == b and len(a) > 1000
    chunks = _png_chunks(a)
    kinds = [k for k, _ in chunks]
    assert b"tIME" not in kinds
    text = b"".join(v for k, v in chunks if k in (b"tEXt", b"iTXt", b"zTXt"))
    assert b"Software" not in text and b"matplotlib" not in text.lower()


SCRIPT = r"""
import hashlib, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
from symcollapse.outputs.io import atomic_savefig, atomic_write_text
from symcollapse.outputs.latex import document, equation, section
from symcollapse.symbolic import derive_flow
from symcollapse.jobs.engine import engine_checks
from symcollapse.symbolic.mpcheck import head_loss
from symcollapse.verification import format_table

out = sys.argv[1]
flow = derive_flow(head_loss(2, True))
eqs = [equation(r"F_{%s}" % b, f) for b, f in flow.forces_with_sg]
tex = document("Head with stop-gradient", section("Forces", *eqs))
atomic_write_text(out + "/forces.tex", tex)
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot(np.arange(10), np.arange(10) ** 2)
atomic_savefig(fig, out + "/fig.png")
atomic_write_text(out + "/table.txt", format_table(engine_checks(seed=7)))
for name in ("forces.tex", "fig.png", "table.txt"):
    print(name, hashlib.sha256(open(out + "/" + name, "rb").read()).hexdigest())
"""


def _run_script(folder: Path, hash_seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_outputs_byte_identical_across_fresh_interpreters(tmp_path):
    a = _run_script(tmp_path / "a", "1")
    b = _run_script(tmp_path / "b", "987654")
    assert a == b
    assert len(a.splitlines()) == 3
    tex = (tmp_path / "a" / "forces.tex").read_text()
    assert r"\operatorname{sg}" in tex and tex.endswith("\\end{document}\n")
    for name in ("forces.tex", "fig.png", "table.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_verification_table_text_deterministic_for_a_fixed_seed():
    first = format_table(engine_checks(seed=5))
    again = format_table(engine_checks(seed=5))
    other = format_table(engine_checks(seed=6))
    assert first == again
    assert first != other  # the seed does choose the points (errors at round-off differ)
    assert hashlib.sha256(first.encode()).hexdigest() == hashlib.sha256(again.encode()).hexdigest()


def test_verification_table_fits_100_columns_and_keeps_every_cell():
    """Long claims and references are wrapped, not cut: every word of every cell is in the table."""
    from symcollapse.verification import Check

    rows = [Check("embedding", "slow rate r_s " * 12, "0.123456789012345678", "smallest root of the sector cubic " * 5,
                  1.5e-16, 1e-9),
            Check("embedding", "short", "s", "t", float("nan"), 1e-9),
            Check("head", "x" * 150, "y", "z", 0.0, 0.0)]
    text = format_table(rows)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    tokens = text.split()
    for word in set(" ".join(r.claim + " " + r.compared_with for r in rows[:2]).split()):
        assert tokens.count(word) == sum(f"{r.claim} {r.compared_with}".split().count(word) for r in rows), word
    assert text.count("x") == 150  # a word longer than its column is broken across lines, not cut
    start = lines[1].index("derived")  # the derived column, read top to bottom, holds the value
    width = len(lines[2].split()[4])
    assert "0.123456789012345678" in "".join(ln[start:start + width].strip() for ln in lines[3:])
    assert [ln for ln in lines if ln.startswith("  FAIL ")] and "embedding (2 checks)" in lines and "head (1 check)" in lines
