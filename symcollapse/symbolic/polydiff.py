"""Term-wise differentiation of expanded expressions: fast for the many-symbol polynomials
that losses with heads produce (SymPy's dense multivariate Poly is slow with hundreds of
generators). Non-polynomial factors fall back to ``sympy.diff`` for that term only."""
from __future__ import annotations

from collections import defaultdict

import sympy as sp


def terms(expr) -> tuple:
    """The additive terms of ``expand(expr)``."""
    e = sp.expand(expr)
    return e.args if e.is_Add else (e,)


def _dterm(term, s):
    """∂term/∂s for one product term."""
    if term == s:
        return sp.S.One
    factors = term.args if term.is_Mul else (term,)
    hits = [k for k, f in enumerate(factors) if s in f.free_symbols]
    if len(hits) != 1:
        return sp.diff(term, s)
    k = hits[0]
    f = factors[k]
    rest = factors[:k] + factors[k + 1:]
    if f == s:
        return sp.Mul(*rest)
    if f.is_Pow and f.base == s and f.exp.is_Integer:
        return f.exp * sp.Mul(*rest) * s ** (f.exp - 1)
    return sp.Mul(*rest) * sp.diff(f, s)


def gradient(expr, symbols) -> dict:
    """{s: ∂expr/∂s} for every s in ``symbols`` (zero where s does not occur)."""
    wanted = set(symbols)
    index = defaultdict(list)
    for t in terms(expr):
        for s in t.free_symbols & wanted:
            index[s].append(t)
    return {s: sp.Add(*[_dterm(t, s) for t in index[s]]) if s in index else sp.S.Zero for s in symbols}


def split_monomial(term, zset) -> tuple:
    """term = coeff · Π z  ->  (coeff, sorted tuple of z factors with multiplicity), or None
    if a z occurs in a non-polynomial way."""
    factors = term.args if term.is_Mul else (term,)
    coeff, zs = [], []
    for f in factors:
        if f in zset:
            zs.append(f)
        elif f.is_Pow and f.base in zset and f.exp.is_Integer and f.exp > 0:
            zs.extend([f.base] * int(f.exp))
        elif f.free_symbols & zset:
            return None
        else:
            coeff.append(f)
    return sp.Mul(*coeff), tuple(zs)
