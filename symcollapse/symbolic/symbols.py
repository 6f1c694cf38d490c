"""Component symbols for the vectors and matrices a loss is written in."""
from __future__ import annotations

import sympy as sp

from ..errors import InvalidParameterError
from ..validation import check_int

#: Largest number of component symbols one vector or matrix may have.
MAX_COMPONENTS = 1_000_000


def _name(name) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidParameterError(f"name must be a Python identifier string such as 'x'; got {name!r}")
    return name


def vector(name: str, d: int) -> sp.ImmutableMatrix:
    """A d×1 column of real symbols ``name_0 … name_{d-1}`` (LaTeX ``name_{k}``), d ≥ 1."""
    name = _name(name)
    d = check_int("d", d, 1, MAX_COMPONENTS)
    if d == 1:
        return sp.ImmutableMatrix([sp.Symbol(name, real=True)])
    return sp.ImmutableMatrix([sp.Symbol(f"{name}_{k}", real=True) for k in range(d)])


def matrix(name: str, rows: int, cols: int) -> sp.ImmutableMatrix:
    """A rows×cols matrix of real symbols ``name_a_b`` (rows, cols ≥ 1)."""
    name = _name(name)
    rows = check_int("rows", rows, 1, MAX_COMPONENTS)
    cols = check_int("cols", cols, 1, MAX_COMPONENTS)
    if rows * cols > MAX_COMPONENTS:
        raise InvalidParameterError(f"rows*cols must be <= {MAX_COMPONENTS}; got {rows}*{cols}")
    if rows == 1 and cols == 1:
        return sp.ImmutableMatrix([[sp.Symbol(name, real=True)]])
    return sp.ImmutableMatrix(rows, cols,
                              lambda a, b: sp.Symbol(f"{name}_{a}_{b}", real=True))


def rate(name: str) -> sp.Symbol:
    """A positive learning-rate symbol, e.g. ``eta_x``."""
    name = _name(name)
    return sp.Symbol(name, positive=True)


def sqnorm(v) -> sp.Expr:
    """‖v‖² = Σ_k v_k² of a column (or any matrix: the squared Frobenius norm)."""
    if isinstance(v, sp.MatrixBase):
        v = list(v)
    elif isinstance(v, sp.Expr):
        v = [v]
    elif isinstance(v, (list, tuple)):
        v = list(v)
    else:
        raise InvalidParameterError(f"sqnorm needs a SymPy vector or matrix; got {type(v).__name__} {v!r}")
    if not all(isinstance(e, sp.Expr) for e in v):
        raise InvalidParameterError("sqnorm needs SymPy expressions as entries")
    if any(e.has(sp.nan, sp.zoo, sp.oo, -sp.oo) for e in v):
        raise InvalidParameterError("sqnorm needs finite entries (no nan, oo or zoo)")
    return sp.Add(*[e**2 for e in v])


def flat(m) -> tuple:
    """The entries of a matrix, row-major, as a tuple."""
    return tuple(m) if m is not None else ()
