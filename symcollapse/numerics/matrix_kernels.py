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

from dataclasses import dataclass
from functools import lru_cache, reduce

import numpy as np
import sympy as sp

from ..errors import SymcollapseError
from ..symbolic import matcalc as mc
from ..symbolic.loss import LABEL, SAMPLE
from ..symbolic.matrix_flow import MatrixFlow


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
    the graph's P (sparse), degrees; moments are computed once per pair and reused."""

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
            self._prod[chain] = reduce(np.matmul, [self.letter(L) for L in chain])
        return self._prod[chain]

    def side(self, L):
        return self.roles[L[1]]

    def rows(self, L):
        return self.nodes[(L[1], L[3])]

    def neighbour_sum(self, L, target_side):
        """Σ over the edges of each target node of the node vector L: D n (own side) or P·n."""
        key = (L[1], L[3], target_side)
        if key not in self._nb:
            arr = self.rows(L)
            if self.side(L) == target_side:
                deg = self.g.sample_degree if target_side == "sample" else self.g.label_degree
                self._nb[key] = arr * deg[:, None]
            elif target_side == "sample":
                self._nb[key] = self.g.csr @ arr
            else:
                self._nb[key] = self.g.csr_T @ arr
        return self._nb[key]

    def m1(self, L):
        """Σ_e p_e n_e as a column."""
        key = (L[1], L[3])
        if key not in self._m1:
            deg = self.g.sample_degree if self.side(L) == "sample" else self.g.label_degree
            self._m1[key] = (self.rows(L).T @ deg)[:, None]
        return self._m1[key]

    def m2(self, Lp, Lq):
        """Σ_e p_e n_p n_qᵀ."""
        kp, kq = (Lp[1], Lp[3]), (Lq[1], Lq[3])
        if (kp, kq) in self._m2:
            return self._m2[(kp, kq)]
        if (kq, kp) in self._m2:
            return self._m2[(kq, kp)].T
        sp_, sq = self.side(Lp), self.side(Lq)
        if sp_ == sq:
            val = self.rows(Lp).T @ self.neighbour_sum(Lq, sp_)
        elif sp_ == "sample":
            val = self.rows(Lp).T @ self.neighbour_sum(Lq, "sample")
        else:
            val = self.rows(Lp).T @ self.neighbour_sum(Lq, "label")
        self._m2[(kp, kq)] = val
        return val

    def node_force(self, plan: Plan, side: str, shape: tuple) -> np.ndarray:
        """Σ over the edges of each node (rows) of the plan's chains."""
        out = np.zeros(shape)
        coef_by_letter = {}
        for c, form, data in plan.terms:
            c = self.coef(c)
            if form == "const":
                v = self.prod(data[0])
                deg = self.g.sample_degree if side == "sample" else self.g.label_degree
                out += c * np.outer(deg, np.ravel(v) if v is not None else np.ones(shape[1]))
                continue
            prefix, L = data
            A = self.prod(prefix)
            key = (L[1], L[3])
            prev = coef_by_letter.get(key)
            term = c * A if A is not None else c
            if prev is None:
                coef_by_letter[key] = (L, term)
            else:
                coef_by_letter[key] = (L, _add(prev[1], term))
        for key, (L, A) in coef_by_letter.items():
            nb = self.neighbour_sum(L, side)
            if isinstance(A, float):
                if A != 0.0:
                    out += A * nb
            else:
                out += nb @ A.T
        return out

    def shared_force(self, plan: Plan, shape: tuple) -> np.ndarray:
        out = np.zeros(shape)
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
                A, Lp, Lq, B = self.prod(data[0]), data[1], data[2], self.prod(data[3])
                M = self.m2(Lp, Lq)
                if A is not None:
                    M = A @ M
                if B is not None:
                    M = M @ B
                out += c * M
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
                total += c * float(np.trace(B @ M) if B is not None else np.trace(M))
        return total


@lru_cache(maxsize=None)
def _at(compiled: MatrixCompiledFlow, dims: tuple) -> MatrixCompiledFlow:
    from dataclasses import replace

    return replace(compiled, default_dims=dims)


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
    from .. import cache
    from ..symbolic.matrix_flow import cross_check, derive_matrix_flow

    flow = derive_matrix_flow(loss, check=False)
    if check and not cache.matrix_check_passed(loss):
        cache.store_matrix_check(loss, cross_check(flow))
    return compile_matrix_flow(flow)
