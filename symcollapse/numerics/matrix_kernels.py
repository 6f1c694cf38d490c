r"""NumPy kernels generated from a matrix-level flow: matrix products over the graph's moments.

Each chain c·L₁…L_k of a derived force is classified once (structure detection):
- node force of x (or y) with the node vector last, F = A n:  Σ_c P_ic A n = D_i A x_i, A (P Y)_i, …
  (rows: X Aᵀ scaled by the degrees, (P Y) Aᵀ, …);
- shared force with 0, 1 or 2 node vectors, A, A n B, A n_p n_qᵀ B:  Σ_e p_e F = A M B with
  the moments M₀ = Σ_e p_e, M₁ = Σ_e p_e n, M₂ = Σ_e p_e n_p n_qᵀ (Xᵀ D X, Xᵀ P Y, Yᵀ D Y, …);
- loss terms tr(n_pᵀ B n_q) summed as tr(B M₂[q, p]).
So the cost of building the kernels does not depend on d or N, and one evaluation costs a
few dense products (docs/model.md §2–§4). A chain outside these forms raises
:class:`StructureError` (the caller then uses the component path).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache, reduce

import numpy as np
import sympy as sp

from .. import cache
from ..errors import SymcollapseError
from ..symbolic import matcalc as mc
from ..symbolic.loss import LABEL, SAMPLE
from ..symbolic.matrix_flow import MatrixFlow, cross_check, derive_matrix_flow


class StructureError(SymcollapseError):
    """A derived chain is not of a form the matrix-product kernels evaluate."""


def _coef(k, params: tuple):
    """A chain coefficient as a float, or as a function of the loss parameters."""
    k = sp.sympify(k)
    if not k.free_symbols:
        return float(k)
    missing = k.free_symbols - set(params)
    if missing:
        raise StructureError(f"coefficient {k} has unknown symbols {sorted(map(str, missing))}")
    fn = sp.lambdify(params, k, modules="numpy")
    return lambda pv: float(fn(*pv))


@dataclass(frozen=True)
class Plan:
    """Classified chains of one block (or of the loss)."""

    kind: str       # "node" | "shared" | "loss"
    terms: tuple    # per term: (coef, form, data)


def _node_role(flow: MatrixFlow) -> dict:
    """MatrixSymbol name -> 'sample' / 'label' for the node vectors (x, u: sample side; y: label)."""
    loss = flow.loss
    out = {loss.y.name: "label"}
    if loss.x is not None:
        out[loss.x.name] = "sample"
    if loss.data is not None:
        out[loss.data.name] = "sample"
    return out


def _is_node(L, roles) -> bool:
    return L[0] == "s" and L[1] in roles


def _node_plan(sum_: dict, roles, params) -> Plan:
    terms = []
    for ch, k in sum_.items():
        nodes = [j for j, L in enumerate(ch) if L[0] == "g" or _is_node(L, roles)]
        if any(ch[j][0] == "g" for j in nodes):
            raise StructureError("unstripped sg atom in a force")
        if not nodes:
            terms.append((_coef(k, params), "const", (ch,)))
        elif nodes == [len(ch) - 1] and not ch[-1][2]:
            terms.append((_coef(k, params), "lin", (ch[:-1], ch[-1])))
        else:
            raise StructureError(f"node force term {ch} is not affine in one node vector")
    return Plan("node", tuple(terms))


def _shared_plan(sum_: dict, roles, params) -> Plan:
    terms = []
    for ch, k in sum_.items():
        nodes = [j for j, L in enumerate(ch) if _is_node(L, roles)]
        c = _coef(k, params)
        if not nodes:
            terms.append((c, "m0", (ch,)))
        elif len(nodes) == 1:
            j = nodes[0]
            L = ch[j]
            if not L[2]:
                if j != len(ch) - 1:
                    raise StructureError(f"shared force term {ch}: column node vector not last")
                terms.append((c, "m1r", (ch[:j], L)))
            else:
                if j != 0:
                    raise StructureError(f"shared force term {ch}: row node vector not first")
                terms.append((c, "m1l", (L, ch[1:])))
        elif len(nodes) == 2 and nodes[1] == nodes[0] + 1 and not ch[nodes[0]][2] and ch[nodes[1]][2]:
            j = nodes[0]
            terms.append((c, "m2", (ch[:j], ch[j], ch[j + 1], ch[j + 2:])))
        else:
            raise StructureError(f"shared force term {ch} is not A·M·B over the edge moments")
    return Plan("shared", tuple(terms))


def _loss_plan(traces: dict, roles, params) -> Plan:
    terms = []
    for ch, k in traces.items():
        c = _coef(k, params)
        nodes = [j for j, L in enumerate(ch) if _is_node(L, roles)]
        if any(L[0] == "g" for L in ch):
            raise StructureError("unstripped sg atom in the loss")
        if not nodes:
            terms.append((c, "t0", (ch,)))
            continue
        found = None
        for base in (ch, mc.t_chain(ch)):
            for r in range(len(base)):
                rot = base[r:] + base[:r]
                nd = [j for j, L in enumerate(rot) if _is_node(L, roles)]
                if len(nd) == 1 and nd[0] == len(rot) - 1 and not rot[-1][2]:
                    found = (c, "t1", (rot[:-1], rot[-1]))  # tr(A n) = A·M1
                elif (len(nd) == 2 and nd == [0, len(rot) - 1] and rot[0][2] and not rot[-1][2]):
                    found = (c, "t2", (rot[0], rot[1:-1], rot[-1]))  # n_pᵀ B n_q
                if found:
                    break
            if found:
                break
        if found is None:
            raise StructureError(f"loss term tr({ch}) is not quadratic in the node vectors")
        terms.append(found)
    return Plan("loss", tuple(terms))


@dataclass(frozen=True, eq=False)
class MatrixCompiledFlow:
    """The classified kernels of a :class:`MatrixFlow` (independent of d, N and the graph)."""

    flow: MatrixFlow
    roles: dict
    params: tuple
    forces: dict   # block -> Plan
    jvps: dict     # block -> Plan
    loss_plan: Plan
    frozen_plan: Plan
    default_dims: tuple = ()  # sizes used when a system is built without ``dims``

    @property
    def loss(self):
        return self.flow.loss

    def at(self, **dims) -> "MatrixCompiledFlow":
        """The same kernels with default sizes (e.g. ``at(d=8)``), for callers that pass no dims."""
        return _at(self, tuple(sorted(dims.items())))

    @property
    def learned(self) -> tuple:
        return self.flow.learned


def compile_matrix_flow(flow: MatrixFlow) -> MatrixCompiledFlow:
    """Classify every chain of the forces, JVPs and losses (raises :class:`StructureError`)."""
    roles = _node_role(flow)
    params = flow.loss.parameters
    forces, jvps = {}, {}
    for b in flow.learned:
        mk = _node_plan if b in (SAMPLE, LABEL) else _shared_plan
        forces[b] = mk(flow.forces[b], roles, params)
        jvps[b] = mk(flow.jvps[b], roles, params)
    return MatrixCompiledFlow(flow, roles, params, forces, jvps,
                              _loss_plan(flow.value, roles, params),
                              _loss_plan(flow.frozen_value, roles, params))


# --- evaluation --------------------------------------------------------------------------------
class Evaluator:
    """Evaluates plans on one state: node arrays in row form (N×n or K×n), shared matrices,
    the graph's P (sparse), degrees; moments and products are computed once per state and reused.

    Every graph sum is contracted on the side with fewer rows first (P (Y Aᵀ), not (P Y) Aᵀ;
    Xᵀ P Y = (Pᵀ X)ᵀ Y), so a flow costs about one N·d² product per node block plus one
    symmetric Xᵀ D X; the K-side products are O(K d²) (docs/model.md §2–§4)."""

    def __init__(self, graph, nodes: dict, shared: dict, roles: dict, params_values=()):
        self.g = graph
        self.nodes = nodes      # (name, variant) -> rows array
        self.shared = shared    # (name, variant) -> matrix
        self.roles = roles
        self.pv = tuple(params_values)
        self._m2, self._m1, self._nb, self._prod = {}, {}, {}, {}

    def coef(self, c):
        return c if isinstance(c, float) else c(self.pv)

    def letter(self, L):
        m = self.shared[(L[1], L[3])]
        return m.T if L[2] else m

    def prod(self, chain):
        """L₁…L_k of shared letters (None for the identity)."""
        if not chain:
            return None
        if chain not in self._prod:
            if len(chain) == 1:
                self._prod[chain] = self.letter(chain[0])
            else:
                self._prod[chain] = reduce(np.matmul, [self.letter(L) for L in chain])
        return self._prod[chain]

    def side(self, L):
        return self.roles[L[1]]

    def rows(self, L):
        return self.nodes[(L[1], L[3])]

    def _deg(self, side):
        return self.g.sample_degree if side == "sample" else self.g.label_degree

    def _spread(self, arr, target_side):
        """Σ over the edges of each target node of the rows ``arr`` of the other side: P·arr or Pᵀ·arr."""
        return (self.g.csr if target_side == "sample" else self.g.csr_T) @ arr

    def neighbour_sum(self, L, target_side):
        """Σ over the edges of each target node of the node vector L: D n (own side) or P·n."""
        key = (L[1], L[3], target_side)
        if key not in self._nb:
            arr = self.rows(L)
            if self.side(L) == target_side:
                self._nb[key] = arr * self._deg(target_side)[:, None]
            else:
                self._nb[key] = self._spread(arr, target_side)
        return self._nb[key]

    def apply(self, L, A, target_side):
        """Σ over the edges of each target node of A n_e (rows: (D or P)·(n Aᵀ)); the product
        with A is taken on whichever side has fewer rows."""
        out = np.zeros((self.g.N if target_side == "sample" else self.g.K,
                        self.rows(L).shape[1] if A is None or isinstance(A, float) else A.shape[0]))
        self.add_into(out, L, A, target_side, True)
        return out

    def add_into(self, out, L, A, target_side, first: bool) -> None:
        """out (+)= Σ over the edges of each target node of A n_e (``first``: out is overwritten),
        without N-row temporaries: own side in row blocks, the other side through the K side."""
        arr = self.rows(L)
        src = self.side(L)
        scalar = A is None or isinstance(A, float)
        c = 1.0 if A is None else A
        if src == target_side:
            deg = self._deg(target_side)
            if scalar:
                if first:
                    np.multiply(arr, (c * deg)[:, None], out=out)
                else:
                    for r in _row_blocks(arr):
                        out[r] += arr[r] * (c * deg[r])[:, None]
            elif first:
                np.matmul(arr, A.T, out=out)
                out *= deg[:, None]
            else:
                for r in _row_blocks(arr):
                    out[r] += (arr[r] @ A.T) * deg[r, None]
            return
        n_target = out.shape[0]
        if arr.shape[0] <= n_target:  # spread the (small) product A n onto the target side
            small = arr * c if scalar else arr @ A.T
            if first:
                out[...] = 0.0
            _spmm_add(self.g.csr if target_side == "sample" else self.g.csr_T, small, out)
        else:  # sum onto the (small) target side first
            nb = self.neighbour_sum(L, target_side)
            val = nb * c if scalar else nb @ A.T
            if first:
                out[...] = val
            else:
                out += val

    def m1(self, L):
        """Σ_e p_e n_e as a column."""
        key = (L[1], L[3])
        if key not in self._m1:
            self._m1[key] = (self.rows(L).T @ self._deg(self.side(L)))[:, None]
        return self._m1[key]

    def m2(self, Lp, Lq):
        """Σ_e p_e n_p n_qᵀ (X_pᵀ D X_q on one side — symmetric rank-k update when p = q —, and
        Xᵀ P Y = (Pᵀ X)ᵀ Y across, contracted through the smaller side)."""
        kp, kq = (Lp[1], Lp[3]), (Lq[1], Lq[3])
        if (kp, kq) in self._m2:
            return self._m2[(kp, kq)]
        if (kq, kp) in self._m2:
            return self._m2[(kq, kp)].T
        sp_, sq = self.side(Lp), self.side(Lq)
        Xp, Xq = self.rows(Lp), self.rows(Lq)
        if sp_ == sq:
            deg = self._deg(sp_)
            val = np.zeros((Xp.shape[1], Xq.shape[1]))
            if kp == kq:  # P ≥ 0: Xᵀ D X = Sᵀ S with S = D^{1/2} X (a symmetric rank-k update)
                root = np.sqrt(deg)
                for r in _row_blocks(Xp):
                    S = Xp[r] * root[r, None]
                    val += S.T @ S
            else:
                for r in _row_blocks(Xp):
                    val += (Xp[r] * deg[r, None]).T @ Xq[r]
        else:
            # Σ_e p_e n_p n_qᵀ = Xpᵀ (spread Xq onto p's side) = (spread Xp onto q's side)ᵀ Xq
            if Xp.shape[0] >= Xq.shape[0]:
                val = self._spread(Xp, sq).T @ Xq
            else:
                val = Xp.T @ self._spread(Xq, sp_)
        self._m2[(kp, kq)] = val
        return val

    def node_force(self, plan: Plan, side: str, shape: tuple, out: np.ndarray | None = None) -> np.ndarray:
        """Σ over the edges of each node (rows) of the plan's chains (written into ``out`` if given)."""
        out = np.empty(shape) if out is None else out
        first = True
        coef_by_letter = {}
        consts = []
        for c, form, data in plan.terms:
            c = self.coef(c)
            if form == "const":
                v = self.prod(data[0])
                consts.append(c * (np.ravel(v) if v is not None else np.ones(shape[1])))
                continue
            prefix, L = data
            A = self.prod(prefix)
            key = (L[1], L[3])
            prev = coef_by_letter.get(key)
            term = c * A if A is not None else c
            coef_by_letter[key] = (L, term) if prev is None else (L, _add(prev[1], term))
        # own-side matrix terms first: their product is written straight into ``out``
        order = sorted(coef_by_letter.values(), key=lambda t: (self.side(t[0]) != side, isinstance(t[1], float)))
        for L, A in order:
            if isinstance(A, float) and A == 0.0:
                continue
            self.add_into(out, L, A, side, first)
            first = False
        if consts:
            term = np.outer(self._deg(side), sum(consts))
            if first:
                out[...] = term
            else:
                out += term
            first = False
        if first:
            out[...] = 0.0
        return out

    def shared_force(self, plan: Plan, shape: tuple) -> np.ndarray:
        """Σ_e p_e F(e) = Σ terms c·A·M·B over the moments; terms with the same left factor A
        share one product A·(Σ c M B)."""
        out = np.zeros(shape)
        by_left = {}
        for c, form, data in plan.terms:
            c = self.coef(c)
            if form == "m0":
                v = self.prod(data[0])
                out += c * float(self.g.sample_degree.sum()) * (v if v is not None else np.eye(shape[0]))
            elif form == "m1r":
                A = self.prod(data[0])
                m = self.m1(data[1])
                out += c * (A @ m if A is not None else m)
            elif form == "m1l":
                B = self.prod(data[1])
                m = self.m1(data[0]).T
                out += c * (m @ B if B is not None else m)
            else:
                Lp, Lq, B = data[1], data[2], self.prod(data[3])
                M = self.m2(Lp, Lq)
                if B is not None:
                    M = M @ B
                prev = by_left.get(data[0])
                by_left[data[0]] = c * M if prev is None else prev + c * M
        for left, M in by_left.items():
            A = self.prod(left)
            out += M if A is None else A @ M
        return out

    def loss(self, plan: Plan) -> float:
        total = 0.0
        for c, form, data in plan.terms:
            c = self.coef(c)
            if form == "t0":
                v = self.prod(data[0])
                total += c * float(self.g.sample_degree.sum()) * (float(np.trace(v)) if v is not None else 1.0)
            elif form == "t1":
                A = self.prod(data[0])
                m = self.m1(data[1])
                total += c * float(np.trace(A @ m if A is not None else m))
            else:
                Lp, Bc, Lq = data
                B = self.prod(Bc)
                M = self.m2(("s", Lq[1], False, Lq[3]), ("s", Lp[1], False, Lp[3]))  # Σ n_q n_pᵀ
                total += c * float(np.vdot(B.T, M) if B is not None else np.trace(M))  # tr(B M)
        return total


#: rows per block of the row-blocked graph sums (about 2 MB of float64 per block)
_BLOCK_ENTRIES = 2 ** 18


def _row_blocks(arr):
    """Slices of about _BLOCK_ENTRIES entries over the rows of ``arr``."""
    n, m = arr.shape[0], max(arr.shape[1], 1)
    step = max(256, _BLOCK_ENTRIES // m)
    return [slice(r, min(r + step, n)) for r in range(0, n, step)]


def _spmm_add(csr, dense: np.ndarray, out: np.ndarray) -> None:
    """out += csr @ dense, accumulated in place (no N-row temporary)."""
    dense = np.ascontiguousarray(dense, dtype=float)
    if _csr_matvecs is not None and out.flags.c_contiguous and out.dtype == np.float64:
        n_row, n_col = csr.shape
        _csr_matvecs(n_row, n_col, dense.shape[1], csr.indptr, csr.indices, csr.data, dense.ravel(),
                     out.reshape(-1))
    else:  # pragma: no cover - a SciPy without the sparsetools entry point
        out += csr @ dense


try:  # SciPy's compiled y += A·X for CSR A (used by csr_matrix @ dense itself)
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover
    _csr_matvecs = None


@lru_cache(maxsize=None)
def _at(compiled: MatrixCompiledFlow, dims: tuple) -> MatrixCompiledFlow:
    return dataclasses.replace(compiled, default_dims=dims)


def _add(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a + b
    if isinstance(a, float):
        return b + a * np.eye(b.shape[0], b.shape[1])
    if isinstance(b, float):
        return a + b * np.eye(a.shape[0], a.shape[1])
    return a + b


@lru_cache(maxsize=None)
def compile_matrix_loss(loss, check: bool = True) -> MatrixCompiledFlow:
    """Derive (cross-checked at d = 1, 2, 3 unless ``check=False``; a passed check is recorded in
    the on-disk cache) and classify the kernels of a
    :class:`~symcollapse.symbolic.matrix_flow.MatrixEdgeLoss`; once per loss, for every d and N."""
    flow = derive_matrix_flow(loss, check=False)
    if check and not cache.matrix_check_passed(loss):
        cache.store_matrix_check(loss, cross_check(flow))
    return compile_matrix_flow(flow)
