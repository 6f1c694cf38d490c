r"""Self-verification at 30 digits: re-check derived symbolic claims with mpmath at random points.

Three kinds of claim, each returned as :class:`~symcollapse.verification.Check` rows:

- forces:   F_b = −∂ℓ/∂θ_b with every sg(a) frozen at its value, against ``mpmath.diff``
            (high-precision numerical differentiation) of the loss lambdified with mpmath;
- identity: expr = 0 (an ansatz closure, a fixed-point condition, dI/dt = 0, …), evaluated at
            random rational points; error = |expr| / max_t |t| over the additive terms t;
- root:     a claimed root r of a polynomial p (e.g. a slow rate), against the roots of p
            computed with ``mpmath.polyroots`` and polished with ``mpmath.findroot``.

The points are rationals drawn from a seeded generator, so every row is reproducible.
"""
from __future__ import annotations

import random
from typing import Iterable

import mpmath
import sympy as sp

from ..closed_forms import sector_cubic
from ..errors import DerivationCheckError, InvalidParameterError
from ..validation import check_int
from ..deprecation import moved_names
from ..verification import Check
from . import losses
from .flow import EdgeFlow, derive_flow
from .loss import EdgeLoss
from .stopgrad import freeze_stop_gradient, strip_stop_gradient

DPS = 30
TINY = mpmath.mpf(10) ** -300


def default_tol(dps: int) -> float:
    """Agreement required at ``dps`` digits: 10^−(dps−5) (five digits of head room)."""
    return 10.0 ** -(dps - 5)


# --- random points ---------------------------------------------------------------------------
def random_point(symbols: Iterable[sp.Symbol], rng: random.Random) -> dict:
    """{symbol: Rational}: positive symbols in [1/2, 2], the others in [−2, 2] (denominator 997)."""
    out = {}
    for s in symbols:
        if s.is_positive:
            out[s] = sp.Rational(rng.randint(499, 1994), 997)
        else:
            out[s] = sp.Rational(rng.randint(-1994, 1994), 997)
    return out


def _mp(value) -> mpmath.mpf:
    """An exact Rational (or any SymPy number / float) as an mpf at the current precision."""
    value = sp.sympify(value)
    if value.is_Rational:
        return mpmath.mpf(int(value.p)) / int(value.q)
    return mpmath.mpmathify(str(sp.N(value, mpmath.mp.dps + 10)))


def _rel(diff: list, scale: list) -> float:
    """max|diff| / max(max|scale|, 10^−300) as a float (0 for empty lists)."""
    if not diff:
        return 0.0
    num = max(abs(v) for v in diff)
    den = max([abs(v) for v in scale] + [TINY])
    return float(num / den)


def _lambdify(args, exprs):
    return sp.lambdify(list(args), list(exprs), modules="mpmath")


# --- (a) forces -----------------------------------------------------------------------------
def check_forces(loss: EdgeLoss, *, model: str | None = None, flow: EdgeFlow | None = None,
                 n_points: int = 2, seed: int = 0, dps: int = DPS, tol: float | None = None) -> list[Check]:
    r"""One row per learned block b: F_b (derived) = −∂ℓ/∂θ_b (sg frozen) by ``mpmath.diff``."""
    n_points = check_int("n_points", n_points, 1)
    dps = check_int("dps", dps, 15, 200)
    tol = default_tol(dps) if tol is None else tol
    flow = derive_flow(loss) if flow is None else flow
    model = model or loss.name
    variables = tuple(loss.variables)
    frozen = {s: sp.Symbol(f"{s.name}__sg", real=True) for s in variables}
    other = tuple(loss.data_symbols) + tuple(loss.parameters)
    args = variables + tuple(frozen[s] for s in variables) + other
    frozen_loss = _lambdify(args, [freeze_stop_gradient(loss.expr, frozen)])
    rng = random.Random(seed)
    errors: dict[str, tuple[list, list]] = {b: ([], []) for b in flow.learned}
    with mpmath.workdps(dps):
        force_fns = {b: _lambdify(variables + other, [strip_stop_gradient(e) for e in flow.force(b)])
                     for b in flow.learned}
        for _ in range(n_points):
            pt = random_point(variables + other, rng)
            vals = [_mp(pt[s]) for s in variables]
            rest = [_mp(pt[s]) for s in other]
            for b in flow.learned:
                derived = force_fns[b](*vals, *rest)
                ref = []
                for s in loss.block(b):
                    k = variables.index(s)

                    def f(t, k=k):
                        moved = list(vals)
                        moved[k] = t
                        return frozen_loss(*moved, *vals, *rest)[0]

                    ref.append(-mpmath.diff(f, vals[k]))
                diff, scale = errors[b]
                diff.extend(a - r for a, r in zip(derived, ref))
                scale.extend(ref)
    sg_text = ", sg frozen" if flow.uses_stop_gradient else ""
    return [Check(model, f"F_{b} = -dl/d{b} ({loss.name})", "SymPy force",
                  f"mpmath.diff at {dps} digits{sg_text}, {n_points} random points",
                  _rel(*errors[b]), tol) for b in flow.learned]


def check_edge_jacobian(flow: EdgeFlow, *, model: str | None = None, n_points: int = 2,
                        seed: int = 0, dps: int = DPS, tol: float | None = None) -> Check:
    r"""The derived per-edge Jacobian ∂F_b/∂θ_b' (all learned blocks) against ``mpmath.diff`` of F."""
    n_points = check_int("n_points", n_points, 1)
    dps = check_int("dps", dps, 15, 200)
    tol = default_tol(dps) if tol is None else tol
    loss = flow.loss
    variables = tuple(loss.variables)
    other = tuple(loss.data_symbols) + tuple(loss.parameters)
    learned_syms = {b: tuple(loss.block(b)) for b in flow.learned}
    rng = random.Random(seed)
    diff, scale = [], []
    with mpmath.workdps(dps):
        F = {b: _lambdify(variables + other, list(flow.force(b))) for b in flow.learned}
        J = {key: (entries, _lambdify(variables + other, [e for _, _, e in entries]))
             for key, entries in flow.edge_jacobian.items()}
        for _ in range(n_points):
            pt = random_point(variables + other, rng)
            vals = [_mp(pt[s]) for s in variables]
            rest = [_mp(pt[s]) for s in other]
            for (b, b2), (entries, fn) in J.items():
                derived = {(r, c): v for (r, c, _), v in zip(entries, fn(*vals, *rest))}
                for c, s in enumerate(learned_syms[b2]):
                    k = variables.index(s)
                    for r in range(len(learned_syms[b])):

                        def f(t, k=k, r=r):
                            moved = list(vals)
                            moved[k] = t
                            return F[b](*moved, *rest)[r]

                        ref = mpmath.diff(f, vals[k])
                        diff.append(derived.get((r, c), mpmath.mpf(0)) - ref)
                        scale.append(ref)
    return Check(model or loss.name, f"edge Jacobian dF/dtheta ({loss.name})", "SymPy (sparse)",
                 f"mpmath.diff of the forces at {dps} digits, {n_points} random points",
                 _rel(diff, scale), tol)


# --- (b) identities -------------------------------------------------------------------------
def check_identity(model: str, claim: str, expr, *, values: dict | None = None,
                   compared_with: str | None = None, n_points: int = 3, seed: int = 0,
                   dps: int = DPS, tol: float | None = None) -> Check:
    r"""expr = 0 (scalar or matrix, sg read as its value) at random rational points.

    Error = max|expr| / max_t |t| over the additive terms t of every entry (the size of the
    cancelling terms); symbols in ``values`` are fixed, the others drawn at random.
    """
    n_points = check_int("n_points", n_points, 1)
    dps = check_int("dps", dps, 15, 200)
    tol = default_tol(dps) if tol is None else tol
    expr = sp.sympify(expr)
    entries = list(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    entries = [strip_stop_gradient(e) for e in entries]
    fixed = {sp.sympify(k) if not isinstance(k, str) else sp.Symbol(k): v for k, v in (values or {}).items()}
    fixed = {_match(k, entries): v for k, v in fixed.items()}
    free = sorted(set().union(*[e.free_symbols for e in entries]) - set(fixed), key=str)
    terms = [t for e in entries for t in sp.Add.make_args(e)]
    owner = [k for k, e in enumerate(entries) for _ in sp.Add.make_args(e)]
    rng = random.Random(seed)
    diff, scale = [], []
    with mpmath.workdps(dps):
        fn = _lambdify(free + list(fixed), terms)
        fixed_vals = [_mp(v) for v in fixed.values()]
        for _ in range(n_points):
            pt = random_point(free, rng)
            vals = fn(*[_mp(pt[s]) for s in free], *fixed_vals)
            sums = [mpmath.mpf(0)] * len(entries)
            for k, v in zip(owner, vals):
                sums[k] += v
            diff.extend(sums)
            scale.extend(vals)
    return Check(model, claim, "SymPy identity = 0",
                 compared_with or f"mpmath at {dps} digits, {n_points} random points",
                 _rel(diff, scale), tol)


def _match(key: sp.Symbol, entries) -> sp.Symbol:
    """The symbol of the expression named like ``key`` (assumptions may differ)."""
    for e in entries:
        for s in e.free_symbols:
            if s == key or s.name == getattr(key, "name", None):
                return s
    return key


# --- (c) roots ------------------------------------------------------------------------------
def polynomial_roots(poly, var: sp.Symbol, *, dps: int = DPS) -> list:
    """All roots of a polynomial in ``var`` with numeric coefficients, polished by findroot."""
    p = sp.Poly(sp.sympify(poly), var)
    stray = p.free_symbols - {var}
    if stray:
        raise InvalidParameterError(f"poly must have numeric coefficients; free symbols {sorted(map(str, stray))}")
    if p.degree() < 1:
        raise InvalidParameterError(f"poly must have degree >= 1 in {var}; got degree {p.degree()}")
    with mpmath.workdps(dps + 10):
        coeffs = [_mp(c) for c in p.all_coeffs()]
        try:
            roots = mpmath.polyroots(coeffs, maxsteps=200, extraprec=4 * dps)
        except mpmath.libmp.NoConvergence as exc:
            raise DerivationCheckError(f"polyroots did not converge for {poly}") from exc
        polished = []
        for r in roots:
            try:
                polished.append(mpmath.findroot(lambda t: mpmath.polyval(coeffs, t), r))
            except (ValueError, ZeroDivisionError):  # a multiple root: keep the polyroots value
                polished.append(r)
    return polished


def check_root(model: str, claim: str, poly, var: sp.Symbol, claimed, *, which: str = "nearest",
               compared_with: str | None = None, dps: int = DPS, tol: float | None = None) -> Check:
    r"""A claimed root r of p(var): |r − r*| / |r*| with r* the chosen root of p at ``dps`` digits.

    which -- 'nearest' (the root closest to the claim), 'smallest' (smallest real root) or
             'smallest_positive' (smallest real root > 0, e.g. a slow decay rate).
    """
    if which not in ("nearest", "smallest", "smallest_positive"):
        raise InvalidParameterError(f"which must be 'nearest', 'smallest' or 'smallest_positive'; got {which!r}")
    dps = check_int("dps", dps, 15, 200)
    tol = default_tol(dps) if tol is None else tol
    roots = polynomial_roots(poly, var, dps=dps)
    with mpmath.workdps(dps + 10):
        c = _mp(claimed)
        eps = mpmath.mpf(10) ** (-(dps // 2))
        real = [mpmath.re(r) for r in roots if abs(mpmath.im(r)) <= eps * max(1, abs(r))]
        if which == "nearest":
            pool = roots
        elif which == "smallest":
            pool = [min(real)] if real else []
        else:
            pos = [r for r in real if r > eps]
            pool = [min(pos)] if pos else []
        if not pool:
            return Check(model, claim, _fmt(claimed), f"no {which} root found", float("inf"), tol)
        ref = min(pool, key=lambda r: abs(c - r))
        err = float(abs(c - ref) / max(abs(ref), TINY))
    text = compared_with or f"{which} root of the polynomial, mpmath polyroots+findroot at {dps} digits"
    return Check(model, claim, _fmt(claimed), text, err, tol)


def _fmt(x) -> str:
    try:
        return f"{float(sp.N(x)):.12g}"
    except (TypeError, ValueError):
        return str(x)


def require(rows: list[Check]) -> list[Check]:
    """Return ``rows`` if every one passed, else raise DerivationCheckError naming the failures."""
    bad = [r for r in rows if not r.passed]
    if bad:
        raise DerivationCheckError("30-digit re-check failed: " + "; ".join(
            f"{r.model}: {r.claim} (rel. error {r.rel_error:.2e} > {r.tol:.0e})" for r in bad))
    return rows


# --- the engine's own rows ------------------------------------------------------------------
def embedding_loss(d: int = 2) -> EdgeLoss:
    """ℓ = ½‖x − y‖² (model (a)): the package's one definition, :func:`symcollapse.symbolic.losses.embedding_loss`."""
    return losses.embedding_loss(d)


def head_loss(d: int = 2, stop_gradient: bool = True) -> EdgeLoss:
    """ℓ = ½(‖Wx − sg(y)‖² + ‖Wy − sg(x)‖²) (model (b)), sg optional: the package's one
    definition, :func:`symcollapse.symbolic.losses.head_loss`."""
    return losses.head_loss(d, "both" if stop_gradient else "none", True,
                            name="head_sg" if stop_gradient else "head_nosg")  # short names: the rows' labels


def invariant_rate(flow: EdgeFlow) -> sp.Expr:
    r"""Per-edge dI/dt / 2 for I = Σ‖z‖²/η − ‖W‖²/η_W: x·F_x + y·F_y − ⟨W, F_W⟩."""
    loss = flow.loss
    W = loss.block("W")
    terms = [a * b for a, b in zip(loss.x, flow.force("x"))]
    terms += [a * b for a, b in zip(loss.y, flow.force("y"))]
    terms += [-a * b for a, b in zip(W, flow.force("W"))]
    return sp.Add(*terms, evaluate=False)  # unexpanded: the cancellation is checked numerically


def edge_hessian_asymmetry(flow: EdgeFlow) -> sp.Matrix:
    r"""J − Jᵀ for the per-edge Jacobian J = ∂F/∂θ over all learned variables (0 iff F = −∇ℓ)."""
    loss = flow.loss
    blocks = flow.learned
    off, pos = 0, {}
    for b in blocks:
        pos[b] = off
        off += len(loss.block(b))
    J = sp.zeros(off, off)
    for (b, b2), entries in flow.edge_jacobian.items():
        for r, c, e in entries:
            J[pos[b] + r, pos[b2] + c] = e
    return J - J.T


def balanced_sector_cubic(r: sp.Symbol, K, n, mu, eta_x, eta_y) -> sp.Expr:
    r"""The class-separation cubic (ω = 2, docs/model.md §2), from
    :func:`symcollapse.closed_forms.sector_cubic`."""
    return sector_cubic(r, K, n, mu, eta_x, eta_y)


# the engine's rows assemble a model's system: they are the 'engine' job's (symcollapse.jobs.engine)
MOVED = {"balanced_slow_rate_engine": "symcollapse.jobs.engine", "engine_checks": "symcollapse.jobs.engine"}
__getattr__ = moved_names(__name__, MOVED)
