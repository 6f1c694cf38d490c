r"""Straight-line NumPy programs for the plans of a matrix flow on one concrete system.

:class:`~.matrix_kernels.Evaluator` re-walks a plan's chains on every call (merging the
coefficients per node letter, ordering the terms, choosing the branch of each graph sum). All of
that depends only on the plan, the sizes, the graph and the loss parameters, so
:func:`build_program` does it once per system and emits a straight-line Python function of the
state vector (as ``lambdify`` does for a scalar expression): the same matrix products in the same
order (docs/model.md §2–§4), with common products, moments and graph sums computed once, the
coefficients folded into constants, and a dense P (no sparse dispatch) when the graph is small.
The program and the Evaluator give the same numbers up to round-off (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..symbolic.loss import LABEL, SAMPLE
from . import matrix_kernels as _mk
from .matrix_kernels import Plan, _csr_matvecs, _spmm_add

#: graphs with at most this many entries N·K would use a dense P (one BLAS product per graph sum).
#: Off (0) by default: BLAS fuses multiply-adds, so P·Y of a state symmetric under a label swap
#: (y₁ = −y₂ on a sample coupled equally to both) is no longer exactly 0 and an unstable mode
#: grows from round-off; the CSR sums (SciPy's compiled y += P·X, called without the sparse-matrix
#: dispatch) are those of the Evaluator, bit for bit.
DENSE_GRAPH_ENTRIES = 0


@dataclass(frozen=True, eq=False)
class Program:
    """A generated kernel ``fn(v, out)`` (flow) or ``fn(v, dv, out)`` (JVP) and its source."""

    fn: object
    source: str

    def __call__(self, *args):
        return self.fn(*args)


def _blocks(shape) -> list:
    """The row slices of Evaluator's row-blocked sums (matrix_kernels._row_blocks) for ``shape``."""
    n, m = shape[0], max(shape[1], 1)
    step = max(256, _mk._BLOCK_ENTRIES // m)
    return [slice(r, min(r + step, n)) for r in range(0, n, step)]


def _spread_rows(M, arr: np.ndarray) -> np.ndarray:
    """M·arr for a sparse M and the rows of one node array (n×k) or of a stack of B (B×n×k)."""
    if arr.ndim == 2:
        return _csr_times(M, arr)
    B, n, k = arr.shape
    out = _csr_times(M, np.ascontiguousarray(arr.transpose(1, 0, 2)).reshape(n, B * k))
    return out.reshape(-1, B, k).transpose(1, 0, 2)


def _csr_times(M, X: np.ndarray) -> np.ndarray:
    """M·X (what ``M @ X`` computes, without scipy.sparse's dispatch)."""
    out = np.zeros((M.shape[0], X.shape[1]))
    _spmm_add(M, X, out)
    return out


def _term_letters(form, data) -> tuple:
    """Every letter of a plan term."""
    if form in ("const", "m0", "t0"):
        return tuple(data[0])
    if form in ("lin", "m1r"):
        return tuple(data[0]) + (data[1],)
    if form == "m1l":
        return (data[0],) + tuple(data[1])
    return tuple(data[0]) + (data[1], data[2]) + tuple(data[3])


def _scaled(c: float, name: str) -> str:
    """c·name as source, without the multiplications by ±1 (exact either way)."""
    if c == 1.0:
        return name
    if c == -1.0:
        return f"(-{name})"
    return f"{c!r} * {name}"


def _sum(pieces: list) -> str:
    """Σ of (c, name) pieces as source: a + b − c … (±1 coefficients folded into the signs)."""
    out = ""
    for c, name in pieces:
        if not out:
            out = _scaled(c, name)
        elif c == -1.0:
            out += f" - {name}"
        elif c == 1.0:
            out += f" + {name}"
        else:
            out += f" + {c!r} * {name}"
    return out


class _Gen:
    """Emits the lines of one program; every temporary is keyed so that it is computed once."""

    def __init__(self, system, tangent: bool, batched: bool = False, zero=frozenset()):
        self.batched = batched
        #: transposes the last two axes (of a matrix, or of a stack of B matrices)
        self.tsfx = ".swapaxes(-1, -2)" if batched else ".T"
        #: (name, variant) of tangent letters known to vanish: their terms are skipped (exact)
        self.zero = frozenset(zero)
        self.s = system
        g = system.graph
        self.g = g
        self.tangent = tangent
        self.lines: list[str] = []
        self.env: dict = {"np": np, "_spmm_add": _spmm_add, "_spread_rows": _spread_rows,
                          "_mv": _csr_matvecs, "_c": np.ascontiguousarray}
        self.memo: dict = {}
        self.n = 0
        self.pv = system._param_values
        self.roles = system.compiled.roles
        self.block_of = {m: b for b, m in system._names.items()}
        self.dense = g.N * g.K <= DENSE_GRAPH_ENTRIES
        self.deg = {"sample": np.asarray(g.sample_degree, dtype=float),
                    "label": np.asarray(g.label_degree, dtype=float)}
        self.nrows = {"sample": g.N, "label": g.K}

    # --- names --------------------------------------------------------------------------------
    def const(self, value, hint: str = "c") -> str:
        name = f"_{hint}{len(self.env)}"
        self.env[name] = value
        return name

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def tmp(self, expr: str, key=None) -> str:
        if key is not None and key in self.memo:
            return self.memo[key]
        name = f"t{self.n}"
        self.n += 1
        self.emit(f"{name} = {expr}")
        if key is not None:
            self.memo[key] = name
        return name

    def pure(self, expr: str) -> str:
        """A temporary for a side-effect-free expression (the same expression is computed once)."""
        t = self.tsfx
        if expr.isidentifier() or (expr.endswith(t) and expr[:-len(t)].isidentifier()):
            return expr  # a name or its transpose (a view) needs no temporary
        return self.tmp(expr, key=("expr", expr))

    def T(self, name: str) -> str:
        """The transpose of a generated name (the transpose of a transpose is the name)."""
        t = self.tsfx
        return name[:-len(t)] if name.endswith(t) else f"{name}{t}"

    def mm(self, a: str, b: str) -> str:
        """a·b as source: ndarray.dot for matrices (less dispatch than @), matmul for stacks."""
        return f"np.matmul({a}, {b})" if self.batched else f"{a}.dot({b})"

    def mm_out(self, a: str, b: str, out: str) -> str:
        return f"np.{'matmul' if self.batched else 'dot'}({a}, {b}, out={out})"

    def r(self, name: str) -> str:
        """Rows _r of a node array (or of a constant column)."""
        return f"{name}[..., _r, :]" if self.batched else f"{name}[_r]"

    def vanishes(self, form, data) -> bool:
        return bool(self.zero) and any((L[1], L[3]) in self.zero for L in _term_letters(form, data))

    def coef(self, c) -> float:
        return c if isinstance(c, float) else float(c(self.pv))

    def degc(self, side: str, factor: float = 1.0) -> str:
        """A constant column (factor·deg)[:, None]."""
        key = ("degc", side, factor)
        if key not in self.memo:
            self.memo[key] = self.const((factor * self.deg[side])[:, None], "deg")
        return self.memo[key]

    # --- inputs -------------------------------------------------------------------------------
    def _state_slice(self, src: str, b: str) -> str:
        o, shape = self.s.layout[b]
        n = int(np.prod(shape))
        if self.batched:
            return self.tmp(f"{src}[:, {o}:{o + n}].reshape({(-1,) + tuple(shape)})", key=("in", src, b))
        return self.tmp(f"{src}[{o}:{o + n}].reshape({tuple(shape)})", key=("in", src, b))

    def rows(self, L) -> str:
        """The row array of node letter L = ('s', name, transposed, variant)."""
        name, var = L[1], L[3]
        b = self.block_of[name]
        if b == "u":  # per-sample inputs: a constant of the system (variants '' and '0')
            return self.memo.setdefault(("data",), self.const(np.asarray(self.s.data, dtype=float), "U"))
        if var == "d":
            if not self.tangent or b not in self.s.layout:
                raise KeyError(L)
            return self._state_slice("dv", b)
        if var != "":
            raise KeyError(L)
        if b in self.s.layout:
            return self._state_slice("v", b)
        return self.memo.setdefault(("zero", b), self.const(np.zeros(self.s._shape(b)), "Z"))

    def shape_of(self, L) -> tuple:
        b = self.block_of[L[1]]
        if b == "u":
            return tuple(self.s.data.shape)
        return tuple(self.s._shape(b))

    def side(self, L) -> str:
        return self.roles[L[1]]

    def letter(self, L) -> str:
        """A shared matrix (transposed if L[2])."""
        name, var = L[1], L[3]
        b = self.block_of[name]
        if var == "d":
            if not self.tangent or b not in self.s.layout:
                raise KeyError(L)
            m = self._state_slice("dv", b)
        elif var != "":
            raise KeyError(L)
        elif b in self.s.layout:
            m = self._state_slice("v", b)
        else:
            m = self.memo.setdefault(("frozen", b), self.const(np.asarray(self.s.frozen[b], dtype=float), "F"))
        return self.T(m) if L[2] else m

    def letter_shape(self, L) -> tuple:
        sh = tuple(self.s._shape(self.block_of[L[1]]))
        return sh[::-1] if L[2] else sh

    def prod(self, chain) -> str | None:
        """L₁…L_k of shared letters (None: the identity), multiplied left to right."""
        if not chain:
            return None
        key = ("prod", chain)
        if key in self.memo:
            return self.memo[key]
        if len(chain) == 1:
            name = self.letter(chain[0])
        else:
            left = self.prod(chain[:-1])
            name = self.pure(self.mm(left, self.letter(chain[-1])))
        self.memo[key] = name
        return name

    def prod_shape(self, chain) -> tuple:
        return (self.letter_shape(chain[0])[0], self.letter_shape(chain[-1])[1])

    # --- graph sums ---------------------------------------------------------------------------
    def _graph(self, target_side: str):
        """P (target: samples) or Pᵀ (target: labels), dense or CSR."""
        key = ("graph", target_side, self.dense)
        if key not in self.memo:
            g = self.g
            if self.dense:
                M = np.ascontiguousarray(g.P if target_side == "sample" else g.P.T, dtype=float)
            else:
                M = g.csr if target_side == "sample" else g.csr_T
            self.memo[key] = self.const(M, "P")
        return self.memo[key]

    def spread(self, arr: str, ncols: int, target_side: str) -> str:
        """P·arr or Pᵀ·arr (Σ over the edges of each target node of the other side's rows)."""
        key = ("spread", arr, target_side)
        if key in self.memo:
            return self.memo[key]
        G = self._graph(target_side)
        if self.dense:
            name = self.pure(self.mm(G, arr))
        elif self.batched:
            name = self.pure(f"_spread_rows({G}, {arr})")
        else:
            name = self.tmp(f"np.zeros(({self.nrows[target_side]}, {ncols}))")
            self.emit(self._csr_add(target_side, G, arr, name, ncols))
        self.memo[key] = name
        return name

    def spread_into(self, small: str, target_side: str, out: str, first: bool, ncols: int) -> None:
        G = self._graph(target_side)
        if self.dense:
            self.emit(self.mm_out(G, small, out) if first else f"{out} += {self.mm(G, small)}")
        elif self.batched:
            self.emit(f"{out}{'[...] =' if first else ' +='} _spread_rows({G}, {small})")
        else:
            if first:
                self.emit(f"{out}[...] = 0.0")
            self.emit(self._csr_add(target_side, G, small, out, ncols))

    def _csr_add(self, target_side: str, G: str, arr: str, out: str, ncols) -> str:
        """out += G·arr for the CSR G (out C-contiguous): SciPy's compiled kernel called directly."""
        if _csr_matvecs is None or ncols is None:  # pragma: no cover - no sparsetools entry point
            return f"_spmm_add({G}, {arr}, {out})"
        key = ("csr", target_side)
        if key not in self.memo:
            M = self.env[G]
            self.memo[key] = (self.const(M.indptr, "ip"), self.const(M.indices, "ix"), self.const(M.data, "dx"), M.shape)
        ip, ix, dx, (nr, nc) = self.memo[key]
        return f"_mv({nr}, {nc}, {ncols}, {ip}, {ix}, {dx}, _c({arr}, dtype=float).ravel(), {out}.reshape(-1))"

    def neighbour_sum(self, L, target_side: str) -> str:
        """D n (own side) or P·n / Pᵀ·n (the other side), as Evaluator.neighbour_sum."""
        key = ("nb", L[1], L[3], target_side)
        if key in self.memo:
            return self.memo[key]
        arr = self.rows(L)
        if self.side(L) == target_side:
            name = self.pure(f"{arr} * {self.degc(target_side)}")
        else:
            name = self.spread(arr, self.shape_of(L)[1], target_side)
        self.memo[key] = name
        return name

    def m1(self, L) -> str:
        key = ("m1", L[1], L[3])
        if key not in self.memo:
            d = self.memo.setdefault(("deg", self.side(L)), self.const(self.deg[self.side(L)], "d"))
            self.memo[key] = self.tmp(f"{self.mm(self.T(self.rows(L)), d)}[..., None]")
        return self.memo[key]

    def m2(self, Lp, Lq) -> str:
        """Σ_e p_e n_p n_qᵀ, as Evaluator.m2 (its transpose reused)."""
        kp, kq = (Lp[1], Lp[3]), (Lq[1], Lq[3])
        if ("m2", kp, kq) in self.memo:
            return self.memo[("m2", kp, kq)]
        if ("m2", kq, kp) in self.memo:
            return self.T(self.memo[("m2", kq, kp)])
        sp_, sq = self.side(Lp), self.side(Lq)
        Xp, Xq = self.rows(Lp), self.rows(Lq)
        shp, shq = self.shape_of(Lp), self.shape_of(Lq)
        if sp_ == sq:
            blocks = _blocks(shp)
            root = self.memo.setdefault(("root", sp_), self.const(np.sqrt(self.deg[sp_])[:, None], "r"))
            degc = self.degc(sp_)
            if len(blocks) <= 1:
                if kp == kq:
                    S = self.pure(f"{Xp} * {root}")
                    val = self.pure(self.mm(self.T(S), S))
                else:
                    val = self.pure(self.mm(self.T(f"({Xp} * {degc})"), Xq))
            else:
                val = self.tmp("0.0")  # Σ over the row blocks (a batched sum gets its batch axis)
                self.emit(f"for _r in {self.const(blocks, 'rb')}:")
                if kp == kq:
                    self.emit(f"    _S = {self.r(Xp)} * {self.r(root)}")
                    part = self.mm(self.T("_S"), "_S")
                else:
                    part = self.mm(self.T(f"({self.r(Xp)} * {self.r(degc)})"), self.r(Xq))
                self.emit(f"    {val} = {val} + {part}")
        elif shp[0] >= shq[0]:
            val = self.pure(self.mm(self.T(self.spread(Xp, shp[1], sq)), Xq))
        else:
            val = self.pure(self.mm(self.T(Xp), self.spread(Xq, shq[1], sp_)))
        self.memo[("m2", kp, kq)] = val
        return val

    # --- forces -------------------------------------------------------------------------------
    def add_into(self, out: str, L, A, side: str, first: bool, out_rows: int, out_cols: int) -> None:
        """out (+)= Σ over the edges of each target node of A n_e (A: a float or a matrix name),
        with the branches of Evaluator.add_into decided here."""
        arr = self.rows(L)
        shape = self.shape_of(L)
        scalar = isinstance(A, float)
        if self.side(L) == side:
            blocks = _blocks(shape)
            if scalar:
                cd = self.degc(side, A)
                if first:
                    self.emit(f"np.multiply({arr}, {cd}, out={out})")
                elif len(blocks) <= 1:
                    self.emit(f"{out} += {arr} * {cd}")
                else:
                    self.emit(f"for _r in {self.const(blocks, 'rb')}:")
                    self.emit(f"    {self.r(out)} += {self.r(arr)} * {self.r(cd)}")
            else:
                dc = self.degc(side)
                if first:
                    self.emit(self.mm_out(arr, self.T(A), out))
                    self.emit(f"{out} *= {dc}")
                elif len(blocks) <= 1:
                    self.emit(f"{out} += {self.mm(arr, self.T(A))} * {dc}")
                else:
                    self.emit(f"for _r in {self.const(blocks, 'rb')}:")
                    self.emit(f"    {self.r(out)} += {self.mm(self.r(arr), self.T(A))} * {self.r(dc)}")
            return
        if shape[0] <= out_rows:  # spread the (small) product A n onto the target side
            small = self.pure(_scaled(A, arr) if scalar else self.mm(arr, self.T(A)))
            self.spread_into(small, side, out, first, out_cols)
        else:  # sum onto the (small) target side first
            nb = self.neighbour_sum(L, side)
            if scalar:
                val = _scaled(A, nb)
            else:
                if first:
                    self.emit(self.mm_out(nb, self.T(A), out))
                    return
                val = self.mm(nb, self.T(A))
            self.emit(f"{out}[...] = {val}" if first else f"{out} += {val}")

    def node_force(self, plan: Plan, side: str, shape: tuple, out: str) -> None:
        merged = {}   # letter key -> [L, scalar part, [(c, product name)]]
        consts = []
        for c, form, data in plan.terms:
            if self.vanishes(form, data):
                continue
            c = self.coef(c)
            if form == "const":
                consts.append((c, self.prod(data[0])))
                continue
            prefix, L = data
            A = self.prod(prefix)
            entry = merged.setdefault((L[1], L[3]), [L, None, []])
            if A is None:
                entry[1] = c if entry[1] is None else entry[1] + c
                entry[2].append((c, None))
            else:
                entry[2].append((c, A))
        terms = []
        for L, s, parts in merged.values():
            if all(A is None for _, A in parts):
                terms.append((L, float(s)))
                continue
            # c₁A₁ + c₂A₂ + … in the plan's order (a scalar part c·I added where it occurs)
            pieces = []
            for c, A in parts:
                if A is None:
                    sh = next(self._shape_of_name(A2) for _, A2 in parts if A2 is not None)
                    A = self.memo.setdefault(("eye", sh), self.const(np.eye(*sh), "I"))
                pieces.append((c, A))
            terms.append((L, self.pure(_sum(pieces))))
        # own-side matrix terms first (their product is written straight into the output)
        terms.sort(key=lambda t: (self.side(t[0]) != side, isinstance(t[1], float)))
        first = True
        for L, A in terms:
            if isinstance(A, float) and A == 0.0:
                continue
            self.add_into(out, L, A, side, first, shape[0], shape[1])
            first = False
        if consts:
            pieces = [(c, self.pure(f"{v}[..., 0]" if self._shape_of_name(v)[1] == 1 else f"{v}[..., 0, :]")
                       if v is not None else self.const(np.ones(shape[1]), "one")) for c, v in consts]
            total = self.pure(_sum(pieces))
            term = f"{self.degc(side)} * {total}[..., None, :]"  # deg ⊗ (Σ c v)
            self.emit(f"{out}[...] = {term}" if first else f"{out} += {term}")
            first = False
        if first:
            self.emit(f"{out}[...] = 0.0")

    def _shape_of_name(self, name: str) -> tuple:
        for key, val in self.memo.items():
            if val == name and key[0] == "prod":
                return self.prod_shape(key[1])
        raise KeyError(name)

    def shared_force(self, plan: Plan, shape: tuple) -> str:
        """Σ terms c·A·M·B over the edge moments (terms with the same left factor share A·(Σ c M B))."""
        pieces = []
        by_left = {}
        for c, form, data in plan.terms:
            if self.vanishes(form, data):
                continue
            c = self.coef(c)
            if form == "m0":
                v = self.prod(data[0])
                m0 = c * float(self.g.sample_degree.sum())
                pieces.append((m0, v if v is not None else self.const(np.eye(shape[0]), "I")))
            elif form == "m1r":
                A, m = self.prod(data[0]), self.m1(data[1])
                pieces.append((c, self.pure(self.mm(A, m)) if A is not None else m))
            elif form == "m1l":
                B, m = self.prod(data[1]), self.m1(data[0])
                pieces.append((c, self.pure(self.mm(self.T(m), B)) if B is not None else self.T(m)))
            else:
                M = self.m2(data[1], data[2])
                B = self.prod(data[3])
                if B is not None:
                    M = self.pure(self.mm(M, B))
                by_left.setdefault(data[0], []).append((c, M))
        for left, parts in by_left.items():
            Msum = self.pure(_sum(parts))
            A = self.prod(left)
            pieces.append((1.0, Msum if A is None else self.pure(self.mm(A, Msum))))
        if not pieces:
            return self.const(np.zeros(shape), "Z")
        return _sum(pieces)


def build_program(system, plans: dict, tangent: bool = False, *, batched: bool = False,
                  zero=frozenset(), only=None, scaled: bool = True) -> Program:
    """The generated kernel of ``plans`` ({block: Plan}, the forces or the JVPs) on ``system``:
    ``fn(v, out)`` (or ``fn(v, dv, out)`` with ``tangent``) writes θ̇ (or J·dv) into ``out``,
    every block times its row factor s·η_b (docs/model.md §3.5 for reduced systems).

    ``batched``: v, dv and out are B×size stacks of rows (one state per row). ``zero``: learned
    blocks whose tangent vanishes in every row (their terms are skipped: exact); ``only``: the
    blocks of the result wanted (the others are written as zeros, not evaluated); ``scaled=False``:
    the assembled forces Σ_e p_e F_b(e) without the row factors."""
    names = system._names
    gen = _Gen(system, tangent, batched, frozenset((names[b], "d") for b in zero))
    for b in system.compiled.learned:
        o, shape = system.layout[b]
        shape = tuple(shape)
        n = int(np.prod(shape))
        dst = f"out[:, {o}:{o + n}]" if batched else f"out[{o}:{o + n}]"
        if only is not None and b not in only:
            gen.emit(f"{dst} = 0.0")
            continue
        f = system.row_factor(b) if scaled else 1.0
        fac = repr(float(f)) if np.isscalar(f) else gen.const(np.asarray(f, dtype=float), "f")
        if b in (SAMPLE, LABEL):
            ob = f"o_{b}"
            gen.emit(f"{ob} = np.empty((out.shape[0],) + {shape})" if batched else f"{ob} = {dst}.reshape({shape})")
            gen.node_force(plans[b], "sample" if b == SAMPLE else "label", shape, ob)
            if fac != "1.0":
                gen.emit(f"{ob} *= {fac}")
            if batched:
                gen.emit(f"{dst} = {ob}.reshape(-1, {n})")
        else:
            res = gen.shared_force(plans[b], shape)
            res = res if fac == "1.0" else f"({res}) * {fac}"
            gen.emit(f"{dst} = np.reshape({res}, (-1, {n}))" if batched else f"{dst}.reshape({shape})[...] = {res}")
    args = "v, dv, out" if tangent else "v, out"
    body = "\n".join("    " + line for line in gen.lines) or "    pass"
    source = f"def _kernel({args}):\n{body}\n    return out\n"
    env = dict(gen.env)
    exec(compile(source, f"<matrix program {system.compiled.loss.name}>", "exec"), env)  # noqa: S102
    return Program(env["_kernel"], source)


def _kron_t(c: float, left: np.ndarray, right: np.ndarray, transposed: bool, rows: int, tr: int, tc: int):
    """∂ vec_row(c·Left X Right)/∂ vec_row(X) = c·Left ⊗ Rightᵀ (of Xᵀ's entries if ``transposed``)."""
    rt = right.T
    K = (left[:, None, :, None] * rt[None, :, None, :]).reshape(left.shape[0] * rt.shape[0], -1)
    if transposed:
        K = K.reshape(rows, tr, tc).transpose(0, 2, 1).reshape(rows, -1)
    return c * K


@dataclass(frozen=True, eq=False)
class JacobianProgram:
    """A generated ``fn(v) -> tuple`` of the Jacobian's parts, in the order of ``keys``
    ((row block, column block, kind): kind 'dense' for a block, 'deg' / 'P' for the factor A
    of deg ⊗ A / P ⊗ A), and its source."""

    fn: object
    keys: tuple
    source: str

    def parts(self, v: np.ndarray) -> dict:
        """{(row block, column block): {kind: array}} as MatrixFlowSystem._jac_parts returns it."""
        out = {}
        for (b, tb, kind), val in zip(self.keys, self.fn(v)):
            out.setdefault((b, tb), {})[kind] = val
        return out


def build_jacobian_program(system) -> JacobianProgram:
    """The parts of the assembled Jacobian (MatrixFlowSystem._jacobian_parts' derivation from the
    derived δF chains, docs/model.md §2–§4) as one generated straight-line function of the state."""
    gen = _Gen(system, tangent=False)
    g = system.graph
    tb_of = gen.block_of
    slots: dict = {}

    eyes = set()

    def eye(r, c):
        name = gen.memo.setdefault(("eye", (r, c)), gen.const(np.eye(r, c), "I"))
        if r == c:
            eyes.add(name)
        return name

    def mm(a, b):  # a·b, a product with a square identity skipped (exact)
        return b if a in eyes else a if b in eyes else gen.pure(gen.mm(a, b))

    def add(b, tb, kind, expr):
        slots.setdefault((b, tb, kind), []).append(("expr", expr))

    def add_outer(b, tb, spec, c, x, y, rows):
        """c·outer(spec, x, y) reshaped to ``rows`` rows (summed with its block's other terms)."""
        slots.setdefault((b, tb, "dense"), []).append(("outer", spec, c, x, y, rows))

    def deg_of(side):
        return gen.memo.setdefault(("deg", side), gen.const(gen.deg[side], "d"))

    for b in system.compiled.learned:
        f = system.scale * system.rates[b]
        out_shape = tuple(system._shape(b))
        for c0, form, data in system.compiled.jvps[b].terms:
            c = gen.coef(c0) * f
            if b in (SAMPLE, LABEL):
                side = "sample" if b == SAMPLE else "label"
                nrow, dout = out_shape
                if form == "lin" and data[1][3] == "d":
                    prefix, L = data
                    A = gen.prod(prefix)
                    dn = system._shape(tb_of[L[1]])[1]
                    A = eye(dout, dn) if A is None else A
                    add(b, tb_of[L[1]], "deg" if gen.side(L) == side else "P", _scaled(c, A))
                    continue
                chain = data[0]
                j = next(k for k, Lt in enumerate(chain) if Lt[0] == "s" and Lt[3] == "d")
                Lt = chain[j]
                Left, Right = gen.prod(chain[:j]), gen.prod(chain[j + 1:])
                wshape = system._shape(tb_of[Lt[1]])
                lrows = wshape[1] if Lt[2] else wshape[0]
                Left = eye(dout, lrows) if Left is None else Left
                if form == "lin":
                    nb = gen.neighbour_sum(data[1], side)
                    r = nb if Right is None else gen.pure(gen.mm(nb, gen.T(Right)))
                else:
                    one = gen.memo.setdefault(("ones1",), gen.const(np.ones(1), "one"))
                    r = gen.pure(f"np.outer({deg_of(side)}, {one if Right is None else Right + '.ravel()'})")
                spec = "ak,il->ialk" if Lt[2] else "ak,il->iakl"
                add_outer(b, tb_of[Lt[1]], spec, c, Left, r, nrow * dout)
                continue
            R, C = out_shape
            Lt = _tangent_letter(data)
            tb = tb_of[Lt[1]]
            if tb in (SAMPLE, LABEL):  # a tangent node vector inside a moment
                tside = gen.side(Lt)
                dg = deg_of(tside)
                dn = system._shape(tb)[1]
                if form == "m1r":
                    A = gen.prod(data[0])
                    A = eye(R, dn) if A is None else A
                    term = ("ak,j->ajk", c, A, dg)
                elif form == "m1l":
                    B = gen.prod(data[1])
                    B = eye(dn, C) if B is None else B
                    term = ("kb,j->bjk", c, B, dg)
                else:
                    A, Lp, Lq, B = gen.prod(data[0]), data[1], data[2], gen.prod(data[3])
                    if Lq[3] == "d":
                        G = gen.neighbour_sum(("s", Lp[1], False, Lp[3]), tside)
                        AG = G if A is None else gen.pure(gen.mm(G, gen.T(A)))
                        B = eye(dn, C) if B is None else B
                        term = ("ja,kb->abjk", c, AG, B)
                    else:
                        H = gen.neighbour_sum(("s", Lq[1], False, Lq[3]), tside)
                        HB = H if B is None else gen.pure(gen.mm(H, B))
                        A = eye(R, dn) if A is None else A
                        term = ("ak,jb->abjk", c, A, HB)
                add_outer(b, tb, *term, R * C)
                continue
            # a tangent shared letter: Left · δW^(T) · Right with the moment folded in
            if form == "m0":
                chain, mid = data[0], repr(float(g.sample_degree.sum()))
            elif form == "m1r":
                chain, mid = data[0], gen.m1(data[1])
            elif form == "m1l":
                chain, mid = data[1], gen.T(gen.m1(data[0]))
            else:
                chain = data[0] if Lt in data[0] else data[3]
            j = chain.index(Lt)
            wshape = system._shape(tb)
            tr, tc = (wshape[1], wshape[0]) if Lt[2] else tuple(wshape)
            Left, Right = gen.prod(chain[:j]), gen.prod(chain[j + 1:])
            Left = eye(tr, tr) if Left is None else Left
            Right = eye(tc, tc) if Right is None else Right
            if form == "m0":
                Right = gen.pure(f"{mid} * {Right}")
            elif form == "m1r":
                Right = mm(Right, mid)
            elif form == "m1l":
                Left = mm(mid, Left)
            else:
                Mm = gen.m2(data[1], data[2])
                if Lt in data[0]:
                    B = gen.prod(data[3])
                    Right = mm(Right, Mm)
                    if B is not None:
                        Right = mm(Right, B)
                else:  # Mm·Left or (A·Mm)·Left (the Evaluator's association)
                    A = gen.prod(data[0])
                    Left = mm(Mm if A is None else mm(A, Mm), Left)
            add(b, tb, "dense", f"_kron_t({c!r}, {Left}, {Right}, {bool(Lt[2])}, {R * C}, {tr}, {tc})")
    keys = tuple(slots)
    names = []
    for k in keys:
        terms = [gen.pure(_term_source(t)) for t in slots[k]]
        # dense blocks summed in the chains' order; the factors of Σ_k pat ⊗ A_k as a tuple
        names.append(gen.pure(_sum([(1.0, t) for t in terms])) if k[2] == "dense" else f"({', '.join(terms)},)")
    gen.env.update(_outer=outer, _kron_t=_kron_t)
    body = "\n".join("    " + line for line in gen.lines)
    source = f"def _parts(v):\n{body}\n    return ({', '.join(names)},)\n"
    env = dict(gen.env)
    exec(compile(source, f"<matrix Jacobian {system.compiled.loss.name}>", "exec"), env)  # noqa: S102
    return JacobianProgram(env["_parts"], keys, source)


def _term_source(t: tuple) -> str:
    """The source of one Jacobian term: an expression, or c·outer(spec, x, y) reshaped to rows."""
    if t[0] == "expr":
        return t[1]
    _, spec, c, x, y, rows = t
    return f"_outer({spec!r}, {c!r}, {x}, {y}).reshape({rows}, -1)"


def _tangent_letter(data) -> tuple:
    """The tangent letter ('s', name, transposed, 'd') of a shared-block δF chain's data."""
    return next(L for part in data for L in (part if isinstance(part, tuple) and part and
                                             isinstance(part[0], tuple) else (part,))
                if isinstance(L, tuple) and len(L) == 4 and L[0] == "s" and L[3] == "d")


def outer(spec: str, c: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c·einsum(spec, a, b) for a spec without summed indices, written into a C-ordered array (so
    the reshape that follows does not copy); the same products (a·b)·c as ``c * np.einsum(...)``."""
    (ia, oa), (ib, ob), shape = _outer_plan(spec, a.shape, b.shape)
    out = np.multiply(a.transpose(ia)[oa], b.transpose(ib)[ob], out=np.empty(shape))
    if c != 1.0:
        out *= c
    return out


@lru_cache(maxsize=None)
def _outer_plan(spec: str, sa: tuple, sb: tuple) -> tuple:
    """For each factor of ``spec``: the axis order and index that broadcast it to the output axes."""
    ins, out = spec.split("->")
    ia, ib = ins.split(",")
    size = dict(zip(ia, sa)) | dict(zip(ib, sb))

    def view(letters):
        order = tuple(sorted(range(len(letters)), key=lambda i: out.index(letters[i])))
        return order, tuple(slice(None) if k in letters else None for k in out)
    return view(ia), view(ib), tuple(size[k] for k in out)


__all__ = ["Program", "JacobianProgram", "build_program", "build_jacobian_program", "outer", "DENSE_GRAPH_ENTRIES"]
