r"""Many initial states of one flow at once: a batch axis for the matrix-product kernels and one
stiff integrator over the stacked state.

* :class:`BatchedEvaluator` evaluates the plans of :mod:`.matrix_kernels` on B states at once:
  node arrays B×N×k, shared matrices B×r×c, every product a batched ``matmul`` and every graph
  sum one sparse product over the B·k columns (docs/model.md §1–§3: F = A M B over the moments).
* :func:`batched_flow` is θ̇ for B stacked states of a :class:`.matrix_system.MatrixFlowSystem`.
* :class:`BatchedNodeBDF` is scipy's BDF on the stacked state with a block-diagonal Jacobian (one
  block per seed, never assembled): each seed's Newton system is solved as in "BDF-nodes" (its
  block-diagonal sample rows eliminated in closed form, the dense Schur complement of labels +
  shared blocks inverted), all seeds in batched LAPACK calls, and its error norm is the largest
  per-seed RMS norm, so every seed meets the tolerances of its own single run.
"""
from __future__ import annotations

import types
from functools import reduce

import numpy as np
import scipy.integrate._ivp.bdf as _bdf
import scipy.sparse as sps
from scipy.integrate import BDF

from ..errors import IntegrationError
from ..symbolic.loss import LABEL, SAMPLE
from .integrate import node_blocks
from .matrix_kernels import Evaluator
from .matrix_system import MatrixFlowSystem


class BatchedEvaluator(Evaluator):
    """:class:`~.matrix_kernels.Evaluator` with a leading batch axis on every node array and
    shared matrix (the same plans; results B×…)."""

    def letter(self, L):
        m = self.shared[(L[1], L[3])]
        return np.swapaxes(m, -1, -2) if L[2] else m

    def prod(self, chain):
        if not chain:
            return None
        if chain not in self._prod:
            self._prod[chain] = reduce(np.matmul, [self.letter(L) for L in chain])
        return self._prod[chain]

    def neighbour_sum(self, L, target_side):
        key = (L[1], L[3], target_side)
        if key not in self._nb:
            arr = self.rows(L)
            if self.side(L) == target_side:
                deg = self.g.sample_degree if target_side == "sample" else self.g.label_degree
                self._nb[key] = arr * deg[:, None]
            else:
                M = self.g.csr if target_side == "sample" else self.g.csr_T
                B, n, k = arr.shape
                out = M @ np.ascontiguousarray(arr.transpose(1, 0, 2)).reshape(n, B * k)
                self._nb[key] = out.reshape(-1, B, k).transpose(1, 0, 2)
        return self._nb[key]

    def m1(self, L):
        key = (L[1], L[3])
        if key not in self._m1:
            deg = self.g.sample_degree if self.side(L) == "sample" else self.g.label_degree
            self._m1[key] = np.einsum("bnk,n->bk", self.rows(L), deg)[:, :, None]
        return self._m1[key]

    def m2(self, Lp, Lq):
        kp, kq = (Lp[1], Lp[3]), (Lq[1], Lq[3])
        if (kp, kq) in self._m2:
            return self._m2[(kp, kq)]
        if (kq, kp) in self._m2:
            return np.swapaxes(self._m2[(kq, kp)], -1, -2)
        val = np.swapaxes(self.rows(Lp), -1, -2) @ self.neighbour_sum(Lq, self.side(Lp))
        self._m2[(kp, kq)] = val
        return val

    def node_force(self, plan, side: str, shape: tuple) -> np.ndarray:
        out = np.zeros(shape)
        deg = self.g.sample_degree if side == "sample" else self.g.label_degree
        by_letter = {}
        for c, form, data in plan.terms:
            c = self.coef(c)
            if form == "const":
                v = self.prod(data[0])
                out += c * deg[None, :, None] * (v[:, None, :, 0] if v is not None else 1.0)
                continue
            prefix, L = data
            A = self.prod(prefix)
            term = c * A if A is not None else c
            key = (L[1], L[3])
            by_letter[key] = (L, term) if key not in by_letter else (L, _badd(by_letter[key][1], term))
        for L, A in by_letter.values():
            nb = self.neighbour_sum(L, side)
            if isinstance(A, float):
                if A != 0.0:
                    out += A * nb
            else:
                out += nb @ np.swapaxes(A, -1, -2)
        return out

    def shared_force(self, plan, shape: tuple) -> np.ndarray:
        out = np.zeros(shape)
        for c, form, data in plan.terms:
            c = self.coef(c)
            if form == "m0":
                v = self.prod(data[0])
                out += c * float(self.g.sample_degree.sum()) * (v if v is not None else np.eye(shape[-2]))
            elif form == "m1r":
                A, m = self.prod(data[0]), self.m1(data[1])
                out += c * (A @ m if A is not None else m)
            elif form == "m1l":
                B, m = self.prod(data[1]), np.swapaxes(self.m1(data[0]), -1, -2)
                out += c * (m @ B if B is not None else m)
            else:
                A, Lp, Lq, B = self.prod(data[0]), data[1], data[2], self.prod(data[3])
                M = self.m2(Lp, Lq)
                if A is not None:
                    M = A @ M
                if B is not None:
                    M = M @ B
                out += c * M
        return out


def _badd(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a + b
    if isinstance(a, float):
        a, b = b, a
    if isinstance(b, float):
        return a + b * np.eye(a.shape[-2], a.shape[-1])
    return a + b


def batched_blocks(system, V: np.ndarray) -> dict:
    """{block: B×shape} views of the B stacked states (rows of V); frozen blocks broadcast."""
    B = len(V)
    out = {b: V[:, o:o + int(np.prod(s))].reshape((B,) + tuple(s)) for b, (o, s) in system.layout.items()}
    for b, val in getattr(system, "frozen", {}).items():
        out[b] = np.broadcast_to(val, (B,) + val.shape)
    return out


def batchable(system) -> bool:
    """Whether the batched kernels evaluate ``system``: a matrix-level system without per-sample
    data (a teacher–student student S u_i is evaluated seed by seed)."""
    return isinstance(system, MatrixFlowSystem) and system.compiled.loss.data is None


def batched_flow(system, V: np.ndarray) -> np.ndarray:
    """θ̇ of each row of V (B × size) in one evaluation of the batched kernels (a MatrixFlowSystem;
    any other system is evaluated row by row)."""
    V = np.asarray(V, dtype=float)
    if not batchable(system):
        return np.array([system.flow_vector(v) for v in V])
    st = batched_blocks(system, V)
    loss = system.compiled.loss
    shared_names, pv = loss.shared_names, system._param_values
    nm = system._names
    nodes = {(nm[LABEL], ""): st[LABEL]}
    if loss.x is not None:
        nodes[(nm[SAMPLE], "")] = st[SAMPLE]
    shared = {(nm[b], ""): st[b] for b in shared_names}
    ev = BatchedEvaluator(system.graph, nodes, shared, system.compiled.roles, pv)
    return _assemble(system, ev, system.compiled.forces, len(V))


def batched_jvp(system, V: np.ndarray, dV: np.ndarray) -> np.ndarray:
    """J(v_b)·dv_b for the rows of V and dV (B × size), from the derived JVP plans in one batched
    evaluation (no finite differences)."""
    V, dV = np.asarray(V, dtype=float), np.asarray(dV, dtype=float)
    st, tan = batched_blocks(system, V), batched_blocks(system, dV)
    loss = system.compiled.loss
    nm = system._names
    nodes = {(nm[LABEL], ""): st[LABEL], (nm[LABEL], "d"): tan[LABEL]}
    if loss.x is not None:
        nodes[(nm[SAMPLE], "")] = st[SAMPLE]
        if SAMPLE in system.layout:
            nodes[(nm[SAMPLE], "d")] = tan[SAMPLE]
    shared = {(nm[b], ""): st[b] for b in loss.shared_names}
    for b in loss.shared_names:
        if b in system.layout:
            shared[(nm[b], "d")] = tan[b]
    ev = BatchedEvaluator(system.graph, nodes, shared, system.compiled.roles, system._param_values)
    return _assemble(system, ev, system.compiled.jvps, len(V))


def _assemble(system, ev, plans, B):
    parts = []
    for b in system.compiled.learned:
        shape = (B,) + tuple(system._shape(b))
        if b == SAMPLE:
            F = ev.node_force(plans[b], "sample", shape)
        elif b == LABEL:
            F = ev.node_force(plans[b], "label", shape)
        else:
            F = ev.shared_force(plans[b], shape)
        f = system.row_factor(b) if hasattr(type(system), "row_factor") else system.scale * system.rates[b]
        parts.append((f * F).reshape(B, -1))
    return np.concatenate(parts, axis=1)


def dense_jacobians(system, V: np.ndarray) -> np.ndarray:
    """The dense Jacobians ∂θ̇/∂θ (B × n × n) at the rows of V: n batched JVPs per state along the
    unit vectors, all B·n in one evaluation (small systems: B·n² entries)."""
    B, n = V.shape
    R = batched_jvp(system, np.repeat(V, n, axis=0), np.tile(np.eye(n), (B, 1)))
    return np.swapaxes(R.reshape(B, n, n), 1, 2)


#: largest B·n² for which the batched integrator builds the Jacobians densely from batched JVPs
#: (else: the assembled sparse Jacobian of each seed)
DENSE_JACOBIAN_ENTRIES = 4 * 10**6


# --- the batched stiff integrator ---------------------------------------------------------------
class BlockJacobian:
    """The Jacobians of B seeds, each split as [[J₁₁, J₁₂], [J₂₁, J₂₂]] with J₁₁ block diagonal
    (N blocks k×k over the sample rows): D (B,N,k,k), J12 (B,n₁,m), J21 (B,m,n₁), J22 (B,m,m)."""

    def __init__(self, mats: list, N: int, k: int, active: np.ndarray):
        B = len(mats)
        n1 = N * k
        n = mats[0].shape[0]
        m = n - n1
        self.shape = (B * n, B * n)
        self.B, self.N, self.k, self.n1, self.m = B, N, k, n1, m
        self.D = np.zeros((B, N, k, k))
        self.J12 = np.zeros((B, n1, m))
        self.J21 = np.zeros((B, m, n1))
        self.J22 = np.zeros((B, m, m))
        for b, J in enumerate(mats):
            if isinstance(J, _Zero) or not active[b]:
                continue  # a seed at its fixed point: frozen, zero Jacobian
            if isinstance(J, np.ndarray):
                J11 = J[:n1, :n1].reshape(N, k, N, k)
                idx = np.arange(N)
                self.D[b] = J11[idx, :, idx, :]
                # (the caller's matrix is not modified: entries outside the diagonal blocks are counted)
                if np.count_nonzero(J11) != np.count_nonzero(self.D[b]):
                    raise ValueError("the sample block of the Jacobian is not block diagonal")
                self.J12[b], self.J21[b], self.J22[b] = J[:n1, n1:], J[n1:, :n1], J[n1:, n1:]
                continue
            J = sps.csr_matrix(J)
            J.sum_duplicates()  # one entry per (row, column): the quadrants are filled by assignment
            r = np.repeat(np.arange(n, dtype=J.indices.dtype), np.diff(J.indptr))
            col, v = J.indices, J.data
            top, left = r < n1, col < n1
            q = top & left
            bi = r[q] // k
            if np.any(col[q] // k != bi):
                raise ValueError("the sample block of the Jacobian is not block diagonal")
            self.D[b][bi, r[q] % k, col[q] % k] = v[q]
            q = top & ~left
            self.J12[b][r[q], col[q] - n1] = v[q]
            q = ~top & left
            self.J21[b][r[q] - n1, col[q]] = v[q]
            q = ~top & ~left
            self.J22[b][r[q] - n1, col[q] - n1] = v[q]

        self.groups = _sample_groups(self)

    def __rmul__(self, c):
        return _Shifted(float(c), self)


#: most distinct sample blocks (over all seeds of a batch) for the grouped Schur complement
MAX_GROUPS = 256
#: largest memory (bytes) of the grouped Schur terms C_uj (G·k·m² entries)
GROUP_BYTES = 4.0e8


class SampleGroups:
    r"""Samples whose Jacobian blocks D_i are equal (per seed), with D_u = Q_u Λ_u Q_uᵀ symmetric:
    then J₂₁(I − cD)⁻¹J₁₂ = Σ_{u,j} C_uj / (1 − c λ_uj), C_uj = Σ_{i∈u} (J₂₁,i q_uj)(q_ujᵀ J₁₂,i),
    so a new c (every BDF step-size change) costs G·k·m² instead of N·k·m² (docs/model.md §3: a
    sample's block is −η_x deg_i WᵀW in the head model, one per degree)."""

    def __init__(self, seed, lam, Q, perm, offsets, C):
        self.seed, self.lam, self.Q, self.perm, self.offsets, self.C = seed, lam, Q, perm, offsets, C

    def block_inverse(self, c: float) -> np.ndarray:
        """(I − c D_u)⁻¹ = Q_u diag(1/(1 − c λ_u)) Q_uᵀ for every group (G×k×k)."""
        w = 1.0 / (1.0 - c * self.lam)
        return (self.Q * w[:, None, :]) @ np.swapaxes(self.Q, 1, 2)

    def apply(self, Dinv: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(I − cD)⁻¹ r for r of shape (B·N, k) (rows = (seed, sample)): one product per group."""
        rp = r[self.perm]
        out = np.empty_like(rp)
        for g in range(len(self.offsets) - 1):
            a, b = self.offsets[g], self.offsets[g + 1]
            out[a:b] = rp[a:b] @ Dinv[g].T
        res = np.empty_like(r)
        res[self.perm] = out
        return res


def _sample_groups(J: "BlockJacobian"):
    """The :class:`SampleGroups` of a BlockJacobian, or None when the blocks are not few and
    symmetric (the Schur complement is then formed per step-size as before)."""
    B, N, k, m = J.B, J.N, J.k, J.m
    flat = J.D.reshape(B * N, k * k)
    # group equal blocks by a random projection of each block (one float per row), then check
    # that every block equals its group's first block exactly (a collision: no grouping)
    proj = flat @ np.random.default_rng(0).uniform(1.0, 2.0, size=k * k)
    _, first, inv = np.unique(np.stack([np.repeat(np.arange(B), N).astype(float), proj]), axis=1,
                              return_index=True, return_inverse=True)
    inv = np.ravel(inv)
    G = len(first)
    if G > MAX_GROUPS or 8.0 * G * k * m * m > GROUP_BYTES:
        return None
    if not np.array_equal(flat, flat[first][inv]):
        return None
    Du = flat[first].reshape(G, k, k)
    scale = max(float(np.abs(Du).max()), 1e-300)
    if not np.abs(Du - np.swapaxes(Du, 1, 2)).max() <= 1e-13 * scale:
        return None
    lam, Q = np.linalg.eigh(0.5 * (Du + np.swapaxes(Du, 1, 2)))
    perm = np.argsort(inv, kind="stable")
    offsets = np.searchsorted(inv[perm], np.arange(G + 1))
    seed = first // N
    C = np.zeros((G, k, m, m))
    J12 = J.J12.reshape(B * N, k, m)
    J21 = np.swapaxes(J.J21.reshape(B, m, N, k), 1, 2).reshape(B * N, m, k)  # (rows, m, k)
    for g in range(G):
        rows = perm[offsets[g]:offsets[g + 1]]
        Qg = Q[g]
        A = np.tensordot(Qg, J12[rows], axes=([0], [1]))  # (j, i, m): q_jᵀ J₁₂,i
        Bt = np.tensordot(J21[rows], Qg, axes=([2], [0])).transpose(2, 1, 0)  # (j, m, i): J₂₁,i q_j
        C[g] = Bt @ A  # Σ_i (J₂₁,i q_j)(q_jᵀ J₁₂,i), one m×m per j
    return SampleGroups(seed, lam, Q, perm, offsets, C)


class _Shifted:
    """I − c·J, built lazily by BDF as ``self.I - c * J``."""

    def __init__(self, c: float, J: BlockJacobian):
        self.c, self.J = c, J


class _Identity:
    def __sub__(self, other: _Shifted) -> _Shifted:
        return other


class BatchedNodeLU:
    """(I − cJ)⁻¹ of a :class:`BlockJacobian`, seed by seed in batched LAPACK calls: the sample
    blocks I − cD inverted, S = I − cJ₂₂ − c²J₂₁(I − cD)⁻¹J₁₂ inverted (m×m per seed)."""

    def __init__(self, sh: _Shifted):
        J, c = sh.J, sh.c
        B, N, k, m = J.B, J.N, J.k, J.m
        self.J, self.c = J, c
        grp = J.groups
        if grp is not None:  # S = I − cJ₂₂ − c² Σ_uj C_uj/(1 − cλ_uj): no N-sized work
            self.Dg = grp.block_inverse(c)
            w = 1.0 / (1.0 - c * grp.lam)  # (G, k)
            T = np.einsum("gj,gjab->gab", w, grp.C)
            S = np.eye(m) - c * J.J22
            np.add.at(S, grp.seed, -c * c * T)
            self.Sinv = np.linalg.inv(S)
            return
        self.Dg = None
        self.Dinv = np.linalg.inv(np.eye(k) - c * J.D)
        self.X = (self.Dinv @ (-c * J.J12).reshape(B, N, k, m)).reshape(B, J.n1, m)
        S = np.eye(m) - c * J.J22 + c * (J.J21 @ self.X)
        self.Sinv = np.linalg.inv(S)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        J = self.J
        r = rhs.reshape(J.B, -1)
        if self.Dg is not None:
            grp, c = J.groups, self.c
            u = grp.apply(self.Dg, r[:, :J.n1].reshape(J.B * J.N, J.k)).reshape(J.B, J.n1)
            b2 = r[:, J.n1:] + c * (J.J21 @ u[:, :, None])[:, :, 0]
            x2 = (self.Sinv @ b2[:, :, None])[:, :, 0]
            t = np.einsum("bnm,bm->bn", J.J12, x2).reshape(J.B * J.N, J.k)
            x1 = u + c * grp.apply(self.Dg, t).reshape(J.B, J.n1)
            return np.concatenate([x1, x2], axis=1).ravel()
        u = (self.Dinv @ r[:, :J.n1].reshape(J.B, J.N, J.k, 1)).reshape(J.B, J.n1)
        b2 = r[:, J.n1:] + self.c * (J.J21 @ u[:, :, None])[:, :, 0]
        x2 = (self.Sinv @ b2[:, :, None])[:, :, 0]
        x1 = u - (self.X @ x2[:, :, None])[:, :, 0]
        return np.concatenate([x1, x2], axis=1).ravel()


def _seed_norm(B: int, active: np.ndarray):
    def norm(x):
        """The largest RMS norm over the seeds still running (each keeps its single-run tolerance)."""
        x = np.asarray(x).reshape(B, -1)[active]
        return float(np.max(np.sqrt(np.mean(x * x, axis=1)))) if len(x) else 0.0
    return norm


def _rebind(fn, **names):
    g = dict(fn.__globals__)
    g.update(names)
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


class BatchedNodeBDF(BDF):
    """scipy's BDF (unchanged steps, order and Newton logic) on B stacked states whose Jacobian
    ``jac(y) -> BlockJacobian`` is block diagonal over the seeds; the error and Newton norms are
    the largest per-seed RMS norm."""

    def __init__(self, fun, t0, y0, t_bound, *, jac, batch: int, active: np.ndarray, **options):
        self._B = batch
        # BDF.__init__ with its identity matrix skipped (B·n could be large; I − cJ stays lazy)
        init = _rebind(BDF.__init__, issparse=lambda J: True, eye=lambda *a, **k: None)
        init(self, fun, t0, y0, t_bound, jac=jac, **options)
        self.I = _Identity()

        def lu(A):
            self.nlu += 1
            return BatchedNodeLU(A)

        self.lu = lu
        self.solve_lu = lambda LU, b: LU.solve(b)
        norm = _seed_norm(batch, active)
        sbs = _rebind(_bdf.solve_bdf_system, norm=norm)
        self._step_impl = types.MethodType(_rebind(BDF._step_impl, norm=norm, solve_bdf_system=sbs), self)

    def _validate_jac(self, jac, sparsity):
        def wrapped(t, y):
            self.njev += 1
            return jac(t, y)
        return wrapped, wrapped(self.t, self.y)


#: largest memory (bytes) the batched Jacobian blocks and their Schur factors may take; more
#: seeds are run in consecutive sub-batches
BATCH_BYTES = 1.0e9
#: most seeds integrated in lockstep: every seed adds its step-size and Jacobian demands to the
#: shared BDF (head model K=3, N=30, d=8 to the fixed point, vs single runs: 8 seeds 2.2×, 16
#: seeds 3.1× faster; 64 seeds no faster — 1.7× the steps of a single run, 4× the Jacobians)
BATCH_SEEDS = 16


def integrate_many(system, V0: np.ndarray, t_eval: np.ndarray, *, rtol: float, atol: float,
                   stop_residual: float | None, residual_norm=None) -> list:
    """Integrate the B initial states (rows of V0) of ``system`` (samples first, block-diagonal
    sample rows) with one :class:`BatchedNodeBDF`. Returns per seed (t, states, stopped, residual,
    nsteps): states at the times of t_eval the seed reached and, if it stopped (‖θ̇‖_∞ ≤
    stop_residual at an accepted step), its state at that step, after which it is frozen.
    ``residual_norm(F, seeds)`` (F: the flows of those seeds, one per row) replaces the rows'
    ‖θ̇‖_∞ (a reduced flow measured as its full flow, :mod:`.sample_reduction`)."""
    N, k = node_blocks(system)
    B, n = V0.shape
    m = n - N * k
    per_seed = 8.0 * (3 * N * k * m + 2 * m * m + N * k * k)
    chunk = max(1, min(BATCH_SEEDS, int(BATCH_BYTES // per_seed)))
    if B > chunk:
        out = []
        for i in range(0, B, chunk):
            sub = None if residual_norm is None else (
                lambda F, seeds, i=i: residual_norm(F, np.asarray(seeds) + i))
            out += integrate_many(system, V0[i:i + chunk], t_eval, rtol=rtol, atol=atol,
                                  stop_residual=stop_residual, residual_norm=sub)
        return out
    active = np.ones(B, dtype=bool)
    nfev = [0]

    def fun(t, y):
        nfev[0] += 1
        F = batched_flow(system, y.reshape(B, n))
        F[~active] = 0.0
        if not np.all(np.isfinite(F)):
            raise IntegrationError(f"the state diverged (non-finite flow) after t = {t:g}; "
                                   "no trajectory returned")
        return F.ravel()

    def jac(t, y):
        Y = y.reshape(B, n)
        if B * n * n <= DENSE_JACOBIAN_ENTRIES:
            dense = dense_jacobians(system, Y)
            return BlockJacobian([dense[b] if active[b] else _Zero(n) for b in range(B)], N, k, active)
        mats = [system.jacobian(Y[b]) if active[b] else None for b in range(B)]
        return BlockJacobian([M if M is not None else _Zero(n) for M in mats], N, k, active)

    def norms(F, seeds):
        return residual_norm(F, seeds) if residual_norm is not None else np.abs(F).max(axis=1)

    res0 = norms(batched_flow(system, V0), np.arange(B))
    rec = [dict(t=[float(t_eval[0])], y=[V0[b].copy()], stopped=False, residual=float(res0[b]), nsteps=0)
           for b in range(B)]
    if stop_residual is not None:
        for b in np.flatnonzero(res0 <= stop_residual):
            active[b], rec[b]["stopped"] = False, True
    if not active.any():
        for r in rec:
            r.update(nfev=1, njev=0, nlu=0, batch=B)
        return rec
    solver = BatchedNodeBDF(fun, float(t_eval[0]), V0.ravel().copy(), float(t_eval[-1]), jac=jac,
                            batch=B, active=active, rtol=rtol, atol=atol)
    i_eval, nsteps = 1, 0
    while solver.status == "running" and active.any():
        msg = solver.step()
        if solver.status == "failed":
            raise IntegrationError(f"integration failed at t = {solver.t:g} of {t_eval[-1]:g}: {msg}; "
                                   "no trajectory returned")
        nsteps += 1
        t = float(solver.t)
        j = int(np.searchsorted(t_eval, t, side="right"))
        if j > i_eval:
            Ys = np.atleast_2d(solver.dense_output()(t_eval[i_eval:j])).T.reshape(j - i_eval, B, n)
            for b in np.flatnonzero(active):
                rec[b]["t"].extend(t_eval[i_eval:j].tolist())
                rec[b]["y"].extend(Ys[:, b])
            i_eval = j
        Y = solver.y.reshape(B, n)
        if stop_residual is not None:
            R = np.full(B, np.inf)
            R[active] = norms(batched_flow(system, Y[active]), np.flatnonzero(active))
            for b in np.flatnonzero(active & (R <= stop_residual)):
                r = rec[b]
                if r["t"][-1] != t:
                    r["t"].append(t)
                    r["y"].append(Y[b].copy())
                r["stopped"], r["residual"], r["nsteps"] = True, float(R[b]), nsteps
                active[b] = False
    for b in np.flatnonzero(active):
        r = rec[b]
        if len(r["t"]) != len(t_eval):
            raise IntegrationError(f"integration stopped at t = {solver.t:g} of {t_eval[-1]:g} before "
                                   "the last requested time; no trajectory returned")
        r["residual"] = float(norms(system.flow_vector(r["y"][-1])[None], [b])[0])
        r["nsteps"] = nsteps
    for r in rec:
        r["nfev"], r["njev"], r["nlu"], r["batch"] = nfev[0], solver.njev, solver.nlu, B
    return rec


class _Zero:
    """Stands in for the Jacobian of a frozen seed (its blocks stay zero)."""

    def __init__(self, n):
        self.shape = (n, n)
