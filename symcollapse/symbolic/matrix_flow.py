r"""Dimension-free derivation: an edge loss in vectors and matrices of unspecified size and its flow.

The user writes ℓ(x, y; u, θ) with SymPy ``MatrixSymbol``s of symbolic size (x, y ∈ R^d,
W ∈ R^{d×d}, u ∈ R^D, S ∈ R^{d×D}) and :func:`~symcollapse.symbolic.stopgrad.sg`. The engine
derives once, for every d and N (docs/model.md §2–§4):

    F_b = −∂ℓ/∂θ_b  (sg held fixed),     δF_b = d/dε F_b(θ + ε δθ)  (the Jacobian-vector product),

as matrix expressions (:mod:`symcollapse.symbolic.matcalc`), and checks each of them against the
component-level derivation (:func:`symcollapse.symbolic.flow.derive_flow`) at d = 1, 2, 3 after
substituting explicit matrices: a disagreement raises :class:`DerivationCheckError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import sympy as sp
from sympy.matrices.expressions import MatrixSymbol

from ..errors import DerivationCheckError, InvalidParameterError
from . import matcalc as mc
from . import polydiff
from .flow import derive_flow
from .loss import LABEL, SAMPLE, EdgeLoss
from .symbols import matrix as _matrix, rate as _rate, vector as _vector

CHECK_DIMS = (1, 2, 3)


@dataclass(frozen=True)
class MatrixEdgeLoss:
    """ℓ(x, y; u, θ) written with matrix symbols of symbolic size.

    expr    -- scalar: a 1×1 matrix expression or a sum of traces (sg allowed)
    x, y    -- MatrixSymbols (d×1) of the sample and label (x None when x = S u is not free)
    shared  -- ((name, MatrixSymbol), …) shared blocks (e.g. the head W, the student map S)
    data    -- MatrixSymbol (D×1) of fixed per-sample data u, or None
    rates, learned, name -- as for :class:`~symcollapse.symbolic.loss.EdgeLoss`
    """

    expr: sp.Basic
    x: MatrixSymbol | None
    y: MatrixSymbol
    shared: tuple = ()
    data: MatrixSymbol | None = None
    rates: tuple = ()
    learned: frozenset = field(default_factory=frozenset)
    name: str = "loss"

    def __post_init__(self):
        for what, m in (("x", self.x), ("y", self.y), ("data", self.data)):
            if m is not None and (not isinstance(m, MatrixSymbol) or m.shape[1] != 1):
                raise InvalidParameterError(f"{what} must be a column MatrixSymbol (n×1); got {m!r}")
        if self.y is None:
            raise InvalidParameterError("y must be a column MatrixSymbol")
        object.__setattr__(self, "shared", tuple((str(n), m) for n, m in self.shared))
        for n, m in self.shared:
            if not isinstance(m, MatrixSymbol) or not n.isidentifier() or n in (SAMPLE, LABEL):
                raise InvalidParameterError(f"shared blocks must be (identifier, MatrixSymbol), not 'x'/'y'; got {n!r}")
        names = [m.name for m in self.symbols.values()]
        if len(set(names)) != len(names):
            raise InvalidParameterError(f"the matrix symbols must have distinct names; got {names}")
        rates = dict(self.rates)
        for b in self.blocks:
            rates.setdefault(b, _rate(f"eta_{b}"))
        object.__setattr__(self, "rates", tuple((b, rates[b]) for b in self.blocks))
        learned = frozenset(self.learned) if self.learned else frozenset(
            b for b in self.blocks if not (b == SAMPLE and self.x is None))
        unknown = learned - set(self.blocks)
        if unknown:
            raise InvalidParameterError(f"learned must name blocks among {self.blocks}; got {sorted(unknown)}")
        if self.x is None:
            learned = learned - {SAMPLE}
        object.__setattr__(self, "learned", learned)
        mc.expand(self.expr)  # raises UnsupportedExpression outside the grammar

    @property
    def blocks(self) -> tuple:
        return (SAMPLE, LABEL) + tuple(n for n, _ in self.shared)

    @property
    def shared_names(self) -> tuple:
        return tuple(n for n, _ in self.shared)

    @property
    def symbols(self) -> dict:
        """block (and 'u' for data) -> MatrixSymbol."""
        out = {}
        if self.x is not None:
            out[SAMPLE] = self.x
        out[LABEL] = self.y
        if self.data is not None:
            out["u"] = self.data
        out.update(dict(self.shared))
        return out

    def block(self, name: str) -> MatrixSymbol:
        try:
            return self.symbols[name]
        except KeyError:
            raise InvalidParameterError(f"block must be one of {self.blocks}; got {name!r}") from None

    def rate(self, name: str) -> sp.Symbol:
        return dict(self.rates)[name]

    @property
    def dims(self) -> tuple:
        """The symbolic sizes (e.g. d, D), sorted by name."""
        out = set()
        for m in self.symbols.values():
            for s in m.shape:
                out |= sp.sympify(s).free_symbols
        return tuple(sorted(out, key=lambda s: s.name))

    @property
    def parameters(self) -> tuple:
        """Scalar constants of ℓ (e.g. a weight decay λ)."""
        free = {s for s in sp.sympify(self.expr).free_symbols
                if not isinstance(s, MatrixSymbol) and s not in self.dims}
        free -= {m for m in self.symbols.values()}
        return tuple(sorted((s for s in free if isinstance(s, sp.Symbol)), key=lambda s: s.name))

    def shape(self, name: str, dims: dict) -> tuple:
        """The numeric shape of a block at the sizes ``dims`` ({symbol or name: int})."""
        sub = {(sp.Symbol(k, integer=True, positive=True) if isinstance(k, str) else k): v for k, v in dims.items()}
        byname = {s.name: v for s, v in sub.items()}
        out = []
        for s in self.block(name).shape:
            s = sp.sympify(s)
            s = sp.sympify(s.xreplace({f: byname[f.name] for f in s.free_symbols if f.name in byname}))
            if not s.is_Integer:
                raise InvalidParameterError(f"dims must give every size of block {name!r} ({self.block(name).shape}); got {dims}")
            out.append(int(s))
        return tuple(out)

    def component(self, name: str | None = None, **dims) -> EdgeLoss:
        """The same loss written in components at the sizes ``dims`` (e.g. d=3): a component
        :class:`EdgeLoss` with the conventional symbol names (x_k, y_k, W_a_b, u_k, S_a_b),
        named ``name`` (default: this loss's name and the sizes, e.g. head_sg-both_learned_d3)."""
        return _component(self, tuple(sorted(dims.items())), name)

    def _repr_latex_(self) -> str:
        return rf"$\ell = {sp.latex(self.expr)}$"


def _explicit_symbols(name: str, shape: tuple):
    r, c = shape
    return _vector(name, r) if c == 1 else _matrix(name, r, c)


@lru_cache(maxsize=None)
def _component(loss: MatrixEdgeLoss, dims: tuple, name: str | None = None) -> EdgeLoss:
    dims = dict(dims)
    values = {m.name: _explicit_symbols(m.name, loss.shape(b, dims)) for b, m in loss.symbols.items()}
    expr = mc.explicit(loss.expr, values)
    if isinstance(expr, sp.MatrixBase):
        expr = expr[0, 0]
    tag = "_".join(f"{k}{v}" for k, v in sorted(dims.items()))
    x = values[loss.x.name] if loss.x is not None else None
    data = values[loss.data.name] if loss.data is not None else None
    shared = tuple((n, values[m.name]) for n, m in loss.shared)
    return EdgeLoss(expr, x, values[loss.y.name], shared=shared, data=data, rates=loss.rates,
                    learned=loss.learned, name=name or f"{loss.name}_{tag}")


@dataclass(frozen=True, eq=False)
class MatrixFlow:
    """The derived matrix-level flow of a :class:`MatrixEdgeLoss` (chain sums, see matcalc)."""

    loss: MatrixEdgeLoss
    traces: dict          # ℓ as Σ c·tr(chain), sg atoms held
    forces_with_sg: dict  # block -> F_b with sg atoms (for printing)
    forces: dict          # block -> F_b, sg removed (its value)
    jvps: dict            # block -> δF_b (linear in the tangents δθ of the learned blocks)
    value: dict           # ℓ with sg removed
    frozen_value: dict    # ℓ with sg(a) -> a(θ₀)

    @property
    def learned(self) -> tuple:
        return tuple(b for b in self.loss.blocks if b in self.loss.learned)

    @cached_property
    def _by_name(self) -> dict:
        """MatrixSymbol name -> MatrixSymbol (the chains' letters carry the symbol names)."""
        return {m.name: m for m in self.loss.symbols.values()}

    def force_expr(self, block: str, with_sg: bool = False):
        """F_b as a SymPy matrix expression."""
        src = self.forces_with_sg if with_sg else self.forces
        return mc.to_expr(src[block], self._by_name, self.loss.block(block).shape)

    def jvp_expr(self, block: str):
        """δF_b as a SymPy matrix expression in the tangents δθ."""
        return mc.to_expr(self.jvps[block], self._by_name, self.loss.block(block).shape)

    def force_latex(self, block: str, with_sg: bool = False) -> str:
        """F_b in matrix notation with common left factors pulled out (e.g. −Wᵀ(W x − y))."""
        src = self.forces_with_sg if with_sg else self.forces
        return mc.factored_latex(src[block], self._by_name, self.loss.block(block).shape)

    def jvp_latex(self, block: str) -> str:
        return mc.factored_latex(self.jvps[block], self._by_name, self.loss.block(block).shape)

    @cached_property
    def uses_stop_gradient(self) -> bool:
        return mc.has_sg(self.traces)

    def _repr_latex_(self) -> str:
        rows = [f"F_{{{b}}} &= {self.force_latex(b, True)}" for b in self.learned]
        return "$\\begin{aligned}" + " \\\\ ".join(rows) + "\\end{aligned}$"


def derive_matrix_flow(loss: MatrixEdgeLoss, check: bool = True) -> MatrixFlow:
    """F_b = −∂ℓ/∂θ_b and δF_b for every learned block, once for all sizes; with ``check``,
    each is verified against the component derivation at d = 1, 2, 3 (:func:`cross_check`)."""
    return _derive(loss, check)


@lru_cache(maxsize=None)
def _derive(loss: MatrixEdgeLoss, check: bool) -> MatrixFlow:
    traces = mc.cyclic_canonical(mc.expand(loss.expr))
    names = [b for b in loss.blocks if b in loss.learned]
    sym = {b: loss.block(b).name for b in names}
    fsg = {b: mc.scale(mc.gradient(traces, sym[b]), -1) for b in names}
    forces = {b: mc.strip(f) for b, f in fsg.items()}
    jvps = {b: mc.directional(f, [sym[c] for c in names]) for b, f in forces.items()}
    flow = MatrixFlow(loss, traces, fsg, forces, jvps, mc.strip(traces), mc.strip(traces, mc.FROZEN))
    if check:
        cross_check(flow)
    return flow


def _dim_sets(loss: MatrixEdgeLoss, sizes=CHECK_DIMS):
    """Sizes of the cross-check: d = 1, 2, 3; a second size (D) cycles through the others so
    that it always differs from d (a transposition error between d and D cannot pass)."""
    dims = sorted(loss.dims, key=lambda s: (s.name != "d", s.name))
    n = len(sizes)
    return [{s.name: sizes[(j + i) % n] for i, s in enumerate(dims)} for j in range(n)]


def cross_check(flow: MatrixFlow, sizes=CHECK_DIMS) -> dict:
    """Compare every matrix-level result with the component-level derivation at explicit sizes.

    At each size the loss is written in components (explicit matrices of scalar symbols); the
    component engine differentiates it; the matrix forces, JVPs and loss value evaluated with the
    same explicit matrices must equal it identically (expanded difference 0). Returns
    {size tag: number of identities checked}; raises :class:`DerivationCheckError`.
    """
    loss = flow.loss
    report = {}
    for dims in _dim_sets(loss, sizes):
        comp = loss.component(**dims)
        cflow = derive_flow(comp)
        values = {}
        for b, m in loss.symbols.items():
            cm = comp.data if b == "u" else comp.block(b)
            values[m.name] = sp.Matrix(cm).reshape(*loss.shape(b, dims))
            values[m.name + "__d"] = sp.Matrix(*values[m.name].shape,
                                               lambda i, j: sp.Symbol(f"d{m.name}_{i}_{j}", real=True))
        tag = ",".join(f"{k}={v}" for k, v in dims.items())
        n = 0
        val = mc.explicit_traces(flow.value, values)
        if not _is_zero(sp.Matrix([[val - comp.value()]])):
            raise DerivationCheckError(f"{loss.name}: matrix-level loss value ≠ component loss at {tag}")
        n += 1
        tangents = {c: list(sp.Matrix(values[loss.block(c).name + "__d"])) for c in flow.learned}
        ejac = cflow.edge_jacobian  # the component engine's own per-edge Jacobian
        for b in flow.learned:
            shape = loss.shape(b, dims)
            mat = mc.explicit_chains(flow.forces[b], values, shape)
            ref = sp.Matrix(cflow.force(b)).reshape(*shape)
            if not _is_zero(mat - ref):
                raise DerivationCheckError(
                    f"{loss.name}: matrix-level force F_{b} ≠ component derivation at {tag}")
            jm = mc.explicit_chains(flow.jvps[b], values, shape)
            jref = [sp.S.Zero] * (shape[0] * shape[1])
            for c in flow.learned:
                for r, col, e in ejac.get((b, c), ()):
                    jref[r] += e * tangents[c][col]
            if not _is_zero(jm - sp.Matrix(shape[0], shape[1], jref)):
                raise DerivationCheckError(
                    f"{loss.name}: matrix-level Jacobian-vector product δF_{b} ≠ component Jacobian at {tag}")
            n += 2
        report[tag] = n
    return report


def _is_zero(M) -> bool:
    """Every entry expands to 0 (sparse polynomial arithmetic; sg(·) atoms are generators)."""
    return all(polydiff.expand(e) == 0 for e in M)
