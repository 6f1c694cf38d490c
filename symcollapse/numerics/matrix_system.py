r"""A matrix-level flow on a concrete graph: θ̇_b = s·η_b Σ_e p_e F_b(e), its JVP and its loss.

Same state layout and interface as :class:`~symcollapse.numerics.system.FlowSystem` (X (N×d),
Y (K×d), then the shared blocks, row-major), evaluated by the matrix-product kernels of
:mod:`symcollapse.numerics.matrix_kernels`: building it costs the same for every d and N. The
flow, the JVP and the Jacobian's parts run as straight-line code generated once per system from
those plans (:mod:`.matrix_program`; the plan-walking Evaluator stays as ``*_generic``). The
Jacobian is available matrix-free as a ``scipy.sparse.linalg.LinearOperator`` from the derived
Jacobian-vector product, assembled (CSR, a structure fixed per system: :mod:`.matrix_jacobian`)
from the derived δF chains, or dense for small systems.
"""
from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np
import scipy.sparse as sps
import sympy as sp
from scipy.sparse.linalg import LinearOperator, eigs

from ..errors import DerivationCheckError, InvalidParameterError
from ..symbolic import matcalc as mc
from ..symbolic.loss import LABEL, SAMPLE
from ..tolerance import within
from ..validation import check_array, check_int, check_real
from .blocks import BlockState, check_frozen_names, checked_params, checked_rates
from .graph import CouplingGraph
from .compile import compile_loss
from .finite_differences import central_gradient, central_jacobian
from .matrix_kernels import Evaluator, MatrixCompiledFlow
from .matrix_jacobian import JacobianAssembler, UnsupportedStructure
from .matrix_program import build_jacobian_program, build_program, outer as _outer
from .system import FlowSystem
from .slow_spectrum import rightmost_nonzero
from .zero_modes import head_tangent, is_sg_head

#: the largest d at which :meth:`MatrixFlowSystem.jacobian` assembles the sparse Jacobian (from
#: the component derivation, whose cost grows with d); above it use ``linear_operator``
SPARSE_JACOBIAN_MAX_D = 24

#: the most entries n² :meth:`MatrixFlowSystem.jacobian_dense` assembles (n = 2000 unknowns)
DENSE_JACOBIAN_MAX_ENTRIES = 4 * 10**6


class MatrixFlowSystem(BlockState):
    """Assembled dynamics of a matrix-level compiled flow on the graph of ``P`` at sizes ``dims``."""

    def __init__(self, compiled: MatrixCompiledFlow, P, *, rates: dict, dims: dict | None = None,
                 params: dict | None = None, data=None, frozen: dict | None = None,
                 scale: float = 1.0, check: bool = True, multiplicity=None):
        self.compiled = compiled
        loss = compiled.loss
        self.graph = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
        #: m_i: sample i stands for m_i samples of equal coupling row (its row of P already carries
        #: the factor m_i; its flow row is divided by m_i), docs/model.md §3.5. None: every m_i = 1.
        self.multiplicity = None
        if multiplicity is not None:
            m = check_array("multiplicity", multiplicity, ndim=1, shape=(self.graph.N,))
            if not np.all(m > 0):
                raise InvalidParameterError("multiplicity must hold N numbers > 0 (finite)")
            self.multiplicity = m
        self.rates = checked_rates(loss, compiled.learned, rates)
        self.params = checked_params(loss, params)
        self.scale = check_real("scale", scale, 0.0, None, strict_min=True)
        dims = {str(k): v for k, v in (dims or dict(compiled.default_dims)).items()}
        if loss.data is not None:
            if data is None:
                raise InvalidParameterError("data must be an (N, D) array of per-sample inputs")
            data = check_array("data", data, ndim=2, shape=(self.graph.N, None))
            for s in sp_free(loss.data.shape[0]):
                dims.setdefault(s, data.shape[1])
        self.dims = {s.name: check_int(s.name, dims.get(s.name), 1) if s.name in dims else None
                     for s in loss.dims}
        if any(v is None for v in self.dims.values()):
            raise InvalidParameterError(f"dims must give the sizes {[s.name for s in loss.dims]}; got {dims}")
        self.data = data if data is not None else np.zeros((self.graph.N, 0))
        if loss.data is not None:
            check_array("data", self.data, shape=(self.graph.N, loss.shape("u", self.dims)[0]))
        check_frozen_names(loss, compiled.learned, frozen)
        self.frozen = {}
        for b in loss.shared_names:
            if b not in compiled.learned:
                shape = loss.shape(b, self.dims)
                val = (frozen or {}).get(b)
                if val is None:
                    raise InvalidParameterError(f"frozen block {b!r} needs a value of shape {shape}")
                self.frozen[b] = check_array(b, val, shape=shape).reshape(shape)
        self.path = "matrix"
        if check:
            verify_matrix_flow(compiled, tuple(sorted(self.dims.items())))

    # --- layout ----------------------------------------------------------------------------
    @cached_property
    def _shapes(self) -> dict:
        """block -> array shape at these sizes (X: N×d_x, Y: K×d_y, shared: their matrix shape)."""
        loss = self.compiled.loss
        out = {}
        for b in loss.blocks:
            if b == SAMPLE and loss.x is None:
                out[b] = (self.graph.N, 0)
            elif b == SAMPLE:
                out[b] = (self.graph.N, loss.shape(SAMPLE, self.dims)[0])
            elif b == LABEL:
                out[b] = (self.graph.K, loss.shape(LABEL, self.dims)[0])
            else:
                out[b] = loss.shape(b, self.dims)
        return out

    def _shape(self, b):
        return self._shapes[b]

    @cached_property
    def _param_values(self) -> tuple:
        return tuple(self.params[p.name] for p in self.compiled.loss.parameters)

    @cached_property
    def layout(self) -> dict:
        out, off = {}, 0
        for b in self.compiled.learned:
            shape = self._shape(b)
            out[b] = (off, shape)
            off += int(np.prod(shape))
        return out

    # --- evaluation ------------------------------------------------------------------------
    @cached_property
    def _names(self) -> dict:
        """block (and 'u') -> MatrixSymbol name."""
        return {b: m.name for b, m in self.compiled.loss.symbols.items()}

    @cached_property
    def _shared_names(self) -> tuple:
        return self.compiled.loss.shared_names

    def _evaluator(self, st: dict, tangent: dict | None = None, st0: dict | None = None) -> Evaluator:
        loss = self.compiled.loss
        nm = self._names
        nodes, shared = {}, {}
        X = st.get(SAMPLE)
        if loss.x is not None:
            nodes[(nm[SAMPLE], "")] = X if X is not None else np.zeros(self._shape(SAMPLE))
        Y = st.get(LABEL)  # a label block that is not learned (and so absent from ℓ's flow) is zero
        nodes[(nm[LABEL], "")] = Y if Y is not None else np.zeros(self._shape(LABEL))
        if loss.data is not None:
            nodes[(nm["u"], "")] = nodes[(nm["u"], "0")] = self.data
        for b in self._shared_names:
            shared[(nm[b], "")] = np.asarray(st[b], dtype=float)
        if tangent is not None:
            for b in self.compiled.learned:
                key = (nm[b], "d")
                (nodes if b in (SAMPLE, LABEL) else shared)[key] = tangent[b]
        if st0 is not None:
            if loss.x is not None:
                nodes[(nm[SAMPLE], "0")] = st0.get(SAMPLE, nodes[(nm[SAMPLE], "")])
            nodes[(nm[LABEL], "0")] = st0.get(LABEL, nodes[(nm[LABEL], "")])
            for b in self._shared_names:
                shared[(nm[b], "0")] = np.asarray(st0[b], dtype=float)
        return Evaluator(self.graph, nodes, shared, self.compiled.roles, self._param_values)

    def _blocks_from(self, ev: Evaluator, plans: dict, out: dict | None = None, factor: bool = False) -> dict:
        """{block: Σ_e p_e (plan)} (times s·η_b with ``factor``), written into ``out[b]`` if given."""
        res = {}
        out = out or {}
        for b in self.compiled.learned:
            shape = self._shape(b)
            if b == SAMPLE:
                res[b] = ev.node_force(plans[b], "sample", shape, out=out.get(b))
            elif b == LABEL:
                res[b] = ev.node_force(plans[b], "label", shape, out=out.get(b))
            else:
                res[b] = ev.shared_force(plans[b], shape)
                if b in out:
                    out[b][...] = res[b]
                    res[b] = out[b]
            if factor:
                res[b] *= self.row_factor(b)
        return res

    def row_factor(self, b: str):
        """s·η_b, the factor of block b's assembled force in θ̇_b; for the samples of a reduced
        system the column (s·η_x / m_i)_i (docs/model.md §3.5)."""
        f = self.scale * self.rates[b]
        if b == SAMPLE and self.multiplicity is not None:
            return (f / self.multiplicity)[:, None]
        return f

    def forces(self, st: dict) -> dict:
        """{block: Σ_e p_e F_b(e)} (without rates and scale): by the generated kernel when ``st``
        holds the learned blocks and this system's own frozen blocks (else the Evaluator)."""
        if self._own_state(st):
            flat = self._force_program.fn(np.concatenate([np.asarray(st[b], dtype=float).ravel()
                                                          for b in self.layout]), np.empty(self._n))
            return {b: flat[sl].reshape(sh) for b, (sl, sh) in self._slices.items()}
        return self._blocks_from(self._evaluator(st), self.compiled.forces)

    def _own_state(self, st: dict) -> bool:
        """Whether st = the learned blocks (of their shapes) + this system's frozen blocks, nothing else."""
        for b, val in st.items():
            if b in self.frozen:
                if val is not self.frozen[b]:
                    return False
            elif b not in self.layout or np.shape(val) != self._shapes[b]:
                return False
        return len(st) == len(self.layout) + sum(b in st for b in self.frozen)

    @cached_property
    def _n(self) -> int:
        """The state size (``size``, computed once: the layout does not change)."""
        return self.size

    @cached_property
    def _slices(self) -> dict:
        return {b: (slice(o, o + int(np.prod(s))), tuple(s)) for b, (o, s) in self.layout.items()}

    @cached_property
    def _force_program(self):
        return build_program(self, self.compiled.forces, scaled=False)

    def flow_blocks(self, st: dict, out: dict | None = None) -> dict:
        """{block: θ̇_b} = s·η_b·(assembled force); ``out`` ({block: array}) receives the blocks in place."""
        return self._blocks_from(self._evaluator(st), self.compiled.forces, out, factor=True)

    def _views(self, flat: np.ndarray) -> dict:
        return {b: flat[o:o + int(np.prod(s))].reshape(s) for b, (o, s) in self.layout.items()}

    @cached_property
    def _flow_program(self):
        """The forces' plans as one generated straight-line kernel (built once per system;
        the rates, scale, parameters and graph of a system do not change after it is built)."""
        return build_program(self, self.compiled.forces)

    @cached_property
    def _jvp_program(self):
        return build_program(self, self.compiled.jvps, tangent=True)

    #: per-system caches of generated code (rebuilt on first use: generated functions do not pickle)
    _GENERATED = ("_flow_program", "_jvp_program", "_force_program", "_jac_program", "_row_programs",
                  "_jac_assembler")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._GENERATED}

    def __setstate__(self, state):
        self.__dict__.update(state)

    @cached_property
    def _row_programs(self) -> dict:
        return {}

    def _rows_program(self, tangent: bool, zero=(), only=None):
        key = (tangent, frozenset(zero), None if only is None else frozenset(only))
        prog = self._row_programs.get(key)
        if prog is None:
            plans = self.compiled.jvps if tangent else self.compiled.forces
            prog = self._row_programs[key] = build_program(self, plans, tangent, batched=True,
                                                           zero=key[1], only=key[2])
        return prog

    def flow_rows(self, V: np.ndarray, *, only=None) -> np.ndarray:
        """θ̇ of every row of V (B × size) in one call of the generated batched kernel; ``only``:
        the blocks wanted (the others are returned as zeros and not evaluated)."""
        V = np.asarray(V, dtype=float)
        return self._rows_program(False, (), only).fn(V, np.empty(V.shape))

    def jvp_rows(self, V: np.ndarray, dV: np.ndarray, *, zero=(), only=None) -> np.ndarray:
        """J(v_b)·dv_b for the rows of V and dV (B × size) in one call of the generated batched
        kernel. ``zero``: learned blocks whose tangent is zero in every row (their terms are
        skipped: exact); ``only``: the blocks of the result wanted (the others are zeros)."""
        V, dV = np.asarray(V, dtype=float), np.asarray(dV, dtype=float)
        return self._rows_program(True, zero, only).fn(V, dV, np.empty(V.shape))

    def flow_vector(self, v: np.ndarray) -> np.ndarray:
        """θ̇(θ) from the generated kernel (:mod:`.matrix_program`; = :meth:`flow_vector_generic`
        to round-off)."""
        return self._flow_program.fn(np.asarray(v, dtype=float), np.empty(self._n))

    def flow_vector_generic(self, v: np.ndarray) -> np.ndarray:
        """θ̇(θ) through the plan-walking :class:`~.matrix_kernels.Evaluator` (the reference)."""
        flat = np.empty(self.size)
        self.flow_blocks(self.unpack(np.asarray(v, dtype=float)), out=self._views(flat))
        return flat

    def jvp(self, v: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """J(v)·dv from the derived directional derivative δF_b (no finite differences), by the
        generated kernel (= :meth:`jvp_generic` to round-off)."""
        return self._jvp_program.fn(np.asarray(v, dtype=float), np.asarray(dv, dtype=float),
                                    np.empty(self._n))

    def jvp_generic(self, v: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """J(v)·dv through the plan-walking Evaluator (the reference of :meth:`jvp`)."""
        st = self.unpack(np.asarray(v, dtype=float))
        tan = {b: a for b, a in self.unpack(np.asarray(dv, dtype=float)).items() if b in self.layout}
        flat = np.empty(self.size)
        self._blocks_from(self._evaluator(st, tangent=tan), self.compiled.jvps, self._views(flat), factor=True)
        return flat

    def linear_operator(self, v: np.ndarray):
        """The Jacobian ∂θ̇/∂θ at v as a ``scipy.sparse.linalg.LinearOperator`` (matvec = JVP)."""
        v = np.array(v, dtype=float)
        n = self.size
        return LinearOperator((n, n), matvec=lambda w: self.jvp(v, np.ravel(w)), dtype=float)

    def slowest_modes(self, v: np.ndarray, k: int = 4, *, zero_modes: str = "auto", zero_tol: float = 1e-9,
                      block: int | None = None, max_zero: int = 2000, arpack_tol: float = 1e-12, seed: int = 0,
                      null_tol: float = 1e-6, rank_tol: float = 1e-6, residual_tol: float = 1e-8,
                      ncv: int | None = None, max_rounds: int = 50) -> dict:
        r"""The k rightmost nonzero eigenvalues of J(v), with multiplicity (at a stable fixed point:
        the slowest decay rates), from the JVP LinearOperator alone (ARPACK, which='LR', on
        J̃ = (I − Π) J (I − Π) − σΠ, σ = 2ρ(J) + 1: the zero modes in Π's range moved to −σ;
        :func:`~symcollapse.numerics.slow_spectrum.rightmost_nonzero`, docs/model.md §3.3).

        ``zero_modes`` chooses Π:

        - 'tangent': the structured symmetry tangent T of a stop-gradient head fixed point
          (gauge + free head, d² directions; :mod:`.zero_modes`), applied in O(N d r) per vector,
          checked first (Π symmetric and idempotent; ‖J t‖ ≤ null_tol·ρ‖t‖ on random t ∈ T, else
          DerivationCheckError: a wrong tangent must not deflate nonzero modes);
        - 'lock': no structure, every zero eigenvalue (|λ| ≤ zero_tol·ρ) ARPACK finds is locked
          (Π grows by its eigenvectors) — fine at small d, hopeless for a d = 64 family;
        - 'auto' (default): 'tangent' for the stop-gradient head loss, else 'lock'.

        Zero modes outside T (level swaps) are locked in either mode; found eigenvectors are
        deflated round by round until no copy is left to the right of the k-th eigenvalue; every
        returned eigenpair is checked through the JVP (‖J u − λ u‖ ≤ residual_tol·ρ‖u‖, else
        DerivationCheckError). Returns {'eigenvalues', 'residuals', 'invariance', 'n_zero' (tangent +
        locked), 'n_tangent', 'n_locked', 'rank' (of Z), 'null_check' (max ‖J t‖/ρ‖t‖), 'rho',
        'rounds', 'n_matvec', 'zero_modes'}; refuses (InvalidParameterError) past ``max_zero``
        locked modes."""
        k = check_int("k", k, 1)
        if zero_modes not in ("auto", "tangent", "lock"):
            raise InvalidParameterError(f"zero_modes must be 'auto', 'tangent' or 'lock'; got {zero_modes!r}")
        for name, val in (("zero_tol", zero_tol), ("arpack_tol", arpack_tol), ("null_tol", null_tol),
                          ("residual_tol", residual_tol)):
            check_real(name, val, 0.0, None, strict_min=True)
        if block is not None:
            check_int("block", block, 1)
        v = check_array("v", np.array(v, dtype=float), shape=(self.size,))
        if zero_modes == "auto":
            zero_modes = "tangent" if is_sg_head(self.compiled.loss) else "lock"
        if zero_modes == "tangent" and not {SAMPLE, LABEL, "W"} <= set(self.layout):
            raise InvalidParameterError("zero_modes='tangent' needs learned blocks x, y and a head W; "
                                        f"this system learns {list(self.layout)}")
        J = self.linear_operator(v)
        n = J.shape[0]
        rng = np.random.default_rng(seed)
        x = rng.normal(size=n)
        rho = 0.0
        for _ in range(30):  # power iteration: the scale of the spectrum
            y = J.matvec(x / np.linalg.norm(x))
            rho, x = max(rho, float(np.linalg.norm(y))), y
        out = {"rank": None, "null_check": None, "n_tangent": 0, "rho": rho, "zero_modes": zero_modes}
        project, shift = None, 0.0
        if zero_modes == "tangent":
            st = self.unpack(v)
            tan = head_tangent(self.layout, st[SAMPLE], st[LABEL], st["W"], rank_tol=rank_tol)
            tan.check_projector()
            out.update(rank=tan.rank, n_tangent=tan.dim, null_check=tan.check_null(J.matvec, rho, tol=null_tol))
            project, shift = tan.project, rho
        else:
            block = 12 if block is None else block
        res = rightmost_nonzero(J.matvec, n, k, project=project, rho=rho, zero_tol=zero_tol, block=block,
                                arpack_tol=arpack_tol, shift=shift, ncv=ncv, max_zero=max_zero,
                                max_rounds=max_rounds, residual_tol=residual_tol, seed=seed + 1)
        out.update(res, n_zero=out["n_tangent"] + res["n_locked"], n_matvec=res["n_matvec"] + 30)
        return out

    # --- loss --------------------------------------------------------------------------------
    def loss(self, st: dict) -> float:
        """L = s Σ_e p_e ℓ(e)."""
        return self.scale * self._evaluator(st).loss(self.compiled.loss_plan)

    def loss_vector(self, v: np.ndarray) -> float:
        return self.loss(self.unpack(np.asarray(v, dtype=float)))

    def frozen_loss(self, v, v0) -> float:
        """L(θ; θ₀): every sg(a) evaluated at the state v0."""
        st, st0 = self.unpack(np.asarray(v, dtype=float)), self.unpack(np.asarray(v0, dtype=float))
        return self.scale * self._evaluator(st, st0=st0).loss(self.compiled.frozen_plan)

    def frozen_loss_gradient_fd(self, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
        """∂L/∂θ with sg held at v, by central differences (n loss evaluations: small systems)."""
        v = np.asarray(v, dtype=float)
        return central_gradient(lambda w: self.frozen_loss(w, v), v, h)

    def flow_jacobian_fd(self, v: np.ndarray, h: float = 1e-6) -> np.ndarray:
        return central_jacobian(self.flow_vector, v, h)

    # --- the assembled Jacobian, from the derived JVP chains ---------------------------------
    @cached_property
    def _sym_block(self) -> dict:
        return {m: b for b, m in self._names.items()}

    def _check_assembly(self, max_dense: int) -> None:
        n_shared = sum(int(np.prod(s)) for b, (_, s) in self.layout.items() if b not in (SAMPLE, LABEL))
        dense = n_shared * (self.size - n_shared) * 2 + n_shared ** 2
        if dense > max_dense:
            raise InvalidParameterError(
                f"the assembled Jacobian would hold {dense} dense entries (> max_dense = {max_dense}); "
                "use linear_operator(v) (matrix-free, from the derived JVP)")

    def _jac_parts(self, v) -> dict:
        """{(row block, column block): {'dense': M, 'deg': (A, …), 'P': (A, …)}} of the Jacobian at v
        from the δF chains (dense blocks summed; node–node parts as the d×d factors A_k of
        Σ_k deg ⊗ A_k and Σ_k P ⊗ A_k)."""
        ev = self._evaluator(self.unpack(np.asarray(v, dtype=float)))
        parts = {}
        for b in self.compiled.learned:
            f = self.scale * self.rates[b]
            for c, form, data in self.compiled.jvps[b].terms:
                for (tb, M) in self._jac_term(ev, b, form, data, ev.coef(c) * f):
                    kind, M = M if isinstance(M, tuple) else ("dense", M)
                    slot = parts.setdefault((b, tb), {})
                    if kind == "dense":
                        slot[kind] = M if kind not in slot else slot[kind] + M
                    else:  # the factors of Σ_k pat ⊗ A_k, summed after the products (as sparse sums do)
                        slot[kind] = slot.get(kind, ()) + (M,)
        return parts

    def jacobian(self, v: np.ndarray, *, max_dense: int = 2 * 10**7):
        """The sparse (CSR) Jacobian ∂θ̇/∂θ at v, assembled exactly from the derived δF chains:
        node–node blocks deg ⊗ A and P ⊗ A (sparse), the shared columns and rows dense.
        The sparsity structure (every entry of these patterns stored, whatever the state) is
        built once per system; a call computes the factors and fills the values
        (= :meth:`jacobian_generic` to round-off). Refuses (InvalidParameterError) when the dense
        parts exceed ``max_dense`` entries: use :meth:`linear_operator` there."""
        self._check_assembly(max_dense)
        parts = self._jac_program.parts(np.asarray(v, dtype=float))
        asm = self._assembler(parts)
        return self.jacobian_generic(v, max_dense=max_dense) if asm is None else asm.fill(parts)

    def _assembler(self, parts: dict):
        """The JacobianAssembler of these parts' structure (built on first use; None: unsupported)."""
        key = tuple(sorted((bt, tuple(sorted(slot))) for bt, slot in parts.items()))
        if key not in self._jac_assembler:
            try:
                self._jac_assembler[key] = JacobianAssembler(self, parts)
            except UnsupportedStructure:
                self._jac_assembler[key] = None
        return self._jac_assembler[key]

    @cached_property
    def _jac_program(self):
        """The Jacobian's parts (those of :meth:`_jac_parts`) as one generated kernel (once per system)."""
        return build_jacobian_program(self)

    @cached_property
    def _jac_assembler(self) -> dict:
        return {}

    def jacobian_dense(self, v: np.ndarray, *, max_entries: int = DENSE_JACOBIAN_MAX_ENTRIES) -> np.ndarray:
        """The Jacobian of :meth:`jacobian` as a dense ``np.ndarray`` (small systems, e.g. for
        LSODA, which factors dense matrices): the same values, without a CSR in between. Refuses
        (InvalidParameterError) above ``max_entries`` = n² entries."""
        n = self.size
        if n * n > max_entries:
            raise InvalidParameterError(f"jacobian_dense: {n}² = {n * n} entries > max_entries = {max_entries}; "
                                        "use jacobian(v) (sparse) or linear_operator(v)")
        parts = self._jac_program.parts(np.asarray(v, dtype=float))
        asm = self._assembler(parts)
        return self.jacobian_generic(v).toarray() if asm is None else asm.fill_dense(parts)

    def jacobian_generic(self, v: np.ndarray, *, max_dense: int = 2 * 10**7):
        """The Jacobian of :meth:`jacobian` through scipy.sparse kron/bmat on every call (the reference)."""
        self._check_assembly(max_dense)
        g = self.graph
        blocks = {}
        for key, slot in self._jac_parts(v).items():
            for kind, M in slot.items():
                Ms = [M]
                if kind != "dense":
                    pat = (sps.diags(g.sample_degree if key[0] == SAMPLE else g.label_degree) if kind == "deg"
                           else (g.csr if key[0] == SAMPLE else g.csr_T))
                    Ms = [sps.kron(pat, sps.csr_matrix(A), format="csr") for A in M]
                for M in Ms:
                    blocks[key] = M if key not in blocks else blocks[key] + M
        if self.multiplicity is not None and SAMPLE in self.layout:  # sample rows / m_i
            rows = sps.diags(np.repeat(1.0 / self.multiplicity, self._shape(SAMPLE)[1]))
            for key in [k for k in blocks if k[0] == SAMPLE]:
                M = blocks[key]
                blocks[key] = rows @ M if sps.issparse(M) else rows @ np.asarray(M)
        order = list(self.layout)
        grid = [[_structural(blocks.get((r, c))) for c in order] for r in order]
        for i, r in enumerate(order):  # bmat needs a shape in every block row and column
            if all(g is None for g in grid[i]):
                grid[i][i] = sps.csr_matrix((int(np.prod(self.layout[r][1])),) * 2)
        for j, c in enumerate(order):
            if all(grid[i][j] is None for i in range(len(order))):
                grid[j][j] = sps.csr_matrix((int(np.prod(self.layout[c][1])),) * 2)
        return sps.bmat(grid, format="csr")

    def _jac_term(self, ev, b, form, data, c):
        """[(tangent block, ∂(term)/∂(tangent block))] for one δF chain of output block b."""
        g = self.graph
        tb_of = self._sym_block
        out_shape = self._shape(b)
        if b in (SAMPLE, LABEL):
            side = "sample" if b == SAMPLE else "label"
            nrow, dout = out_shape
            if form == "lin" and data[1][3] == "d":
                prefix, L = data
                A = ev.prod(prefix)
                dn = self._shape(tb_of[L[1]])[1]
                A = c * (A if A is not None else np.eye(dout, dn))
                # deg ⊗ A (own side) or P ⊗ A (the other side), assembled by the caller
                return [(tb_of[L[1]], ("deg" if ev.side(L) == side else "P", A))]
            chain = data[0]
            j = next(k for k, Lt in enumerate(chain) if Lt[0] == "s" and Lt[3] == "d")
            Lt = chain[j]
            Left, Right = ev.prod(chain[:j]), ev.prod(chain[j + 1:])
            wshape = self._shape(tb_of[Lt[1]])
            lrows = wshape[1] if Lt[2] else wshape[0]
            Left = np.eye(dout, lrows) if Left is None else Left
            if form == "lin":
                nb = ev.neighbour_sum(data[1], side)
                r = nb if Right is None else nb @ Right.T
            else:
                deg = g.sample_degree if side == "sample" else g.label_degree
                r = np.outer(deg, np.ravel(Right) if Right is not None else np.ones(1))
            spec = "ak,il->ialk" if Lt[2] else "ak,il->iakl"
            M = _outer(spec, c, Left, r).reshape(nrow * dout, -1)
            return [(tb_of[Lt[1]], M)]
        R, C = out_shape
        Lt = tangent_letter(data)
        tb = tb_of[Lt[1]]
        if tb in (SAMPLE, LABEL):  # a tangent node vector inside a moment
            tside = ev.side(Lt)
            deg = g.sample_degree if tside == "sample" else g.label_degree
            dn = self._shape(tb)[1]
            if form == "m1r":
                A = ev.prod(data[0])
                A = np.eye(R, dn) if A is None else A
                M = _outer("ak,j->ajk", c, A, deg).reshape(R * C, -1)
            elif form == "m1l":
                B = ev.prod(data[1])
                B = np.eye(dn, C) if B is None else B
                M = _outer("kb,j->bjk", c, B, deg).reshape(R * C, -1)
            else:
                A, Lp, Lq, B = ev.prod(data[0]), data[1], data[2], ev.prod(data[3])
                if Lq[3] == "d":
                    G = ev.neighbour_sum(("s", Lp[1], False, Lp[3]), tside)
                    AG = G if A is None else G @ A.T
                    B = np.eye(dn, C) if B is None else B
                    M = _outer("ja,kb->abjk", c, AG, B).reshape(R * C, -1)
                else:
                    H = ev.neighbour_sum(("s", Lq[1], False, Lq[3]), tside)
                    HB = H if B is None else H @ B
                    A = np.eye(R, dn) if A is None else A
                    M = _outer("ak,jb->abjk", c, A, HB).reshape(R * C, -1)
            return [(tb, M)]
        # a tangent shared letter: the term is Left · δW^(T) · Right with the moment folded in
        Left, Right = shared_tangent_factors(self, ev, form, data, Lt)
        tr, tc = Left.shape[1], Right.shape[0]
        # vec_row(Left X Right) = (Left ⊗ Rightᵀ) vec_row(X) (np.kron's entries, without its overhead)
        Rt = Right.T
        K = ((c * Left)[:, None, :, None] * Rt[None, :, None, :]).reshape(Left.shape[0] * Rt.shape[0], -1)
        if Lt[2]:
            K = K.reshape(R * C, tr, tc).transpose(0, 2, 1).reshape(R * C, -1)
        return [(tb, K)]

    @cached_property
    def component(self):
        """The component-level FlowSystem of the same loss at these sizes (small d: the
        cross-check path; its derivation cost grows with d)."""
        d = max(self.dims.values())
        if self.multiplicity is not None:
            raise InvalidParameterError("a sample-reduced system (multiplicity given) has no component "
                                        "path: use the full system")
        if d > SPARSE_JACOBIAN_MAX_D:
            raise InvalidParameterError(
                f"the component path needs d <= {SPARSE_JACOBIAN_MAX_D}; got sizes {self.dims}")
        comp = compile_loss(self.compiled.loss.component(**self.dims))
        return FlowSystem(comp, self.graph, rates=self.rates, params=self.params,
                          data=self.data if self.compiled.loss.data is not None else None,
                          frozen=self.frozen or None, scale=self.scale)

    def __getattr__(self, name):
        if name.startswith("_") or name in ("component", "compiled"):
            raise AttributeError(name)
        return getattr(self.component, name)


def tangent_letter(data) -> tuple:
    """The tangent letter ('s', name, transposed, 'd') of a shared-block δF chain's data (its first)."""
    return next(L for part in data for L in (part if isinstance(part, tuple) and part and
                                             isinstance(part[0], tuple) else (part,))
                if isinstance(L, tuple) and len(L) == 4 and L[0] == "s" and L[3] == "d")


def _structural(M):
    """A dense block as CSR with every entry stored (exact zeros too: the structure of a block
    must not depend on the state, e.g. W = I, for the solvers that inspect it); sparse as is."""
    if M is None or sps.issparse(M):
        return M
    r, c = M.shape
    return sps.csr_matrix((np.ascontiguousarray(M).ravel(), np.tile(np.arange(c), r), np.arange(0, r * c + 1, c)),
                          shape=(r, c))


def sp_free(expr) -> list:
    return [s.name for s in sp.sympify(expr).free_symbols]


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-300)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


#: sizes of the full kernel self-check (small: the generated code is the same at every d, the
#: sizes are only array shapes); a second size cycles so that d and D differ
SELFCHECK_SIZES = (3, 2, 4)


def selfcheck_dims(loss) -> tuple:
    """The sizes of the full self-check: d = 3, a second size D = 2, a third 4."""
    dims = sorted(loss.dims, key=lambda s: (s.name != "d", s.name))
    n = len(SELFCHECK_SIZES)
    return tuple(sorted((s.name, SELFCHECK_SIZES[i % n]) for i, s in enumerate(dims)))


def verify_matrix_flow(compiled: MatrixCompiledFlow, dims: tuple, seed: int = 13579,
                       tol: float = 1e-6, n_dir: int = 2) -> dict:
    r"""Numerical self-check of the kernels on a small random graph (N = 4, K = 3), with random
    directions v (docs/model.md §5):

        (L(θ + h v; θ) − L(θ − h v; θ)) / 2h = −Σ_b ⟨θ̇_b/(s η_b), v_b⟩,
        (θ̇(θ + h v) − θ̇(θ − h v)) / 2h = J v   (the derived JVP).

    Both identities with ``n_dir`` directions at small sizes (:func:`selfcheck_dims`: the kernels
    are the same code at every d), and at the working sizes ``dims`` the first identity in one
    direction (a few d×d products, so the check at d = 256 costs milliseconds and is never skipped).
    Raises :class:`DerivationCheckError`; returns the relative errors.
    """
    small = selfcheck_dims(compiled.loss)
    out = dict(_verify_at(compiled, small, seed, tol, n_dir, True))
    if tuple(sorted(dims)) != small:
        work = _verify_at(compiled, tuple(sorted(dims)), seed + 1, tol, 1, False)
        out.update({f"{k} at the working sizes": v for k, v in work.items()})
    return out


@lru_cache(maxsize=None)
def _verify_at(compiled: MatrixCompiledFlow, dims: tuple, seed: int, tol: float, n_dir: int,
               with_jvp: bool) -> dict:
    rng = np.random.default_rng(seed)
    loss = compiled.loss
    dims = dict(dims)
    N, K = 4, 3
    P = rng.uniform(0.2, 1.0, size=(N, K)) * (rng.uniform(size=(N, K)) < 0.7)
    P[np.arange(N), np.arange(N) % K] += 1.0
    rates = {b: float(rng.uniform(0.5, 1.5)) for b in loss.blocks}
    params = {p.name: float(rng.uniform(0.5, 1.5)) for p in loss.parameters}
    data = rng.normal(size=(N, loss.shape("u", dims)[0])) if loss.data is not None else None
    frozen = {b: rng.normal(size=loss.shape(b, dims)) for b in loss.shared_names if b not in compiled.learned}
    sysm = MatrixFlowSystem(compiled, P, rates=rates, dims=dims, params=params, data=data,
                            frozen=frozen, check=False)
    v = rng.normal(size=sysm.size)
    f = sysm.flow_vector(v)
    tag = ", ".join(f"{k}={n}" for k, n in sorted(dims.items()))
    if not np.all(np.isfinite(f)):
        raise DerivationCheckError(f"{loss.name}: the matrix-level flow is not finite at a random point ({tag})")
    h = 1e-5
    lin, ref_l, jv, ref_j = [], [], [], []
    for _ in range(n_dir):
        w = rng.normal(size=sysm.size)
        w /= np.linalg.norm(w)
        ref_l.append((sysm.frozen_loss(v + h * w, v) - sysm.frozen_loss(v - h * w, v)) / (2 * h))
        lin.append(-np.dot(f / sysm.rate_vector, w))
        if with_jvp:
            ref_j.append((sysm.flow_vector(v + h * w) - sysm.flow_vector(v - h * w)) / (2 * h))
            jv.append(sysm.jvp(v, w))
    errs = {"flow vs directional differences of the loss": relative_error(lin, ref_l)}
    if with_jvp:
        errs["JVP vs directional differences of the flow"] = relative_error(jv, ref_j)
    for what, err in errs.items():
        if not within(err, tol):
            raise DerivationCheckError(
                f"{loss.name}: matrix kernels ({tag}): {what}: relative error {err:.3e} > {tol:g}")
    return errs


__all__ = ["MatrixFlowSystem", "verify_matrix_flow", "selfcheck_dims", "SPARSE_JACOBIAN_MAX_D",
           "DENSE_JACOBIAN_MAX_ENTRIES", "mc"]


def shared_tangent_factors(system, ev, form: str, data, Lt) -> tuple[np.ndarray, np.ndarray]:
    r"""(Left, Right) of one derived JVP term of a shared block whose tangent is the shared letter
    Lt: the term is Left · δW^(T) · Right, the edge moment of its form (m0: Σ deg; m1r/m1l: one
    node moment; m2: M = Σ P x yᵀ-type) folded into Left or Right (docs/model.md §3.4)."""
    if form == "m0":
        chain, mid = data[0], float(system.graph.sample_degree.sum())
    elif form == "m1r":
        chain, mid = data[0], ev.m1(data[1])
    elif form == "m1l":
        chain, mid = data[1], ev.m1(data[0]).T
    else:
        chain = data[0] if Lt in data[0] else data[3]
    j = chain.index(Lt)
    wshape = system._shape(system._sym_block[Lt[1]])
    tr, tc = (wshape[1], wshape[0]) if Lt[2] else wshape
    Left, Right = ev.prod(chain[:j]), ev.prod(chain[j + 1:])
    Left = np.eye(tr) if Left is None else Left
    Right = np.eye(tc) if Right is None else Right
    if form == "m0":
        Right = mid * Right
    elif form == "m1r":
        Right = Right @ mid
    elif form == "m1l":
        Left = mid @ Left
    else:
        Mm = ev.m2(data[1], data[2])
        if Lt in data[0]:
            B = ev.prod(data[3])
            Right = Right @ Mm if B is None else Right @ Mm @ B
        else:
            A = ev.prod(data[0])
            Left = Mm @ Left if A is None else A @ Mm @ Left
    return Left, Right
