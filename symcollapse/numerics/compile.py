r"""Compile a derived (component-level) edge flow into NumPy kernels (lambdify with CSE), built once per loss.

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

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from .. import cache
from ..errors import DerivationCheckError, InvalidParameterError
from ..symbolic.flow import EdgeFlow, derive_flow
from ..symbolic.loss import EdgeLoss
from ..symbolic.stopgrad import freeze_stop_gradient
from .kernel_cache import _kernels_from_sources, kernel_sources, loss_kernel_from_source
from .lambdify import LazyKernels, lambdify_list
from .selfcheck import verify_flow, verify_jacobian
from .structure import _affine_structure, _moment_structure


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


def compile_loss(loss: EdgeLoss, check: bool = True) -> CompiledFlow:
    """Derive the flow of ``loss`` and compile it (see :func:`_compile_loss`); arguments are
    checked first (an EdgeLoss, check a bool)."""
    if not isinstance(loss, EdgeLoss):
        raise InvalidParameterError(f"loss must be an EdgeLoss; got {type(loss).__name__}")
    if not isinstance(check, bool):
        raise InvalidParameterError(f"check must be True or False; got {check!r}")
    return _compile_loss(loss, check)


@lru_cache(maxsize=None)
def _compile_loss(loss: EdgeLoss, check: bool = True) -> CompiledFlow:
    """Derive the flow of ``loss`` and compile it; cached per loss in this process, and the
    derivation on disk (:mod:`symcollapse.cache`; the compiled kernels are re-checked)."""
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


compile_loss.cache_clear = _compile_loss.cache_clear  # the in-process cache, as before
compile_loss.cache_info = _compile_loss.cache_info


def _rederive_on_deferred_failure(compiled: CompiledFlow) -> None:
    """A cached flow whose deferred checks (edge kernels, Jacobian) fail is discarded, derived
    afresh and swapped into ``compiled`` once, with a warning; a second failure raises."""
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
    # (a cached loss kernel is used only after it equals the expression at a random point)
    cached = kernels or {}
    frozen_expr = freeze_stop_gradient(loss.expr, frozen)
    loss_fn = (loss_kernel_from_source(cached.get("loss"), edge_args, loss.value())
               or lambdify_list(edge_args, [loss.value()], cse=False))
    frozen_loss_fn = (loss_kernel_from_source(cached.get("frozen_loss"), edge_args + frozen_args, frozen_expr)
                      or lambdify_list(edge_args + frozen_args, [frozen_expr], cse=False))
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
