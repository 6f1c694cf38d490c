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
from .symbolic.loss import EdgeLoss
from .symbolic.stopgrad import sg as _sg
from .symbolic.symbols import matrix, rate, sqnorm, vector
from .validation import check_int, check_rate

SG_CHOICES = ("both", "label", "sample", "none")


def _check_sg(sg: str) -> str:
    if sg not in SG_CHOICES:
        raise InvalidParameterError(f"sg must be one of {SG_CHOICES}; got {sg!r}")
    return sg


def _rates(rates: dict | None, blocks) -> tuple:
    """Per-block learning-rate symbols: names -> positive symbols (strings are symbol names)."""
    out = []
    for b, r in (rates or {}).items():
        if b not in blocks:
            raise InvalidParameterError(f"rates must name blocks among {tuple(blocks)}; got {b!r}")
        out.append((b, rate(r) if isinstance(r, str) else sp.sympify(r)))
    return tuple(out)


def embedding_loss(d: int, *, rates: dict | None = None, name: str | None = None) -> EdgeLoss:
    """Model (a): ℓ(x, y) = ½‖x − y‖² in d dimensions."""
    d = check_int("d", d, 1)
    x, y = vector("x", d), vector("y", d)
    return EdgeLoss(sp.Rational(1, 2) * sqnorm(x - y), x, y, rates=_rates(rates, ("x", "y")),
                    name=name or f"embedding_d{d}")


def head_loss(d: int, sg: str = "both", *, learn_head: bool = True, rates: dict | None = None,
              name: str | None = None) -> EdgeLoss:
    """Model (b): ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²), W ∈ R^{d×d} shared by both branches.

    sg = "both": t_y = sg(y), t_x = sg(x) (docs/model.md §3); "label": only the label targets are
    detached (t_y = sg(y), t_x = x); "sample": only the sample targets (t_x = sg(x), t_y = y);
    "none": the full gradient. ``learn_head=False`` freezes W (give its value to FlowSystem).
    The head dimension is the embedding dimension d.
    """
    d = check_int("d", d, 1)
    sg = _check_sg(sg)
    x, y, W = vector("x", d), vector("y", d), matrix("W", d, d)
    ty = _sg(y) if sg in ("both", "label") else y
    tx = _sg(x) if sg in ("both", "sample") else x
    expr = sp.Rational(1, 2) * (sqnorm(W * x - ty) + sqnorm(W * y - tx))
    learned = {"x", "y", "W"} if learn_head else {"x", "y"}
    return EdgeLoss(expr, x, y, shared=(("W", W),), rates=_rates(rates, ("x", "y", "W")),
                    learned=frozenset(learned),
                    name=name or f"head_d{d}_sg{sg}{'' if learn_head else '_frozen'}")


def student_loss(d: int, D: int, *, head: bool = False, sg: str = "both", rates: dict | None = None,
                 name: str | None = None) -> EdgeLoss:
    """Model (c): x = S u with fixed input u ∈ R^D and learned S ∈ R^{d×D};
    ℓ = ½‖S u − y‖² (head=False) or the head loss of :func:`head_loss` with x = S u."""
    d = check_int("d", d, 1)
    D = check_int("D", D, 1)
    sg = _check_sg(sg)
    u, y, S = vector("u", D), vector("y", d), matrix("S", d, D)
    xs = S * u
    shared = [("S", S)]
    if head:
        W = matrix("W", d, d)
        ty = _sg(y) if sg in ("both", "label") else y
        tx = _sg(xs) if sg in ("both", "sample") else xs
        expr = sp.Rational(1, 2) * (sqnorm(W * xs - ty) + sqnorm(W * y - tx))
        shared.append(("W", W))
    else:
        expr = sp.Rational(1, 2) * sqnorm(xs - y)
    blocks = ("x", "y", *[n for n, _ in shared])
    return EdgeLoss(expr, sp.ImmutableMatrix(0, 1, []), y, shared=tuple(shared), data=u,
                    rates=_rates(rates, blocks), name=name or f"student_d{d}_D{D}{'_head_sg' + sg if head else ''}")


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
        from .numerics.kernels import compile_loss
        from .numerics.system import FlowSystem

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
        from .symbolic.assemble import assemble_symbolic
        from .symbolic.flow import derive_flow

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
    from .numerics.graph import CouplingGraph

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
