"""Serialisation of compiled moment-path kernels (their generated source) for the on-disk cache."""
from __future__ import annotations

import sympy as sp

from .lambdify import AffineCoefficient


def kernel_sources(compiled) -> dict | None:
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
