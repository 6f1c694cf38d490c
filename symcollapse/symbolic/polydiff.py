"""Term-wise differentiation of expanded expressions: fast for the many-symbol polynomials
that losses with heads produce (SymPy's dense multivariate Poly is slow with hundreds of
generators). Polynomials with rational coefficients are expanded and differentiated in a
sparse polynomial ring (dict of monomials); non-polynomial factors fall back to
``sympy.diff`` for that term only."""
from __future__ import annotations

from collections import defaultdict
from functools import cmp_to_key

import sympy as sp
from sympy.core.basic import Basic
from sympy.core.sorting import default_sort_key
from sympy.polys.domains import QQ
from sympy.polys.rings import ring


def _is_monomial(t) -> bool:
    """True for c·Π s^k with a number c, symbols s and integer powers k ≥ 1 (already expanded)."""
    for f in (t.args if t.is_Mul else (t,)):
        if f.is_Symbol or f.is_Number:
            continue
        if f.is_Pow and f.base.is_Symbol and f.exp.is_Integer and f.exp > 0:
            continue
        return False
    return True


def is_expanded_polynomial(expr) -> bool:
    """Cheap structural test: a sum of monomials needs no expansion."""
    return all(_is_monomial(t) for t in sp.Add.make_args(expr))


def sparse_poly(expr, gens=None):
    """(ring, element) of ``expr`` as a sparse polynomial over QQ in ``gens`` (default: its
    free symbols), or None if it is not a polynomial with rational coefficients."""
    expr = sp.sympify(expr)
    if expr.has(sp.Float):  # the ring would turn floats into rationals
        return None
    gens = sorted(expr.free_symbols, key=default_sort_key) if gens is None else list(gens)
    if not gens:
        return None
    R = ring(gens, QQ)[0]
    try:
        return R, R.from_expr(expr)
    except (ValueError, TypeError, sp.PolynomialError, sp.CoercionFailed):
        return None


_CANONICAL = cmp_to_key(Basic.compare)  # the order Mul and Add keep their arguments in


def canonical_sum(pairs, const=sp.S.Zero):
    """const + Σ c·Π f for pairs (c, [f, …]), built directly in SymPy's canonical argument order
    (identical to ``sp.Add(*…)``, several times faster than re-flattening every product)."""
    rank = {f: r for r, f in enumerate(sorted({f for _, fs in pairs for f in fs}, key=_CANONICAL))}
    terms = []
    for c, fs in pairs:
        fs = sorted(fs, key=rank.__getitem__)
        if c == 1:
            terms.append(fs[0] if len(fs) == 1 else sp.Mul._from_args(fs))
        else:
            terms.append(sp.Mul._from_args([c] + fs))
    if not terms:
        return const
    terms.sort(key=_CANONICAL)
    if const != 0:
        terms.insert(0, const)
    return terms[0] if len(terms) == 1 else sp.Add._from_args(terms)


def as_expr(p):
    """A sparse ring element as the canonical SymPy expression (identical to ``p.as_expr()``)."""
    syms = p.ring.symbols
    factors = {}
    pairs, const = [], sp.S.Zero
    for monom, c in p.items():
        c = sp.Rational(int(c.numerator), int(c.denominator))
        fs = []
        for k, e in enumerate(monom):
            if e:
                if (k, e) not in factors:
                    factors[(k, e)] = syms[k] if e == 1 else sp.Pow(syms[k], e)
                fs.append(factors[(k, e)])
        if fs:
            pairs.append((c, fs))
        else:
            const = c
    return canonical_sum(pairs, const)


def expand(expr):
    """sp.expand, via the sparse ring when ``expr`` is a rational polynomial (much faster)."""
    expr = sp.sympify(expr)
    if is_expanded_polynomial(expr):
        return expr
    rp = sparse_poly(expr)
    return as_expr(rp[1]) if rp is not None else sp.expand(expr)


def terms(expr) -> tuple:
    """The additive terms of ``expand(expr)``."""
    e = expand(expr)
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
    symbols = list(symbols)
    expr = sp.sympify(expr)
    if not is_expanded_polynomial(expr):
        rp = sparse_poly(expr)
        if rp is not None:
            R, p = rp
            pos = {g: k for k, g in enumerate(R.symbols)}
            return {s: as_expr(p.diff(R.gens[pos[s]])) if s in pos else sp.S.Zero for s in symbols}
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
