"""Serialisation of compiled moment-path kernels (their generated source) for the on-disk cache."""
from __future__ import annotations

import inspect

import numpy as np
import sympy as sp

from ..symbolic.stopgrad import stop_gradient
from ..tolerance import within
from .lambdify import AffineCoefficient


def kernel_sources(compiled) -> dict | None:
    """The generated source of the moment-path kernels (for the on-disk cache), or None."""
    try:
        losses = {"loss": inspect.getsource(compiled.loss_fn),
                  "frozen_loss": inspect.getsource(compiled.frozen_loss_fn)}
    except (OSError, TypeError):
        losses = {}
    if not compiled.fast:
        return {"fast": False, **losses}
    try:
        affine = {b: {k: [c.kind, list(c.shape), inspect.getsource(c.fn) if c.fn is not None else None]
                      for k, c in coefs.items()} for b, coefs in compiled.affine.items()}
        moment = {b: inspect.getsource(fn) for b, fn in compiled.moment.items()}
    except (OSError, TypeError):
        return None
    return {"fast": True, "affine": affine, "moment": moment,
            "moment_symbols": [m.name for m in compiled.moment_symbols], **losses}


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


def loss_kernel_from_source(src: str | None, args: tuple, expr, seed: int = 2718):
    r"""A cached loss kernel, accepted only if it equals the user's expression ℓ at a random point
    (SymPy's own exact evaluation of ``expr`` there, relative error ≤ 1e-12), so the reference of
    every later check never rests on the cache alone; None when absent or different."""
    if not src:
        return None
    try:
        fn = _from_source(src)
        rng = np.random.default_rng(seed)
        vals = rng.uniform(-1.5, 1.5, size=len(args))
        got = float(np.asarray(fn(*vals)[0], dtype=float))
        ref = _evaluate(sp.sympify(expr), dict(zip(args, vals.tolist())))
    except (SyntaxError, NameError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    return fn if within(abs(got - ref), 1e-12 * max(1.0, abs(ref))) else None


def _evaluate(expr, values: dict) -> float:
    """A SymPy polynomial expression (Add, Mul, integer Pow, numbers, symbols, sg(a) = a)
    evaluated in floats by walking its tree once; anything else through SymPy's xreplace."""
    def ev(e):
        if e.is_Symbol:
            return values[e]
        if e.is_Number:
            return float(e)
        if e.is_Add:
            return sum(ev(a) for a in e.args)
        if e.is_Mul:
            out = 1.0
            for a in e.args:
                out *= ev(a)
            return out
        if e.is_Pow and e.exp.is_Integer:
            return ev(e.base) ** int(e.exp)
        if isinstance(e, stop_gradient):
            return ev(e.args[0])
        return float(e.xreplace({k: sp.Float(v) for k, v in values.items()}))
    return float(ev(expr))
