r"""Many initial states of one flow at once: a batch axis for the matrix-product kernels and one
stiff integrator over the stacked state.

* :class:`BatchedEvaluator` evaluates the plans of :mod:`.matrix_kernels` on B states at once:
  node arrays B×N×k, shared matrices B×r×c, every product a batched ``matmul`` and every graph
  sum one sparse product over the B·k columns (docs/model.md §1–§3: F = A M B over the moments).
* :func:`batched_flow` is θ̇ for B stacked states of a :class:`.matrix_system.MatrixFlowSystem`.
* :func:`integrate_many` runs scipy's BDF for every seed with its own steps
  (:class:`.seed_bdf.SeedBDF`: the flows of all seeds in one batched call per Newton iteration),
  each seed's Newton system solved as in "BDF-nodes" (its block-diagonal sample rows eliminated
  in closed form, the dense Schur complement of labels + shared blocks inverted:
  :class:`BlockJacobian`, :class:`BatchedNodeLU`).
"""
from __future__ import annotations

from functools import reduce
from math import prod

import numpy as np
import scipy.sparse as sps
from scipy.linalg import lapack

from ..errors import IntegrationError
from ..symbolic.loss import LABEL, SAMPLE
from .integrate import node_blocks
from .matrix_kernels import Evaluator
from .matrix_system import MatrixFlowSystem, shared_tangent_factors, tangent_letter
from .seed_bdf import MAX_ORDER, SeedBDF


class BatchedEvaluator(Evaluator):
    """:class:`~.matrix_kernels.Evaluator` with a leading batch axis on every node array and
    shared matrix (the same plans; results B×…). Terms holding a letter of ``zero`` (a tangent
    known to vanish) are skipped."""

    zero = frozenset()

    def _vanishes(self, form, data) -> bool:
        return bool(self.zero) and any((L[1], L[3]) in self.zero for L in _term_letters(form, data))

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
            if self._vanishes(form, data):
                continue
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
            if self._vanishes(form, data):
                continue
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


def _term_letters(form, data) -> tuple:
    """Every letter (block, transposed, tangent tag) of a plan term."""
    if form in ("const", "m0"):
        return tuple(data[0])
    if form in ("lin", "m1r"):
        return tuple(data[0]) + (data[1],)
    if form == "m1l":
        return (data[0],) + tuple(data[1])
    return tuple(data[0]) + (data[1], data[2]) + tuple(data[3])


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
    out = {b: V[:, o:o + prod(s)].reshape((B,) + tuple(s)) for b, (o, s) in system.layout.items()}
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
    return system.flow_rows(V)  # the generated batched kernel (= the BatchedEvaluator to round-off)


def batched_label_flow(system, V: np.ndarray) -> np.ndarray:
    """The label block of θ̇ (B × K·d) at the rows of V, alone: ẏ_c = −η_y ∂L/∂y_c needs only the
    label force (docs/model.md §2–§3), a fraction of the flow's cost. (A system must be batchable
    and learn its labels.)"""
    V = np.asarray(V, dtype=float)
    o, shape = system.layout[LABEL]
    return system.flow_rows(V, only=(LABEL,))[:, o:o + prod(shape)]


def batched_jvp(system, V: np.ndarray, dV: np.ndarray, *, zero=(), only=None) -> np.ndarray:
    """J(v_b)·dv_b for the rows of V and dV (B × size), from the derived JVP plans in one batched
    evaluation (no finite differences). ``zero``: blocks whose tangent is zero in every row (the
    terms holding one are skipped: exact); ``only``: the blocks of the result wanted (the others
    are returned as zeros, not evaluated)."""
    V, dV = np.asarray(V, dtype=float), np.asarray(dV, dtype=float)
    if batchable(system):  # the generated batched kernel (= the BatchedEvaluator to round-off)
        return system.jvp_rows(V, dV, zero=zero, only=only)
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
    ev.zero = frozenset((nm[b], "d") for b in zero)
    return _assemble(system, ev, system.compiled.jvps, len(V), only)


def _assemble(system, ev, plans, B, only=None):
    parts = []
    for b in system.compiled.learned:
        shape = (B,) + tuple(system._shape(b))
        if only is not None and b not in only:
            F = np.zeros(shape)
        elif b == SAMPLE:
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


def _outer(spec: str, *ops) -> np.ndarray:
    """``np.einsum(spec, *ops)`` for a spec without summed indices, as one broadcast product
    written in the output's (C) order: einsum and a plain broadcast product keep the inputs'
    memory order, so the reshape that follows would copy the result once more with a
    cache-hostile stride."""
    ins, out = spec.split("->")
    res = None
    for sub, X in zip(ins.split(","), ops):
        X = np.asarray(X)
        order = sorted(range(len(sub)), key=lambda i: out.index(sub[i]))
        shape = [X.shape[sub.index(c)] if c in sub else 1 for c in out]
        X = np.transpose(X, order).reshape(shape)
        res = X if res is None else np.multiply(res, X, order="C")
    return res


class _Unsupported(Exception):
    """A derived JVP term outside the forms :func:`jacobian_blocks` assembles (internal)."""


def jacobian_blocks(system, V: np.ndarray, factored: bool = False) -> tuple:
    r"""The Jacobians ∂θ̇/∂θ at the B rows of V as dense blocks (D, J₁₂, J₂₁, J₂₂): D (B,N,k,k) the
    sample blocks, J₁₂ (B,n₁,m) samples ← rest, J₂₁ (B,m,n₁), J₂₂ (B,m,m) (rest = labels and
    shared blocks in layout order), assembled from the derived δF chains exactly as
    :meth:`.matrix_system.MatrixFlowSystem.jacobian` does (node–node parts deg ⊗ A and P ⊗ A,
    the shared rows and columns dense), every product batched over the B states. Raises
    _Unsupported for a term form it does not assemble.

    Every sample-row term of J₁₂ and sample-column term of J₂₁ is a per-sample vector times a
    shared matrix (P_ic A, r_i ⊗ Left, deg_i A, (AG)_i ⊗ B, …), so J₁₂[i,a,:] = Σ_L U[i,L] S[L,a,:]
    and J₂₁[:,i,e] = Σ_L V[i,L] T[L,:,e] with few L (docs/model.md §3.7). ``factored``: return
    (D, (U, S), (V, T), J₂₂) — U (B,N,R), S (B,R,k,m), V (B,N,R'), T (B,R',m,k) — instead of the
    N·k×m blocks;
    ``factored='apply'``: the same and an :class:`ApplyFactors` (the products with the blocks)."""
    V = np.asarray(V, dtype=float)
    B = len(V)
    lay, g = system.layout, system.graph
    N, k = node_blocks(system)
    n1 = N * k
    m = system.size - n1
    D = np.zeros((B, N, k, k))
    J22 = np.zeros((B, m, m))
    U12, S12, V21, T21 = [], [], [], []  # the factors of J₁₂ and J₂₁ (docstring)
    ops12, ops21 = [], []  # (factor block, columns/rows of the rest, product form, matrix): ApplyFactors
    st = batched_blocks(system, V)
    loss = system.compiled.loss
    nm = system._names
    nodes = {(nm[LABEL], ""): st[LABEL]}
    if loss.x is not None:
        nodes[(nm[SAMPLE], "")] = st[SAMPLE]
    shared = {(nm[b], ""): st[b] for b in loss.shared_names}
    ev = BatchedEvaluator(g, nodes, shared, system.compiled.roles, system._param_values)
    tb_of = system._sym_block
    P = g.csr.toarray()  # N×K

    def cols(b):  # the slice of block b among the rest (labels + shared)
        o, sh = lay[b]
        return slice(o - n1, o - n1 + prod(sh))

    def eye_b(r, c):
        return np.broadcast_to(np.eye(r, c), (B, r, c))

    def add_factor(Us, Ss, src, S):  # a factor column block; one block per per-sample array
        for q, u in enumerate(Us):
            if u is src:
                Ss[q] = Ss[q] + S
                return q
        Us.append(src)
        Ss.append(S)
        return len(Us) - 1

    def diag_pair(X, a1, a2, val):  # X[..., i, ..., i, ...] = val along axes a1, a2 (i over their range)
        idx = np.arange(X.shape[a1])
        ix = [slice(None)] * X.ndim
        ix[a1], ix[a2] = idx, idx
        X[tuple(ix)] = val

    for b in system.compiled.learned:
        f = system.scale * system.rates[b]
        out_shape = tuple(system._shape(b))
        for c0, form, data in system.compiled.jvps[b].terms:
            c = ev.coef(c0) * f
            if b in (SAMPLE, LABEL):
                side = "sample" if b == SAMPLE else "label"
                nrow, dout = out_shape
                if form == "lin" and data[1][3] == "d":  # a tangent node: deg ⊗ A or P ⊗ A
                    prefix, L = data
                    tb = tb_of[L[1]]
                    if tb not in lay:
                        continue
                    dn = system._shape(tb)[1]
                    A = ev.prod(prefix)
                    A = c * (A if A is not None else eye_b(dout, dn))
                    if ev.side(L) == side:
                        if b == SAMPLE:
                            D += g.sample_degree[None, :, None, None] * A[:, None]
                        else:
                            blk = J22[:, cols(LABEL), cols(LABEL)].reshape(B, nrow, dout, nrow, dn)
                            idx = np.arange(nrow)
                            blk[:, idx, :, idx, :] += (g.label_degree[:, None, None, None] * A[None])
                            J22[:, cols(LABEL), cols(LABEL)] = blk.reshape(B, nrow * dout, nrow * dn)
                    elif b == SAMPLE:  # samples ← labels: J₁₂[i,a,(c,e)] = P_ic A_ae
                        Kt = P.shape[1]
                        S = np.zeros((B, Kt, k, m))
                        diag_pair(S[..., cols(tb)].reshape(B, Kt, k, Kt, dn), 1, 3, A[None])
                        ops12.append((add_factor(U12, S12, P, S), cols(tb), "lk", A))
                    else:  # labels ← samples: J₂₁[(c,a),(i,e)] = P_ic A_ae
                        T = np.zeros((B, nrow, m, dn))
                        diag_pair(T[:, :, cols(LABEL), :].reshape(B, nrow, nrow, dout, dn), 1, 2, A[:, None])
                        ops21.append((add_factor(V21, T21, P, T), cols(LABEL), "WMt", A))
                    continue
                if form not in ("lin", "const"):
                    raise _Unsupported(form)
                chain = data[0]
                j = next(q for q, Lt in enumerate(chain) if Lt[0] == "s" and Lt[3] == "d")
                Lt = chain[j]
                tb = tb_of[Lt[1]]
                if tb not in lay:
                    continue
                Left, Right = ev.prod(chain[:j]), ev.prod(chain[j + 1:])
                wshape = system._shape(tb)
                lrows = wshape[1] if Lt[2] else wshape[0]
                Left = eye_b(dout, lrows) if Left is None else Left
                if form == "lin":
                    nb = ev.neighbour_sum(data[1], side)
                    r = nb if Right is None else nb @ np.swapaxes(Right, -1, -2)
                else:
                    deg = g.sample_degree if side == "sample" else g.label_degree
                    R = np.ones((B, 1)) if Right is None else Right.reshape(B, -1)
                    r = deg[None, :, None] * R[:, None, :]
                spec = "bak,bil->bialk" if Lt[2] else "bak,bil->biakl"
                if b == SAMPLE:  # J₁₂[i,a,(l,k) or (k,l)] = r_il (c Left)_ak
                    Lr, K2 = r.shape[2], Left.shape[2]
                    S = np.zeros((B, Lr, k, m))
                    if Lt[2]:
                        diag_pair(S[..., cols(tb)].reshape(B, Lr, k, Lr, K2), 1, 3, (c * Left)[None])
                    else:
                        diag_pair(S[..., cols(tb)].reshape(B, Lr, k, K2, Lr), 1, 4, (c * Left)[None])
                    ops12.append((add_factor(U12, S12, r, S), cols(tb), "lk" if Lt[2] else "kl", c * Left))
                else:
                    J22[:, cols(LABEL), cols(tb)] += _outer(spec, c * Left, r).reshape(B, nrow * dout, -1)
                continue
            R_, C_ = out_shape
            Lt = tangent_letter(data)
            tb = tb_of[Lt[1]]
            if tb not in lay:
                continue
            if tb in (SAMPLE, LABEL):  # a tangent node vector inside a moment
                tside = ev.side(Lt)
                deg = g.sample_degree if tside == "sample" else g.label_degree
                dn = system._shape(tb)[1]
                fac = tb == SAMPLE  # J₂₁[(a,b),(j,k)] = V_j· T_·(a,b)k (docstring), else dense J₂₂
                if form == "m1r":  # row a: A_ak deg_j
                    A = ev.prod(data[0])
                    A = eye_b(R_, dn) if A is None else A
                    if fac:
                        T = np.zeros((B, 1, m, dn))
                        T[:, 0, cols(b), :] = c * A
                        ops21.append((add_factor(V21, T21, deg, T), cols(b), "WMt", c * A))
                    else:
                        M = _outer("zak,j->zajk", A, deg).reshape(B, R_ * C_, -1)
                elif form == "m1l":  # row b: B_kb deg_j
                    Bm = ev.prod(data[1])
                    Bm = eye_b(dn, C_) if Bm is None else Bm
                    if fac:
                        T = np.zeros((B, 1, m, dn))
                        T[:, 0, cols(b), :] = c * np.swapaxes(Bm, 1, 2)
                        ops21.append((add_factor(V21, T21, deg, T), cols(b), "WM", c * Bm))
                    else:
                        M = _outer("zkb,j->zbjk", Bm, deg).reshape(B, R_ * C_, -1)
                elif form == "m2":
                    A, Lp, Lq, Bm = ev.prod(data[0]), data[1], data[2], ev.prod(data[3])
                    if Lq[3] == "d":  # row (a,b): (AG)_ja B_kb
                        G = ev.neighbour_sum(("s", Lp[1], False, Lp[3]), tside)
                        AG = G if A is None else G @ np.swapaxes(A, -1, -2)
                        Bm = eye_b(dn, C_) if Bm is None else Bm
                        if fac:
                            T = np.zeros((B, R_, m, dn))
                            diag_pair(T[:, :, cols(b), :].reshape(B, R_, R_, C_, dn), 1, 2,
                                      (c * np.swapaxes(Bm, 1, 2))[:, None])
                            ops21.append((add_factor(V21, T21, AG, T), cols(b), "WM", c * Bm))
                        else:
                            M = _outer("zja,zkb->zabjk", AG, Bm).reshape(B, R_ * C_, -1)
                    else:  # row (a,b): A_ak (HB)_jb
                        H = ev.neighbour_sum(("s", Lq[1], False, Lq[3]), tside)
                        HB = H if Bm is None else H @ Bm
                        A = eye_b(R_, dn) if A is None else A
                        if fac:
                            T = np.zeros((B, C_, m, dn))
                            diag_pair(T[:, :, cols(b), :].reshape(B, C_, R_, C_, dn), 1, 3, (c * A)[None])
                            ops21.append((add_factor(V21, T21, HB, T), cols(b), "MWt", c * A))
                        else:
                            M = _outer("zak,zjb->zabjk", A, HB).reshape(B, R_ * C_, -1)
                else:
                    raise _Unsupported(form)
                if not fac:
                    J22[:, cols(b), cols(tb)] += c * M
                continue
            Left, Right = shared_tangent_factors(system, ev, form, data, Lt)
            Left = np.broadcast_to(Left, (B,) + Left.shape[-2:])
            Right = np.broadcast_to(Right, (B,) + Right.shape[-2:])
            tr, tc = Left.shape[2], Right.shape[1]
            K = _outer("zij,zlk->zikjl", Left, Right).reshape(B, Left.shape[1] * Right.shape[2], tr * tc)
            if Lt[2]:
                K = K.reshape(B, R_ * C_, tr, tc).transpose(0, 1, 3, 2).reshape(B, R_ * C_, -1)
            J22[:, cols(b), cols(tb)] += c * K
    def rows_b(u):  # a per-sample array (N,), (N, r) or (B, N, r) as (B, N, r)
        u = u[:, None] if u.ndim == 1 else u
        return np.broadcast_to(u, (B,) + u.shape[-2:])

    U = np.concatenate([rows_b(u) for u in U12], axis=2) if U12 else np.zeros((B, N, 0))
    S = np.concatenate(S12, axis=1) if S12 else np.zeros((B, 0, k, m))
    Vf = np.concatenate([rows_b(v) for v in V21], axis=2) if V21 else np.zeros((B, N, 0))
    T = np.concatenate(T21, axis=1) if T21 else np.zeros((B, 0, m, k))
    if system.multiplicity is not None:  # sample rows / m_i
        D /= system.multiplicity[None, :, None, None]
        U = U / system.multiplicity[None, :, None]
    if factored == "apply":
        def ranges(blocks, ops):
            o = np.concatenate([[0], np.cumsum([rows_b(u).shape[2] for u in blocks])])
            return tuple((int(o[q]), int(o[q + 1]), sl, form, np.broadcast_to(M, (B,) + M.shape[-2:]))
                         for q, sl, form, M in ops)
        return D, (U, S), (Vf, T), J22, ApplyFactors(U, Vf, ranges(U12, ops12), ranges(V21, ops21), k, m)
    if factored:
        return D, (U, S), (Vf, T), J22
    J12 = (U @ S.reshape(B, S.shape[1], k * m)).reshape(B, n1, m)
    J21 = np.ascontiguousarray((Vf @ T.reshape(B, T.shape[1], m * k)).reshape(B, N, m, k).transpose(0, 2, 1, 3)).reshape(B, m, n1)
    return D, J12, J21, J22



class ApplyFactors:
    r"""J₁₂x₂ and J₂₁u of B Jacobians from their factors (:func:`jacobian_blocks`): J₁₂x₂ = U z with
    z_L· = (products of the small matrices with x₂'s blocks), J₂₁u = Σ (products with W = Vᵀu): a
    few k×k-sized products per term and two N-row products, no N·k×m block and no plan
    evaluation (docs/model.md §3.7). ``ops``: (L₀, L₁, slice of the rest, form, matrix B×p×q) per
    term."""

    def __init__(self, U, V, ops12, ops21, k, m):
        self.U, self.V, self.ops12, self.ops21, self.k, self.m = U, V, ops12, ops21, k, m

    def structure(self):
        """The seed-independent part (ranges, slices, forms) of the terms."""
        return (tuple(op[:4] for op in self.ops12), tuple(op[:4] for op in self.ops21), self.U.shape[2], self.V.shape[2])

    @staticmethod
    def j12(U, mats, struct, X2, k):
        """J₁₂x₂ (B, N·k) for the rows x₂ (B, m) of the rest: U (B,N,R), mats the terms' matrices."""
        B = len(X2)
        z = np.zeros((B, U.shape[2], k))
        for (L0, L1, sl, form), M in zip(struct, mats):
            X = X2[:, sl]
            Mt = np.swapaxes(M, 1, 2)
            if form == "lk":  # z_l,a = Σ_k M_ak X_(l,k)
                z[:, L0:L1] += X.reshape(B, L1 - L0, -1) @ Mt
            else:  # "kl": z_l,a = Σ_k M_ak X_(k,l)
                z[:, L0:L1] += np.swapaxes(X.reshape(B, -1, L1 - L0), 1, 2) @ Mt
        return (U @ z).reshape(B, -1)

    @staticmethod
    def j21(V, mats, struct, X1, k, m):
        """J₂₁u (B, m) for the sample rows u (B, N·k): V (B,N,R'), mats the terms' matrices."""
        B = len(X1)
        W = np.swapaxes(V, 1, 2) @ X1.reshape(B, -1, k)  # (B, R', k)
        out = np.zeros((B, m))
        for (L0, L1, sl, form), M in zip(struct, mats):
            Wq = W[:, L0:L1]
            if form == "WMt":
                val = Wq @ np.swapaxes(M, 1, 2)
            elif form == "WM":
                val = Wq @ M
            else:  # "MWt"
                val = M @ np.swapaxes(Wq, 1, 2)
            out[:, sl] += val.reshape(B, -1)
        return out

#: largest B·n² of one call of :func:`dense_jacobians` in the batched integrator; also the largest
#: n² for which a single stiff run without node blocks takes the batched integrator with one seed
#: (numerics/trajectory.py; with node blocks the bound is on the blocks, SINGLE_BLOCK_BYTES there)
DENSE_JACOBIAN_ENTRIES = 4 * 10**6
#: most unknowns n for which the batched integrator builds a Jacobian densely from n batched JVPs
#: rather than assembling it sparse (measured per Jacobian, head model d = 8: n = 328 18 ms either
#: way; n = 912 142 ms dense vs 14 ms sparse; n = 34 2 ms vs 16 ms)
DENSE_JACOBIAN_UNKNOWNS = 400


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
        self.point = None  # the state J was evaluated at (set by the integrator)

    @classmethod
    def from_blocks(cls, D, J12, J21, J22, point=None, factors=None) -> "BlockJacobian":
        """The BlockJacobian of given dense blocks (shapes as the attributes; B seeds), or with
        J12 = J21 = None and ``factors`` = ((U, S), (V, T)) of :func:`jacobian_blocks` (factored):
        the grouped Schur terms are then formed from the factors (the N·k×m blocks are never
        built); solves need the JVP path (:func:`solve_seeds_jvp`)."""
        self = cls.__new__(cls)
        B, N, k, _ = D.shape
        self.B, self.N, self.k, self.n1, self.m = B, N, k, N * k, J22.shape[1]
        self.shape = (B * (self.n1 + self.m),) * 2
        self.D, self.J12, self.J21, self.J22 = D, J12, J21, J22
        self.factors = factors
        self.groups = _sample_groups(self)
        self.point = point
        return self

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

    def __init__(self, seed, lam, Q, perm, offsets, C, index=None):
        self.seed, self.lam, self.Q, self.perm, self.offsets, self.C = seed, lam, Q, perm, offsets, C
        self.index = index  # the group of every (seed, sample) row
        self.basis = None  # one eigenbasis per seed (B×k×k) when all its blocks share it

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
    if B == 1:
        _, first, inv = np.unique(proj, return_index=True, return_inverse=True)
    else:
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
    # one eigenbasis for all blocks of a seed (the head model: D_i = −η_i deg_i WᵀW): then
    # (I − cD_i)⁻¹r_i = Q (w_i ∘ Qᵀr_i) for all samples of all seeds in two batched products
    Q0 = Q[np.searchsorted(seed, np.arange(B))]  # the first group's basis of every seed
    rot = np.swapaxes(Q0[seed], 1, 2) @ Du @ Q0[seed]
    off = rot - np.einsum("gii->gi", rot)[:, :, None] * np.eye(k)
    basis = None
    if np.abs(off).max() <= 1e-12 * scale:
        basis, Q = Q0, Q0[seed]
        lam = np.einsum("gii->gi", rot)
    C = np.empty((G, k, m, m))
    factors = getattr(J, "factors", None)
    if J.J12 is None:
        if factors is None:
            return None
        # J₁₂[i,a,:] = Σ_L U_iL S_La:, J₂₁[:,i,e] = Σ_L V_iL T_L:e: C_uj = T̃_jᵀ (V_uᵀ U_u) S̃_j with
        # S̃_j = Σ_a q_ja S_La:, T̃_j = Σ_e T_L:e q_je (no N·k×m block formed)
        (U, S), (Vf, T) = factors
        R1, R2 = S.shape[1], T.shape[1]
        for g in range(G):
            rows = perm[offsets[g]:offsets[g + 1]]
            b, Qg = seed[g], Q[g]
            i = rows - b * N
            Sq = (Qg.T @ np.swapaxes(S[b], 0, 1).reshape(k, R1 * m)).reshape(k, R1, m)
            Tq = np.swapaxes((T[b] @ Qg).transpose(2, 0, 1), 1, 2)  # (j, m, L)
            Mg = Vf[b, i].T @ U[b, i]  # (R2, R1)
            np.matmul(Tq, Mg @ Sq, out=C[g])
        grp = SampleGroups(seed, lam, Q, perm, offsets, C, inv)
        grp.basis = basis
        return grp
    J12 = J.J12.reshape(B * N, k, m)
    J21 = J.J21.reshape(B, m, N, k)
    for g in range(G):
        rows = perm[offsets[g]:offsets[g + 1]]
        Qg = Q[g]
        A = np.ascontiguousarray((Qg.T @ J12[rows]).transpose(1, 0, 2))  # (j, i, m): q_jᵀ J₁₂,i
        Bt = np.ascontiguousarray((J21[seed[g]][:, rows - seed[g] * N, :] @ Qg).transpose(2, 0, 1))  # (j, m, i): J₂₁,i q_j
        np.matmul(Bt, A, out=C[g])  # Σ_i (J₂₁,i q_j)(q_jᵀ J₁₂,i), one m×m per j
    grp = SampleGroups(seed, lam, Q, perm, offsets, C, inv)
    grp.basis = basis  # (B, k, k) or None
    return grp


class _Shifted:
    """I − c·J (``c * J`` of a :class:`BlockJacobian`), factorised by :class:`BatchedNodeLU`."""

    def __init__(self, c: float, J: BlockJacobian):
        self.c, self.J = c, J


class BatchedNodeLU:
    """(I − cJ)⁻¹ of a :class:`BlockJacobian`, seed by seed in batched LAPACK calls: the sample
    blocks I − cD inverted, S = I − cJ₂₂ − c²J₂₁(I − cD)⁻¹J₁₂ inverted (m×m per seed)."""

    def __init__(self, sh: _Shifted, invert: bool = True):
        J, c = sh.J, sh.c
        B, N, k, m = J.B, J.N, J.k, J.m
        self.J, self.c = J, c
        self.luS = None  # S's LU factors (getrf) instead of S⁻¹: factor_seeds(..., lu=True)
        grp = J.groups
        if grp is not None:  # S = I − cJ₂₂ − c² Σ_uj C_uj/(1 − cλ_uj): no N-sized work
            self._Dg = None  # (I − cD_u)⁻¹ per group, formed when first used (:attr:`Dg`)
            w = 1.0 / (1.0 - c * grp.lam)  # (G, k)
            self.w_rows = w[grp.index].reshape(B, N, k) if grp.basis is not None else None
            S = np.eye(m) - c * J.J22
            if B == 1:  # Σ_uj w_uj C_uj as one matrix–vector product
                S[0] -= (c * c) * (w.reshape(1, -1) @ grp.C.reshape(-1, m * m)).reshape(m, m)
            else:
                T = (w[:, None, :] @ grp.C.reshape(len(w), k, m * m)).reshape(-1, m, m)
                np.add.at(S, grp.seed, -c * c * T)
            self.S = S
            self.Sinv = np.linalg.inv(S) if invert else None  # else: factor_seeds inverts
            return
        self._Dg = self.w_rows = None
        self.Dinv = np.linalg.inv(np.eye(k) - c * J.D)  # (B, N, k, k)
        self.X = (self.Dinv @ (-c * J.J12).reshape(B, N, k, m)).reshape(B, J.n1, m)
        S = np.eye(m) - c * J.J22 + c * (J.J21 @ self.X)
        self.Sinv = np.linalg.inv(S)

    @property
    def Dg(self):
        """(I − cD_u)⁻¹ of every sample group (None without groups)."""
        if self._Dg is None and self.J.groups is not None:
            self._Dg = self.J.groups.block_inverse(self.c)
        return self._Dg

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

    def sample_inverses(self) -> np.ndarray:
        """(I − cD_i)⁻¹ of every sample block (B×N×k×k)."""
        J = self.J
        if self.Dg is None:
            return self.Dinv
        return self.Dg[J.groups.index].reshape(J.B, J.N, J.k, J.k)


#: most seeds per call of the batched kernels inside the integrator (larger batches fall out of
#: cache: head model K=4, N=102, d=8, 64 seeds: 0.017 ms/seed per flow in calls of 32 seeds,
#: 0.030 ms in one call of 64)
KERNEL_SEEDS = 32


#: fewest running seeds for which the Newton solves of a new Jacobian take J₂₁u, J₁₂x₂ as batched
#: JVPs (fewer, e.g. the last seed of a batch: the assembled blocks, a matrix–vector product each;
#: measured K=2, N=7, d=2, one seed: 1.0 s with JVPs vs 0.5 s with the blocks)
JVP_SOLVE_SEEDS = 4


def _kernel_chunks(fn, system, *arrays, **kw):
    B = len(arrays[0])
    if B <= KERNEL_SEEDS:
        return fn(system, *arrays, **kw)
    return np.concatenate([fn(system, *(a[i:i + KERNEL_SEEDS] for a in arrays), **kw)
                           for i in range(0, B, KERNEL_SEEDS)])


class SeedStore:
    """Per-seed arrays of one batch for the Newton solves (docs/model.md §3.7), in slots (a seed's
    index in the :class:`.seed_bdf.SeedBDF`): written with each Jacobian (the sample blocks' eigenbasis, the
    factors of J₁₂ and J₂₁, :class:`ApplyFactors`) and each LU (c, the eigen-weights 1/(1 − cλ)
    of the sample rows, S⁻¹), so that a solve takes them with one indexing per array (a view when
    the slots are consecutive) instead of stacking per-seed objects. Only a seed's current
    Jacobian and LU are kept (SeedBDF solves with nothing else)."""

    def __init__(self, B: int):
        self.B = B
        self.arrays = {}
        self.structure = None
        self.version = 0  # counts the writes: a gathered set is reused while nothing was written
        self._gathered = {}  # slots -> arrays, valid for self._gathered_version
        self._gathered_version = -1

    def put(self, key, slots, values) -> None:
        values = np.asarray(values)
        arr = self.arrays.get(key)
        if arr is None:
            arr = self.arrays[key] = np.zeros((self.B,) + values.shape[1:])
        arr[slots] = values
        self.version += 1

    def take(self, key, slots):
        arr = self.arrays[key]
        if isinstance(slots, slice):
            out = arr[slots]
            out.flags.writeable = False  # a view of the store: read only
            return out
        return arr[slots]

    def put_factors(self, slots, F: "ApplyFactors") -> None:
        struct = F.structure()
        if self.structure is None:
            self.structure = struct
        elif struct != self.structure:  # (the derived terms do not depend on the state)
            raise IntegrationError("internal: the Jacobian's factor structure changed between Jacobians")
        self.put("U", slots, F.U)
        self.put("V", slots, F.V)
        for i, op in enumerate(F.ops12):
            self.put(("op12", i), slots, op[4])
        for i, op in enumerate(F.ops21):
            self.put(("op21", i), slots, op[4])

    def take_solve(self, slots) -> tuple:
        """c, S⁻¹, basis, w, U, V and the terms' matrices of the seeds in ``slots``; the same slots
        with no write in between (the Newton iterations of one round) reuse the gathered arrays."""
        key = (slots.start, slots.stop) if isinstance(slots, slice) else slots.tobytes()
        if self._gathered_version != self.version:
            self._gathered, self._gathered_version = {}, self.version
        if key not in self._gathered:
            Sinv = self.take("Sinv", slots) if "Sinv" in self.arrays else None  # None: LU factors (lu=True)
            self._gathered[key] = (self.take("c", slots), Sinv, self.take("basis", slots),
                                   self.take("w", slots), *self.take_factors(slots))
        return self._gathered[key]

    def take_factors(self, slots) -> tuple:
        """U, V and the terms' matrices (J₁₂'s, J₂₁'s) of the seeds in ``slots``."""
        return (self.take("U", slots), self.take("V", slots),
                [self.take(("op12", i), slots) for i in range(len(self.structure[0]))],
                [self.take(("op21", i), slots) for i in range(len(self.structure[1]))])


def _slots(LUs):
    """The store slots of the LUs' seeds: a slice when consecutive, else an index array (None when
    an LU has no slot)."""
    idx = [getattr(LU.J, "slot", None) for LU in LUs]
    if any(i is None for i in idx):
        return None
    a = np.array(idx)
    if len(a) == 1 or np.all(np.diff(a) == 1):
        return slice(int(a[0]), int(a[-1]) + 1)
    return a


def solve_seeds_jvp(system, LUs: list, R: np.ndarray, store: SeedStore | None = None) -> np.ndarray:
    """:func:`solve_seeds` with the off-diagonal products J₂₁u and J₁₂x₂ taken as batched
    Jacobian–vector products at each seed's Jacobian point ``LU.J.point`` (the same linear maps
    as the assembled blocks, docs/model.md §3.4; no N·k×m block is read per solve). Needs grouped
    LUs (their Schur complement is formed from the blocks once per Jacobian). More than
    KERNEL_SEEDS LUs are solved in consecutive chunks. With a ``store`` holding every LU's seed
    (:class:`SeedStore`), the per-seed arrays come from it and J₂₁u, J₁₂x₂ from the factors of the
    Jacobians (:class:`ApplyFactors`: the same linear maps, a few small products per term)."""
    if len(LUs) > KERNEL_SEEDS:
        return np.concatenate([solve_seeds_jvp(system, LUs[i:i + KERNEL_SEEDS], R[i:i + KERNEL_SEEDS], store)
                               for i in range(0, len(LUs), KERNEL_SEEDS)])
    J0 = LUs[0].J
    L, N, k, n1 = len(LUs), J0.N, J0.k, J0.n1
    sl = _slots(LUs) if store is not None and store.structure is not None else None
    if sl is not None:
        c, Sinv, Q, w, U, Vf, mats12, mats21 = store.take_solve(sl)
    else:
        pts = np.stack([LU.J.point for LU in LUs])
        c = np.array([LU.c for LU in LUs])
        Sinv = None  # (L, m, m) when every LU holds S⁻¹ (:func:`_schur_solve`)
        Q = w = None
        if all(LU.w_rows is not None for LU in LUs):  # a shared eigenbasis per seed
            Q = np.concatenate([LU.J.groups.basis for LU in LUs])  # (L, k, k)
            w = np.concatenate([LU.w_rows for LU in LUs])  # (L, N, k)
    if Q is not None:
        Qt = np.swapaxes(Q, 1, 2)

        def blocks(X):
            return (((X.reshape(L, N, k) @ Q) * w) @ Qt).reshape(L, n1)
    else:
        Dinv = np.concatenate([LU.sample_inverses() for LU in LUs])  # (L, N, k, k)

        def blocks(X):
            return (Dinv @ X.reshape(L, N, k, 1)).reshape(L, n1)
    if sl is not None:  # the products with J₂₁, J₁₂ from the factors (ApplyFactors)
        st12, st21 = store.structure[:2]
        u = blocks(R[:, :n1])
        b2 = R[:, n1:] + c[:, None] * ApplyFactors.j21(Vf, mats21, st21, u, k, R.shape[1] - n1)
        x2 = _schur_solve(LUs, Sinv, b2)
        out = np.empty_like(R)
        out[:, n1:] = x2
        out[:, :n1] = u + c[:, None] * blocks(ApplyFactors.j12(U, mats12, st12, x2, k))
        return out
    T = np.zeros_like(R)
    T[:, :n1] = blocks(R[:, :n1])
    rest = tuple(b for b in system.compiled.learned if b != SAMPLE)
    b2 = R[:, n1:] + c[:, None] * batched_jvp(system, pts, T, zero=rest, only=rest)[:, n1:]
    x2 = _schur_solve(LUs, Sinv, b2)
    out = np.zeros_like(R)
    out[:, n1:] = x2
    t = batched_jvp(system, pts, out, zero=(SAMPLE,), only=(SAMPLE,))[:, :n1]
    out[:, :n1] = T[:, :n1] + c[:, None] * blocks(t)
    return out


def factor_seeds(Js: list, cs, lu: bool = False) -> list:
    """One-seed :class:`BatchedNodeLU` of I − c J for every pair, the Schur complements of the
    grouped ones inverted in one batched call; with ``lu`` they are factorised instead (LAPACK
    getrf, kept as ``LU.luS``; the solves then take getrs): for a single run, whose solves are one
    matrix–vector product each either way, the factorisation costs a third of the inverse
    (head model, m = 320: getrf 2.0 ms vs getrf + getri 9.3 ms, one thread)."""
    LUs = [BatchedNodeLU(_Shifted(float(c), J), invert=False) for J, c in zip(Js, cs)]
    for LU in LUs:
        if LU.Sinv is None and lu:
            LU.luS, LU.S = _factor(LU.S[0]), None
        elif LU.Sinv is None:
            LU.Sinv, LU.S = _inverse(LU.S[0])[None], None
    return LUs


def _factor(S: np.ndarray) -> tuple:
    """The LU factors (lu, piv) of S by LAPACK getrf; a singular S raises numpy's LinAlgError (as
    :func:`_inverse` does)."""
    lu, piv, info = lapack.dgetrf(S, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError("Singular matrix")
    return lu, piv


def _inverse(S: np.ndarray) -> np.ndarray:
    """S⁻¹ by LAPACK getrf + getri (2n³ flops; np.linalg.inv solves against the identity, 8n³/3:
    m = 96: 0.17 vs 0.27 ms); a singular S raises numpy's LinAlgError as np.linalg.inv does."""
    lu, piv, info = lapack.dgetrf(S)
    if info == 0:
        inv, info = lapack.dgetri(lu, piv)
    if info != 0:
        raise np.linalg.LinAlgError("Singular matrix")
    return inv


def _schur_solve(LUs: list, Sinv, b2: np.ndarray) -> np.ndarray:
    """Row b of S_b⁻¹ b₂ for the LUs' Schur complements: products with the inverses ``Sinv``
    (L, m, m) when every LU holds one (batched), else seed by seed (getrs with an LU's factors
    ``luS``, or its S⁻¹)."""
    if all(LU.luS is None for LU in LUs):
        if Sinv is None:
            Sinv = np.concatenate([LU.Sinv for LU in LUs])
        return np.einsum("bij,bj->bi", Sinv, b2)  # (a batched matvec: 0.19 vs 0.32 ms as matmul, 32 seeds, m = 96)
    out = np.empty_like(b2)
    for i, LU in enumerate(LUs):
        if LU.luS is None:
            out[i] = LU.Sinv[0] @ b2[i]
        else:
            out[i] = lapack.dgetrs(*LU.luS, b2[i])[0]
    return out


def solve_seeds(LUs: list, R: np.ndarray) -> np.ndarray:
    """Row b of R solved with LUs[b] (each a one-seed :class:`BatchedNodeLU`): the sample blocks of
    all seeds in one batched product, the Schur solves seed by seed (matrix–vector products)."""
    J0 = LUs[0].J
    L, N, k, n1 = len(LUs), J0.N, J0.k, J0.n1
    Dinv = np.concatenate([LU.sample_inverses() for LU in LUs])  # (L, N, k, k)
    u = (Dinv @ R[:, :n1].reshape(L, N, k, 1)).reshape(L, n1)
    out = np.empty_like(R)
    t = np.empty((L, n1))
    for i, LU in enumerate(LUs):
        J, c = LU.J, LU.c
        b2 = R[i, n1:] + c * (J.J21[0] @ u[i])
        x2 = LU.Sinv[0] @ b2 if LU.luS is None else lapack.dgetrs(*LU.luS, b2)[0]
        out[i, n1:] = x2
        t[i] = (J.J12[0] @ x2) if LU.Dg is not None else -(LU.X[0] @ x2)
    grouped = np.array([LU.Dg is not None for LU in LUs])
    c = np.array([LU.c for LU in LUs])
    # grouped: x₁ = u + c(I − cD)⁻¹J₁₂x₂; direct: x₁ = u − X x₂ (X = −c(I − cD)⁻¹J₁₂ formed)
    corr = np.where(grouped[:, None], c[:, None] * (Dinv @ t.reshape(L, N, k, 1)).reshape(L, n1), t)
    out[:, :n1] = u + corr
    return out


#: largest memory (bytes) the seeds of one batch may take (Jacobian blocks, Schur terms,
#: difference arrays); more seeds are run in consecutive batches
BATCH_BYTES = 1.0e9
#: most seeds integrated together (each keeps its own steps: :mod:`.seed_bdf`)
BATCH_SEEDS = 64


def integrate_many(system, V0: np.ndarray, t_eval: np.ndarray, *, rtol: float, atol: float,
                   stop_residual: float | None, residual_norm=None, schur_lu: bool = False) -> list:
    """Integrate the B initial states (rows of V0) of ``system`` (samples first, block-diagonal
    sample rows) with :class:`.seed_bdf.SeedBDF`: every seed takes the steps of its own scipy-BDF
    run ("BDF-nodes": its Newton systems solved with the sample rows eliminated,
    :class:`BatchedNodeLU`), the flows of all seeds are batched kernel calls. Returns per seed
    (t, states, stopped, residual, nsteps, nfev, njev, nlu, newton_floor, batch): states at the
    times of t_eval the seed reached and, if it stopped (‖θ̇‖_∞ ≤ stop_residual at an accepted step), its state at
    that step, where it leaves the batch. ``residual_norm(F, seeds)`` (F: the flows of those
    seeds, one per row) replaces the rows' ‖θ̇‖_∞ (a reduced flow measured as its full flow,
    :mod:`.sample_reduction`); it must be at least the largest label and shared entry of the row
    (those are entries of the full flow), so it is only evaluated for rows where those are below
    stop_residual. The stop test first evaluates the label block of θ̇ alone
    (:func:`batched_label_flow`, ‖θ̇‖_∞ ≥ max |ẏ|): the flow of a seed whose label flow exceeds
    2·stop_residual is not needed (the same decisions; nfev counts full flow evaluations).
    ``schur_lu``: the seeds' Schur complements factorised (getrf, solved by getrs) instead of
    inverted (:func:`factor_seeds`; the single run of 'BDF-nodes' uses it, the same steps to round-off)."""
    N, k = node_blocks(system)
    B, n = V0.shape
    m = n - N * k
    per_seed = 8.0 * (2 * N * k * m + 3 * m * m + N * k * k + (MAX_ORDER + 3) * n)
    chunk = max(1, min(BATCH_SEEDS, int(BATCH_BYTES // per_seed)))
    if B > chunk:
        out = []
        for i in range(0, B, chunk):
            sub = None if residual_norm is None else (
                lambda F, seeds, i=i: residual_norm(F, np.asarray(seeds) + i))
            out += integrate_many(system, V0[i:i + chunk], t_eval, rtol=rtol, atol=atol,
                                  stop_residual=stop_residual, residual_norm=sub, schur_lu=schur_lu)
        return out
    t_eval = np.asarray(t_eval, dtype=float)

    def flows(seeds, Y):
        # one state: the single-state kernels (0.15 vs 0.38 ms, K=4 d=8, 84 pseudo-samples)
        F = system.flow_vector(Y[0])[None] if len(Y) == 1 else _kernel_chunks(batched_flow, system, Y)
        if not np.all(np.isfinite(F)):
            raise IntegrationError("the state diverged (non-finite flow); no trajectory returned")
        return F

    one = np.ones(1, dtype=bool)
    live = [B]  # seeds still running (set each round): with few, the blocks are kept for the solves

    def jvp_solves() -> bool:
        return batchable(system) and live[0] >= JVP_SOLVE_SEEDS

    per_call = DENSE_JACOBIAN_ENTRIES // (n * n)

    derived = [True]

    def jacobians(seeds, Y):
        if derived[0]:  # the dense blocks assembled from the derived chains, batched over seeds
            try:
                out = []
                for i in range(0, len(Y), KERNEL_SEEDS):
                    Yc, sc = Y[i:i + KERNEL_SEEDS], np.asarray(seeds)[i:i + KERNEL_SEEDS]
                    chunk = []
                    if batchable(system):  # the Schur terms and the solves from the factors
                        D, (U, S), (Vf, T), J22, F = jacobian_blocks(system, Yc, factored="apply")
                        for b, y in enumerate(Yc):
                            fac = ((U[b:b + 1], S[b:b + 1]), (Vf[b:b + 1], T[b:b + 1]))
                            J = BlockJacobian.from_blocks(D[b:b + 1].copy(), None, None, J22[b:b + 1].copy(),
                                                          point=y.copy(), factors=fac)
                            if J.groups is None or (J.groups.basis is None and not jvp_solves()):
                                # not grouped, or solves through JVPs with few seeds: the dense blocks
                                J12 = (U[b:b + 1] @ S[b:b + 1].reshape(1, S.shape[1], -1)).reshape(1, N * k, m)
                                J21 = np.ascontiguousarray((Vf[b:b + 1] @ T[b:b + 1].reshape(1, T.shape[1], -1))
                                                           .reshape(1, N, m, k).transpose(0, 2, 1, 3)).reshape(1, m, N * k)
                                J = BlockJacobian.from_blocks(J.D, J12, J21, J.J22, point=J.point)
                            J.factors = None
                            chunk.append(J)
                    else:
                        D, J12, J21, J22 = jacobian_blocks(system, Yc)
                        for b, y in enumerate(Yc):
                            chunk.append(BlockJacobian.from_blocks(D[b:b + 1].copy(), J12[b:b + 1].copy(),
                                                                   J21[b:b + 1].copy(), J22[b:b + 1].copy(),
                                                                   point=y.copy()))
                    if all(J.J12 is None and J.groups is not None and J.groups.basis is not None for J in chunk):
                        # the solves' per-seed arrays in the store (slot = the seed's index)
                        store.put("basis", sc, np.concatenate([J.groups.basis for J in chunk]))
                        store.put_factors(sc, F)
                        for J, s in zip(chunk, sc):
                            J.slot = int(s)
                    out += chunk
                return out
            except _Unsupported:
                derived[0] = False
        if n <= DENSE_JACOBIAN_UNKNOWNS:  # dense, from batched JVPs
            mats = [M for i in range(0, len(Y), per_call) for M in dense_jacobians(system, Y[i:i + per_call])]
        else:
            mats = [system.jacobian(y) for y in Y]
        out = []
        for M, y in zip(mats, Y):
            J = BlockJacobian([M], N, k, one)
            J.point = y.copy()
            if J.groups is not None and jvp_solves():  # solves through JVPs: the N·k×m blocks not kept
                J.J12 = J.J21 = None
            out.append(J)
        return out

    def factor(Js, cs):
        LUs = factor_seeds(Js, cs, lu=schur_lu)
        kept = [LU for LU in LUs if getattr(LU.J, "slot", None) is not None and LU.w_rows is not None]
        if kept:  # the solves' per-seed arrays of the new LUs
            slots = [LU.J.slot for LU in kept]
            store.put("c", slots, [LU.c for LU in kept])
            store.put("w", slots, np.concatenate([LU.w_rows for LU in kept]))
            if not schur_lu:  # (else S's factors stay with the LU: getrs per solve)
                store.put("Sinv", slots, np.concatenate([LU.Sinv for LU in kept]))
        return LUs

    base = {}  # the last solve over a new set of seeds: its store version, slots and LUs

    def superset_solve(LUs, R):
        # The later Newton iterations of a round solve for a subset of the seeds of its first
        # one. Gathering the subset's per-seed arrays (S⁻¹, factors) from the store costs more
        # than solving the whole first set again (its gathered arrays are reused, or are views),
        # so the rows are padded with zeros to that set. Each row is solved on its own: the
        # same numbers as a solve of the subset.
        slots = [getattr(LU.J, "slot", None) for LU in LUs]
        if base and None not in slots and base["version"] == store.version and 2 * len(slots) >= len(base["LUs"]):
            pos = base["pos"][np.asarray(slots)]
            if np.all(pos >= 0):
                Rp = np.zeros((len(base["LUs"]), R.shape[1]))
                Rp[pos] = R
                return solve_seeds_jvp(system, base["LUs"], Rp, store)[pos]
        if None not in slots:
            pos = np.full(store.B, -1)
            pos[slots] = np.arange(len(slots))
            base.update(version=store.version, LUs=list(LUs), pos=pos)
        return solve_seeds_jvp(system, LUs, R, store)

    def solve(LUs, R):  # through JVPs for the LUs whose Jacobian dropped its blocks
        g = np.array([LU.J.J12 is None for LU in LUs])
        if not g.any():
            return solve_seeds(LUs, R)
        if g.all():
            return superset_solve(LUs, R)
        out = np.empty_like(R)
        for sel, fn in ((np.flatnonzero(g), lambda L, X: solve_seeds_jvp(system, L, X, store)), (np.flatnonzero(~g), solve_seeds)):
            if len(sel):
                out[sel] = fn([LUs[i] for i in sel], R[sel])
        return out

    F0 = batched_flow(system, V0)
    if not np.all(np.isfinite(F0)):
        raise IntegrationError("the flow is not finite at the initial state (t = 0)")
    def norms(F, seeds):
        return residual_norm(F, seeds) if residual_norm is not None else np.abs(F).max(axis=1)

    res0 = norms(F0, np.arange(B))
    rec = [dict(t=[float(t_eval[0])], y=[V0[b].copy()], stopped=False, residual=float(res0[b]), nsteps=0,
                nfev=1, njev=0, nlu=0, batch=B) for b in range(B)]
    run = np.arange(B)
    if stop_residual is not None:
        for b in np.flatnonzero(res0 <= stop_residual):
            rec[b]["stopped"] = True
        run = np.flatnonzero(res0 > stop_residual)
    if not len(run):
        return rec
    store = SeedStore(len(run))
    solver = SeedBDF(flows, jacobians, factor, solve,
                     float(t_eval[0]), V0[run], float(t_eval[-1]), rtol=rtol, atol=atol, F0=F0[run])
    i_eval = np.ones(len(run), dtype=int)
    t_end = float(t_eval[-1])
    label_first = batchable(system) and LABEL in system.compiled.learned and m > 0
    while solver.live.any():
        live[0] = int(solver.live.sum())
        acc = solver.step()
        if not len(acc):
            continue
        js = np.searchsorted(t_eval, solver.t[acc], side="right")
        for s, j in zip(acc[js > i_eval[acc]], js[js > i_eval[acc]]):  # the seeds that passed a t_eval
            r = rec[run[s]]
            r["t"].extend(t_eval[i_eval[s]:j].tolist())
            r["y"].extend(np.atleast_2d(solver.dense_output(s)(t_eval[i_eval[s]:j])).T)
            i_eval[s] = j
        chk = acc  # the seeds whose stop is tested with their flow
        if stop_residual is not None and label_first:
            # ‖θ̇‖_∞ ≥ max |ẏ|: a seed whose label flow alone is above the stop (with a factor 2
            # for the round-off between kernels) has not stopped; only the others need the flow
            chk = acc[np.abs(batched_label_flow(system, solver.y[acc])).max(axis=1) <= 2.0 * stop_residual]
        if stop_residual is not None and len(chk):
            F = solver._flows(chk, solver.y[chk])
            # the label and shared entries of θ̇ are entries of the (full) flow: a seed with one
            # above stop_residual has not stopped, whatever residual_norm gives for its samples
            R = np.abs(F[:, N * k:]).max(axis=1) if m else np.zeros(len(chk))
            low = R <= stop_residual
            if low.any():
                R[low] = norms(F[low], run[chk[low]])
            for s, res in zip(chk[R <= stop_residual], R[R <= stop_residual]):
                r, t = rec[run[s]], float(solver.t[s])
                if r["t"][-1] != t:
                    r["t"].append(t)
                    r["y"].append(solver.y[s].copy())
                r["stopped"], r["residual"] = True, float(res)
            solver.retire(chk[R <= stop_residual])
        solver.retire(acc[solver.t[acc] >= t_end])
    for s, b in enumerate(run):
        r = rec[b]
        r.update(nsteps=int(solver.nsteps[s]), nfev=int(solver.nfev[s]) + 1, njev=int(solver.njev[s]),
                 nlu=int(solver.nlu[s]), newton_floor={"checks": int(solver.floor_checks[s]),
                                                       "accepted": int(solver.floor_accepted[s]),
                                                       "limited": int(solver.floor_limited[s])})
        if r["stopped"]:
            continue
        if len(r["t"]) != len(t_eval):
            raise IntegrationError(f"integration stopped at t = {solver.t[s]:g} of {t_end:g} before "
                                   "the last requested time; no trajectory returned")
        r["residual"] = float(norms(system.flow_vector(r["y"][-1])[None], [b])[0])
    return rec


class _Zero:
    """Stands in for the Jacobian of a frozen seed (its blocks stay zero)."""

    def __init__(self, n):
        self.shape = (n, n)
