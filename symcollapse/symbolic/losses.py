r"""The edge losses of the three models, written once in matrix form (docs/model.md §2–§5).

    embedding:  ℓ = ½‖x − y‖²
    head:       ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²),  t_y = sg(y) or y,  t_x = sg(x) or x
    student:    the same with x = S u (S ∈ R^{d×D} learned, u ∈ R^D fixed per sample)

x, y ∈ R^d, W ∈ R^{d×d}, u ∈ R^D are MatrixSymbols of symbolic size: each loss is derived once
for every d and D (:mod:`symcollapse.symbolic.matrix_flow`); the component losses used by the
small-d cross-check and the exact statements are these losses written out at a given d.

One stop-gradient vocabulary, :data:`SG_CHOICES`: "both" (sg on both targets, the default),
"labels" (only t_y = sg(y)), "samples" (only t_x = sg(x)), "none". True/False mean "both"/"none";
the older spellings "label"/"sample" still work and warn.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import sympy as sp
from sympy.matrices.expressions import MatrixSymbol

from ..errors import InvalidParameterError
from .loss import EdgeLoss
from .matrix_flow import MatrixEdgeLoss
from .stopgrad import sg as _sg
from .symbols import rate
from ..validation import check_int

SG_CHOICES = ("both", "labels", "samples", "none")
_ALIASES = {True: "both", False: "none", "label": "labels", "sample": "samples"}
_DEPRECATED = ("label", "sample")

#: the symbolic sizes: embedding/head dimension d, input dimension D
d = sp.Symbol("d", integer=True, positive=True)
D = sp.Symbol("D", integer=True, positive=True)


def canonical_sg(stop_gradient, param: str = "stop_gradient") -> str:
    """The canonical name of a stop-gradient choice (raises on anything else, naming ``param``)."""
    if isinstance(stop_gradient, str) and stop_gradient in SG_CHOICES:
        return stop_gradient
    try:
        out = _ALIASES.get(stop_gradient)
    except TypeError:
        out = None
    if out is None:
        raise InvalidParameterError(
            f"{param} must be one of {SG_CHOICES} (True = 'both', False = 'none'; 'labels': sg on y "
            f"only, 'samples': sg on x only); got {stop_gradient!r}")
    if stop_gradient in _DEPRECATED and isinstance(stop_gradient, str):
        warnings.warn(f"stop_gradient {stop_gradient!r} is deprecated; use {out!r}", DeprecationWarning,
                      stacklevel=3)
    return out


def sg_targets(stop_gradient) -> tuple:
    """The targets that carry sg: a subset of ('x', 'y')."""
    return {"both": ("x", "y"), "labels": ("y",), "samples": ("x",), "none": ()}[canonical_sg(stop_gradient)]


def _rates(rates, blocks) -> tuple:
    out = []
    for b, r in (dict(rates) if rates else {}).items():
        if b not in blocks:
            raise InvalidParameterError(f"rates must name blocks among {tuple(blocks)}; got {b!r}")
        if isinstance(r, str):
            out.append((b, rate(r)))
        elif isinstance(r, (sp.Expr, int, float)) and not isinstance(r, bool):
            out.append((b, sp.sympify(r)))  # EdgeLoss refuses a non-positive or non-finite rate
        else:
            raise InvalidParameterError(f"rates[{b!r}] must be a symbol name or a positive SymPy "
                                        f"expression; got {r!r}")
    return tuple(out)


def _rate_items(rates) -> tuple:
    """A rates dict {block: symbol name or expression} as sorted (block, rate) pairs."""
    if rates is None:
        return ()
    if not isinstance(rates, dict):
        raise InvalidParameterError(f"rates must be a dict {{block: rate symbol name or expression}}; "
                                    f"got {type(rates).__name__}")
    if not all(isinstance(b, str) for b in rates):
        raise InvalidParameterError(f"rates must be keyed by block names; got {list(rates)!r}")
    return tuple(sorted(rates.items(), key=lambda kv: kv[0]))


def _sqnorm(v):
    return v.T * v


def _vectors():
    return MatrixSymbol("x", d, 1), MatrixSymbol("y", d, 1), MatrixSymbol("W", d, d)


@lru_cache(maxsize=None)
def embedding_matrix_loss(rates: tuple = (), name: str = "embedding") -> MatrixEdgeLoss:
    """ℓ = ½‖x − y‖², x, y ∈ R^d."""
    x, y, _ = _vectors()
    return MatrixEdgeLoss(sp.Rational(1, 2) * _sqnorm(x - y), x, y, rates=_rates(rates, ("x", "y")), name=name)


@lru_cache(maxsize=None)
def head_matrix_loss(stop_gradient="both", learn_head: bool = True, rates: tuple = (),
                     name: str | None = None) -> MatrixEdgeLoss:
    """ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²) with one head W ∈ R^{d×d} shared by both branches."""
    sgc = canonical_sg(stop_gradient)
    x, y, W = _vectors()
    tgt = sg_targets(sgc)
    ty = _sg(y) if "y" in tgt else y
    tx = _sg(x) if "x" in tgt else x
    expr = sp.Rational(1, 2) * (_sqnorm(W * x - ty) + _sqnorm(W * y - tx))
    learned = {"x", "y", "W"} if learn_head else {"x", "y"}
    return MatrixEdgeLoss(expr, x, y, shared=(("W", W),), rates=_rates(rates, ("x", "y", "W")),
                          learned=frozenset(learned),
                          name=name or f"head_sg-{sgc}_{'learned' if learn_head else 'frozen'}")


@lru_cache(maxsize=None)
def student_matrix_loss(head: bool = False, stop_gradient="both", rates: tuple = (),
                        name: str | None = None) -> MatrixEdgeLoss:
    """Model (c) with the student map explicit: x = S u, S ∈ R^{d×D}, u ∈ R^D;
    ℓ = ½‖S u − y‖², or the head loss with x = S u."""
    sgc = canonical_sg(stop_gradient)
    _, y, W = _vectors()
    u, S = MatrixSymbol("u", D, 1), MatrixSymbol("S", d, D)
    xs = S * u
    shared = [("S", S)]
    if head:
        tgt = sg_targets(sgc)
        ty = _sg(y) if "y" in tgt else y
        tx = _sg(xs) if "x" in tgt else xs
        expr = sp.Rational(1, 2) * (_sqnorm(W * xs - ty) + _sqnorm(W * y - tx))
        shared.append(("W", W))
    else:
        expr = sp.Rational(1, 2) * _sqnorm(xs - y)
    blocks = ("x", "y", *[n for n, _ in shared])
    return MatrixEdgeLoss(expr, None, y, shared=tuple(shared), data=u, rates=_rates(rates, blocks),
                          name=name or f"student{'_head_sg-' + sgc if head else ''}")


# --- the same losses in components at a given d (cross-check, exact statements) ---------------
def embedding_loss(d: int, *, rates: dict | None = None, name: str | None = None) -> EdgeLoss:
    """Model (a) at dimension d: ℓ = ½‖x − y‖²."""
    dv = check_int("d", d, 1)
    m = embedding_matrix_loss(_rate_items(rates), name or "embedding")
    return m.component(d=dv)


def head_loss(d: int, stop_gradient="both", learn_head: bool = True, *, rates: dict | None = None,
              name: str | None = None, param: str = "stop_gradient") -> EdgeLoss:
    """Model (b) at dimension d: ℓ = ½(‖W x − t_y‖² + ‖W y − t_x‖²), W ∈ R^{d×d}."""
    dv = check_int("d", d, 1)
    if not isinstance(learn_head, bool):
        raise InvalidParameterError(f"learn_head must be True or False; got {learn_head!r}")
    m = head_matrix_loss(canonical_sg(stop_gradient, param), learn_head, _rate_items(rates), name)
    return m.component(d=dv)


def student_loss(d: int, D: int, *, head: bool = False, stop_gradient="both", rates: dict | None = None,
                 name: str | None = None, param: str = "stop_gradient") -> EdgeLoss:
    """Model (c) at dimensions d, D: x = S u with learned S ∈ R^{d×D}."""
    dv, Dv = check_int("d", d, 1), check_int("D", D, 1)
    if not isinstance(head, bool):
        raise InvalidParameterError(f"head must be True or False; got {head!r}")
    m = student_matrix_loss(head, canonical_sg(stop_gradient, param), _rate_items(rates), name)
    return m.component(d=dv, D=Dv)
