r"""Invariant sectors of a linear (affine-force) flow on a structured ensemble, proved symbolically.

An ensemble is described by *node types* (e.g. consistent samples, frustrated samples, labels),
each placed on a *pattern*: an expression in an IndexedBase v over classes (e.g. v_c, v_a + v_b)
times a scalar amplitude. A node's neighbours are listed as families of edges, possibly summed
over a class index with exclusions, with symbolic counts and weights (so K, n, μ, ω stay symbolic).

With the derived per-edge forces F_x = A_xx x + A_xy y, F_y = A_yx x + A_yy y (coefficients
scalar·identity, so each embedding coordinate decouples) the flow at a node of type T is
    ż_T = η_T [ A_TT·deg_T·a_T p_T + A_TU Σ_{edges} w·a_U p_U ],
the neighbour sums are evaluated with SymPy (Sum(...).doit(), then Σ_s v_s = 0), and closure is
proved by showing the result equals κ_T·p_T exactly. The κ_T are linear in the amplitudes; their
coefficients form the reduced sector matrix M (d/dt a = M a), with decay rates the roots of
det(r I + M) = 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..errors import DerivationCheckError, InvalidParameterError
from .flow import EdgeFlow, derive_flow
from .loss import LABEL, SAMPLE, EdgeLoss

PATTERN = sp.IndexedBase("v")  # class pattern v_0 … v_{K-1}


@dataclass(frozen=True)
class NodeType:
    """Nodes of one kind placed at amplitude·pattern; ``block`` is the engine block ('x' or 'y')."""

    name: str
    block: str
    amplitude: sp.Symbol
    pattern: sp.Expr
    indices: tuple = ()
    description: str = ""


@dataclass(frozen=True)
class Neighbours:
    """Edges from one node of type ``node`` to nodes of type ``other``.

    For each value of ``index`` in lo…hi except ``exclude`` (or once, if index is None) there
    are ``count`` edges of weight ``weight`` to a node whose pattern is ``pattern``.
    """

    node: str
    other: str
    weight: sp.Expr
    count: sp.Expr
    pattern: sp.Expr
    index: sp.Symbol | None = None
    lo: sp.Expr = sp.S.Zero
    hi: sp.Expr | None = None
    exclude: tuple = ()

    def span(self) -> tuple:
        return (self.index, self.lo, self.hi)

    def multiplicity(self) -> sp.Expr:
        """Number of index values summed over (1 without an index)."""
        if self.index is None:
            return sp.S.One
        return (self.hi - self.lo + 1) - len(self.exclude)

    def degree(self) -> sp.Expr:
        """Σ of the weights of these edges: count·weight·(number of index values)."""
        return self.count * self.weight * self.multiplicity()

    def pattern_sum(self, pre=None) -> sp.Expr:
        """Σ over these edges of the neighbour pattern (count·weight included), Sums evaluated;
        ``pre`` rewrites the pattern first (e.g. a uniform pattern v_s = u)."""
        pattern = pre(self.pattern) if pre else self.pattern
        if self.index is None:
            return self.count * self.weight * pattern
        total = sp.S.Zero
        for term in sp.Add.make_args(sp.expand(pattern)):
            total += sp.Sum(term, (self.index, self.lo, self.hi)).doit()
        for e in self.exclude:
            total -= pattern.xreplace({self.index: e})
        return self.count * self.weight * total


@dataclass(frozen=True)
class QuotientEnsemble:
    """Node types + neighbour families + the pattern constraint: Σ_s v_s = 0 over 0…K−1
    (``uniform`` None), or a uniform pattern v_s = u for every class (``uniform`` = u)."""

    node_types: tuple
    neighbours: tuple
    n_classes: sp.Expr
    symbols: dict = field(default_factory=dict)
    name: str = "ensemble"
    uniform: sp.Symbol | None = None

    def pre(self, expr: sp.Expr) -> sp.Expr:
        """The pattern rule applied before sums are evaluated (v_s -> u for a uniform pattern)."""
        if self.uniform is None:
            return sp.sympify(expr)
        return sp.sympify(expr).replace(lambda e: isinstance(e, sp.Indexed) and e.base == PATTERN,
                                        lambda e: self.uniform)

    def post(self, expr: sp.Expr) -> sp.Expr:
        """The pattern rule applied after the sums: Σ_s v_s -> 0 (zero-sum patterns)."""
        return sp.expand(expr) if self.uniform is not None else self.zero_sum(expr)

    def pattern_atoms(self, pattern: sp.Expr) -> list:
        """The pattern variables of an expression: v_i entries, or u."""
        if self.uniform is not None:
            return [self.uniform] if pattern.has(self.uniform) else []
        return sorted((e for e in sp.sympify(pattern).atoms(sp.Indexed) if e.base == PATTERN), key=str)

    def node(self, name: str) -> NodeType:
        for t in self.node_types:
            if t.name == name:
                return t
        raise InvalidParameterError(f"node type must be one of {[t.name for t in self.node_types]}; got {name!r}")

    def of(self, name: str) -> tuple:
        return tuple(nb for nb in self.neighbours if nb.node == name)

    def zero_sum(self, expr: sp.Expr) -> sp.Expr:
        """Replace every full pattern sum Σ_{s=0}^{K−1} v_s by 0."""
        K = self.n_classes

        def full(e):
            if not isinstance(e, sp.Sum) or len(e.limits) != 1:
                return False
            s, lo, hi = e.limits[0]
            return (e.function == PATTERN[s] and sp.simplify(lo) == 0
                    and sp.simplify(hi - (K - 1)) == 0)

        return sp.expand(sp.sympify(expr).replace(full, lambda e: sp.S.Zero))


@dataclass(frozen=True)
class Closure:
    """Closure proof for one node type: flow = κ·pattern with residual 0."""

    node: str
    flow: sp.Expr  # the node flow with the neighbour sums written out (Sums unevaluated)
    reduced: sp.Expr  # after evaluating the sums and the zero-sum condition
    coefficient: sp.Expr  # κ (linear in the amplitudes)
    residual: sp.Expr  # reduced − κ·pattern, simplified: 0 proves closure


@dataclass(frozen=True)
class SectorReduction:
    """The reduced dynamics d/dt a = M a of an invariant sector, with its proof of closure."""

    ensemble: QuotientEnsemble
    amplitudes: tuple
    matrix: sp.ImmutableMatrix
    closure: tuple
    r: sp.Symbol
    coefficients: dict  # block pair -> scalar edge-force coefficient (A_xx, A_xy, …)

    @property
    def symbols(self) -> dict:
        """name -> SymPy symbol of every parameter (eta_x, eta_y, n, mu, K, omega, r)."""
        out = dict(self.ensemble.symbols)
        out[self.r.name] = self.r
        return out

    @property
    def charpoly(self) -> sp.Expr:
        """det(r I + M): monic in r, its roots are the decay rates of the sector."""
        n = self.matrix.shape[0]
        return sp.expand(sp.Matrix(self.r * sp.eye(n) + self.matrix).det(method="berkowitz"))

    def numeric_matrix(self, values: dict) -> np.ndarray:
        """M at numeric parameter values {name: value}."""
        subs = {self.symbols[k]: v for k, v in values.items()}
        return np.array(sp.Matrix(self.matrix).xreplace(subs).evalf(30), dtype=float)

    def rates(self, values: dict, digits: int = 30) -> np.ndarray:
        """Decay rates (ascending): roots of det(r I + M) at numeric parameters, to ``digits`` digits."""
        subs = {self.symbols[k]: sp.Float(v, digits) if isinstance(v, float) else sp.nsimplify(v)
                for k, v in values.items()}
        poly = sp.Poly(self.charpoly.xreplace(subs), self.r)
        roots = poly.nroots(n=digits, maxsteps=500)
        if any(abs(sp.im(z)) > 1e-20 * max(1, abs(z)) for z in roots):
            raise DerivationCheckError(f"complex sector rates {roots}: expected real decay rates")
        return np.sort(np.array([float(sp.re(z)) for z in roots]))


def affine_coefficients(flow: EdgeFlow, subs: dict | None = None) -> dict:
    """Scalars A_bb' with F_b = Σ_b' A_bb' z_b' (b, b' ∈ {x, y}); refuse a non-affine force, a
    constant term, or a coefficient matrix that is not scalar·identity (after ``subs``)."""
    loss = flow.loss
    subs = subs or {}
    z = {SAMPLE: sp.Matrix(loss.x), LABEL: sp.Matrix(loss.y)}
    node_syms = set(loss.node_symbols)
    out = {}
    for b in (SAMPLE, LABEL):
        F = sp.Matrix(flow.force(b)).xreplace(subs)
        const = F.xreplace({s: 0 for s in node_syms})
        if any(sp.simplify(e) != 0 for e in const):
            raise DerivationCheckError(f"{loss.name}: force on {b} has a constant term; no linear sector")
        for b2 in (SAMPLE, LABEL):
            J = F.jacobian(z[b2])
            if any(e.free_symbols & node_syms for e in J):
                raise DerivationCheckError(f"{loss.name}: force on {b} is not affine in {b2}")
            a = sp.simplify(J[0, 0])
            if sp.simplify(J - a * sp.eye(J.shape[0])) != sp.zeros(*J.shape):
                raise DerivationCheckError(
                    f"{loss.name}: coefficient ∂F_{b}/∂{b2} is not scalar·identity; coordinates do not decouple")
            out[(b, b2)] = a
    return out


def reduce_sector(flow: EdgeFlow, ensemble: QuotientEnsemble, *, subs: dict | None = None,
                  r: sp.Symbol | None = None) -> SectorReduction:
    """Substitute the ensemble's ansatz into the derived flow, prove closure, read off M."""
    loss = flow.loss
    A = affine_coefficients(flow, subs)
    amps = tuple(t.amplitude for t in ensemble.node_types)
    rows, proofs = [], []
    for t in ensemble.node_types:
        if t.block not in (SAMPLE, LABEL):
            raise InvalidParameterError(f"node type block must be 'x' or 'y'; got {t.block!r}")
        eta = loss.rate(t.block)
        fams = ensemble.of(t.name)
        if not fams:
            raise InvalidParameterError(f"node type {t.name!r} has no neighbours")
        written, reduced = sp.S.Zero, sp.S.Zero
        pattern = ensemble.pre(t.pattern)
        for nb in fams:
            other = ensemble.node(nb.other)
            own = A[(t.block, t.block)] * t.amplitude * pattern
            cross = A[(t.block, other.block)] * other.amplitude
            summand = nb.count * nb.weight * (own + cross * ensemble.pre(nb.pattern))
            if nb.index is None:
                written += summand
            else:
                written += sp.Sum(summand, nb.span()) - sum(
                    (summand.xreplace({nb.index: e}) for e in nb.exclude), sp.S.Zero)
            reduced += nb.degree() * own + cross * nb.pattern_sum(ensemble.pre)
        written = eta * written
        reduced = ensemble.post(eta * reduced)
        atoms = ensemble.pattern_atoms(pattern)
        if not atoms or sp.expand(pattern).coeff(atoms[0]) == 0:
            raise InvalidParameterError(f"pattern of {t.name!r} must contain the class pattern v")
        kappa = sp.simplify(reduced.coeff(atoms[0]) / sp.expand(pattern).coeff(atoms[0]))
        residual = sp.simplify(sp.expand(reduced - kappa * pattern))
        if residual != 0:
            raise DerivationCheckError(
                f"{ensemble.name}: the ansatz is not closed at node type {t.name!r}: residual {residual}")
        rows.append([sp.factor(sp.expand(sp.diff(kappa, a))) for a in amps])
        proofs.append(Closure(t.name, written, reduced, sp.expand(kappa), residual))
    M = sp.ImmutableMatrix(rows)
    check = sp.expand(sp.Matrix(M) * sp.Matrix(amps) - sp.Matrix([p.coefficient for p in proofs]))
    if check != sp.zeros(len(amps), 1):
        raise DerivationCheckError(f"{ensemble.name}: the sector flow is not linear in the amplitudes")
    return SectorReduction(ensemble, amps, M, tuple(proofs), r or sp.Symbol("r"), A)


# --- the balanced ensemble B(K, n, μ, ω) ---------------------------------------------------
def balanced_symbols(omega=None) -> dict:
    """Symbols K (positive integer), n, mu (positive) and omega (positive symbol, or the number)."""
    K = sp.Symbol("K", positive=True, integer=True)
    n, mu = sp.symbols("n mu", positive=True)
    out = {"K": K, "n": n, "mu": mu}
    if omega is None:
        out["omega"] = sp.Symbol("omega", positive=True)
    else:
        om = sp.nsimplify(omega) if isinstance(omega, (int, float, np.integer, np.floating, sp.Number)) and not isinstance(omega, bool) else None
        if om is None or not om.is_finite or not om.is_positive:
            raise InvalidParameterError(f"omega must be None (symbolic) or a finite number > 0; got {omega!r}")
        out["omega"] = om
    return out


def _balanced_ensemble(loss: EdgeLoss, omega, uniform: sp.Symbol | None, name: str) -> QuotientEnsemble:
    s = balanced_symbols(omega)
    K, n, mu, om = s["K"], s["n"], s["mu"], s["omega"]
    a, b, c, q = sp.symbols("a b c s", integer=True)
    X, F, Y = sp.symbols("X F Y", real=True)
    v = PATTERN
    half = om / 2
    types = (
        NodeType("x", SAMPLE, X, v[c], (c,), "consistent sample of class c"),
        NodeType("f", SAMPLE, F, v[a] + v[b], (a, b), "frustrated sample of the pair (a, b)"),
        NodeType("y", LABEL, Y, v[c], (c,), "label c"),
    )
    nbs = (
        Neighbours("x", "y", sp.S.One, sp.S.One, v[c]),
        Neighbours("f", "y", half, sp.S.One, v[a]),
        Neighbours("f", "y", half, sp.S.One, v[b]),
        Neighbours("y", "x", sp.S.One, n, v[c]),
        Neighbours("y", "f", half, mu, v[c] + v[q], q, sp.S.Zero, K - 1, (c,)),
    )
    syms = {"eta_x": loss.rate(SAMPLE), "eta_y": loss.rate(LABEL), "K": K, "n": n, "mu": mu}
    if isinstance(om, sp.Symbol):
        syms["omega"] = om
    return QuotientEnsemble(types, nbs, K, syms, name=name, uniform=uniform)


def balanced_separation_ensemble(loss: EdgeLoss, omega=None) -> QuotientEnsemble:
    """Class-separation ansatz of B(K, n, μ, ω): consistent samples of class c at X·v_c,
    frustrated samples of pair (a, b) at F·(v_a + v_b), labels at Y·v_c, Σ_c v_c = 0."""
    return _balanced_ensemble(loss, omega, None, "balanced class-separation sector")


def balanced_centre_ensemble(loss: EdgeLoss, omega=None) -> QuotientEnsemble:
    """Centre-of-mass ansatz of B(K, n, μ, ω): the same node types with v_c = u for every class
    (consistent samples at X·u, frustrated samples at 2F·u, labels at Y·u)."""
    return _balanced_ensemble(loss, omega, sp.Symbol("u", real=True), "balanced centre-of-mass sector")


def balanced_separation_sector(loss: EdgeLoss, omega=None) -> SectorReduction:
    """The 3×3 class-separation sector of the derived flow of ``loss`` on B(K, n, μ, ω)."""
    return reduce_sector(derive_flow(loss), balanced_separation_ensemble(loss, omega))


def balanced_centre_sector(loss: EdgeLoss, omega=None) -> SectorReduction:
    """The 3×3 centre-of-mass sector (one zero rate: the conserved weighted mean)."""
    return reduce_sector(derive_flow(loss), balanced_centre_ensemble(loss, omega))


def balanced_ansatz(K: int, n: int, mu: int, v, amplitudes) -> np.ndarray:
    """Node values (N+K, d) of the ansatz in balanced_couplings' row order: X v_c, F (v_a + v_b), Y v_c.

    v is (K, d) with zero column sums; amplitudes = (X, F, Y).
    """
    import itertools

    v = np.asarray(v, dtype=float)
    X, F, Y = amplitudes
    rows = [X * v[c] for c in range(K) for _ in range(n)]
    rows += [F * (v[p] + v[q]) for p, q in itertools.combinations(range(K), 2) for _ in range(mu)]
    rows += [Y * v[c] for c in range(K)]
    return np.array(rows)
