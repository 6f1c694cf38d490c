r"""A loss on the sample–label graph: L = s · Σ_{i,c} P_ic ℓ(x_i, y_c; θ), written for one edge.

The user writes the edge loss ℓ with SymPy (``stop_gradient`` allowed) in the component
symbols of a sample vector x, a label vector y, optional fixed per-sample data u and
shared parameter blocks θ (e.g. a head W). Derivation works on this one edge, so its cost
does not depend on the number of samples N.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..errors import InvalidParameterError
from .stopgrad import strip_stop_gradient
from .symbols import rate as _rate

SAMPLE, LABEL = "x", "y"


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
        expr = sp.sympify(self.expr)
        if isinstance(expr, sp.MatrixBase):
            if expr.shape != (1, 1):
                raise InvalidParameterError(f"expr must be a scalar edge loss; got a {expr.shape} matrix")
            expr = expr[0, 0]
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "x", sp.ImmutableMatrix(self.x) if self.x is not None and len(self.x) else sp.ImmutableMatrix(0, 1, []))
        object.__setattr__(self, "y", sp.ImmutableMatrix(self.y))
        object.__setattr__(self, "shared", tuple((str(n), sp.ImmutableMatrix(m)) for n, m in self.shared))
        if self.data is not None:
            object.__setattr__(self, "data", sp.ImmutableMatrix(self.data))
        if len(self.y) < 1:
            raise InvalidParameterError("y must have at least one component (d >= 1)")
        names = [n for n, _ in self.shared]
        bad = [n for n in names if not n.isidentifier()]
        if bad:
            raise InvalidParameterError(f"shared block names must be Python identifiers (e.g. 'W'); got {bad}")
        if len(set(names)) != len(names) or {SAMPLE, LABEL} & set(names):
            raise InvalidParameterError(f"shared block names must be unique and not 'x' or 'y'; got {names}")
        rates = dict(self.rates)
        for b in self.blocks:
            rates.setdefault(b, _rate(f"eta_{b}"))
        object.__setattr__(self, "rates", tuple((b, rates[b]) for b in self.blocks))
        learned = frozenset(self.learned) if self.learned else frozenset(
            b for b in self.blocks if len(self.block(b)))
        unknown = learned - set(self.blocks)
        if unknown:
            raise InvalidParameterError(f"learned must name blocks among {self.blocks}; got {sorted(unknown)}")
        object.__setattr__(self, "learned", learned)
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
