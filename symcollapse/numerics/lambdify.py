"""Lambdified NumPy kernels: lists of SymPy expressions turned into functions, built lazily."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp


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
