r"""A small, exact matrix calculus for polynomial losses of vectors and matrices (docs/model.md §5).

An expression is expanded into a sum of *chains* c·L₁L₂…L_k, each letter L a matrix symbol
(optionally transposed, optionally a frozen copy θ₀ or a tangent δθ) or a held stop-gradient
atom sg(a). A scalar loss is a sum of traces tr(L₁…L_k) (a 1×1 product is its own trace).
Differentiation is done term by term with the two trace rules

    ∂ tr(A X B)/∂X = (B A)ᵀ,      ∂ tr(A Xᵀ B)/∂X = B A,

so no SymPy matrix derivative is ever called (SymPy's can silently return 0 for sums of trace
terms: sympy issues 27406, 26585, 26561, 23492). Grammar: MatrixSymbol, Identity, ZeroMatrix,
MatAdd, MatMul (with scalar factors), Transpose, Trace, MatPow (integer ≥ 0), sg(·) and scalar
sums/products of these; anything else raises :class:`UnsupportedExpression`.
"""
from __future__ import annotations

from collections import defaultdict

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.matrices.expressions import (Identity, MatAdd, MatMul, MatPow, MatrixExpr,
                                        MatrixSymbol, Trace, Transpose, ZeroMatrix)

from ..errors import UnsupportedExpression
from .stopgrad import MatrixStopGradient, stop_gradient

PLAIN, FROZEN, TANGENT = "", "0", "d"


# --- letters -------------------------------------------------------------------------------
# a symbol letter: ("s", name, transposed, variant); an sg atom: ("g", inner sum, transposed)
def sym_letter(name: str, transposed: bool = False, variant: str = PLAIN) -> tuple:
    return ("s", name, bool(transposed), variant)


def t_letter(letter: tuple) -> tuple:
    """The transpose of one letter."""
    if letter[0] == "s":
        return ("s", letter[1], not letter[2], letter[3])
    return ("g", letter[1], not letter[2])


def t_chain(chain: tuple) -> tuple:
    """(L₁…L_k)ᵀ = L_kᵀ…L₁ᵀ."""
    return tuple(t_letter(L) for L in reversed(chain))


def sg_letter(inner: dict) -> tuple:
    """The letter sg(a) in a canonical orientation: sg(a) and sg(aᵀ)ᵀ are the same letter."""
    k1, k2 = _key(inner), _key(transpose(inner))
    return ("g", k2, True) if repr(k2) < repr(k1) else ("g", k1, False)


def _key(sum_: dict) -> tuple:
    """A hashable, order-independent form of a chain sum (for sg atoms)."""
    return tuple(sorted(((c, sp.sympify(k)) for c, k in sum_.items()), key=lambda t: (repr(t[0]), sp.srepr(t[1]))))


def as_dict(key: tuple) -> dict:
    return {c: k for c, k in key}


def add_into(out: dict, chain: tuple, coeff) -> None:
    v = out.get(chain, sp.S.Zero) + coeff
    v = sp.expand(v)
    if v == 0:
        out.pop(chain, None)
    else:
        out[chain] = v


def scale(sum_: dict, c) -> dict:
    out = {}
    for ch, k in sum_.items():
        add_into(out, ch, c * k)
    return out


def add(*sums) -> dict:
    out = {}
    for s in sums:
        for ch, k in s.items():
            add_into(out, ch, k)
    return out


def product(a: dict, b: dict) -> dict:
    out = {}
    for ca, ka in a.items():
        for cb, kb in b.items():
            add_into(out, ca + cb, ka * kb)
    return out


def transpose(sum_: dict) -> dict:
    out = {}
    for ch, k in sum_.items():
        add_into(out, t_chain(ch), k)
    return out


# --- expansion -----------------------------------------------------------------------------
def expand(expr) -> dict:
    """A matrix expression (or a scalar of traces / 1×1 products) as {chain: scalar coefficient}.

    A scalar expression is returned as a sum of traces: each chain stands for tr(chain).
    """
    expr = sp.sympify(expr)
    if isinstance(expr, MatrixStopGradient):
        return {(sg_letter(expand(expr.arg)),): sp.S.One}
    if isinstance(expr, MatrixSymbol):
        return {(sym_letter(expr.name),): sp.S.One}
    if isinstance(expr, Identity):
        return {(): sp.S.One}
    if isinstance(expr, ZeroMatrix):
        return {}
    if isinstance(expr, Transpose):
        return transpose(expand(expr.arg))
    if isinstance(expr, MatAdd) or (isinstance(expr, sp.Add) and not isinstance(expr, MatrixExpr)):
        return add(*[expand(a) for a in expr.args])
    if isinstance(expr, MatMul) or (isinstance(expr, sp.Mul) and not isinstance(expr, MatrixExpr)):
        out, coeff = {(): sp.S.One}, sp.S.One
        mats = [a for a in expr.args if isinstance(a, MatrixExpr) or _has_trace(a)]
        for a in expr.args:
            if a not in mats:
                if a.atoms(MatrixSymbol):
                    raise UnsupportedExpression(f"scalar factor {a} of matrix symbols is not supported")
                coeff *= a
        traces = [a for a in mats if not isinstance(a, MatrixExpr)]
        if traces and (len(mats) > 1 or not isinstance(expr, sp.Mul)):
            raise UnsupportedExpression("a trace may only be multiplied by scalars")
        for a in mats:
            out = product(out, expand(a))
        return scale(out, coeff)
    if isinstance(expr, Trace):
        return expand(expr.arg)
    if isinstance(expr, MatPow):
        base, e = expr.args
        if not (e.is_Integer and e >= 0):
            raise UnsupportedExpression(f"matrix power {e} is not a non-negative integer")
        out = {(): sp.S.One}
        for _ in range(int(e)):
            out = product(out, expand(base))
        return out
    if isinstance(expr, sp.Pow) and _has_trace(expr.base) and expr.exp.is_Integer and expr.exp >= 0:
        raise UnsupportedExpression("powers of traces are not supported; write the product")
    if not expr.atoms(MatrixSymbol) and not isinstance(expr, MatrixExpr):
        return {(): expr} if expr != 0 else {}
    raise UnsupportedExpression(f"{type(expr).__name__} is outside the polynomial matrix grammar")


def _has_trace(e) -> bool:
    return isinstance(e, sp.Basic) and (isinstance(e, Trace) or e.has(Trace))


# --- stop-gradient and variants --------------------------------------------------------------
def strip(sum_: dict, variant: str = PLAIN) -> dict:
    """Replace each sg atom by its argument (its value); with ``variant=FROZEN`` the argument's
    symbols become frozen copies θ₀ (the loss with every sg held at θ₀)."""
    out = {}
    for ch, k in sum_.items():
        acc = {(): k}
        for L in ch:
            if L[0] == "g":
                inner = strip(as_dict(L[1]), variant)
                if variant != PLAIN:
                    inner = {tuple(("s", l[1], l[2], variant) for l in c): v for c, v in inner.items()}
                piece = transpose(inner) if L[2] else inner
            else:
                piece = {(L,): sp.S.One}
            acc = product(acc, piece)
        out = add(out, acc)
    return out


def has_sg(sum_: dict) -> bool:
    return any(L[0] == "g" for ch in sum_ for L in ch)


# --- differentiation -----------------------------------------------------------------------------
def gradient(loss_traces: dict, name: str) -> dict:
    """∂ℓ/∂X for ℓ = Σ c·tr(chain), X the symbol ``name``; sg atoms and frozen copies are constants."""
    out = {}
    for ch, k in loss_traces.items():
        for j, L in enumerate(ch):
            if L[0] == "s" and L[1] == name and L[3] == PLAIN:
                rest = ch[j + 1:] + ch[:j]
                add_into(out, rest if L[2] else t_chain(rest), k)
    return out


def directional(sum_: dict, names) -> dict:
    """d/dε of the chain sum at θ + ε δθ for the symbols in ``names`` (sg already stripped):
    every occurrence of X is replaced, one at a time, by the tangent δX."""
    names = set(names)
    out = {}
    for ch, k in sum_.items():
        for j, L in enumerate(ch):
            if L[0] == "g":
                raise UnsupportedExpression("strip stop-gradients before taking the directional derivative")
            if L[1] in names and L[3] == PLAIN:
                add_into(out, ch[:j] + (("s", L[1], L[2], TANGENT),) + ch[j + 1:], k)
    return out


def cyclic_canonical(traces: dict) -> dict:
    """Collect trace terms equal up to cyclic rotation and transposition (tr(C) = tr(Cᵀ))."""
    out = {}
    for ch, k in traces.items():
        forms = [ch[r:] + ch[:r] for r in range(max(len(ch), 1))]
        tc = t_chain(ch)
        forms += [tc[r:] + tc[:r] for r in range(max(len(tc), 1))]
        add_into(out, min(forms, key=repr), k)
    return out


# --- back to SymPy ------------------------------------------------------------------------------
def letter_expr(L: tuple, symbols: dict):
    """A letter as a SymPy matrix expression (``symbols``: name -> MatrixSymbol; tangents and
    frozen copies get their own MatrixSymbols named δX and X_0)."""
    if L[0] == "g":
        inner = to_expr(as_dict(L[1]), symbols)
        e = MatrixStopGradient(inner)
        return Transpose(e) if L[2] else e
    base = symbols[L[1]]
    if L[3] == TANGENT:
        base = MatrixSymbol(r"\delta " + base.name, *base.shape)
    elif L[3] == FROZEN:
        base = MatrixSymbol(base.name + "_0", *base.shape)
    return Transpose(base) if L[2] else base


def to_expr(sum_: dict, symbols: dict, shape=None):
    """The chain sum as a SymPy MatAdd of MatMuls (``shape`` gives the identity's size)."""
    terms = []
    for ch, k in sorted(sum_.items(), key=lambda t: repr(t[0])):
        if not ch:
            if shape is None:
                terms.append(k)
                continue
            mat = Identity(shape[0])
        else:
            letters = [letter_expr(L, symbols) for L in ch]
            mat = letters[0] if len(letters) == 1 else MatMul(*letters)
        terms.append(mat if k == 1 else MatMul(k, mat))
    if not terms:
        return ZeroMatrix(*shape) if shape is not None else sp.S.Zero
    return terms[0] if len(terms) == 1 else MatAdd(*terms)


def factored_latex(sum_: dict, symbols: dict, shape=None) -> str:
    r"""LaTeX of a chain sum with common left factors pulled out, e.g. −Wᵀ(W x − y)."""
    terms = factored_terms(sum_, symbols, shape)
    out = ""
    for n, t in enumerate(terms):
        out += (t[2:] if t.startswith("+ ") else t) if n == 0 else " " + t
    return out or "0"


def factored_terms(sum_: dict, symbols: dict, shape=None) -> list:
    r"""The top-level terms of :func:`factored_latex`, each with its sign ('+ …' or '- …')."""
    pr = LatexPrinter()

    def lt(L):
        return pr._print(letter_expr(L, symbols))

    def coef(k):
        return pr._print(k)

    def render(items, top=True, collect=None):
        # items: list of (chain, coeff); returns latex of the sum
        groups = defaultdict(list)
        order = []
        for ch, k in items:
            head = ch[0] if ch else None
            if head not in groups:
                order.append(head)
            groups[head].append((ch, k))
        parts = []
        for head in order:
            g = groups[head]
            if head is None or len(g) == 1:
                for ch, k in g:
                    body = " ".join(lt(L) for L in ch) if ch else (pr._print(Identity(shape[0])) if shape else "1")
                    parts.append((k, body))
                continue
            inner = [(ch[1:], k) for ch, k in g]
            lead = inner[0][1]
            sign = -1 if sp.sympify(lead).could_extract_minus_sign() else 1
            inner_s = [(ch, sp.expand(k * sign)) for ch, k in inner]
            if all(not ch for ch, _ in inner_s):
                parts.append((sign * sp.Add(*[k for _, k in inner_s]), lt(head)))
                continue
            parts.append((sign, lt(head) + r"\left(" + render(inner_s, False) + r"\right)"))
        out = ""
        for n, (k, body) in enumerate(parts):
            k = sp.sympify(k)
            neg = k.could_extract_minus_sign()
            mag = -k if neg else k
            c = "" if mag == 1 else (coef(mag) + (" " if mag.is_Atom else "") if mag.is_Atom else r"\left(" + coef(mag) + r"\right) ")
            if collect is not None:
                collect.append(("- " if neg else "+ ") + c + body)
            if n == 0:
                out += ("- " if neg else "") + c + body
            else:
                out += (" - " if neg else " + ") + c + body
        return out or "0"

    items = sorted(sum_.items(), key=lambda t: (-len(t[0]), repr(t[0])))
    top = []
    render(items, True, top)
    return top


# --- explicit evaluation (the component-level cross-check) --------------------------------------
def explicit(expr, values: dict):
    """Evaluate a matrix expression tree with explicit SymPy matrices (``values``: name -> Matrix);
    sg(A) becomes the elementwise scalar stop_gradient. Independent of :func:`expand`."""
    expr = sp.sympify(expr)
    if isinstance(expr, MatrixStopGradient):
        return explicit(expr.arg, values).applyfunc(stop_gradient)
    if isinstance(expr, MatrixSymbol):
        return sp.Matrix(values[expr.name])
    if isinstance(expr, Identity):
        n = expr.shape[0]
        return sp.eye(int(n.xreplace(values.get("__dims__", {})) if isinstance(n, sp.Expr) else n))
    if isinstance(expr, ZeroMatrix):
        r, c = (int(sp.sympify(s).xreplace(values.get("__dims__", {}))) for s in expr.shape)
        return sp.zeros(r, c)
    if isinstance(expr, Transpose):
        return explicit(expr.arg, values).T
    if isinstance(expr, Trace):
        return explicit(expr.arg, values).trace()
    if isinstance(expr, MatPow):
        return explicit(expr.args[0], values) ** int(expr.args[1])
    if isinstance(expr, (MatAdd, sp.Add)):
        parts = [explicit(a, values) for a in expr.args]
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out
    if isinstance(expr, (MatMul, sp.Mul)):
        out = sp.S.One
        for a in expr.args:
            v = explicit(a, values)
            if isinstance(out, sp.MatrixBase) and isinstance(v, sp.MatrixBase):
                out = out * v
            else:
                out = v * out if isinstance(v, sp.MatrixBase) else out * v
        return out
    if not expr.atoms(MatrixSymbol):
        return expr
    raise UnsupportedExpression(f"{type(expr).__name__} cannot be evaluated explicitly")


def explicit_chains(sum_: dict, values: dict, shape=None):
    """A chain sum evaluated with explicit matrices; letters of variants use the names X__0, X__d."""
    total = None
    for ch, k in sum_.items():
        m = None
        for L in ch:
            if L[0] == "g":
                v = explicit_chains(as_dict(L[1]), values).applyfunc(stop_gradient)
            else:
                key = L[1] + ("__" + L[3] if L[3] else "")
                v = sp.Matrix(values[key])
            if L[2]:
                v = v.T
            m = v if m is None else m * v
        if m is None:
            m = sp.eye(shape[0]) if shape is not None else sp.Matrix([[1]])
        term = k * m
        total = term if total is None else total + term
    if total is None:
        return sp.zeros(*shape) if shape is not None else sp.Matrix([[0]])
    return total


def explicit_traces(traces: dict, values: dict):
    """Σ c·tr(chain) evaluated with explicit matrices (each chain may have its own square shape)."""
    total = sp.S.Zero
    for ch, k in traces.items():
        m = explicit_chains({ch: k}, values, None) if ch else sp.Matrix([[k]])
        total += m.trace()
    return total
