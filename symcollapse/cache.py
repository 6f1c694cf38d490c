r"""On-disk cache of derived edge flows (the costly SymPy step), never trusted blindly.

An entry stores the forces F_b = −∂ℓ/∂θ_b (with and without sg) of one loss as polynomials
c·Π g^k over an index table of the loss's own symbols and sg(·) atoms (JSON: no pickle, no
eval), keyed by sha256(package version, SymPy and Python versions, the engine's source
files, srepr of ℓ, of its blocks, learned set and rates). On load the key and a checksum
are verified; a stale, corrupted or unreadable entry is rebuilt and overwritten. Entries
are written to a temporary file and renamed, so concurrent writers never leave a partial
file. The compiled kernels are checked against finite differences of the loss after every
load (the compile-time self-check), so a wrong entry cannot reach a simulation.

Location: ``$SYMCOLLAPSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/symcollapse``, else
``~/.cache/symcollapse``; ``SYMCOLLAPSE_CACHE=0`` disables the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from functools import lru_cache
from pathlib import Path

import sympy as sp

from .errors import SymcollapseError
from . import __version__
from .atomic import atomic_write_bytes
from .symbolic import polydiff
from .symbolic.flow import EdgeFlow, derive_flow
from .symbolic.loss import EdgeLoss
from .symbolic.stopgrad import stop_gradient

FORMAT = 1
_ENGINE_FILES = ("symbolic/flow.py", "symbolic/loss.py", "symbolic/polydiff.py",
                 "symbolic/stopgrad.py", "symbolic/symbols.py", "numerics/kernels.py", "cache.py",
                 "numerics/compile.py", "numerics/structure.py", "numerics/lambdify.py", "numerics/kernel_cache.py",
                 "symbolic/matcalc.py", "symbolic/matrix_flow.py", "numerics/matrix_kernels.py")


class CacheWarning(UserWarning):
    """A cache entry failed to load or to verify; it was discarded and rebuilt."""


def warn_discarded(loss: EdgeLoss, what: str) -> None:
    """One warning per discarded entry, naming the loss and the reason."""
    warnings.warn(f"symcollapse cache: the entry of {loss.name} {what}; it was discarded and is "
                  "rebuilt", CacheWarning, stacklevel=3)


class NotEncodable(Exception):
    """The expression is not a rational polynomial in the loss symbols and sg atoms."""


# --- location and switches -----------------------------------------------------------------
def enabled() -> bool:
    """False when SYMCOLLAPSE_CACHE is '0', 'false', 'no' or 'off'."""
    return os.environ.get("SYMCOLLAPSE_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get("SYMCOLLAPSE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "symcollapse"


# --- keys ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def engine_fingerprint() -> str:
    """sha256 of the package/SymPy/Python versions and the derivation sources."""
    h = hashlib.sha256()
    h.update(f"format={FORMAT};symcollapse={__version__};sympy={sp.__version__};"
             f"python={platform.python_version()}".encode())
    root = Path(__file__).resolve().parent
    for rel in _ENGINE_FILES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=512)
def _loss_digest(loss: EdgeLoss) -> str:
    """sha256 of everything the derivation depends on (srepr of ℓ, blocks, learned, rates)."""
    parts = [sp.srepr(loss.expr), sp.srepr(loss.x), sp.srepr(loss.y),
             sp.srepr(loss.data) if loss.data is not None else "None",
             repr([(n, sp.srepr(m)) for n, m in loss.shared]),
             repr(sorted(loss.learned)), repr([(b, sp.srepr(r)) for b, r in loss.rates])]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def loss_key(loss: EdgeLoss) -> str:
    """sha256 of the engine fingerprint and the loss digest."""
    return hashlib.sha256(f"{engine_fingerprint()}:{_loss_digest(loss)}".encode()).hexdigest()


def entry_path(loss: EdgeLoss) -> Path:
    return cache_dir() / f"flow-{loss_key(loss)[:40]}.json"


def kernels_path(loss: EdgeLoss) -> Path:
    return cache_dir() / f"kern-{loss_key(loss)[:40]}.json"


# --- polynomial encoding -------------------------------------------------------------------
def _symbol_table(loss: EdgeLoss) -> list:
    return list(loss.variables) + list(loss.data_symbols) + list(loss.parameters)


class _Encoder:
    def __init__(self, table):
        self.index = {s: k for k, s in enumerate(table)}
        self.atoms = []  # encoded sg arguments
        self.atom_index = {}

    def gen(self, f):
        if f in self.index:
            return self.index[f]
        if isinstance(f, stop_gradient):
            code = json.dumps(self.expr(polydiff.expand(f.args[0])))
            if code not in self.atom_index:
                self.atom_index[code] = len(self.atoms)
                self.atoms.append(code)
            return -1 - self.atom_index[code]
        raise NotEncodable(f"factor {f} is not a loss symbol or an sg atom")

    def expr(self, e) -> list:
        out = []
        for t in sp.Add.make_args(sp.sympify(e)):
            coeff, mono = sp.S.One, []
            for f in sp.Mul.make_args(t):
                if f.is_Rational:
                    coeff *= f
                elif f.is_Pow and f.exp.is_Integer and f.exp > 0:
                    mono.append([self.gen(f.base), int(f.exp)])
                elif f.is_Number:
                    raise NotEncodable(f"non-rational coefficient {f}")
                else:
                    mono.append([self.gen(f), 1])
            if coeff != 0:
                out.append([int(coeff.p), int(coeff.q), mono])
        return out


class _Decoder:
    def __init__(self, table, atoms):
        self.table = list(table)
        self.atoms = atoms
        self.atom_cache = {}

    def gen(self, k):
        if k >= 0:
            return self.table[k]
        a = -1 - k
        if a not in self.atom_cache:
            self.atom_cache[a] = stop_gradient(self.expr(json.loads(self.atoms[a])))
        return self.atom_cache[a]

    def expr(self, terms):
        """Canonical Add of canonical Muls, built in SymPy's argument order."""
        factors, out, const = {}, [], sp.S.Zero
        for num, den, mono in terms:
            fs = []
            for k, e in mono:
                key = (k, e)
                if key not in factors:
                    g = self.gen(k)
                    factors[key] = g if e == 1 else sp.Pow(g, e)
                fs.append(factors[key])
            c = sp.Rational(num, den)
            if not fs:
                const += c
                continue
            out.append((c, fs))
        return polydiff.canonical_sum(out, const)


def encode_flow(flow: EdgeFlow) -> dict:
    """The forces of a flow as JSON-ready polynomial data (raises NotEncodable)."""
    enc = _Encoder(_symbol_table(flow.loss))
    blocks = {}
    for kind, forces in (("forces", flow.forces), ("forces_with_sg", flow.forces_with_sg)):
        blocks[kind] = [[b, list(F.shape), [enc.expr(e) for e in F]] for b, F in forces]
    return {"atoms": enc.atoms, **blocks}


def decode_flow(loss: EdgeLoss, data: dict) -> EdgeFlow:
    """Rebuild the EdgeFlow of ``loss`` from :func:`encode_flow` data."""
    out = _decode_forces(loss, data)
    return EdgeFlow(loss, out["forces"], out["forces_with_sg"])


def _decode_forces(loss: EdgeLoss, data: dict) -> dict:
    dec = _Decoder(_symbol_table(loss), data["atoms"])
    out = {}
    for kind in ("forces", "forces_with_sg"):
        out[kind] = tuple((b, sp.ImmutableMatrix(shape[0], shape[1], [dec.expr(t) for t in entries]))
                          for b, shape, entries in data[kind])
    return out


def _check_entry_shape(loss: EdgeLoss, data: dict) -> None:
    """The structure of an entry (blocks, shapes, entry counts) without building expressions."""
    if not isinstance(data.get("atoms"), list):
        raise ValueError("atoms missing")
    for kind in ("forces", "forces_with_sg"):
        for b, shape, entries in data[kind]:
            if tuple(shape) != tuple(loss.block(b).shape) or len(entries) != shape[0] * shape[1]:
                raise ValueError(f"{kind} of block {b!r}: shape {shape} does not match the loss")


class CachedEdgeFlow(EdgeFlow):
    """An EdgeFlow read from the cache whose SymPy forces are rebuilt on first use (a warm
    compile from cached kernels never needs them). An entry that fails to decode then is
    discarded, with a CacheWarning, and the flow derived afresh."""

    def __init__(self, loss: EdgeLoss, data: dict, path: Path):
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "_entry", (data, path))

    def _decoded(self) -> dict:
        if "_forces" not in self.__dict__:
            data, path = self.__dict__["_entry"]
            try:
                out = _decode_forces(self.loss, data)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError, SyntaxError) as exc:
                _remove(path)
                warn_discarded(self.loss, f"could not be decoded ({type(exc).__name__}: {exc})")
                fresh = derive_flow(self.loss)
                store(self.loss, fresh)
                out = {"forces": fresh.forces, "forces_with_sg": fresh.forces_with_sg}
            object.__setattr__(self, "_forces", out)
        return self.__dict__["_forces"]

    @property
    def forces(self) -> tuple:
        return self._decoded()["forces"]

    @property
    def forces_with_sg(self) -> tuple:
        return self._decoded()["forces_with_sg"]


# --- read / write --------------------------------------------------------------------------
def _checksum(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _read(loss: EdgeLoss, path: Path):
    """The verified JSON payload of an entry, or None (absent, stale key, bad checksum; an
    unreadable or corrupted file is also removed, with a CacheWarning)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        head, payload = raw.split(b"\n", 1)
        header = json.loads(head)
        if header.get("format") != FORMAT or header.get("key") != loss_key(loss):
            return None  # another engine version or loss: expected, overwritten on store
        if header.get("sha256") != _checksum(payload):
            raise ValueError("checksum mismatch")
        return json.loads(payload)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        _remove(path)
        warn_discarded(loss, f"could not be read ({type(exc).__name__}: {exc})")
        return None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def load(loss: EdgeLoss, path: Path | None = None) -> EdgeFlow | None:
    """The cached flow of ``loss``, or None if absent, stale, corrupted or unreadable."""
    path = entry_path(loss) if path is None else path
    data = _read(loss, path)
    if data is None:
        return None
    try:
        _check_entry_shape(loss, data)
        return CachedEdgeFlow(loss, data, path)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, SyntaxError) as exc:
        _remove(path)
        warn_discarded(loss, f"could not be decoded ({type(exc).__name__}: {exc})")
        return None


def load_kernels(loss: EdgeLoss) -> dict | None:
    """The cached generated source of the compiled moment-path kernels, or None.

    The source is executed when loaded (like Python's own bytecode cache, the folder must
    be the user's own); the kernels then pass the compile-time finite-difference check
    before any use, so a wrong entry is refused and rebuilt.
    """
    if not enabled():
        return None
    path = kernels_path(loss)
    data = _read(loss, path)
    if data is None:
        return None
    problem = _kernel_schema_problem(data)
    if problem:
        _remove(path)
        warn_discarded(loss, f"(kernel sources) is malformed: {problem}")
        return None
    return data


def _kernel_schema_problem(data) -> str | None:
    """Why ``data`` is not a kernel-source entry of :func:`kernels.kernel_sources`, or None.

    Checks the layout and that every source compiles (it is not executed here)."""
    if not isinstance(data, dict) or not isinstance(data.get("fast"), bool):
        return "no boolean 'fast'"
    if not data["fast"]:
        return None
    for key, kind in (("affine", dict), ("moment", dict), ("moment_symbols", list)):
        if not isinstance(data.get(key), kind):
            return f"no {kind.__name__} {key!r}"
    sources = list(data["moment"].values())
    for coefs in data["affine"].values():
        if not isinstance(coefs, dict):
            return "an 'affine' block is not a dict"
        for spec in coefs.values():
            if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str)
                    and isinstance(spec[1], list)):
                return "an 'affine' coefficient is not [kind, shape, source]"
            if spec[2] is not None:
                sources.append(spec[2])
    if not all(isinstance(n, str) and n.isidentifier() for n in data["moment_symbols"]):
        return "'moment_symbols' are not names"
    for src in sources:
        if not isinstance(src, str):
            return "a kernel source is not text"
        try:
            compile(src, "<symcollapse-cached-kernel>", "exec")
        except (SyntaxError, ValueError) as exc:
            return f"a kernel source does not compile ({exc.__class__.__name__})"
    return None


def store_kernels(loss: EdgeLoss, sources: dict) -> Path | None:
    """Write the kernel sources of ``loss`` atomically (no-op when the cache is disabled)."""
    if not enabled():
        return None
    return _write(loss, kernels_path(loss), json.dumps(sources, separators=(",", ":")).encode())


def store(loss: EdgeLoss, flow: EdgeFlow, path: Path | None = None) -> Path | None:
    """Write the entry atomically (temp file + rename); None if it cannot be encoded or written."""
    path = entry_path(loss) if path is None else path
    try:
        payload = json.dumps(encode_flow(flow), separators=(",", ":")).encode()
    except NotEncodable:
        return None
    return _write(loss, path, payload)


def _write(loss: EdgeLoss, path: Path, payload: bytes) -> Path | None:
    header = json.dumps({"format": FORMAT, "key": loss_key(loss), "loss": loss.name,
                         "sha256": _checksum(payload)}).encode()
    try:
        atomic_write_bytes(path, header + b"\n" + payload)
    except (OSError, SymcollapseError):
        return None  # a read-only or full disk only costs the cache, never the result
    return path


def lookup(loss: EdgeLoss) -> tuple[EdgeFlow, bool]:
    """(flow, from_cache): the cached flow of ``loss`` if a valid entry exists, else derived
    now and stored (unless the cache is disabled)."""
    if not enabled():
        return derive_flow(loss), False
    flow = load(loss)
    if flow is not None:
        return flow, True
    flow = derive_flow(loss)
    store(loss, flow)
    return flow, False


def cached_derive_flow(loss: EdgeLoss) -> EdgeFlow:
    """derive_flow(loss), read from the on-disk cache when a valid entry exists."""
    return lookup(loss)[0]


def discard(loss: EdgeLoss) -> None:
    """Remove the entries of ``loss`` (e.g. after one failed a numerical self-check)."""
    for p in (entry_path(loss), kernels_path(loss)):
        try:
            p.unlink()
        except OSError:
            pass


def clear() -> int:
    """Delete every cache entry; returns the number removed."""
    n = 0
    for p in [*cache_dir().glob("flow-*.json"), *cache_dir().glob("kern-*.json"),
              *cache_dir().glob("mcheck-*.json")]:
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


# --- matrix-level derivations: the cross-check record -------------------------------------------
def _matrix_digest(loss) -> str:
    """sha256 of a MatrixEdgeLoss (srepr of ℓ, its symbols, learned set and rates)."""
    parts = [sp.srepr(loss.expr), repr([(b, sp.srepr(m)) for b, m in loss.symbols.items()]),
             repr(sorted(loss.learned)), repr([(b, sp.srepr(r)) for b, r in loss.rates])]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def matrix_check_path(loss) -> Path:
    key = hashlib.sha256(f"{engine_fingerprint()}:{_matrix_digest(loss)}".encode()).hexdigest()
    return cache_dir() / f"mcheck-{key[:40]}.json"


def matrix_check_passed(loss) -> bool:
    """True if the component cross-check of this matrix-level derivation passed before with this
    engine (the derivation itself is redone, in milliseconds; the kernels are re-checked numerically)."""
    if not enabled():
        return False
    path = matrix_check_path(loss)
    try:
        raw = path.read_bytes()
        head, payload = raw.split(b"\n", 1)
        header = json.loads(head)
        return (header.get("key") == path.stem[len("mcheck-"):] and header.get("sha256") == _checksum(payload)
                and json.loads(payload).get("passed") is True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def store_matrix_check(loss, report: dict) -> Path | None:
    """Record that the cross-check passed (atomic write; no-op when the cache is disabled)."""
    if not enabled():
        return None
    path = matrix_check_path(loss)
    payload = json.dumps({"passed": True, "loss": loss.name, "checked": report}, separators=(",", ":")).encode()
    header = json.dumps({"format": FORMAT, "key": path.stem[len("mcheck-"):], "sha256": _checksum(payload)}).encode()
    try:
        atomic_write_bytes(path, header + b"\n" + payload)
    except (OSError, SymcollapseError):
        return None
    return path
