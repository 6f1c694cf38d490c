r"""Compile a derived edge flow into NumPy kernels (lambdify with CSE), built once per loss.

Two evaluation paths share one derivation:
- the *edge* path evaluates F_b on every edge and scatters with sparse incidence matrices
  (any loss);
- the *moment* path is used when the node forces are affine in the node variables z and
  the shared forces are quadratic in z (every MSE loss): then
  Σ_c P_ic F_x(i, c) = D_i (c_x + A_xx x_i + A_xu u_i) + A_xy (P Y)_i and
  Σ_e p_e F_θ(e) = f(θ; M₀, M₁, M₂) with the moments M₂ = Σ_e p_e z_e z_eᵀ, M₁ = Σ_e p_e z_e,
  M₀ = Σ_e p_e — a few dense matrix products, as fast as a hand-written flow.
Both are checked against each other and against central finite differences of the compiled
loss before a kernel is handed out (:func:`verify_compiled`).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from ..errors import DerivationCheckError
from ..tolerance import within
from ..symbolic import polydiff
from ..symbolic.flow import EdgeFlow, derive_flow
from ..symbolic.loss import LABEL, SAMPLE, EdgeLoss
from ..symbolic.stopgrad import freeze_stop_gradient


CSE_MAX_TERMS = 400  # above this many additive terms cse costs more than it saves


def lambdify_list(args, exprs, cse: bool | None = None):
    """lambdify a list of expressions; common-subexpression elimination for small lists
    (``cse=None``: automatic — on large flat polynomial lists cse dominates the compile time
    and the generated code is not faster)."""
    exprs = [sp.sympify(e) for e in exprs]
    if not exprs:
        return lambda *a: []
    if cse is None:
        cse = sum(len(sp.Add.make_args(e)) for e in exprs) <= CSE_MAX_TERMS
    fn = sp.lambdify(list(args), exprs, modules="numpy", cse=cse, docstring_limit=0)
    return fn


class LazyKernels(Mapping):
    """block -> lambdified kernel, each built on first use (``builder(block)``); ``on_first``
    runs once after the first kernel is built (used for the deferred self-check)."""

    def __init__(self, keys, builder, on_first=None):
        self._keys = tuple(keys)
        self._builder = builder
        self._built = {}
        self._on_first = on_first

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._built:
            first = not self._built
            self._built[key] = self._builder(key)
            if first and self._on_first is not None:
                hook, self._on_first = self._on_first, None
                for k in self._keys:  # the check evaluates every block
                    if k not in self._built:
                        self._built[k] = self._builder(k)
                try:
                    hook()
                except BaseException:
                    self._built.clear()
                    self._on_first = hook
                    raise
        return self._built[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def _stack(values, shape, n=None):
    """Turn a list of scalars/arrays (lambdify output) into an array of shape (n, *shape)."""
    if n is None:
        return np.array(values, dtype=float).reshape(shape)
    out = np.empty((n, int(np.prod(shape))))
    for k, v in enumerate(values):
        out[:, k] = v
    return out.reshape((n,) + tuple(shape))


@dataclass(frozen=True)
class AffineCoefficient:
    """A d_out×d_in coefficient matrix of shared parameters: zero, a·I, or general."""

    kind: str  # "zero" | "scalar" | "general"
    fn: object
    shape: tuple

    def __call__(self, shared_args):
        if self.kind == "zero":
            return 0.0
        val = self.fn(*shared_args)
        if self.kind == "scalar":
            return float(np.asarray(val[0]))
        return np.array(val, dtype=float).reshape(self.shape)


def _affine_coefficient(M: sp.Matrix, shared_args) -> AffineCoefficient:
    M = sp.Matrix(M)
    if all(e == 0 for e in M):
        return AffineCoefficient("zero", None, M.shape)
    square = M.shape[0] == M.shape[1]
    diagonal = square and all(M[r, k] == 0 for r in range(M.shape[0]) for k in range(M.shape[1]) if r != k)
    if diagonal and len(set(M.diagonal())) == 1:
        return AffineCoefficient("scalar", lambdify_list(shared_args, [M[0, 0]]), M.shape)
    return AffineCoefficient("general", lambdify_list(shared_args, list(M)), M.shape)


@dataclass(frozen=True, eq=False)
class CompiledFlow:
    """Numeric kernels of one derived flow (independent of the graph and of N)."""

    flow: EdgeFlow
    edge_args: tuple  # node symbols z, then shared symbols, then loss parameters
    shared_args: tuple  # shared symbols then parameters
    edge_force: dict  # block -> f(*edge_args) -> list of entries of F_b
    loss_fn: object  # ℓ(*edge_args)
    frozen_loss_fn: object  # ℓ with sg(a) -> a(θ₀): f(*edge_args, *frozen_args)
    frozen_args: tuple
    affine: dict | None  # block -> {"c": coef, "x": coef, "u": coef, "y": coef}
    moment: dict | None  # shared block -> (fn(*shared_args, *moment_syms), moment index list)
    moment_symbols: tuple

    check: bool = True

    @cached_property
    def edge_jac(self) -> dict:
        """(b, b2) -> (rows, cols, f(*edge_args) -> non-zero entries of ∂F_b/∂θ_b2), built lazily.

        Built (and checked against finite differences of the flow) on first use only, since
        the Jacobian of a large head costs more to derive than the flow.
        """
        out = {}
        for key, entries in self.flow.edge_jacobian.items():
            if not entries:
                continue
            rows = np.array([r for r, _, _ in entries], dtype=np.int64)
            cols = np.array([c for _, c, _ in entries], dtype=np.int64)
            out[key] = (rows, cols, lambdify_list(self.edge_args, [e for _, _, e in entries]))
        self.__dict__["edge_jac"] = out  # cache before the check, which uses it
        if self.check:
            try:
                verify_jacobian(self)
            except DerivationCheckError as exc:
                del self.__dict__["edge_jac"]
                recover = self.__dict__.get("_recover")  # set for a flow read from the cache
                if recover is None:
                    raise
                recover(exc)
                return self.edge_jac
        return out

    @property
    def loss(self) -> EdgeLoss:
        return self.flow.loss

    @property
    def fast(self) -> bool:
        """True if the moment (matrix-product) path applies."""
        return self.affine is not None and self.moment is not None


def _node_parts(loss: EdgeLoss):
    return {"x": tuple(loss.x), "u": tuple(loss.data_symbols), "y": tuple(loss.y)}


def _affine_structure(flow: EdgeFlow, shared_args):
    """F_b = c_b + A_bx x + A_bu u + A_by y for node blocks b, or None if not affine."""
    loss = flow.loss
    z = set(loss.node_symbols)
    parts = _node_parts(loss)
    out = {}
    for b in (SAMPLE, LABEL):
        if b not in flow.learned:
            continue
        F = sp.Matrix(flow.force(b))
        coefs = {}
        for key, syms in parts.items():
            if not syms:
                coefs[key] = AffineCoefficient("zero", None, (len(F), 0))
                continue
            J = sp.Matrix(len(F), len(syms), lambda r, k: 0)
            for r, e in enumerate(F):
                for k, (sym, de) in enumerate(polydiff.gradient(e, syms).items()):
                    J[r, k] = de
            if any(e.free_symbols & z for e in J):
                return None
            coefs[key] = _affine_coefficient(J, shared_args)
        c = F.xreplace({s: 0 for s in z})
        coefs["c"] = (AffineCoefficient("general", lambdify_list(shared_args, list(c)), (len(F),))
                      if any(e != 0 for e in c) else AffineCoefficient("zero", None, (len(F), 1)))
        out[b] = coefs
    return out


def _moment_structure(flow: EdgeFlow, shared_args):
    """Σ_e p_e F_θ(e) as a function of the moments M₀, M₁, M₂ of z, or None if not quadratic."""
    loss = flow.loss
    z = list(loss.node_symbols)
    nz = len(z)
    zset = set(z)
    zpos = {v: p for p, v in enumerate(z)}
    m0 = sp.Symbol("M0")
    m1 = [sp.Symbol(f"M1_{p}") for p in range(nz)]
    m2 = {(p, q): sp.Symbol(f"M2_{p}_{q}") for p in range(nz) for q in range(p, nz)}
    msyms = (m0, *m1, *m2.values())
    out = {}
    for b in loss.shared_names:
        if b not in flow.learned:
            continue
        exprs = []
        for e in flow.force(b):
            if not z:
                exprs.append(e * m0)
                continue
            acc = []
            for t in polydiff.terms(e):
                split = polydiff.split_monomial(t, zset)
                if split is None or len(split[1]) > 2:
                    return None, msyms
                coeff, zs = split
                idx = sorted(zpos[v] for v in zs)
                if len(idx) == 0:
                    acc.append(coeff * m0)
                elif len(idx) == 1:
                    acc.append(coeff * m1[idx[0]])
                else:
                    acc.append(coeff * m2[(idx[0], idx[1])])
            exprs.append(sp.Add(*acc))
        out[b] = lambdify_list(tuple(shared_args) + msyms, exprs)
    return out, msyms


@lru_cache(maxsize=None)
def compile_loss(loss: EdgeLoss, check: bool = True) -> CompiledFlow:
    """Derive the flow of ``loss`` and compile it; cached per loss in this process, and the
    derivation on disk (:mod:`symcollapse.cache`; the compiled kernels are re-checked)."""
    from .. import cache

    flow, from_cache = cache.lookup(loss)
    kernels = cache.load_kernels(loss) if from_cache else None
    try:
        compiled = compile_flow(flow, check=check, kernels=kernels)
    except (DerivationCheckError, SyntaxError, NameError, KeyError, TypeError, ValueError,
            IndexError, AttributeError) as exc:
        if not from_cache:
            raise
        # a cached entry that fails to load or its check is discarded and rebuilt, once
        cache.warn_discarded(loss, f"failed its check ({type(exc).__name__}: {exc})")
        cache.discard(loss)
        flow = derive_flow(loss)
        compiled = compile_flow(flow, check=check)
        cache.store(loss, flow)
        kernels = None
    else:
        if from_cache and check:
            _rederive_on_deferred_failure(compiled)
    if kernels is None and check:
        src = kernel_sources(compiled)
        if src is not None:
            cache.store_kernels(loss, src)
    return compiled


def _rederive_on_deferred_failure(compiled: CompiledFlow) -> None:
    """A cached flow whose deferred checks (edge kernels, Jacobian) fail is discarded, derived
    afresh and swapped into ``compiled`` once, with a warning; a second failure raises."""
    from .. import cache

    loss = compiled.loss
    state = {"done": False}

    def recover(exc):
        if state["done"]:
            raise exc
        state["done"] = True
        cache.warn_discarded(loss, f"failed a deferred check ({exc})")
        cache.discard(loss)
        fresh = derive_flow(loss)
        object.__setattr__(compiled, "flow", fresh)
        ef = compiled.edge_force
        ef._builder = lambda b: lambdify_list(compiled.edge_args, list(fresh.force(b)))
        ef._on_first = None
        ef._built.clear()
        for b in ef:
            ef._built[b] = ef._builder(b)
        compiled.__dict__.pop("edge_jac", None)
        verify_flow(compiled)
        cache.store(loss, fresh)

    hook = compiled.edge_force._on_first
    if hook is not None:
        def first():
            try:
                hook()
            except DerivationCheckError as exc:
                recover(exc)
        compiled.edge_force._on_first = first
    compiled.__dict__["_recover"] = recover


def kernel_sources(compiled: CompiledFlow) -> dict | None:
    """The generated source of the moment-path kernels (for the on-disk cache), or None."""
    import inspect

    if not compiled.fast:
        return {"fast": False}
    try:
        affine = {b: {k: [c.kind, list(c.shape), inspect.getsource(c.fn) if c.fn is not None else None]
                      for k, c in coefs.items()} for b, coefs in compiled.affine.items()}
        moment = {b: inspect.getsource(fn) for b, fn in compiled.moment.items()}
    except (OSError, TypeError):
        return None
    return {"fast": True, "affine": affine, "moment": moment,
            "moment_symbols": [m.name for m in compiled.moment_symbols]}


def _from_source(src: str):
    """Rebuild a lambdified NumPy function from its generated source."""
    ns = {}
    exec("import numpy\nfrom numpy import *", ns)  # the namespace lambdify(modules='numpy') uses
    exec(compile(src, "<symcollapse-cached-kernel>", "exec"), ns)
    return ns["_lambdifygenerated"]


def _kernels_from_sources(data: dict):
    if not data.get("fast"):
        return None, None, ()
    affine = {b: {k: AffineCoefficient(kind, _from_source(src) if src is not None else None, tuple(shape))
                  for k, (kind, shape, src) in coefs.items()} for b, coefs in data["affine"].items()}
    moment = {b: _from_source(src) for b, src in data["moment"].items()}
    return affine, moment, tuple(sp.Symbol(n) for n in data["moment_symbols"])


def compile_flow(flow: EdgeFlow, check: bool = True, kernels: dict | None = None) -> CompiledFlow:
    """Lambdify forces, per-edge Jacobians and the loss; verify them unless ``check=False``.

    ``kernels`` (from :func:`kernel_sources`, e.g. read from the cache) replaces deriving and
    lambdifying the moment-path kernels; they are checked exactly like fresh ones.
    """
    loss = flow.loss
    shared_args = tuple(loss.shared_symbols) + tuple(loss.parameters)
    edge_args = tuple(loss.node_symbols) + shared_args
    edge_force = LazyKernels(flow.learned, lambda b: lambdify_list(edge_args, list(flow.force(b))))
    frozen = {s: sp.Symbol(f"{s.name}__sg", real=True) for s in loss.variables}
    frozen_args = tuple(frozen[s] for s in loss.variables)
    # the loss (the reference of every check) is always compiled from the user's expression
    # (compact user expressions: cse costs more to build than it saves in evaluation)
    loss_fn = lambdify_list(edge_args, [loss.value()], cse=False)
    frozen_loss_fn = lambdify_list(edge_args + frozen_args, [freeze_stop_gradient(loss.expr, frozen)],
                                   cse=False)
    if kernels is not None:
        affine, moment, msyms = _kernels_from_sources(kernels)
    else:
        affine = _affine_structure(flow, shared_args)
        moment, msyms = _moment_structure(flow, shared_args)
    if affine is None or moment is None:
        affine = moment = None
    compiled = CompiledFlow(flow, edge_args, shared_args, edge_force, loss_fn,
                            frozen_loss_fn, frozen_args, affine, moment, msyms, check)
    if check:
        # the path FlowSystem uses by default is checked now against finite differences of
        # the loss; the edge kernels of a moment-path flow are built (and checked, edge vs
        # finite differences and vs the moment path) when first used
        if compiled.fast:
            edge_force._on_first = lambda: verify_flow(compiled)
            verify_flow(compiled, paths=("moment",))
        else:
            verify_flow(compiled)
    return compiled


def relative_error(a, b) -> float:
    """‖a − b‖_∞ / max(‖b‖_∞, 1e-300)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-300)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def _check_instance(compiled: CompiledFlow, seed: int):
    """A small random graph, rates, data and frozen blocks for the self-checks."""
    rng = np.random.default_rng(seed)
    loss = compiled.loss
    N, K = 5, 3
    P = rng.uniform(0.2, 1.0, size=(N, K)) * (rng.uniform(size=(N, K)) < 0.7)
    P[np.arange(N), np.arange(N) % K] += 1.0
    kw = dict(
        rates={b: float(rng.uniform(0.5, 1.5)) for b in loss.blocks},
        params={p.name: float(rng.uniform(0.5, 1.5)) for p in loss.parameters},
        data=rng.normal(size=(N, len(loss.data_symbols))) if loss.data_symbols else None,
        frozen={b: rng.normal(size=loss.block(b).shape) for b in loss.shared_names
                if b not in compiled.flow.learned},
    )
    return rng, P, kw


def verify_flow(compiled: CompiledFlow, seed: int = 12345, tol: float = 1e-6,
                paths: tuple | None = None) -> dict:
    """Check the flow kernels at random points on a small random graph; raise on disagreement.

    flow = −η ∂L/∂θ by central differences of the compiled loss with every sg held at its
    value, on each evaluation path (default: all that apply); moment path = edge path.
    Returns the relative errors.
    """
    from .system import FlowSystem  # local import: system builds on this module

    rng, P, kw = _check_instance(compiled, seed)
    name = compiled.loss.name
    errors = {}
    ref = None
    if paths is None:
        paths = ("edge", "moment") if compiled.fast else ("edge",)
    for path in paths:
        sysm = FlowSystem(compiled, P, path=path, **kw)
        if ref is None:
            v = rng.normal(size=sysm.size)
        f = sysm.flow_vector(v)
        if not np.all(np.isfinite(f)):
            raise DerivationCheckError(f"{name}: the compiled flow is not finite at a random point")
        fd = -sysm.rate_vector * sysm.frozen_loss_gradient_fd(v)
        if not np.all(np.isfinite(fd)):
            raise DerivationCheckError(
                f"{name}: the loss is not finite near a random real point, so the compiled flow "
                "cannot be checked (is the loss defined for all real x, y and parameters?)")
        err = relative_error(f, fd)
        errors[f"flow ({path} path) vs central differences of the loss"] = err
        if not within(err, tol):
            raise DerivationCheckError(
                f"{name}: compiled flow ({path} path) disagrees with finite differences of the "
                f"loss: relative error {err:.3e} > {tol:g}")
        if ref is not None:
            err = relative_error(f, ref)
            errors["moment path vs edge path"] = err
            if not within(err, 1e-10):
                raise DerivationCheckError(
                    f"{name}: moment path and edge path disagree: relative error {err:.3e}")
        ref = f
    return errors


def verify_jacobian(compiled: CompiledFlow, seed: int = 54321, tol: float = 1e-6) -> dict:
    """Check the assembled Jacobian against central differences of the compiled flow."""
    from .system import FlowSystem

    rng, P, kw = _check_instance(compiled, seed)
    sysm = FlowSystem(compiled, P, **kw)
    v = rng.normal(size=sysm.size)
    err = relative_error(sysm.jacobian(v).toarray(), sysm.flow_jacobian_fd(v))
    if not within(err, tol):
        raise DerivationCheckError(
            f"{compiled.loss.name}: compiled Jacobian disagrees with finite differences of the "
            f"flow: relative error {err:.3e} > {tol:g}")
    return {"jacobian vs central differences of the flow": err}


def verify_compiled(compiled: CompiledFlow) -> dict:
    """Both checks: the flow at compile time, the Jacobian (builds its kernels)."""
    errs = verify_flow(compiled)
    compiled.edge_jac  # noqa: B018  (building it runs verify_jacobian)
    errs.update(verify_jacobian(compiled))
    return errs


def moment_index(nz: int):
    """Order of the moment symbols (M0, M1_p…, M2_pq for p ≤ q) used by the moment kernels."""
    return [(p, q) for p, q in itertools.combinations_with_replacement(range(nz), 2)]
