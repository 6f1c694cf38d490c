"""Atomic file writes (docs: no partial file is left behind): write to a temporary file in the
target folder, then rename over the target. The base layer: the derivation cache (numerics) and
the outputs (LaTeX, figures, reports) both write through here.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path

from .errors import InvalidParameterError


def ensure_writable_dir(path) -> Path:
    """Create ``path`` if needed and check it is a writable folder (error names it otherwise)."""
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise InvalidParameterError(f"output folder must be a non-empty path; got {path!r}")
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidParameterError(f"output folder {str(p)!r} cannot be created: {exc.strerror}") from exc
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise InvalidParameterError(f"output folder {str(p)!r} must be a writable directory")
    return p


#: A temp file of another process on this host whose pid is gone is removed at once; any
#: other temp of ours (another host, or a pid reused since) once it is older than this (s).
STALE_TEMP_AGE = 24 * 3600.0
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(r"^\..+\.([0-9a-f]{8})\.([0-9]+)-[0-9a-f]+\.tmp$")


def _temp_name(path: Path) -> Path:
    """``.<name>.<host>.<pid>-<random>.tmp`` beside ``path``: who wrote it is in the name."""
    return path.parent / f".{path.name}.{_HOST}.{os.getpid()}-{secrets.token_hex(6)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_stale_temps(folder, now: float | None = None) -> int:
    """Remove temp files left in ``folder`` by writers that were killed (e.g. SIGKILL).

    A temp of this module's format is stale if it comes from a process of this host that no
    longer exists, or if it is older than STALE_TEMP_AGE; the current process's temps are
    never touched. Returns the number removed.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")):
            continue
        m = _TEMP.match(e.name)
        if m is None:
            continue
        host, pid = m.group(1), int(m.group(2))
        if host == _HOST and pid == os.getpid():
            continue
        try:
            age = now - e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if (host == _HOST and not _pid_alive(pid)) or age > STALE_TEMP_AGE:
            try:
                os.unlink(e.path)
                removed += 1
            except OSError:
                pass
    return removed


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (no half-written file survives an interruption).

    The temp file's name is chosen before it is created, inside the ``try``, so an interrupt
    at any point removes it; temps of killed writers in the folder are swept first.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    if path.is_dir():
        raise InvalidParameterError(f"output file {str(path)!r} is a directory")
    sweep_stale_temps(path.parent)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except FileExistsError:  # the O_EXCL create met a file of that name: not ours to remove
        raise
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
