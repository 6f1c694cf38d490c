r"""Simulate an assembled flow and record the collapse metrics: Δ_min(t), accuracy(t), L(t)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import expm_multiply

from ..errors import DerivationCheckError, InvalidParameterError
from ..validation import check_int, check_real
from ..symbolic.loss import LABEL, SAMPLE
from .batched import DENSE_JACOBIAN_ENTRIES, batchable, integrate_many
from .column_flow import column_propagator
from .fitting import fit_exponential_rate
from .integrate import METHODS, check_stop_residual, integrate, node_blocks, time_grid
from .method_choice import SCHUR_BYTES, choose, linear_choice, map_linear_choice, maps_nodes
from .metrics import accuracy, accuracy_many, d_min, d_min_many
from .sample_reduction import reducible, reduction
from .system import FlowSystem


#: exact solutions of linear flows (see :mod:`.column_flow`)
EXACT = ("exact-spectral", "exact-expm")


@dataclass(frozen=True)
class Trajectory:
    """Recorded metrics at times t; Z (N+K, d) and W (or None) are the final state.

    ``extra`` records how the run was solved: ``method`` (what ran; 'auto' resolves to one of
    'exact-spectral', 'exact-expm', 'DOP853', 'BDF-nodes', 'BDF-Schur', 'BDF', 'BDF-krylov'),
    ``method_reason``, the measured
    quantities behind the choice, and the fixed-point test: ``stop_residual``, ``stopped``,
    ``t_reached`` (last time), ``residual`` (‖θ̇‖_∞ at the final state).

    ``states`` holds the full flat states at every t when recorded (small systems only).
    """

    t: np.ndarray
    d_min: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray
    Z: np.ndarray
    W: np.ndarray | None = None
    states: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def fit_slow_rate(self, floor: float = 1e-6, fraction: float = 0.5, t_min: float | None = None) -> float:
        """r from log Δ_min(t) ≈ a − r t, least squares over the late part of the record.

        Uses the last ``fraction`` of the time span in which Δ_min/Δ_min(0) > ``floor`` (so the
        solver's absolute error does not enter) and, if given, t ≥ ``t_min`` (after the fast modes).
        """
        return fit_exponential_rate(self.t, self.d_min, floor=floor, fraction=fraction, t_min=t_min)


def check_method(method) -> str:
    """'auto', an exact linear solution or a SciPy method name, else InvalidParameterError."""
    if method != "auto" and method not in EXACT and method not in METHODS:
        raise InvalidParameterError(f"method must be 'auto', one of {EXACT} or {METHODS}; got {method!r}")
    return method


def check_seeds(seeds) -> list:
    """A non-empty sequence of distinct integer seeds ≥ 0, else InvalidParameterError."""
    try:
        seeds = list(seeds)
    except TypeError:
        raise InvalidParameterError(f"seeds must be a sequence of integers >= 0; got {seeds!r}") from None
    if not seeds:
        raise InvalidParameterError("seeds must hold at least one seed")
    return [check_int("seeds[i]", s, 0) for s in seeds]


def _linear_loss(system, A, Z0):
    r"""1/η per node if the derived loss is L = −½ Σ_k z_k·(A Z)_k / η_k (= s·½ tr(Zᵀ L_G Z), docs/model.md
    §2) — checked against the compiled loss at Z0 and at a random state — else None."""
    g = system.graph
    inv = 1.0 / np.concatenate([np.full(g.N, system.rates[SAMPLE]), np.full(g.K, system.rates[LABEL])])
    rng = np.random.default_rng(7)
    for Z in (Z0, rng.normal(size=Z0.shape)):
        want = system.loss({SAMPLE: Z[:g.N], LABEL: Z[g.N:], **getattr(system, "frozen", {})})
        got = -0.5 * float(np.sum(Z * (A @ Z) * inv[:, None]))
        if not abs(got - want) <= 1e-10 * max(abs(want), 1e-300):
            return None
    return inv


def _samples(system, st: dict):
    """The sample embeddings X of a state: its 'x' block, or ``system.samples(st)`` for a system
    whose samples are a map of other blocks (x_i = S u_i, :mod:`.linear_map`)."""
    # looked up on the class: MatrixFlowSystem forwards unknown attributes to its component-level
    # system, whose derivation at the working d is slow (and refused above d = 24)
    return system.samples(st) if callable(getattr(type(system), "samples", None)) else st.get(SAMPLE)


def _metrics(system, st: dict, labels, head, loss: float | None = None):
    X = _samples(system, st)
    Y = st[LABEL]
    W = st.get(head) if head else None
    acc = accuracy(X, Y, labels, W) if X is not None and X.shape[1] == Y.shape[1] else np.nan
    return d_min(Y), acc, system.loss(st) if loss is None else loss


def _record(extra: dict, choice, method: str, stop_residual, stopped: bool, t_reached: float,
            residual: float) -> dict:
    extra.update(method=method, method_reason=choice.reason if choice else "chosen by the caller",
                 stop_residual=stop_residual, stopped=bool(stopped), t_reached=float(t_reached),
                 residual=float(residual))
    if choice is not None:
        extra.update(choice.measured)
    return extra


def simulate_system(system: FlowSystem, v0: np.ndarray, t_end: float, *, labels: np.ndarray,
                    n_points: int = 200, head: str | None = None, method: str = "BDF",
                    rtol: float = 1e-10, atol: float = 1e-12, use_jacobian: bool = True,
                    keep_states: bool = False, t_eval: np.ndarray | None = None,
                    stop_residual: float | None = None, lu_limit: int | None = None,
                    reduce_samples: bool = True, residual_norm=None) -> Trajectory:
    """Integrate from v0 to t_end and record Δ_min, accuracy (nearest label, through the head
    block named ``head`` if given) and the loss on a log-spaced time grid.

    With ``method='auto'`` and ``reduce_samples`` a nonlinear matrix-level flow whose samples fall
    into large groups of equal coupling row is integrated on d + 1 pseudo-samples per group and
    lifted back exactly (:mod:`.sample_reduction`, docs/model.md §3.5; checked against the full
    flow at the initial and the final state; ``extra['sample_reduction']``).
    ``residual_norm(θ̇)`` replaces ‖θ̇‖_∞ in the stop test (used for reduced flows).

    ``method='auto'`` chooses by structure (:mod:`.method_choice`): the exact solution of a linear
    flow, DOP853 when not stiff, BDF(-Schur, -nodes) with the analytic Jacobian when stiff (LSODA with
    it, dense, for small systems). ``extra``
    records ``method``, ``method_reason`` and what was measured. ``stop_residual``: end at the first
    time with ‖θ̇‖_∞ ≤ stop_residual (``extra['stopped']``, ``['t_reached']``, ``['residual']``).
    'BDF-krylov' (matrix-free, chosen by 'auto' when the Jacobian is too large to assemble) records
    ``extra['krylov']``: Jacobians, linear solves, GMRES iterations (total, largest per solve),
    failed solves (each made BDF recompute its Jacobian or halve its step) and JVPs.
    """
    if t_eval is None:
        t_eval = time_grid(t_end, n_points)
    elif not t_eval[-1] > 0:  # the parameter given is t_eval: name it
        raise InvalidParameterError(f"t_eval must be increasing, non-negative times ending after 0; "
                                    f"got {len(t_eval)} times ending at {t_eval[-1]:g}")
    stop_residual = check_stop_residual(stop_residual)
    rtol = check_real("rtol", rtol, 0.0, 1.0, strict_min=True)
    atol = check_real("atol", atol, 0.0, None, strict_min=True)
    choice = None
    if method == "auto":
        red = _auto_reduction(system, float(t_eval[-1])) if reduce_samples else None
        if red is not None:
            return _simulate_reduced(red, np.asarray(v0, dtype=float)[None], t_eval, labels=labels, head=head,
                                     rtol=rtol, atol=atol, use_jacobian=use_jacobian, keep_states=keep_states,
                                     stop_residual=stop_residual, lu_limit=lu_limit)[0]
        choice = choose(system, v0, float(t_eval[-1]), lu_limit=lu_limit)
        method = choice.method
    else:
        check_method(method)
    if method in EXACT:
        if choice is None:
            choice = linear_choice(system, float(t_eval[-1]))
            if choice is None:
                raise InvalidParameterError(f"method={method!r} needs a linear flow Ż = A Z; use 'auto'")
            if choice.method != method and maps_nodes(system):
                choice = map_linear_choice(system, float(t_eval[-1]), method.split("-")[1])
                choice = type(choice)(method, "exact, chosen by the caller", {}, choice.propagator)
            elif choice.method != method:
                g = system.graph
                h = system.scale * np.concatenate([np.full(g.N, system.rates[SAMPLE]),
                                                   np.full(g.K, system.rates[LABEL])])
                prop = column_propagator(choice.propagator.A, g.N, g.K, method.split("-")[1], h=h)
                choice = type(choice)(method, "exact, chosen by the caller", {}, prop)
        return _simulate_linear(system, choice, v0, t_eval, labels, keep_states, stop_residual)
    if method == "BDF-nodes" and use_jacobian and batchable(system) and _blocks_fit(system):
        # the structured integrator of simulate_many with one seed (dense sample/coupling blocks
        # from the derived chains, no sparse assembly or slicing per LU; same BDF steps). Measured
        # to the fixed point, one seed, CPU: K=3, N=30, d=8 8 s vs 11–20 s (under load);
        # K=10, N=105, d=16 (2096 unknowns) 8.0 s vs 11.8 s; K=10, N=1005, d=16 reduced 54 s vs 121 s
        many_norm = None if residual_norm is None else (lambda F, seeds: np.array([residual_norm(f) for f in F]))
        return _batched_many(system, choice, np.asarray(v0, dtype=float)[None], t_eval, labels, head,
                             rtol, atol, keep_states, stop_residual, many_norm, schur_lu=True)[0]
    jac = system.jacobian if use_jacobian else None
    if jac is not None and method == "LSODA" and hasattr(system, "jacobian_dense"):
        jac = system.jacobian_dense  # LSODA factors dense matrices: no sparse matrix in between
    sol = integrate(system.flow_vector, v0, t_eval, jac=jac, method=method, rtol=rtol, atol=atol,
                    stop_residual=stop_residual, lu_limit=lu_limit, node_blocks=node_blocks(system),
                    system=system if method == "BDF-krylov" else None, residual_norm=residual_norm)
    dm, acc, ls = [], [], []
    for v in sol.y:
        a, b, c = _metrics(system, system.unpack(v), labels, head)
        dm.append(a)
        acc.append(b)
        ls.append(c)
    final = system.unpack(sol.y[-1])
    X = _samples(system, final)
    Z = np.vstack([X, final[LABEL]]) if X is not None and X.shape[1] == final[LABEL].shape[1] else final[LABEL]
    extra = _record({"nfev": sol.nfev, "njev": sol.njev, "nsteps": sol.nsteps}, choice, method,
                    stop_residual, sol.stopped, sol.t[-1], sol.residual)
    if sol.stats:  # BDF-krylov: Jacobians, linear solves, GMRES iterations, failed solves, JVPs
        extra["krylov"] = dict(sol.stats)
    if sol.newton_floor:  # the BDF methods' noise-aware Newton test (docs/model.md §3.6)
        extra["newton_floor"] = dict(sol.newton_floor)
    return Trajectory(sol.t, np.array(dm), np.array(acc), np.array(ls), Z,
                      final.get(head) if head else None, sol.y if keep_states else None, extra)


#: most bytes of the dense coupling blocks J₁₂, J₂₁ (n₁ × m each) a single run may hold in the
#: batched integrator (the budget method_choice gives the dense Schur block of 'BDF-nodes')
SINGLE_BLOCK_BYTES = SCHUR_BYTES


def _blocks_fit(system) -> bool:
    """Whether one seed's dense blocks J₁₂, J₂₁ (samples × labels + shared) fit SINGLE_BLOCK_BYTES."""
    blocks = node_blocks(system)
    if blocks is None:
        return system.size ** 2 <= DENSE_JACOBIAN_ENTRIES
    n1 = blocks[0] * blocks[1]
    return 16.0 * n1 * (system.size - n1) <= SINGLE_BLOCK_BYTES


def _simulate_linear(system, choice, v0, t_eval, labels, keep_states, stop_residual) -> Trajectory:
    """Trajectory of Ż = A Z from the exact propagator at every time of t_eval (or until
    ‖A Z‖_∞ ≤ stop_residual, the crossing located by bisection to 1e-6 of its time)."""
    if maps_nodes(system):
        return _simulate_mapped_linear(system, choice, v0, t_eval, labels, keep_states, stop_residual)
    prop = choice.propagator
    A = prop.A
    inv = _linear_loss(system, A, np.asarray(v0, dtype=float).reshape(system.graph.N + system.graph.K, -1))
    g = system.graph
    d = system.layout[LABEL][1][1]
    Z0 = np.asarray(v0, dtype=float).reshape(g.N + g.K, d)
    dm, acc, ls, states, ts = [], [], [], [], []
    stopped, residual, Z, t_prev, Z_prev = False, float("nan"), Z0, 0.0, Z0
    seq = prop.states(Z0, t_eval)
    for t, Z in zip(t_eval, seq):
        AZ = A @ Z
        residual = float(np.max(np.abs(AZ))) if Z.size else 0.0
        if stop_residual is not None and residual <= stop_residual:
            if t > 0:
                t, Z, residual = _first_crossing(prop, seq, A, Z_prev, t_prev, float(t), stop_residual)
            stopped = True
        ts.append(float(t))
        st = {SAMPLE: Z[:g.N], LABEL: Z[g.N:], **getattr(system, "frozen", {})}  # frozen blocks (a frozen head) enter the loss
        a, b, c = _metrics(system, st, labels, None, None if (inv is None or stopped) else
                           -0.5 * float(np.sum(Z * AZ * inv[:, None])))
        dm.append(a)
        acc.append(b)
        ls.append(c)
        if keep_states:
            states.append(Z.ravel().copy())
        if stopped:
            break
        t_prev, Z_prev = float(t), Z
    extra = _record({"nfev": 0, "njev": 0, "nsteps": 0}, choice, choice.method, stop_residual,
                    stopped, ts[-1], residual)
    return Trajectory(np.array(ts), np.array(dm), np.array(acc), np.array(ls), Z, None,
                      np.array(states) if keep_states else None, extra)


def _simulate_mapped_linear(system, choice, v0, t_eval, labels, keep_states, stop_residual) -> Trajectory:
    """The exact solution Z(t) = e^{At} Z₀ on the nodes Z = [X; Y] of a linear sample map x = S u
    (:meth:`.linear_map.LinearMapSystem.node_operator`, docs/model.md §4), mapped back to the state
    v(t) = v₀ + Δv(Z(t) − Z₀); Δ_min, accuracy and the loss are those of :func:`simulate_system`
    at v(t), the residual is ‖θ̇‖_∞ of the derived flow at v(t)."""
    prop = choice.propagator
    v0 = np.asarray(v0, dtype=float)
    Z0 = system.nodes(v0)

    def state(Z):
        return v0 + system.state_change(Z - Z0)

    def residual(Z):
        return float(np.max(np.abs(system.flow_vector(state(Z)))))

    dm, acc, ls, states, ts = [], [], [], [], []
    stopped, res, Z, t_prev, Z_prev = False, float("nan"), Z0, 0.0, Z0
    seq = prop.states(Z0, t_eval)
    for t, Z in zip(t_eval, seq):
        res = residual(Z)
        if stop_residual is not None and res <= stop_residual:
            if t > 0:
                t, Z, res = _first_crossing(prop, seq, prop.A, Z_prev, t_prev, float(t), stop_residual,
                                            residual)
            stopped = True
        v = state(Z)
        a, b, c = _metrics(system, system.unpack(v), labels, None)
        ts.append(float(t))
        dm.append(a)
        acc.append(b)
        ls.append(c)
        if keep_states:
            states.append(v)
        if stopped:
            break
        t_prev, Z_prev = float(t), Z
    extra = _record({"nfev": 0, "njev": 0, "nsteps": 0}, choice, choice.method, stop_residual,
                    stopped, ts[-1], res)
    return Trajectory(np.array(ts), np.array(dm), np.array(acc), np.array(ls), Z, None,
                      np.array(states) if keep_states else None, extra)


def _first_crossing(prop, seq, A, Z_lo, t_lo, t_hi, tol, residual=None):
    """Bisection on [t_lo, t_hi] for the first time with residual(Z(t)) ≤ tol (Z(t_hi) satisfies it);
    the residual is ‖A Z‖_∞ unless given."""
    def state(t):
        return seq.at(t) if prop.method == "spectral" else expm_multiply(A * (t - t_lo), Z_lo)

    if residual is None:
        def residual(Z):
            return float(np.max(np.abs(A @ Z)))

    lo, hi = t_lo, t_hi
    Z_hi = state(hi)
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        Zm = state(mid)
        if residual(Zm) <= tol:
            hi, Z_hi = mid, Zm
        else:
            lo = mid
    return hi, Z_hi, residual(Z_hi)


def simulate_many_system(system: FlowSystem, V0, t_end: float, *, labels: np.ndarray,
                         n_points: int = 200, head: str | None = None, method: str = "auto",
                         rtol: float = 1e-10, atol: float = 1e-12, use_jacobian: bool = True,
                         keep_states: bool = False, t_eval: np.ndarray | None = None,
                         stop_residual: float | None = None, lu_limit: int | None = None,
                         reduce_samples: bool = True, residual_norm=None) -> list:
    """One :class:`Trajectory` per initial state (rows of ``V0``), as :func:`simulate_system` gives
    (``reduce_samples``: as there, every seed on the same pseudo-sample graph, each with its own
    lift; ``residual_norm(F, seeds)``: the stop norm of the flows F of those seeds).

    A linear column flow (method 'auto' or 'exact-*') is solved for all seeds at once: their
    d-column matrices are stacked into one (N+K)×(d·B) matrix and the exact propagator acts on it
    (one reduced eigen-solution, batched products; each seed's fixed-point time is then located on
    its own). Other flows: 'auto' is resolved once from the first state (``extra['method']`` the
    same for every seed; several seeds keep 'BDF-nodes' where a single small run would take
    LSODA, :mod:`.method_choice` item 3). With 'BDF-nodes' (stiff matrix-level flows, e.g. the head model) the
    seeds are integrated together (:func:`.batched.integrate_many`: up to ``batched.BATCH_SEEDS``
    seeds per batch, every seed with its own BDF steps, order, Jacobian and LU (:mod:`.seed_bdf`),
    only the evaluations batched; a seed reaching ‖θ̇‖_∞ ≤ stop_residual is recorded at that step
    and leaves the batch), each equal to its single run to the integrator tolerance; ``extra['batch']``
    is the number of seeds integrated together. Any other method runs the seeds one after
    another, each exactly as its single run with ``method=extra['method']``.
    """
    V0 = np.asarray(V0, dtype=float)
    if V0.ndim != 2 or V0.shape[1] != system.size or not len(V0):
        raise InvalidParameterError(f"the initial states must be a (B, {system.size}) array, B ≥ 1; "
                                    f"got shape {V0.shape}")
    if not np.all(np.isfinite(V0)):
        raise InvalidParameterError("the initial states must be finite (no NaN or inf)")
    if t_eval is None:
        t_eval = time_grid(t_end, n_points)
    stop_residual = check_stop_residual(stop_residual)
    rtol = check_real("rtol", rtol, 0.0, 1.0, strict_min=True)
    atol = check_real("atol", atol, 0.0, None, strict_min=True)
    check_method(method)
    choice = None
    if method == "auto" and reduce_samples:
        red = _auto_reduction(system, float(t_eval[-1]))
        if red is not None:
            return _simulate_reduced(red, V0, t_eval, labels=labels, head=head, rtol=rtol, atol=atol,
                                     use_jacobian=use_jacobian, keep_states=keep_states,
                                     stop_residual=stop_residual, lu_limit=lu_limit)
    if method == "auto" or method in EXACT:
        choice = (choose(system, V0[0], float(t_eval[-1]), lu_limit=lu_limit, seeds=len(V0)) if method == "auto"
                  else linear_choice(system, float(t_eval[-1])))
        if method in EXACT and (choice is None or choice.method != method):
            return [simulate_system(system, v, t_end, labels=labels, n_points=n_points, head=head,
                                    method=method, keep_states=keep_states, t_eval=t_eval,
                                    stop_residual=stop_residual) for v in V0]
    if choice is not None and choice.method in EXACT and not maps_nodes(system):
        return _linear_many(system, choice, V0, t_eval, labels, keep_states, stop_residual)
    run_method = choice.method if choice is not None else method
    if run_method == "BDF-nodes" and use_jacobian and len(V0) > 1 and batchable(system):
        return _batched_many(system, choice, V0, t_eval, labels, head, rtol, atol, keep_states,
                             stop_residual, residual_norm)
    out = []
    for i, v in enumerate(V0):
        norm = None if residual_norm is None else (lambda f, i=i: float(residual_norm(f[None], [i])[0]))
        tr = simulate_system(system, v, t_end, labels=labels, n_points=n_points, head=head,
                             method=run_method, rtol=rtol, atol=atol, use_jacobian=use_jacobian,
                             keep_states=keep_states, t_eval=t_eval, stop_residual=stop_residual,
                             lu_limit=lu_limit, residual_norm=norm)
        if choice is not None:
            tr.extra.update(choice.measured, method_reason=choice.reason + " (chosen from the first state)")
        out.append(tr)
    return out


def _linear_many(system, choice, V0, t_eval, labels, keep_states, stop_residual) -> list:
    """All seeds' columns under one propagator; the metrics of all seeds still running are
    computed at once at each time (:func:`.metrics.d_min_many`, :func:`.metrics.accuracy_many`)."""
    prop, A, g = choice.propagator, choice.propagator.A, system.graph
    d = system.layout[LABEL][1][1]
    B, n = len(V0), g.N + g.K
    Z0s = [v.reshape(n, d) for v in V0]
    Zall = np.hstack(Z0s)
    inv = _linear_loss(system, A, Z0s[0])
    rec = [dict(t=[], dm=[], acc=[], ls=[], states=[], stopped=False, residual=np.nan, Z=None)
           for _ in range(B)]
    active = np.arange(B)
    t_prev, Z_prev = 0.0, Zall
    chunk = max(1, 65536 // (n * d))  # seeds per metric batch: its arrays stay in cache
    for t, Z in zip(t_eval, prop.states(Zall, t_eval)):
        AZ = A @ Z
        sel = slice(None) if len(active) == B else active
        Z3 = np.ascontiguousarray(Z.reshape(n, B, d).transpose(1, 0, 2)[sel])  # (seeds, nodes, d)
        res = (np.abs(AZ).max(axis=0).reshape(B, d).max(axis=1)[sel] if Z.size
               else np.zeros(len(active)))
        ls = None if inv is None else -0.5 * (inv @ (Z * AZ)).reshape(B, d).sum(axis=1)[sel]
        dm = d_min_many(Z3[:, g.N:])
        acc = np.concatenate([accuracy_many(Z3[c:c + chunk, :g.N], Z3[c:c + chunk, g.N:], labels)
                              for c in range(0, len(Z3), chunk)])
        still = []
        for j, b in enumerate(active):
            r, tb, rb = rec[b], float(t), float(res[j])
            Zb = Z3[j]
            if stop_residual is not None and rb <= stop_residual:
                r["stopped"] = True
                if tb > 0:  # the crossing, located on this seed alone, with its own metrics
                    seq = prop.states(Z0s[b], t_eval) if prop.method == "spectral" else None
                    cols = slice(b * d, (b + 1) * d)
                    tb, Zb, rb = _first_crossing(prop, seq, A, Z_prev[:, cols], t_prev, tb, stop_residual)
                    a, c, e = _metrics(system, {SAMPLE: Zb[:g.N], LABEL: Zb[g.N:],
                                                **getattr(system, "frozen", {})}, labels, None)
                else:
                    a, c, e = dm[j], acc[j], (ls[j] if ls is not None else None)
            else:
                a, c, e = dm[j], acc[j], (ls[j] if ls is not None else None)
            if e is None:
                e = system.loss({SAMPLE: Zb[:g.N], LABEL: Zb[g.N:], **getattr(system, "frozen", {})})
            r["t"].append(tb)
            r["dm"].append(float(a))
            r["acc"].append(float(c))
            r["ls"].append(float(e))
            if keep_states:
                r["states"].append(Zb.ravel().copy())
            r["residual"], r["Z"] = rb, Zb
            if not r["stopped"]:
                still.append(b)
        active = np.array(still, dtype=int)
        if not len(active):
            break
        t_prev, Z_prev = float(t), Z
    out = []
    for r in rec:
        extra = _record({"nfev": 0, "njev": 0, "nsteps": 0, "batch": B}, choice, choice.method,
                        stop_residual, r["stopped"], r["t"][-1], r["residual"])
        out.append(Trajectory(np.array(r["t"]), np.array(r["dm"]), np.array(r["acc"]), np.array(r["ls"]),
                              np.array(r["Z"]), None, np.array(r["states"]) if keep_states else None, extra))
    return out


def _batched_many(system, choice, V0, t_eval, labels, head, rtol, atol, keep_states, stop_residual,
                  residual_norm=None, schur_lu: bool = False) -> list:
    recs = integrate_many(system, V0, np.asarray(t_eval, dtype=float), rtol=rtol, atol=atol,
                          stop_residual=stop_residual, residual_norm=residual_norm, schur_lu=schur_lu)
    out = []
    for r in recs:
        ys = np.array(r["y"])
        dm, acc, ls = [], [], []
        for v in ys:
            a, b, c = _metrics(system, system.unpack(v), labels, head)
            dm.append(a)
            acc.append(b)
            ls.append(c)
        final = system.unpack(ys[-1])
        X = final.get(SAMPLE)
        Z = np.vstack([X, final[LABEL]]) if X is not None and X.shape[1] == final[LABEL].shape[1] else final[LABEL]
        extra = _record({"nfev": r["nfev"], "njev": r["njev"], "nlu": r["nlu"], "nsteps": r["nsteps"],
                         "batch": r["batch"], "newton_floor": dict(r.get("newton_floor", {}))}, choice,
                        "BDF-nodes", stop_residual, r["stopped"], r["t"][-1], r["residual"])
        if choice is not None and len(V0) > 1:
            extra["method_reason"] = choice.reason + " (chosen from the first state; seeds integrated together)"
        out.append(Trajectory(np.array(r["t"]), np.array(dm), np.array(acc), np.array(ls), Z,
                              final.get(head) if head else None, ys if keep_states else None, extra))
    return out


def _auto_reduction(system, t_end: float):
    """The exact sample reduction 'auto' uses (:func:`.sample_reduction.reduction`), or None: not
    for linear flows (solved exactly as they are) or where it would not shrink the samples enough."""
    if not reducible(system) or linear_choice(system, t_end) is not None:
        return None
    return reduction(system)


def _simulate_reduced(red, V0, t_eval, *, labels, head, rtol, atol, use_jacobian, keep_states,
                      stop_residual, lu_limit) -> list:
    r"""Integrate the pseudo-sample system of ``red`` from the reduced states of V0 ('auto' chooses
    the integrator on it) and lift every recorded state back to the N samples (docs/model.md §3.5).

    Checked: at t = 0 the lifted reduced flow, loss and samples equal the full ones (relative
    EXACTNESS_TOL); at the end the full flow is evaluated at the lifted state, and a stop must hold
    for it (else DerivationCheckError). The stop test measures the lifted (= full) residual."""
    full = red.full
    pairs = [red.reduce(v) for v in V0]
    errs = [red.check(v, vr, lift) for v, (vr, lift) in zip(V0, pairs)]
    VR = np.array([vr for vr, _ in pairs])
    lifts = [lift for _, lift in pairs]
    scale0 = [float(np.max(np.abs(full.flow_vector(v)))) for v in V0]

    def norm(F, seeds):  # decides ‖θ̇‖ ≤ stop_residual exactly; above it, possibly a lower bound
        return red.full_norms(F, [lifts[s] for s in seeds], above=stop_residual)

    groups = red.groups
    labels_r = np.empty(groups.N_reduced, dtype=int)
    for idx, rows in zip(groups.members, groups.pseudo):
        labels_r[rows] = labels[idx[0]]
    t_end = float(t_eval[-1])
    trs = simulate_many_system(red.system, VR, t_end, labels=labels_r, head=head, method="auto", rtol=rtol,
                               atol=atol, use_jacobian=use_jacobian, keep_states=True, t_eval=t_eval,
                               stop_residual=stop_residual, lu_limit=lu_limit, reduce_samples=False,
                               residual_norm=norm) if len(V0) > 1 else [
        simulate_system(red.system, VR[0], t_end, labels=labels_r, head=head, method="auto", rtol=rtol,
                        atol=atol, use_jacobian=use_jacobian, keep_states=True, t_eval=t_eval,
                        stop_residual=stop_residual, lu_limit=lu_limit, reduce_samples=False,
                        residual_norm=lambda f: float(norm(f[None], [0])[0]))]
    out = []
    for tr, lift, err, s0 in zip(trs, lifts, errs, scale0):
        states = np.array([red.expand(vr, lift) for vr in tr.states])
        acc = np.array([_metrics(full, full.unpack(v), labels, head, loss=0.0)[1] for v in states])
        final = full.unpack(states[-1])
        residual = float(np.max(np.abs(full.flow_vector(states[-1]))))
        if tr.extra["stopped"] and not residual <= stop_residual * (1.0 + 1e-6) + 1e-13 * s0:
            raise DerivationCheckError(
                f"sample reduction: the run stopped at the lifted residual {tr.extra['residual']:.3g}, but the "
                f"full flow at the lifted state has ‖θ̇‖_∞ = {residual:.3g} > stop_residual = {stop_residual:g}")
        extra = dict(tr.extra)
        extra["sample_reduction"] = {
            "samples": groups.N, "pseudo_samples": groups.N_reduced, "groups": len(groups.members),
            "reduced_groups": int(sum(q < len(idx) for q, idx in zip(groups.q, groups.members))),
            "lift_bound": lift.bound, "exactness_t0": err}
        extra["method_reason"] = (f"samples reduced exactly to {groups.N_reduced} of {groups.N} pseudo-samples "
                                  f"(d + 1 per group of equal coupling row, docs/model.md §3.5); then "
                                  + extra.get("method_reason", ""))
        extra["residual"] = residual
        Z = np.vstack([final[SAMPLE], final[LABEL]])
        out.append(Trajectory(tr.t, tr.d_min, acc, tr.loss, Z, final.get(head) if head else None,
                              states if keep_states else None, extra))
    return out
