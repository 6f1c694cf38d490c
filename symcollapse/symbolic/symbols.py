"""Component symbols for the vectors and matrices a loss is written in."""
from __future__ import annotations

import sympy as sp


def vector(name: str, d: int) -> sp.ImmutableMatrix:
    """A d×1 column of real symbols ``name_0 … name_{d-1}`` (LaTeX ``name_{k}``)."""
    if d == 1:
        return sp.ImmutableMatrix([sp.Symbol(name, real=True)])
    return sp.ImmutableMatrix([sp.Symbol(f"{name}_{k}", real=True) for k in range(d)])


def matrix(name: str, rows: int, cols: int) -> sp.ImmutableMatrix:
    """A rows×cols matrix of real symbols ``name_a_b``."""
    if rows == 1 and cols == 1:
        return sp.ImmutableMatrix([[sp.Symbol(name, real=True)]])
    return sp.ImmutableMatrix(rows, cols,
                              lambda a, b: sp.Symbol(f"{name}_{a}_{b}", real=True))


def rate(name: str) -> sp.Symbol:
    """A positive learning-rate symbol, e.g. ``eta_x``."""
    return sp.Symbol(name, positive=True)


def sqnorm(v) -> sp.Expr:
    """‖v‖² = Σ_k v_k² of a column (or any matrix: the squared Frobenius norm)."""
    return sp.Add(*[e**2 for e in v])


def flat(m) -> tuple:
    """The entries of a matrix, row-major, as a tuple."""
    return tuple(m) if m is not None else ()
