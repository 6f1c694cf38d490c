r"""Matrix-free Newton–Krylov BDF: scipy's BDF whose Newton systems (I − cJ) δ = b are solved by
preconditioned GMRES through the derived Jacobian-vector product, never assembling J
(docs/model.md §3.4).

For an edge-loss flow (docs/model.md §1) the diagonal blocks of I − cJ are cheap and exact:

* samples: J_ii = ∂ẋ_i/∂x_i (a sample couples to no other sample), N blocks k_x × k_x, read off
  from k_x JVPs along e_j placed in every sample row at once; for the head model
  J_ii = −η_x deg_i WᵀW (docs/model.md §3), equal for samples of equal degree, so one inverse
  per distinct block;
* labels: J_cc = ∂ẏ_c/∂y_c (a label couples to no other label), K blocks, from k_y JVPs;
* a shared block W: its self-terms of the derived JVP are Left·δW·Right; when every Left (or
  every Right) is the identity, δW ↦ δW − c δW R (R = Σ Right) is inverted by right-multiplying
  with (I − cR)⁻¹ (head: R = −η_W ZᵀDZ), else the d²×d² block is assembled from the terms
  when small, else it is left to GMRES (identity).

For the stop-gradient head the block inverse P_B⁻¹ is completed by a coarse space on the gauge
orbit (Z Mᵀ, MW − WM) of the fixed-point family (:class:`GaugeCoarse`, docs/model.md §3.4):
P⁻¹ = Π + P_B⁻¹(I − Π), exact on range Π wherever (I − cJ)Π = Π (at and near the fixed point,
where P_B⁻¹ alone is off by O(1) and GMRES ran into its iteration cap).

The preconditioner P⁻¹ is the right preconditioner of GMRES on the scaled system S⁻¹(I − cJ)S
(S = diag(atol + rtol|y|), the norm of BDF's Newton test); the
solution is accepted only if its true residual, recomputed after each GMRES cycle, is at most
``KRYLOV_RTOL``·‖b‖; otherwise the Newton iteration is declared failed and scipy's BDF recomputes
the Jacobian or halves the step (its error control and step logic are unchanged). The
preconditioner blocks and the coarse space are checked against the JVP at every Jacobian (a
mismatch raises :class:`~symcollapse.errors.DerivationCheckError`). Cost per solve O(iterations · JVP),
per Jacobian O((k_x + k_y) JVP + distinct blocks · k³ + d³ + (N + K) d² for the coarse space's SVD);
nothing of size N² or N·d·d².
"""
from __future__ import annotations

import numpy as np
import scipy.integrate._ivp.bdf as _bdf
import scipy.sparse as sps
from scipy.integrate import BDF
from scipy.linalg import lu_factor, lu_solve

from ..errors import DerivationCheckError, InvalidParameterError
from ..symbolic.loss import LABEL, SAMPLE
from ..tolerance import within
from .matrix_system import shared_tangent_factors, tangent_letter
from .newton_floor import install as install_newton_floor
from .newton_floor import rebind
from .newton_floor import newton_at_floor as floor_newton
from .zero_modes import HEAD, is_sg_head

#: relative residual ‖b − (I − cJ)δ‖/‖b‖ (scaled norm) each Newton correction is solved to:
#: an inexact Newton step contracts by about this factor, far below BDF's Newton tolerance test
KRYLOV_RTOL = 1e-3
#: most GMRES iterations (JVPs) per linear solve before the Newton iteration is declared failed
KRYLOV_MAXITER = 200
#: restart length of GMRES
KRYLOV_RESTART = 50
#: largest shared block (entries) whose self-block of I − cJ is assembled densely when it is not
#: a one-sided product
SHARED_DENSE_MAX = 1024
#: the gauge coarse space uses Z's dominant singular directions: s_k ≥ GAUGE_REL_TOL·s_1, extended
#: through a cluster (while s_{k+1} ≥ GAUGE_CLUSTER·s_k) so that near-equal singular vectors are
#: never split. Weak directions make the oblique projector's W part large (∝ 1/s_k) and, measured,
#: cost GMRES iterations (docs/model.md §3.4); any choice is exact, only the cost changes
GAUGE_REL_TOL = 0.2
GAUGE_CLUSTER = 0.8
#: the gauge coarse space must be a projector and the derived flow equivariant along it to this
#: relative error (a wrong coarse space raises DerivationCheckError)
GAUGE_CHECK_TOL = 1e-8


class KrylovNotConverged(ArithmeticError):
    """GMRES did not reach the requested residual (internal: the Newton iteration fails)."""


def check_krylov_system(system) -> None:
    """Refuse (InvalidParameterError) a system without a derived JVP (``jvp(v, dv)``) and layout."""
    if not callable(getattr(type(system), "jvp", None)) or not hasattr(system, "layout"):
        raise InvalidParameterError("method='BDF-krylov' needs a matrix-level system with a derived "
                                    "Jacobian-vector product (MatrixFlowSystem); use 'BDF' or 'auto'")


def _node_block(layout, b):
    if b in layout and len(layout[b][1]) == 2 and layout[b][1][1] > 0:
        off, (n, k) = layout[b]
        return int(off), int(n), int(k)
    return None


def _grouped(D: np.ndarray):
    """(unique blocks U, index per row) when the N blocks D (N, k, k) take few distinct values
    (exactly equal), else (D, None)."""
    N = len(D)
    flat = D.reshape(N, -1)
    key = flat @ np.random.default_rng(1).normal(size=flat.shape[1])
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    if len(first) > N // 4 or not np.array_equal(flat, flat[first][inv]):
        return D, None
    return D[first], inv.ravel()


class _NodeBlocks:
    """The diagonal blocks of one node block (samples or labels) of J and their (I − cD)⁻¹."""

    def __init__(self, D: np.ndarray):
        self.U, self.inv = _grouped(D)
        self.k = D.shape[-1]
        self.groups = None if self.inv is None else [np.flatnonzero(self.inv == g) for g in range(len(self.U))]
        if self.inv is not None:  # rows in runs of one class: slices instead of fancy indexing
            cut = np.concatenate([[0], np.flatnonzero(np.diff(self.inv)) + 1, [len(self.inv)]])
            if len(cut) - 1 <= 8 * len(self.U):
                self.groups = [slice(int(a), int(b)) for a, b in zip(cut[:-1], cut[1:])]
                self.group_of = [int(self.inv[a]) for a in cut[:-1]]
            else:
                self.group_of = list(range(len(self.U)))

    def inverse(self, c: float):
        Ainv = np.linalg.inv(np.eye(self.k) - c * self.U)
        if self.inv is None:
            return lambda R: (Ainv @ R[:, :, None])[:, :, 0]
        def apply(R):
            out = np.empty_like(R)
            for g, idx in zip(self.group_of, self.groups):
                out[idx] = R[idx] @ Ainv[g].T
            return out
        return apply

    def times(self, X):
        if self.inv is None:
            return (self.U @ X[:, :, None])[:, :, 0]
        out = np.empty_like(X)
        for g, idx in zip(self.group_of, self.groups):
            out[idx] = X[idx] @ self.U[g].T
        return out


def _shared_self_terms(system, ev, b):
    """[(Left, Right, transposed, coef)]: the terms c·Left·δb^(T)·Right of the derived JVP of shared
    block b whose tangent is b itself (the moments folded into Left/Right, as in the assembled
    Jacobian of :class:`.matrix_system.MatrixFlowSystem`)."""
    tb_of = system._sym_block
    out = []
    for c, form, data in system.compiled.jvps[b].terms:
        Lt = tangent_letter(data)
        if tb_of[Lt[1]] != b:
            continue
        Left, Right = shared_tangent_factors(system, ev, form, data, Lt)
        out.append((Left, Right, bool(Lt[2]), ev.coef(c) * system.scale * system.rates[b]))
    return out


class _SharedBlock:
    """J_bb of a shared block b (R×C) from its self-terms: 'right' δ ↦ δ·Rt, 'left' δ ↦ Lt·δ,
    'dense' the assembled RC×RC block, or 'none' (left to GMRES)."""

    def __init__(self, terms, shape):
        self.shape = shape
        R, C = shape
        eyeR, eyeC = np.eye(R), np.eye(C)
        plain = [t for t in terms if not t[2]]
        if len(plain) == len(terms) and all(np.array_equal(L, eyeR) for L, _, _, _ in terms):
            self.kind, self.M = "right", sum(k * Rm for _, Rm, _, k in terms) if terms else np.zeros((C, C))
        elif len(plain) == len(terms) and all(np.array_equal(Rm, eyeC) for _, Rm, _, _ in terms):
            self.kind, self.M = "left", sum(k * L for L, _, _, k in terms)
        elif R * C <= SHARED_DENSE_MAX:
            Jd = np.zeros((R * C, R * C))
            for L, Rm, tr, k in terms:
                Kr = np.kron(L, Rm.T)
                if tr:
                    Kr = Kr.reshape(R * C, C, R).transpose(0, 2, 1).reshape(R * C, -1)
                Jd += k * Kr
            self.kind, self.M = "dense", Jd
        else:
            self.kind, self.M = "none", None

    def times(self, X):
        """J_bb · X (X of the block's shape)."""
        if self.kind == "right":
            return X @ self.M
        if self.kind == "left":
            return self.M @ X
        if self.kind == "dense":
            return (self.M @ X.ravel()).reshape(X.shape)
        return None

    def inverse(self, c: float):
        if self.kind == "right":
            lu = lu_factor((np.eye(self.M.shape[0]) - c * self.M).T)
            return lambda X: lu_solve(lu, X.T).T
        if self.kind == "left":
            lu = lu_factor(np.eye(self.M.shape[0]) - c * self.M)
            return lambda X: lu_solve(lu, X)
        if self.kind == "dense":
            lu = lu_factor(np.eye(self.M.shape[0]) - c * self.M)
            return lambda X: lu_solve(lu, X.ravel()).reshape(X.shape)
        return lambda X: X


class _FrozenJVP:
    """w ↦ J(y)·w for a fixed state y: one evaluator of the derived JVP plans whose state-only
    products and moments (WᵀW, ZᵀDZ, …) are kept between calls and only the tangent-dependent
    ones recomputed (equal to ``system.jvp(y, w)``, checked once)."""

    def __init__(self, system, y: np.ndarray):
        self.system = system
        self.y = y
        st = system.unpack(y)
        nm = system._names
        self.tangent_keys = [(b, (nm[b], "d"), b in (SAMPLE, LABEL)) for b in system.compiled.learned]
        self.ev = system._evaluator(st, tangent={b: np.zeros(system._shape(b)) for b in system.compiled.learned})

    def _purge(self):
        ev = self.ev
        for key in [k for k in ev._prod if any(L[3] == "d" for L in k)]:
            del ev._prod[key]
        for cache in (ev._nb, ev._m1):
            for key in [k for k in cache if k[1] == "d"]:
                del cache[key]
        for key in [k for k in ev._m2 if k[0][1] == "d" or k[1][1] == "d"]:
            del ev._m2[key]

    def __call__(self, w: np.ndarray) -> np.ndarray:
        sysm = self.system
        tan = sysm.unpack(np.asarray(w, dtype=float))
        for b, key, node in self.tangent_keys:
            (self.ev.nodes if node else self.ev.shared)[key] = tan[b]
        self._purge()
        flat = np.empty(sysm.size)
        sysm._blocks_from(self.ev, sysm.compiled.jvps, sysm._views(flat), factor=True)
        return flat


class GaugeCoarse:
    r"""The gauge coarse space of the stop-gradient head (docs/model.md §3.4): the orbit tangent
    G(M) = (Z Mᵀ, MW − WM) of (Z Gᵀ, G W G⁻¹) (docs/model.md §3.3) for M = C V_rᵀ (V_r: Z's r
    dominant right singular vectors, Z = U S Vᵀ), with the oblique projector Π v = G(M(v)),
    M(v) = δZᵀ U_r S_r⁻¹ V_rᵀ (= δZᵀ(Z⁺)ᵀ when r = rank Z; Z Mᵀ = U_r U_rᵀ δZ). Dimension d·r; one
    application O((N + K) d² + d³), built from one thin SVD of Z = [X; Y]."""

    def __init__(self, layout: dict, y: np.ndarray, rel_tol: float = GAUGE_REL_TOL,
                 cluster: float = GAUGE_CLUSTER):
        self.slices = {}
        for b in (SAMPLE, LABEL, HEAD):
            off, shape = layout[b]
            self.slices[b] = (slice(int(off), int(off) + int(shape[0]) * int(shape[1])), tuple(shape))
        self.size = int(sum(shape[0] * shape[1] for _, shape in layout.values()))
        X, Y, W = (self.block(y, b) for b in (SAMPLE, LABEL, HEAD))
        self.X, self.Y, self.W, self.N = X.copy(), Y.copy(), W.copy(), X.shape[0]
        U, s, Vt = np.linalg.svd(np.vstack([X, Y]), full_matrices=False)
        r = int(np.sum(s >= rel_tol * s[0])) if s.size and s[0] > 0 else 0
        while 0 < r < len(s) and s[r] >= cluster * s[r - 1]:
            r += 1
        self.rank = r
        self.U, self.sinv, self.Vt = U[:, :r], 1.0 / s[:r], Vt[:r]

    @property
    def dim(self) -> int:
        """dim range Π = d·r."""
        return self.W.shape[0] * self.rank

    def block(self, v: np.ndarray, b: str) -> np.ndarray:
        sl, shape = self.slices[b]
        return v[sl].reshape(shape)

    def coords(self, v: np.ndarray) -> np.ndarray:
        """M(v) = δZᵀ U_r S_r⁻¹ V_rᵀ (d × d)."""
        N = self.N
        A = self.U[:N].T @ self.block(v, SAMPLE) + self.U[N:].T @ self.block(v, LABEL)  # U_rᵀ δZ (r × d)
        return (A.T * self.sinv) @ self.Vt

    def vector(self, M: np.ndarray) -> np.ndarray:
        """G(M) = (Z Mᵀ, MW − WM) in the flat layout (zero on other blocks)."""
        out = np.zeros(self.size)
        out[self.slices[SAMPLE][0]] = (self.X @ M.T).ravel()
        out[self.slices[LABEL][0]] = (self.Y @ M.T).ravel()
        out[self.slices[HEAD][0]] = (M @ self.W - self.W @ M).ravel()
        return out

    def project(self, v: np.ndarray) -> np.ndarray:
        """Π v = G(M(v))."""
        return self.vector(self.coords(v))

    def check(self, matvec, flow: np.ndarray, block_times, tol: float = GAUGE_CHECK_TOL) -> None:
        r"""Π must be a projector (‖Π Π g − Π g‖ ≤ tol ‖Π g‖) and G(M) the tangent of a symmetry of
        the derived flow: for antisymmetric M the flow is equivariant under (Z Gᵀ, G W G⁻¹), G = e^M
        orthogonal, so J G(M) = (F_Z Mᵀ, M F_W − F_W M) at every state (relative to the size of the
        block terms of J G(M)); otherwise DerivationCheckError."""
        rng = np.random.default_rng(7)
        p = self.project(rng.normal(size=self.size))
        e1 = float(np.linalg.norm(self.project(p) - p)) / max(float(np.linalg.norm(p)), 1e-300)
        B = rng.normal(size=self.W.shape)
        M = B - B.T
        t = self.vector(M)
        got = matvec(t)
        F = {b: self.block(flow, b) for b in (SAMPLE, LABEL, HEAD)}
        ref = np.concatenate([(F[SAMPLE] @ M.T).ravel(), (F[LABEL] @ M.T).ravel(),
                              (M @ F[HEAD] - F[HEAD] @ M).ravel()])
        got = np.concatenate([got[self.slices[b][0]] for b in (SAMPLE, LABEL, HEAD)])
        bt = block_times(t)
        scale = max(float(np.linalg.norm(got)), float(np.linalg.norm(ref)),
                    float(np.linalg.norm(bt[np.isfinite(bt)])), 1e-300)
        e2 = float(np.linalg.norm(got - ref)) / scale
        if not (within(e1, tol) and within(e2, tol)):
            raise DerivationCheckError(
                f"BDF-krylov: the gauge coarse space (docs/model.md §3.4) is wrong: projector error {e1:.2e}, "
                f"equivariance J G(M) = (F_Z Mᵀ, M F_W − F_W M) error {e2:.2e} (tolerance {tol:g})")


class FrozenJacobian:
    """J = ∂θ̇/∂θ at a state y, matrix-free: ``matvec`` is the derived JVP at y; ``blocks`` its
    exact diagonal blocks (samples, labels, shared), checked against one JVP."""

    def __init__(self, system, y: np.ndarray, check_tol: float = 1e-8, stats: dict | None = None,
                 coarse: bool = True):
        self.system = system
        self.stats = stats if stats is not None else {"jvps": 0}
        self.y = np.array(y, dtype=float)
        self.n = n = system.size
        self.shape = (n, n)
        self.njvp = 0
        self._jvp = _FrozenJVP(system, self.y)
        w = np.random.default_rng(2).normal(size=n)
        ref, got = system.jvp(self.y, w), self._jvp(w)
        err = float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-300)
        if not err <= 1e-12:
            raise DerivationCheckError(f"BDF-krylov: the cached JVP differs from the derived JVP by {err:.3e}")
        lay = system.layout
        self.nodes = {}
        cross = {}  # rows of the other node block along the probes of this one
        nbs = {b: _node_block(lay, b) for b in (SAMPLE, LABEL)}
        for b in (SAMPLE, LABEL):
            if nbs[b] is None:
                continue
            off, rows, k = nbs[b]
            other = nbs[LABEL if b == SAMPLE else SAMPLE]
            D = np.empty((rows, k, k))
            C = None if other is None else np.empty((other[1], other[2], k))
            for j in range(k):
                e = np.zeros(n)
                e[off:off + rows * k].reshape(rows, k)[:, j] = 1.0
                Je = self.matvec(e)
                D[:, :, j] = Je[off:off + rows * k].reshape(rows, k)
                if C is not None:
                    C[:, :, j] = Je[other[0]:other[0] + other[1] * other[2]].reshape(other[1], other[2])
            self.nodes[b] = (off, rows, k, _NodeBlocks(D))
            cross[b] = C
        # the sample rows' coupling to the labels: P, or diag(1/m) P for a sample-reduced system whose
        # graph rows carry the multiplicities m (docs/model.md §3.5); the label rows see Pᵀ as it is
        self.multiplicity = getattr(system, "multiplicity", None)
        g = getattr(system, "graph", None)
        self.sample_rows = None if g is None else (
            g.csr if self.multiplicity is None else (sps.diags(1.0 / self.multiplicity) @ g.csr).tocsr())
        self.coupling = self._graph_coupling(cross, check_tol) if len(self.nodes) == 2 else None
        self.shared = {}
        st = system.unpack(self.y)
        ev = system._evaluator(st)
        for b, (off, shape) in lay.items():
            if b in self.nodes:
                continue
            if b not in system.compiled.jvps or len(shape) != 2:
                continue
            self.shared[b] = (off, tuple(shape), _SharedBlock(_shared_self_terms(system, ev, b), tuple(shape)))
        self._check(check_tol)
        self.gauge = None
        if coarse and is_sg_head(system.compiled.loss):
            gauge = GaugeCoarse(lay, self.y)
            if gauge.rank:
                gauge.check(self.matvec, system.flow_vector(self.y), self.block_times)
                self.gauge = gauge
        self.stats["coarse_dim"] = 0 if self.gauge is None else self.gauge.dim

    def _graph_coupling(self, cross: dict, tol: float):
        r"""(Bxy, Byx) when the sample–label blocks of J are P_s ⊗ Bxy and Pᵀ ⊗ Byx (every edge-loss
        flow of the matrix kernels: ẋ_i ∋ Bxy Σ_c (P_s)_ic y_c, ẏ_c ∋ Byx Σ_i P_ic x_i; P_s = P, or
        diag(1/m) P for a sample-reduced system), read off the probes (sample rows of a label probe:
        deg_i·Bxy e_j, deg = P_s 1) and checked on a random tangent; else None."""
        g = self.system.graph
        P, sdeg, ldeg = self.sample_rows, g.sample_degree, g.label_degree
        if self.multiplicity is not None:
            sdeg = sdeg / self.multiplicity
        if not (sdeg @ sdeg > 0 and ldeg @ ldeg > 0):
            return None
        Cx, Cy = cross[LABEL], cross[SAMPLE]  # (N, kx, ky), (K, ky, kx)
        Bxy = np.tensordot(sdeg, Cx, axes=1) / float(sdeg @ sdeg)
        Byx = np.tensordot(ldeg, Cy, axes=1) / float(ldeg @ ldeg)
        (ox, N, kx, _), (oy, K, ky, _) = self.nodes[SAMPLE], self.nodes[LABEL]
        rng = np.random.default_rng(5)
        for src, dst, P, B in ((oy, ox, P, Bxy), (ox, oy, g.csr_T, Byx)):
            rows, k = (K, ky) if src == oy else (N, kx)
            T = rng.normal(size=(rows, k))
            w = np.zeros(self.n)
            w[src:src + rows * k] = T.ravel()
            nd = (N * kx) if dst == ox else (K * ky)
            ref = self.matvec(w)[dst:dst + nd]
            got = ((P @ T) @ B.T).ravel()
            err = float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-300)
            if not err <= tol:
                return None
        return Bxy, Byx

    def matvec(self, w: np.ndarray) -> np.ndarray:
        self.njvp += 1
        self.stats["jvps"] += 1
        return self._jvp(w)

    def block_times(self, w: np.ndarray) -> np.ndarray:
        """The block-diagonal part of J times w (NaN rows where a block is left to GMRES)."""
        out = np.full(self.n, np.nan)
        for off, rows, k, nb in self.nodes.values():
            out[off:off + rows * k] = nb.times(w[off:off + rows * k].reshape(rows, k)).ravel()
        for off, shape, sb in self.shared.values():
            size = shape[0] * shape[1]
            r = sb.times(w[off:off + size].reshape(shape))
            if r is not None:
                out[off:off + size] = r.ravel()
        return out

    def _check(self, tol: float):
        """The diagonal blocks must reproduce the JVP along a tangent confined to each block."""
        rng = np.random.default_rng(3)
        blocks = [(off, rows * k) for off, rows, k, _ in self.nodes.values()]
        blocks += [(off, s[0] * s[1]) for off, s, sb in self.shared.values() if sb.kind != "none"]
        for off, size in blocks:
            w = np.zeros(self.n)
            w[off:off + size] = rng.normal(size=size)
            ref = self.matvec(w)[off:off + size]
            got = self.block_times(w)[off:off + size]
            err = float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-300)
            if not err <= tol:
                raise DerivationCheckError(
                    f"BDF-krylov: the diagonal Jacobian block at offset {off} (size {size}) differs from "
                    f"the derived JVP by {err:.3e} (relative) > {tol:g}")

    def __rmul__(self, c):
        return _Shifted(float(c), self)


class _Shifted:
    """I − c·J, built lazily by BDF as ``self.I - c * J``."""

    def __init__(self, c: float, J: FrozenJacobian):
        self.c, self.J = c, J


class _Identity:
    def __sub__(self, other: _Shifted) -> _Shifted:
        return other


def gmres_right(apply, precondition, b: np.ndarray, rtol: float, maxiter: int, restart: int):
    r"""Right-preconditioned restarted GMRES for A x = b (x = Σ y_j P⁻¹v_j minimising
    ‖b − A x‖₂; Arnoldi with classical Gram–Schmidt applied twice, Givens rotations for the
    residual estimate). Returns (x, iterations, ‖b − A x‖₂ recomputed after the last cycle)."""
    n = len(b)
    x = np.zeros(n)
    r = b.copy()
    beta = float(np.linalg.norm(r))
    target = rtol * beta
    its = 0
    while its < maxiter and beta > target:
        m = min(restart, maxiter - its, n)
        V = np.empty((m + 1, n))
        Z = np.empty((m, n))
        H = np.zeros((m + 1, m))
        cs, sn = np.zeros(m), np.zeros(m)
        g = np.zeros(m + 1)
        g[0] = beta
        V[0] = r / beta
        k = 0
        for j in range(m):
            Z[j] = precondition(V[j])
            w = apply(Z[j])
            its += 1
            h = V[:j + 1] @ w
            w -= h @ V[:j + 1]
            h2 = V[:j + 1] @ w
            w -= h2 @ V[:j + 1]
            col = h + h2
            hn = float(np.linalg.norm(w))
            for i in range(j):  # the previous rotations
                col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
            rho = float(np.hypot(col[j], hn))
            cs[j], sn[j] = (col[j] / rho, hn / rho) if rho > 0 else (1.0, 0.0)
            col[j] = rho
            H[:j + 1, j] = col
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            k = j + 1
            if not hn > 1e-14 * beta or abs(g[j + 1]) <= target:
                break
            V[j + 1] = w / hn
        y = np.linalg.solve(np.triu(H[:k, :k]), g[:k]) if k else np.zeros(0)
        x = x + y @ Z[:k]
        r = b - apply(x)
        its += 1
        beta = float(np.linalg.norm(r))
    return x, its, beta


class KrylovSolve:
    """(I − cJ)⁻¹ b by right-preconditioned GMRES in the scaled unknowns (block-Jacobi P⁻¹)."""

    def __init__(self, sh: _Shifted, scale: np.ndarray, rtol: float, maxiter: int, stats: dict):
        self.J, self.c = sh.J, sh.c
        self.scale = scale
        self.rtol, self.maxiter, self.stats = rtol, maxiter, stats
        J, c = self.J, self.c
        self.parts = []
        self.graph_solve = self._graph_elimination() if J.coupling is not None else None
        for b, (off, rows, k, nb) in J.nodes.items():
            if self.graph_solve is None:
                self.parts.append((off, (rows, k), nb.inverse(c)))
        for off, shape, sb in J.shared.values():
            self.parts.append((off, shape, sb.inverse(c)))

    def _graph_elimination(self):
        r"""The exact inverse of the sample–label part [[I − cD_x, −c P_s⊗Bxy], [−c Pᵀ⊗Byx, I − cD_y]]
        of I − cJ (shared blocks held fixed; P_s = P, or diag(1/m) P for a sample-reduced system):
        samples eliminated per degree class g (one inverse G_g = (I − cD_g)⁻¹ each), the labels'
        Kk_y × Kk_y Schur complement S = diag(I − cD_c) − c² Σ_g (P_gᵀP_{s,g}) ⊗ (Byx G_g Bxy)
        factorised densely. None when the sample blocks do not fall into few classes."""
        J, c = self.J, self.c
        ox, N, kx, xb = J.nodes[SAMPLE]
        oy, K, ky, yb = J.nodes[LABEL]
        if xb.inv is None or K * ky > 4096:
            return None
        Bxy, Byx = J.coupling
        P, Pw = J.sample_rows, J.system.graph.csr  # sample rows' coupling P_s; P (weighted) seen by the labels
        G = np.linalg.inv(np.eye(kx) - c * xb.U)
        Dy = yb.U if yb.inv is None else yb.U[yb.inv]
        S = np.zeros((K * ky, K * ky))
        for cc in range(K):
            S[cc * ky:(cc + 1) * ky, cc * ky:(cc + 1) * ky] = np.eye(ky) - c * Dy[cc]
        for gi in range(len(xb.U)):
            rows = np.flatnonzero(xb.inv == gi)
            Q = (Pw[rows].T @ P[rows]).toarray()
            S -= c * c * np.kron(Q, Byx @ G[gi] @ Bxy)
        lu = lu_factor(S)
        PT = J.system.graph.csr_T
        runs = list(zip(xb.group_of, xb.groups))

        def Ginv(R):
            out = np.empty_like(R)
            for gi, idx in runs:
                out[idx] = R[idx] @ G[gi].T
            return out

        def solve(r, s_):
            u = Ginv(r)
            s2 = s_ + c * (PT @ u) @ Byx.T
            y = lu_solve(lu, s2.ravel()).reshape(K, ky)
            x = Ginv(r + c * (P @ y) @ Bxy.T)
            return x, y
        return (ox, N, kx), (oy, K, ky), solve

    def precondition(self, r: np.ndarray) -> np.ndarray:
        r"""P⁻¹ r: with the gauge coarse space, Π r + P_B⁻¹ (r − Π r) (docs/model.md §3.4: exact on
        range Π wherever (I − cJ)Π = Π), else the block inverse P_B⁻¹ r."""
        gauge = self.J.gauge
        if gauge is None:
            return self.block_inverse(r)
        t = gauge.project(r)
        return t + self.block_inverse(r - t)

    def block_inverse(self, r: np.ndarray) -> np.ndarray:
        """P_B⁻¹ r: the exact inverses of the diagonal blocks and of the sample–label part."""
        out = r.copy()  # unknowns outside the blocks: identity
        if self.graph_solve is not None:
            (ox, N, kx), (oy, K, ky), solve = self.graph_solve
            x, y = solve(r[ox:ox + N * kx].reshape(N, kx), r[oy:oy + K * ky].reshape(K, ky))
            out[ox:ox + N * kx], out[oy:oy + K * ky] = x.ravel(), y.ravel()
        for off, shape, inv in self.parts:
            size = shape[0] * shape[1]
            out[off:off + size] = inv(r[off:off + size].reshape(shape)).ravel()
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        return x - self.c * self.J.matvec(x)

    def solve(self, b: np.ndarray) -> np.ndarray:
        s = self.scale
        bs = b / s
        nb = float(np.linalg.norm(bs))
        self.stats["solves"] += 1
        if not nb > 0.0:
            return np.zeros_like(b)
        xs, its, res = gmres_right(lambda u: self.apply(s * u) / s, lambda u: self.precondition(s * u) / s,
                                 bs, 0.5 * self.rtol, self.maxiter, KRYLOV_RESTART)
        x = s * xs  # res: the true residual ‖(b − (I − cJ)x)/S‖, recomputed after each GMRES cycle
        self.stats["iterations"] += its
        self.stats["max_iterations"] = max(self.stats["max_iterations"], its)
        if not res <= self.rtol * nb:
            self.stats["failures"] += 1
            raise KrylovNotConverged(f"GMRES: residual {res:.3e} > {self.rtol:g}·‖b‖ = {self.rtol * nb:.3e} "
                                     f"after {its} iterations")
        return x


def _newton(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, *, signs=None, stats=None, limit=True):
    """scipy's BDF Newton iteration with the noise-aware test (docs/model.md §3.6); a linear solve
    that did not converge counts as a failed Newton iteration (BDF then recomputes the Jacobian or
    halves the step); returns (converged, iterations, y, d, limited, η) (:func:`.newton_floor.newton_at_floor`). The floor's own solve is GMRES too (a miss there only makes the floor NaN:
    nothing accepted)."""
    LU.scale = scale
    try:
        return floor_newton(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol, signs=signs, stats=stats,
                            limit=limit)
    except KrylovNotConverged:
        return False, _bdf.NEWTON_MAXITER, y_predict.copy(), np.zeros_like(y_predict), False, np.nan


class KrylovBDF(BDF):
    """scipy's BDF (unchanged steps, order and error control; the noise-aware Newton test of
    docs/model.md §3.6, counters in ``newton_floor``) with the Newton systems solved matrix-free (:class:`KrylovSolve` on a :class:`FrozenJacobian`).
    ``stats``: Jacobians, linear solves, GMRES iterations (total and the largest per solve),
    failed solves, JVPs, the dimension of the gauge coarse space at the last Jacobian
    (``coarse_dim``; 0 without one). ``krylov_coarse=False`` leaves the coarse space out."""

    def __init__(self, fun, t0, y0, t_bound, *, system, krylov_rtol: float = KRYLOV_RTOL,
                 krylov_maxiter: int = KRYLOV_MAXITER, krylov_coarse: bool = True, **options):
        check_krylov_system(system)
        self._system = system
        self._coarse = bool(krylov_coarse)
        self.stats = {"jacobians": 0, "solves": 0, "iterations": 0, "max_iterations": 0, "failures": 0,
                      "jvps": 0, "coarse_dim": 0}
        init = rebind(BDF.__init__, issparse=lambda J: True, eye=lambda *a, **k: None)
        init(self, fun, t0, y0, t_bound, jac=None, **options)
        self.I = _Identity()

        def lu(A):
            self.nlu += 1
            return KrylovSolve(A, self.atol + self.rtol * np.abs(self.y), krylov_rtol, krylov_maxiter,
                               self.stats)

        self.lu = lu
        self.solve_lu = lambda LU, b: LU.solve(b)
        install_newton_floor(self, _newton)

    def _validate_jac(self, jac, sparsity):
        def wrapped(t, y):
            self.njev += 1
            self.stats["jacobians"] += 1
            return FrozenJacobian(self._system, y, stats=self.stats, coarse=self._coarse)
        return wrapped, wrapped(self.t, self.y)

    @property
    def krylov_stats(self) -> dict:
        return dict(self.stats)
