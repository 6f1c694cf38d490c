r"""A loss on the sample–label graph: L = s · Σ_{i,c} P_ic ℓ(x_i, y_c; θ), written for one edge.

The user writes the edge loss ℓ with SymPy (``stop_gradient`` allowed) in the component
symbols of a sample vector x, a label vector y, optional fixed per-sample data u and
shared parameter blocks θ (e.g. a head W). Derivation works on this one edge, so its cost
does not depend on the number of samples N.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import sympy as sp

from ..errors import InvalidParameterError
from .stopgrad import normalize_stop_gradient, stop_gradient, strip_stop_gradient
from .symbols import rate as _rate

SAMPLE, LABEL = "x", "y"

#: Largest total polynomial degree of ℓ in its symbols (x, y, shared blocks, data) that is
#: derived; higher powers are refused before any expansion (their expanded form explodes).
MAX_DEGREE = 12
#: Largest number of terms the expansion of one power (a + b + …)^k, k ≥ 3, may produce
#: (squares, the MSE case, are O(terms²) and always accepted).
MAX_POWER_TERMS = 200_000


def _scalar_expr(value) -> sp.Expr:
    """The edge loss as a real scalar SymPy expression, or InvalidParameterError."""
    if isinstance(value, (bool, str, list, tuple, set, dict)) or value is None:
        raise InvalidParameterError(
            f"expr must be a scalar SymPy expression (the edge loss); got {type(value).__name__} {value!r}")
    try:
        expr = sp.sympify(value, strict=True) if not isinstance(value, sp.Basic) else value
    except (sp.SympifyError, TypeError, ValueError) as exc:
        raise InvalidParameterError(f"expr must be a scalar SymPy expression; got {value!r}") from exc
    if isinstance(expr, sp.MatrixBase):
        if expr.shape != (1, 1):
            raise InvalidParameterError(f"expr must be a scalar edge loss; got a {expr.shape} matrix")
        expr = expr[0, 0]
    if not isinstance(expr, sp.Expr):
        raise InvalidParameterError(
            f"expr must be a scalar SymPy expression (the edge loss), not a {type(expr).__name__} "
            f"(equations, inequalities and booleans are not losses); got {expr}")
    bad = [a for a in (sp.nan, sp.zoo, sp.oo, -sp.oo) if expr.has(a)]
    if bad:
        raise InvalidParameterError(f"expr must be finite: it contains {', '.join(map(str, bad))}")
    if expr.has(sp.I) or any(n.is_real is False for n in expr.atoms(sp.Number)):
        raise InvalidParameterError("expr must be real: complex coefficients (I) are not allowed in a loss")
    return expr


def _symbols(name: str, value, *, allow_empty: bool = False) -> sp.ImmutableMatrix:
    """A matrix of plain SymPy symbols (e.g. from symbols.vector), or InvalidParameterError."""
    if value is None and allow_empty:
        return sp.ImmutableMatrix(0, 1, [])
    if isinstance(value, sp.Symbol):
        value = [value]
    if isinstance(value, (str, bytes, dict, set)) or value is None:
        raise InvalidParameterError(f"{name} must be a column of SymPy symbols (symbols.vector); got {value!r}")
    try:
        m = sp.ImmutableMatrix(value)
    except Exception as exc:  # noqa: BLE001  (SymPy raises many kinds on odd input)
        raise InvalidParameterError(f"{name} must be a matrix of SymPy symbols; got {value!r}") from exc
    if not len(m):
        if allow_empty:
            return sp.ImmutableMatrix(0, 1, [])
        raise InvalidParameterError(f"{name} must have at least one component (d >= 1)")
    bad = [e for e in m if not isinstance(e, sp.Symbol)]
    if bad:
        raise InvalidParameterError(
            f"{name} must contain only SymPy symbols (symbols.vector / symbols.matrix); got {bad[:3]}")
    return m


def _degree(expr, syms, memo) -> int:
    """An upper bound of the total degree of ``expr`` in ``syms`` without expanding it
    (non-polynomial functions count as degree 0 in their arguments' place)."""
    hit = memo.get(expr)
    if hit is not None:
        return hit
    if expr.is_Atom:
        d = 1 if expr in syms else 0
    elif expr.is_Add:
        d = max(_degree(a, syms, memo) for a in expr.args)
    elif expr.is_Mul:
        d = sum(_degree(a, syms, memo) for a in expr.args)
    elif expr.is_Pow and expr.exp.is_Integer:
        d = abs(int(expr.exp)) * _degree(expr.base, syms, memo)
        n_terms = len(sp.Add.make_args(expr.base))
        if expr.exp > 2 and n_terms > 1 and d and math.comb(int(expr.exp) + n_terms - 1, n_terms - 1) > MAX_POWER_TERMS:
            raise InvalidParameterError(
                f"expr: the power ({expr.base})**{expr.exp} expands to more than {MAX_POWER_TERMS} "
                "terms; write the loss with fewer or lower powers")
    elif isinstance(expr, stop_gradient):
        d = _degree(expr.args[0], syms, memo)
    else:
        d = max([_degree(a, syms, memo) for a in expr.args] + [0]) if expr.is_Pow else 0
    memo[expr] = d
    return d


def _check_size(expr, symbols) -> None:
    """Refuse a loss whose polynomial degree is above MAX_DEGREE (before any expansion)."""
    deg = _degree(expr, set(symbols), {})
    if deg > MAX_DEGREE:
        raise InvalidParameterError(
            f"expr has polynomial degree {deg} in its symbols; at most MAX_DEGREE = {MAX_DEGREE} is derived")


@dataclass(frozen=True)
class EdgeLoss:
    """ℓ(x, y; u, θ) for one unit-weight edge, with the blocks it is differentiated in.

    expr     -- the edge loss ℓ (scalar SymPy expression, may contain stop_gradient)
    x, y     -- d×1 symbol columns of the sample and label embeddings (x may be empty
                when samples are not free parameters, e.g. x = S u)
    shared   -- ((name, symbol matrix), …) shared parameter blocks such as the head W
    data     -- r×1 symbol column of fixed per-sample data u (or None)
    rates    -- ((block, rate symbol), …) learning rates, blocks 'x', 'y' and shared names
    learned  -- the blocks that move; the others are frozen (their flow is zero)
    name     -- a short name used in reports and cache keys
    """

    expr: sp.Expr
    x: sp.ImmutableMatrix
    y: sp.ImmutableMatrix
    shared: tuple = ()
    data: sp.ImmutableMatrix | None = None
    rates: tuple = ()
    learned: frozenset = field(default_factory=frozenset)
    name: str = "loss"

    def __post_init__(self):
        expr = _scalar_expr(self.expr)
        expr = normalize_stop_gradient(expr)
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "x", _symbols("x", self.x, allow_empty=True))
        object.__setattr__(self, "y", _symbols("y", self.y))
        if not isinstance(self.shared, (tuple, list)):
            raise InvalidParameterError(
                f"shared must be a tuple of (name, symbol matrix) pairs; got {type(self.shared).__name__}")
        pairs = []
        for item in self.shared:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise InvalidParameterError(f"shared must hold (name, symbol matrix) pairs; got {item!r}")
            pairs.append((item[0], _symbols(f"shared block {item[0]!r}", item[1])))
        object.__setattr__(self, "shared", tuple(pairs))
        if self.data is not None:
            object.__setattr__(self, "data", _symbols("data", self.data))
        if not isinstance(self.name, str) or not self.name:
            raise InvalidParameterError(f"name must be a non-empty string; got {self.name!r}")
        if len(self.y) < 1:
            raise InvalidParameterError("y must have at least one component (d >= 1)")
        names = [n for n, _ in self.shared]
        bad = [n for n in names if not n.isidentifier()]
        if bad:
            raise InvalidParameterError(f"shared block names must be Python identifiers (e.g. 'W'); got {bad}")
        if len(set(names)) != len(names) or {SAMPLE, LABEL} & set(names):
            raise InvalidParameterError(f"shared block names must be unique and not 'x' or 'y'; got {names}")
        try:
            rates = dict(self.rates)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(
                f"rates must map block names {self.blocks} to rate symbols; got {self.rates!r}") from exc
        unknown = sorted(map(str, set(rates) - set(self.blocks)))
        if unknown:
            raise InvalidParameterError(f"rates names unknown blocks {unknown}; blocks are {self.blocks}")
        for b, r in rates.items():
            ok = isinstance(r, (sp.Expr, int, float)) and not isinstance(r, bool)
            r = sp.sympify(r) if ok else r
            if not ok or not isinstance(r, sp.Expr) or r.has(sp.nan, sp.zoo, sp.oo, -sp.oo, sp.I) \
                    or r.is_positive is False:
                raise InvalidParameterError(
                    f"rates[{b!r}] must be a positive SymPy expression (e.g. symbols.rate('eta_{b}')); got {r!r}")
            rates[b] = r
        for b in self.blocks:
            rates.setdefault(b, _rate(f"eta_{b}"))
        object.__setattr__(self, "rates", tuple((b, rates[b]) for b in self.blocks))
        if isinstance(self.learned, str):
            object.__setattr__(self, "learned", (self.learned,))
        learned = frozenset(self.learned) if self.learned else frozenset(
            b for b in self.blocks if len(self.block(b)))
        unknown = learned - set(self.blocks)
        if unknown:
            raise InvalidParameterError(f"learned must name blocks among {self.blocks}; got {sorted(unknown)}")
        object.__setattr__(self, "learned", learned)
        symbols = list(self.variables) + list(self.data_symbols)
        if len(set(symbols)) != len(symbols):
            seen, dup = set(), []
            for v in symbols:
                if v in seen and v not in dup:
                    dup.append(v)
                seen.add(v)
            raise InvalidParameterError(
                f"x, y, shared blocks and data must use distinct symbols; repeated: {[str(v) for v in dup]}")
        _check_size(expr, symbols)
        free = strip_stop_gradient(expr).free_symbols | expr.free_symbols
        known = set(self.variables) | set(self.data_symbols)
        stray = {s for s in free if s not in known}
        if stray:
            object.__setattr__(self, "_parameters", tuple(sorted(stray, key=str)))
        else:
            object.__setattr__(self, "_parameters", ())

    # --- structure -------------------------------------------------------------
    @property
    def blocks(self) -> tuple[str, ...]:
        """All parameter blocks: 'x', 'y', then the shared ones in order."""
        return (SAMPLE, LABEL) + tuple(n for n, _ in self.shared)

    @property
    def d(self) -> int:
        """Embedding dimension (length of the label vector)."""
        return len(self.y)

    def block(self, name: str) -> sp.ImmutableMatrix:
        """The symbol matrix of a block."""
        if name == SAMPLE:
            return self.x
        if name == LABEL:
            return self.y
        for n, m in self.shared:
            if n == name:
                return m
        raise InvalidParameterError(f"block must be one of {self.blocks}; got {name!r}")

    def rate(self, name: str) -> sp.Symbol:
        """The learning-rate symbol η_b of a block."""
        return dict(self.rates)[name]

    @property
    def shared_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.shared)

    @property
    def node_symbols(self) -> tuple:
        """Per-edge node variables z = (x, u, y): everything that differs between edges."""
        return tuple(self.x) + tuple(self.data_symbols) + tuple(self.y)

    @property
    def data_symbols(self) -> tuple:
        return tuple(self.data) if self.data is not None else ()

    @property
    def shared_symbols(self) -> tuple:
        return tuple(s for _, m in self.shared for s in m)

    @property
    def variables(self) -> tuple:
        """All differentiable symbols: x, y, then the shared blocks."""
        return tuple(self.x) + tuple(self.y) + self.shared_symbols

    @property
    def parameters(self) -> tuple:
        """Other free symbols of ℓ (constants such as a weight-decay λ)."""
        return self._parameters

    def with_learned(self, learned) -> "EdgeLoss":
        """The same loss with another set of learned blocks (e.g. a frozen head)."""
        return EdgeLoss(self.expr, self.x, self.y, self.shared, self.data, self.rates,
                        frozenset(learned), self.name)

    def value(self) -> sp.Expr:
        """ℓ with every sg removed: the numerical value of the edge loss."""
        return strip_stop_gradient(self.expr)

    def _repr_latex_(self) -> str:
        """Notebook display: the edge loss ℓ as LaTeX."""
        name = self.name.replace("_", r"\_")
        return rf"$\ell_{{\mathrm{{{name}}}}} = {sp.latex(self.expr)}$"
