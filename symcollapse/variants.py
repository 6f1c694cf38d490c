r"""The model variants of docs/model.md §5, built as edge losses for the one engine.

Each builder returns an :class:`~symcollapse.symbolic.loss.EdgeLoss`; the choices that are
not part of the edge loss (ω and the frustration pattern live in P, sum or mean in the loss
scale s) are bundled with it in a :class:`Variant`:

    embedding:  ℓ = ½‖x − y‖²
    head:       ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²),  t_y = sg(y) or y,  t_x = sg(x) or x
    student:    ℓ as above with x = S u (fixed per-sample input u, learned S)
    L = s · Σ_{i,c} P_ic ℓ(x_i, y_c),  s = 1 (sum) or 1/N (mean).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .errors import InvalidParameterError
from .symbolic import losses as _losses
from .symbolic.loss import EdgeLoss
from .validation import check_rate
from .numerics.graph import CouplingGraph
from .numerics.kernels import compile_loss
from .numerics.system import FlowSystem
from .symbolic.assemble import assemble_symbolic
from .symbolic.flow import derive_flow

#: the one stop-gradient vocabulary (symbolic/losses.py); "label"/"sample" still work and warn
SG_CHOICES = _losses.SG_CHOICES


def _check_sg(sg) -> str:
    return _losses.canonical_sg(sg, "sg")


def embedding_loss(d: int, *, rates: dict | None = None, name: str | None = None) -> EdgeLoss:
    """Model (a): ℓ(x, y) = ½‖x − y‖² in d dimensions."""
    return _losses.embedding_loss(d, rates=rates, name=name)


def head_loss(d: int, sg: str = "both", *, learn_head: bool = True, rates: dict | None = None,
              name: str | None = None) -> EdgeLoss:
    """Model (b): ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²), W ∈ R^{d×d} shared by both branches.

    sg = "both": t_y = sg(y), t_x = sg(x) (docs/model.md §3); "labels": only the label targets
    are detached (t_y = sg(y), t_x = x); "samples": only the sample targets; "none": the full
    gradient. ``learn_head=False`` freezes W (give its value to FlowSystem). The same object as
    ``HeadModel(P, d).loss`` for the same choices.
    """
    return _losses.head_loss(d, sg, learn_head, rates=rates, name=name, param="sg")


def student_loss(d: int, D: int, *, head: bool = False, sg: str = "both", rates: dict | None = None,
                 name: str | None = None) -> EdgeLoss:
    """Model (c): x = S u with fixed input u ∈ R^D and learned S ∈ R^{d×D};
    ℓ = ½‖S u − y‖² (head=False) or the head loss of :func:`head_loss` with x = S u."""
    return _losses.student_loss(d, D, head=head, stop_gradient=sg, rates=rates, name=name, param="sg")


@dataclass(frozen=True)
class Variant:
    """A loss with everything the edge loss does not fix: the couplings P (ω, frustration
    pattern), the loss scale s (sum: 1, mean: 1/N), numeric rates and frozen blocks."""

    loss: EdgeLoss
    P: np.ndarray
    scale: float = 1.0
    rates: dict = field(default_factory=dict)
    frozen: dict = field(default_factory=dict)

    def system(self, **kw):
        """The compiled, self-checked :class:`~symcollapse.numerics.system.FlowSystem`."""
        return FlowSystem(compile_loss(self.loss), self.P, rates=self.rates, scale=self.scale,
                          frozen=self.frozen or None, **kw)

    def _repr_latex_(self) -> str:
        """Notebook display: L = s Σ P_ic ℓ(x_i, y_c) with the edge loss written out."""
        N, K = self.P.shape
        s = sp.latex(sp.nsimplify(self.scale))
        return (rf"$L = {s} \sum_{{i,c}} P_{{ic}}\,\ell(x_i, y_c),\quad \ell = {sp.latex(self.loss.expr)}"
                rf",\quad P \in \mathbb{{R}}^{{{N}\times{K}}}$")

    def symbolic(self):
        """The flow written out on this (small) graph with symbolic rates (exact statements)."""
        scale = sp.nsimplify(self.scale)
        return assemble_symbolic(derive_flow(self.loss), sp.Matrix(self.P).applyfunc(sp.nsimplify),
                                 scale=scale, frozen={k: sp.Matrix(v).applyfunc(sp.nsimplify)
                                                      for k, v in self.frozen.items()} or None)


def make_variant(loss: EdgeLoss, P, *, mean: bool = False, rates: dict | None = None,
                 frozen: dict | None = None) -> Variant:
    """Bundle a loss with couplings P; ``mean=True`` uses L = (1/N) Σ P_ic ℓ (every η / N).

    ``rates`` maps blocks to numbers (default 1 for every learned block); ``frozen`` gives
    the values of frozen shared blocks (default: the identity for a frozen square head).
    """
    if not isinstance(loss, EdgeLoss):
        raise InvalidParameterError(f"loss must be an EdgeLoss; got {type(loss).__name__}")
    if not isinstance(mean, bool):
        raise InvalidParameterError(f"mean must be True or False; got {mean!r}")
    for what, given in (("rates", rates), ("frozen", frozen)):
        if given is not None and not isinstance(given, dict):
            raise InvalidParameterError(f"{what} must be a dict keyed by block name; got {type(given).__name__}")
    unknown = sorted(map(str, set(rates or {}) - set(loss.blocks)))
    if unknown:
        raise InvalidParameterError(f"rates names unknown blocks {unknown}; blocks are {loss.blocks}")
    frozen_blocks = tuple(b for b in loss.shared_names if b not in loss.learned)
    unknown = sorted(map(str, set(frozen or {}) - set(frozen_blocks)))
    if unknown:
        raise InvalidParameterError(f"frozen names blocks {unknown} that are not frozen shared blocks; "
                                    f"frozen blocks of this loss: {frozen_blocks}")
    g = CouplingGraph.from_couplings(P)
    rates = {b: check_rate(f"eta_{b}", v) for b, v in (rates or {}).items()}
    for b in loss.learned:
        rates.setdefault(b, 1.0)
    frozen = dict(frozen or {})
    for b in loss.shared_names:
        if b not in loss.learned and b not in frozen:
            shape = loss.block(b).shape
            if shape[0] != shape[1]:
                raise InvalidParameterError(f"frozen block {b!r} of shape {shape} needs a value (frozen=...)")
            frozen[b] = np.eye(shape[0])
    return Variant(loss, g.P, 1.0 / g.N if mean else 1.0, rates, frozen)
