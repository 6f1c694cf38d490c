r"""method='auto': the cheapest correct way to solve θ̇ = f(θ), chosen from the flow's structure.

0. Before the choice below, a nonlinear matrix-level flow whose samples fall into large groups of
   equal coupling row is replaced exactly by d + 1 pseudo-samples per group and lifted back after
   the run (:mod:`.sample_reduction`, docs/model.md §3.5; done by the trajectory layer): the cost
   then does not grow with N. The choice is made on the reduced system.
1. A flow that is Ż = A Z column by column (the embedding model, docs/model.md §2: A = −s·H L_G,
   checked against the derived flow) is solved exactly (:mod:`.column_flow`): no time steps,
   no factorisation. So is the head-free teacher–student flow (docs/model.md §4), linear on the
   nodes Z = [X; Y] (X = U Sᵀ) with A = −blockdiag(s·η_S G, s·η_y I) L_G, also checked against
   the derived flow: diagonalised once (dense, N + K nodes) or by expm_multiply.
2. Otherwise the stiffness ρ(J)·t_end is measured — ρ the spectral radius of the derived
   Jacobian at θ₀ by power iteration (matrix-vector products only) — and an explicit high-order
   method (DOP853) is used when ρ·t_end ≤ EXPLICIT_STIFFNESS (its step count is then set by
   accuracy, not stability); BDF with the analytic Jacobian when it is larger: 'BDF-nodes'
   when the sample rows of the Jacobian are block diagonal (every edge loss: a sample couples
   only to its labels and the shared blocks) — the samples are eliminated in closed form and
   only the labels + shared blocks are factorised densely (measured to the fixed point, head
   model K=4, N=102, single-threaded BLAS: d=16 6.3 s vs plain BDF 33 s; d=4 1.0 s vs 1.2 s);
   else 'BDF-Schur' (sparse LU + dense Schur complement of the shared-block columns) when the Jacobian has
   at least SCHUR_MIN_COLUMNS dense trailing columns (d ≥ 32 heads) and their block fits in memory,
   plain sparse 'BDF' otherwise. When the Jacobian is too large to assemble (the matrix system
   refuses above 2·10⁷ dense entries, e.g. heads of d = 64 at N ≥ 10³) or has more unknowns than
   the sparse-LU limit, a stiff run takes 'BDF-krylov' (:mod:`.krylov_bdf`: the same BDF with its
   Newton systems solved matrix-free by GMRES through the derived JVP), else DOP853.
3. A single stiff run of at most SMALL_DENSE_SIZE unknowns takes 'LSODA' with the analytic Jacobian
   (dense): at that size a dense LU is cheap and LSODA's step loop is compiled, so the run costs
   its flow and Jacobian evaluations, not per-step Python bookkeeping. Measured to the fixed point
   (head model, sg, reduced systems, CPU, one thread; rates (1, 0.5, 1) / (1, 1/n, 1/N); with the
   kernels before numerics/matrix_program, which made both sides cheaper — LSODA K=4, N=102, d=4 now 0.26 s):
   K=4, N=102, d=4 (136 unknowns) 0.75 s vs 'BDF-nodes' 1.27 s; K=4, N=1000, d=4 (232) 1.43 vs 2.2 s
   and 0.28 vs 1.1 s; K=10, N=1005, d=4 (436) 2.8 vs 2.9 s and 0.67 vs 1.1 s; K=10, N=105, d=4 (476)
   1.35 vs 1.27 s and 0.31 vs 0.9 s; above that size it loses (K=10, N=9995, d=4, 1156 unknowns:
   22.5 vs 4.3 s, dense LUs). Several seeds (``seeds`` > 1) keep 'BDF-nodes', whose evaluations are
   batched over the seeds.
4. A single stiff run of more than ADAMS_FIRST_SIZE unknowns that item 2 gives 'BDF-nodes' takes
   'LSODA-BDF-nodes': LSODA in its Adams mode (no Jacobian; declared banded of width 0, so its work
   arrays stay O(n)) until LSODA's own stiffness test switches it to BDF (its method indicator
   MCUR), then 'BDF-nodes' from that state. The transient before the switch costs flow
   evaluations only (no Jacobian, no LU), and BDF factorises only where the flow is stiff. Measured
   to the fixed point (head model, sg, row 10, CPU, one thread, 'BDF-nodes' alone vs the hand-over,
   both with the Schur complement factorised, not inverted): rates (1, 1/n, 1/N): K=4, N=102, d=16
   (1952 unknowns) 1.9 vs 0.34 s (hand LSODA on a NumPy flow 1.4–1.5 s); K=10, N=105, d=16
   2.9 vs 0.9 s; K=4, N=1000, d=16 (116 pseudo-samples) 1.5 vs 0.3 s; K=10, N=1005, d=16
   (215 pseudo-samples) 2.4 vs 1.7 s; K=10, N=10⁴, d=4 (1156 unknowns after the reduction)
   1.0 vs 0.43 s; rates (1, 0.5, 1): K=4, N=102, d=16 3.4 vs 1.9 s; K=10, N=105, d=16 5.7 vs
   3.3 s; K=4, N=1000, d=16 3.9 vs 2.8 s; K=10, N=1005, d=16 8.5 vs 7.9 s; K=10, N=10⁴, d=4
   7.2 vs 4.6 s (benchmarks/RESULTS.md, session 21).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sps

from ..errors import DerivationCheckError, InvalidParameterError
from .column_flow import MAX_REDUCED, column_propagator, expm_cost, metric_propagator, node_operator
from .integrate import LU_LIMIT, dense_tail, node_blocks
from .krylov_bdf import check_krylov_system


def _block_diagonal(J, N: int, k: int) -> bool:
    """Whether the leading N·k × N·k block of J has entries only in its N diagonal k×k blocks."""
    A = sps.coo_matrix(sps.csr_matrix(J)[:N * k, :N * k])
    return bool(np.all(A.row // k == A.col // k))

#: ρ(J)·t_end up to which the explicit DOP853 is chosen (beyond it its steps are stability-bound)
EXPLICIT_STIFFNESS = 2000.0
#: fewest dense trailing columns for which BDF-Schur is chosen over a plain sparse LU. Measured to
#: the fixed point (head model, K=4, N≈100): d=8 (64 W columns) plain BDF 15 s vs BDF-Schur 41 s;
#: d=16 (256 columns) 36 s vs 53 s. Above d=16 it is not measured; 1024 (d ≥ 32) is a guess.
SCHUR_MIN_COLUMNS = 1024
#: largest dense Schur block n × k (bytes) that BDF-Schur may hold
SCHUR_BYTES = 1.5e9
#: most unknowns for which a single stiff run takes LSODA with the dense analytic Jacobian (item 3
#: of the module docstring; measured: better or equal up to 476 unknowns, 5× worse at 1156)
SMALL_DENSE_SIZE = 512
#: a single stiff run of more unknowns than this that would take 'BDF-nodes' starts with LSODA's
#: Adams mode and hands over to 'BDF-nodes' where LSODA switches to BDF (item 4; below it item 3's
#: dense LSODA runs; measured only above 1952 unknowns)
ADAMS_FIRST_SIZE = 512
#: the method name of that hand-over
HANDOVER = "LSODA-BDF-nodes"


@dataclass(frozen=True)
class Choice:
    """The chosen method, why, and what was measured (recorded in Trajectory.extra)."""

    method: str
    reason: str
    measured: dict = field(default_factory=dict)
    propagator: object = None  # the exact propagator for linear flows


def krylov_applies(system) -> bool:
    """Whether the matrix-free 'BDF-krylov' can run ``system``: a derived JVP and node rows first."""
    try:
        check_krylov_system(system)
    except InvalidParameterError:
        return False
    return node_blocks(system) is not None


def spectral_radius(J, iters: int = 40, seed: int = 0) -> float:
    """|λ|_max of J (a matrix or LinearOperator: products J·v only) by power iteration: the
    geometric mean growth (Π‖J v_k‖)^{1/k} over the last half of the iterations (robust to the
    oscillation a complex or ±-paired dominant eigenvalue causes)."""
    n = J.shape[0]
    if n == 0:
        return 0.0
    v = np.random.default_rng(seed).normal(size=n)
    v /= np.linalg.norm(v)
    logs = []
    for _ in range(iters):
        w = np.asarray(J @ v).ravel()
        s = float(np.linalg.norm(w))
        if not s > 0.0:
            return 0.0
        logs.append(np.log(s))
        v = w / s
    return float(np.exp(np.mean(logs[iters // 2:])))


def maps_nodes(system) -> bool:
    """Whether ``system`` is a linear sample map x = S u (:mod:`.linear_map`) with a node view
    Z = [X; Y] (looked up on the class: MatrixFlowSystem forwards unknown attributes)."""
    return callable(getattr(type(system), "node_operator", None))


def map_linear_choice(system, t_end: float, method: str = "auto") -> Choice | None:
    """The exact solution of a linear sample map whose node flow is Ż = −H L_G Z (the head-free
    teacher–student model, docs/model.md §4; checked against the derived flow), or None.

    ``method``: 'auto' (spectral or expm_multiply, whichever is estimated cheaper), 'spectral', 'expm'."""
    try:
        A = system.node_operator()
    except DerivationCheckError:
        return None
    n, d = A.shape[0], system.d
    prop = metric_propagator(A, system.node_metric, t_end, d, method)
    what = ("linear flow Ż = −H L_G Z on the nodes Z = [X; Y], X = U Sᵀ, H = blockdiag(s·η_S G, s·η_y I) "
            "(checked against the derived flow of (S, Y)): exact, ")
    cost = {"expm_flops": expm_cost(prop.A, t_end, d), "spectral_flops": 10.0 * n ** 3}
    if prop.method == "spectral":
        return Choice("exact-spectral", what + f"the {n} nodes diagonalised once (H^(-1/2) A H^(1/2) "
                      "symmetric)", {"reduced_size": n, **cost}, prop)
    return Choice("exact-expm", what + f"expm_multiply on the {n}-node operator with {d} columns",
                  cost, prop)


def linear_choice(system, t_end: float) -> Choice | None:
    """The exact solution of a column-wise linear flow, or None if the flow is not one."""
    if maps_nodes(system):
        return map_linear_choice(system, t_end)
    try:
        A = node_operator(system)
    except DerivationCheckError:
        return None
    g = system.graph
    h = system.scale * np.concatenate([np.full(g.N, system.rates["x"]), np.full(g.K, system.rates["y"])])
    prop = column_propagator(A, g.N, g.K, "auto", h=h)
    d = system.layout["y"][1][1]
    if prop.method == "spectral":
        m = prop.reduction.m
        return Choice("exact-spectral", f"linear flow Ż = −s·H L_G Z (checked against the derived "
                      f"flow): exact, degree reduction to {m} ≤ {MAX_REDUCED} unknowns, diagonalised",
                      {"reduced_size": m}, prop)
    return Choice("exact-expm", "linear flow Ż = −s·H L_G Z (checked): exact by expm_multiply on "
                  f"the {g.N + g.K}-node operator with {d} columns (no small degree reduction)",
                  {"expm_flops": expm_cost(A, t_end, d)}, prop)


def choose(system, v0: np.ndarray, t_end: float, *, lu_limit: int | None = None, seeds: int = 1) -> Choice:
    """The method for integrating ``system`` from v0 to t_end (see the module docstring); ``seeds``:
    how many initial states will be integrated with it (several: the batched 'BDF-nodes')."""
    lin = linear_choice(system, t_end) if hasattr(system, "graph") or maps_nodes(system) else None
    if lin is not None:
        return lin
    op = system.linear_operator(v0) if hasattr(system, "linear_operator") else None
    J = None
    try:
        J = sps.csr_matrix(system.jacobian(v0))
    except InvalidParameterError as exc:  # too large to assemble
        if op is None:
            raise
        assembly = str(exc)
    rho = spectral_radius(op if op is not None else J)
    stiff = rho * t_end
    n = system.size
    measured = {"spectral_radius": rho, "stiffness": stiff, "size": n}
    if stiff <= EXPLICIT_STIFFNESS:
        return Choice("DOP853", f"ρ(J)·t_end = {stiff:.3g} ≤ {EXPLICIT_STIFFNESS:g}: not stiff, "
                      "explicit 8th order", measured)
    krylov = krylov_applies(system)
    if J is None:
        if krylov:
            return Choice("BDF-krylov", f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff, and "
                          f"the Jacobian cannot be assembled ({assembly}): BDF with matrix-free "
                          "Newton–Krylov (GMRES through the derived JVP, exact block preconditioner)",
                          measured)
        return Choice("DOP853", f"ρ(J)·t_end = {stiff:.3g} is stiff, but the Jacobian cannot be "
                      f"assembled ({assembly}) and the system has no derived JVP for the matrix-free "
                      "BDF: explicit (factorisation-free, slow)", measured)
    limit = LU_LIMIT if lu_limit is None else lu_limit
    if n > limit:
        if krylov:
            return Choice("BDF-krylov", f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff, and "
                          f"{n} unknowns exceed the sparse-LU limit {limit}: BDF with matrix-free "
                          "Newton–Krylov (GMRES through the derived JVP)", measured)
        return Choice("DOP853", f"ρ(J)·t_end = {stiff:.3g} is stiff but {n} unknowns exceed the "
                      f"sparse-LU limit {limit}: explicit (factorisation-free, slow)", measured)
    if seeds == 1 and n <= SMALL_DENSE_SIZE:
        return Choice("LSODA", f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff, and {n} ≤ "
                      f"{SMALL_DENSE_SIZE} unknowns: LSODA (compiled step loop) with the analytic Jacobian, "
                      "dense", measured)
    blocks = node_blocks(system)
    if blocks is not None:
        n1 = blocks[0] * blocks[1]
        if 0 < n1 < n and 8.0 * n1 * (n - n1) <= SCHUR_BYTES and _block_diagonal(J, *blocks):
            measured["schur_size"] = n - n1
            if seeds == 1 and n > ADAMS_FIRST_SIZE:
                return Choice(HANDOVER, f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff, {n} > "
                              f"{ADAMS_FIRST_SIZE} unknowns: LSODA in its Adams mode (no Jacobian) while it "
                              "finds the flow non-stiff, from its switch to BDF on BDF with the analytic "
                              f"Jacobian, the {blocks[0]} block-diagonal sample rows eliminated in closed form "
                              f"(dense Schur complement of size {n - n1})", measured)
            return Choice("BDF-nodes", f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff; BDF "
                          f"with the analytic Jacobian, the {blocks[0]} block-diagonal sample rows "
                          f"eliminated in closed form (dense Schur complement of size {n - n1})", measured)
    k = dense_tail(J)
    measured["dense_columns"] = k
    if SCHUR_MIN_COLUMNS <= k < n and 8.0 * n * k <= SCHUR_BYTES:
        return Choice("BDF-Schur", f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff; "
                      f"BDF with sparse LU + dense Schur complement of {k} shared-block columns",
                      measured)
    return Choice("BDF", f"ρ(J)·t_end = {stiff:.3g} > {EXPLICIT_STIFFNESS:g}: stiff; BDF with the "
                  "analytic sparse Jacobian", measured)
