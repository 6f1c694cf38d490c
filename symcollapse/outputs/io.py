"""Atomic output: write to a temporary file in the target folder, then rename over the target."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InvalidParameterError


def ensure_writable_dir(path) -> Path:
    """Create ``path`` if needed and check it is a writable folder (error names it otherwise)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidParameterError(f"output folder {str(p)!r} cannot be created: {exc.strerror}") from exc
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise InvalidParameterError(f"output folder {str(p)!r} must be a writable directory")
    return p


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (no half-written file survives an interruption)."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    if path.is_dir():
        raise InvalidParameterError(f"output file {str(path)!r} is a directory")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp would leave 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savefig(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure as PNG atomically with fixed metadata (byte-reproducible)."""
    import io

    buf = io.BytesIO()
    kwargs.setdefault("dpi", 120)
    fig.savefig(buf, format="png", metadata={"Software": None}, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())
