r"""Composable engine terms: θ̇ = (gradient term of a loss) + (relaxation terms) (docs/model.md §6).

- :class:`GradientTerm` — θ̇_b = −s η_b ∂L/∂θ_b (sg held fixed): the compiled, assembled flow of
  an edge loss (a :class:`~symcollapse.numerics.system.FlowSystem`).
- :class:`RelaxationTerm` — θ̇_target = τ(θ_source − θ_target) (an EMA target, ξ̇ = τ(θ − ξ)), or,
  without a source, θ̇ = −λθ (weight decay). Not the gradient of anything.
- :class:`ComposedSystem` — their sum, with the FlowSystem's interface (``flow_vector``,
  ``jacobian``, ``pack``/``unpack``, ``loss``), optionally presenting column ranges of the
  loss's blocks as named blocks of their own (the EMA model stores (θ, ξ) per node).
- :func:`verify_terms` — the self-check: the gradient term against central differences of the
  loss (sg held at the state), every relaxation term against its definition evaluated block by
  block (an independent path), and the composed Jacobian against central differences of the
  composed flow. A disagreement (or a non-finite error) raises DerivationCheckError.

This module sits on top of the compiled system; it changes nothing inside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps

from ..errors import DerivationCheckError, InvalidParameterError
from ..validation import check_rate
from .finite_differences import central_jacobian
from .system import FlowSystem


@dataclass(frozen=True)
class BlockColumns:
    """Columns [start, stop) of a block of the gradient system's layout (all columns if None)."""

    block: str
    start: int | None = None
    stop: int | None = None

    def indices(self, layout: dict) -> np.ndarray:
        if self.block not in layout:
            raise InvalidParameterError(f"block must be one of {tuple(layout)}; got {self.block!r}")
        off, shape = layout[self.block]
        rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, int(np.prod(shape)))
        lo = 0 if self.start is None else self.start
        hi = cols if self.stop is None else self.stop
        if not 0 <= lo < hi <= cols:
            raise InvalidParameterError(f"columns of block {self.block!r} must lie in [0, {cols}); got [{lo}, {hi})")
        return (off + np.arange(rows)[:, None] * cols + np.arange(lo, hi)[None, :]).ravel()

    def take(self, blocks: dict) -> np.ndarray:
        a = np.asarray(blocks[self.block], dtype=float)
        a = a.reshape(a.shape[0], -1) if a.ndim == 2 else a.reshape(1, -1)
        return a[:, slice(self.start, self.stop)]


class GradientTerm:
    """θ̇ = −s·H ∂L/∂θ (stop-gradients held): the assembled flow of a compiled edge loss."""

    def __init__(self, system: FlowSystem):
        self.system = system

    def flow_vector(self, v: np.ndarray) -> np.ndarray:
        return self.system.flow_vector(v)

    def jacobian(self, v: np.ndarray) -> sps.csr_matrix:
        return self.system.jacobian(v)

    def reference(self, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
        """−s η ∂L(θ; θ₀)/∂θ at θ = θ₀ = v by central differences of the loss (sg held at v)."""
        return -self.system.scale * self.system.rate_vector * self.system.frozen_loss_gradient_fd(v, h)


class RelaxationTerm:
    r"""θ̇_target = rate·(θ_source − θ_target) (EMA, ξ̇ = τ(θ − ξ)); without source: −rate·θ_target."""

    def __init__(self, layout: dict, target: BlockColumns, rate: float, source: BlockColumns | None = None,
                 name: str = "relaxation"):
        self.rate = check_rate("rate", rate)
        self.target, self.source, self.name = target, source, name
        self._t = target.indices(layout)
        self._s = source.indices(layout) if source is not None else None
        if self._s is not None and len(self._s) != len(self._t):
            raise InvalidParameterError(f"source and target of {name} must have the same size; "
                                        f"got {len(self._s)} and {len(self._t)}")
        self.size = sum(int(np.prod(s)) for _, s in layout.values())

    def flow_vector(self, v: np.ndarray) -> np.ndarray:
        out = np.zeros(self.size)
        src = v[self._s] if self._s is not None else 0.0
        out[self._t] = self.rate * (src - v[self._t])
        return out

    def jacobian(self, v=None) -> sps.csr_matrix:
        rows = [self._t]
        cols = [self._t]
        vals = [np.full(len(self._t), -self.rate)]
        if self._s is not None:
            rows.append(self._t)
            cols.append(self._s)
            vals.append(np.full(len(self._t), self.rate))
        return sps.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(self.size, self.size))

    def reference_blocks(self, blocks: dict) -> tuple[BlockColumns, np.ndarray]:
        """The definition evaluated on the blocks: (target, rate·(θ_source − θ_target))."""
        tgt = self.target.take(blocks)
        src = self.source.take(blocks) if self.source is not None else 0.0
        return self.target, self.rate * (src - tgt)


class ComposedSystem:
    """Σ of engine terms over the gradient system's state, with the FlowSystem's interface.

    ``views`` = {name: BlockColumns}: the blocks the model sees (e.g. 'x' = columns [0, d) of
    the loss's node block, 'xi_x' = columns [d, 2d)); without views, the gradient system's blocks.
    """

    def __init__(self, gradient: FlowSystem, terms=(), views: dict | None = None):
        self.gradient = gradient
        self.terms = (GradientTerm(gradient),) + tuple(terms)
        self.graph = gradient.graph
        self.layout = gradient.layout
        self.views = dict(views) if views else None
        self._base_unpack = gradient.unpack

    @property
    def size(self) -> int:
        return self.gradient.size

    @property
    def block_names(self) -> tuple:
        return tuple(self.views) if self.views else tuple(self.layout)

    # --- state ------------------------------------------------------------------------------
    def unpack(self, v) -> dict:
        base = self._base_unpack(np.asarray(v, dtype=float))
        if not self.views:
            return base
        return {name: bc.take(base) for name, bc in self.views.items()}

    def pack(self, blocks: dict) -> np.ndarray:
        if not self.views:
            return self.gradient.pack(blocks)
        v = np.zeros(self.size)
        for name, bc in self.views.items():
            if name not in blocks:
                raise InvalidParameterError(f"state must hold the blocks {self.block_names}; {name!r} is missing")
            idx = bc.indices(self.layout)
            a = np.asarray(blocks[name], dtype=float)
            if a.size != len(idx):
                raise InvalidParameterError(f"block {name!r} must have {len(idx)} entries; got shape {a.shape}")
            v[idx] = a.ravel()
        return v

    def base_blocks(self, blocks: dict) -> dict:
        """The gradient system's blocks of a (view) block dict."""
        return self._base_unpack(self.pack(blocks)) if self.views else blocks

    # --- flow -------------------------------------------------------------------------------
    def flow_vector(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        out = self.terms[0].flow_vector(v)
        for t in self.terms[1:]:
            out = out + t.flow_vector(v)
        return out

    def jacobian(self, v: np.ndarray) -> sps.csr_matrix:
        J = self.terms[0].jacobian(v)
        for t in self.terms[1:]:
            J = J + t.jacobian(v)
        return sps.csr_matrix(J)

    def loss(self, st: dict) -> float:
        """The gradient term's loss L (relaxation terms have none)."""
        return self.gradient.loss(self.base_blocks(st))

    def loss_vector(self, v) -> float:
        return self.gradient.loss_vector(v)


def verify_terms(system: ComposedSystem, v: np.ndarray, tol: float = 1e-6) -> dict:
    """Check every term at state v against an independent reference (see module docstring).

    Returns {'gradient': err, '<relaxation name>': err, ..., 'jacobian': err} (relative errors)."""
    v = np.asarray(v, dtype=float)
    errs = {}
    g = system.terms[0]
    ref = g.reference(v)
    errs["gradient"] = _rel(g.flow_vector(v), ref)
    base = system._base_unpack(v)
    for t in system.terms[1:]:
        target, expected = t.reference_blocks(base)
        got = np.zeros(system.size)
        got[target.indices(system.layout)] = expected.ravel()
        errs[t.name] = _rel(t.flow_vector(v), got)
    Jfd = central_jacobian(system.flow_vector, v)
    errs["jacobian"] = _rel(system.jacobian(v).toarray(), Jfd)
    bad = {k: e for k, e in errs.items() if not e <= tol}
    if bad:
        raise DerivationCheckError(f"engine terms disagree with their references: {bad} (tolerance {tol:g})")
    return errs


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
