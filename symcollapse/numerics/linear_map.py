r"""A compiled flow with samples x_i = S u_i (S ∈ R^{d×D} learned, inputs u_i fixed).

Ṡ = s·η_S F_Xᵀ U (the chain rule derived in symbolic/reparam.py, applied in matrix form),
where F_X = Σ_c P_ic F_x(i, c) is the engine's assembled sample force at X = U Sᵀ; the label
and shared blocks move as in the base :class:`FlowSystem`. The induced sample flow is
Ẋ = U Ṡᵀ = s·η_S G F_X with G = UUᵀ. State vector: S (row-major), Y, then shared blocks.
"""
from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np
import scipy.sparse as sps
from scipy.linalg import cho_factor, cho_solve

from ..errors import DerivationCheckError, InvalidParameterError
from ..symbolic.loss import LABEL, SAMPLE
from ..tolerance import within
from ..validation import check_array, check_rate
from .finite_differences import central_gradient, central_jacobian
from .column_flow import node_operator
from .compile import CompiledFlow
from .selfcheck import relative_error
from .matrix_kernels import MatrixCompiledFlow
from .matrix_system import MatrixFlowSystem
from .system import FlowSystem


class LinearMapSystem:
    """Assembled dynamics of (S, Y, θ) for the loss of ``compiled`` with x = S u."""

    def __init__(self, compiled, P, U, *, rates: dict, params: dict | None = None,
                 frozen: dict | None = None, scale: float = 1.0, path: str = "auto", name: str = "S",
                 dims: dict | None = None):
        loss = compiled.loss
        matrix = isinstance(compiled, MatrixCompiledFlow)
        has_x = (loss.x is not None) if matrix else bool(len(loss.x))
        learned = compiled.learned if matrix else compiled.flow.learned
        if not has_x or SAMPLE not in learned:
            raise InvalidParameterError("a linear sample map needs a loss with a learned sample block 'x'")
        if name in loss.blocks:
            raise InvalidParameterError(f"the map name must differ from the loss blocks {loss.blocks}; got {name!r}")
        if name not in rates:
            raise InvalidParameterError(f"eta_{name} must be given (a rate > 0) for the map block {name!r}")
        self.name = name
        self.eta = check_rate(f"eta_{name}", rates[name])
        base_rates = {b: r for b, r in rates.items() if b != name}
        base_rates[SAMPLE] = self.eta
        if matrix:  # the matrix-level flow at the sizes ``dims`` (d)
            self.base = MatrixFlowSystem(compiled, P, rates=base_rates, params=params, frozen=frozen,
                                         scale=scale, dims=dims)
        else:
            self.base = FlowSystem(compiled, P, rates=base_rates, params=params, frozen=frozen,
                                   scale=scale, path=path)
        N = self.base.graph.N
        self.U = check_array("U", U, ndim=2, shape=(N, None))
        self.d = self.base.layout[SAMPLE][1][1]
        self.D = self.U.shape[1]
        self.scale = self.base.scale

    # --- layout -------------------------------------------------------------------
    @property
    def _lead_block(self) -> tuple[str, tuple]:
        """The block that replaces the samples x in the state: the map S (d×D)."""
        return self.name, (self.d, self.D)

    @cached_property
    def layout(self) -> dict:
        """block -> (offset, shape): the lead block (the map S) first, then the base blocks other than x."""
        lead, shape0 = self._lead_block
        out = {lead: (0, shape0)}
        off = int(np.prod(shape0))
        for b, (_, shape) in self.base.layout.items():
            if b == SAMPLE:
                continue
            out[b] = (off, shape)
            off += int(np.prod(shape))
        return out

    @property
    def size(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.layout.values())

    @property
    def n_samples_entries(self) -> int:
        return self.base.graph.N * self.d

    @cached_property
    def gram(self) -> np.ndarray:
        """G = UUᵀ, the input Gram matrix."""
        return self.U @ self.U.T

    @cached_property
    def rate_vector(self) -> np.ndarray:
        return np.concatenate([np.full(int(np.prod(s)), self.eta if b == self.name else self.base.rates[b])
                               for b, (_, s) in self.layout.items()])

    def unpack(self, v) -> dict:
        """State vector -> {block: array} (frozen shared blocks included)."""
        out = {b: v[o:o + int(np.prod(s))].reshape(s) for b, (o, s) in self.layout.items()}
        out.update(self.base.frozen)
        return out

    def pack(self, blocks: dict) -> np.ndarray:
        return np.concatenate([np.asarray(blocks[b], dtype=float).ravel() for b in self.layout])

    def samples(self, st: dict) -> np.ndarray:
        """X = U Sᵀ (rows x_i = S u_i)."""
        return self.U @ np.asarray(st[self.name]).T

    def base_state(self, st: dict) -> dict:
        """The base system's blocks at X = U Sᵀ."""
        out = {b: v for b, v in st.items() if b != self.name}
        out[SAMPLE] = self.samples(st)
        return out

    def base_vector(self, v: np.ndarray) -> np.ndarray:
        """The base system's state vector [vec X, rest] at the state v = [vec S, rest]."""
        n = self.d * self.D
        return np.concatenate([self.samples(self.unpack(v)).ravel(), v[n:]])

    # --- flow ---------------------------------------------------------------------
    def flow_blocks(self, st: dict) -> dict:
        """{block: θ̇_b}: Ṡ = s·η_S F_Xᵀ U, the rest as in the base system."""
        F = self.base.forces(self.base_state(st))
        out = {self.name: self.scale * self.eta * (F[SAMPLE].T @ self.U)}
        for b in self.base.layout:
            if b != SAMPLE:
                out[b] = self.scale * self.base.rates[b] * F[b]
        return out

    def flow_vector(self, v: np.ndarray) -> np.ndarray:
        return self.pack(self.flow_blocks(self.unpack(v)))

    def induced_sample_flow(self, st: dict) -> np.ndarray:
        """Ẋ = s·η_S G F_X (N×d): the sample flow induced by the map."""
        F = self.base.forces(self.base_state(st))
        return self.scale * self.eta * (self.gram @ F[SAMPLE])

    def loss(self, st: dict) -> float:
        return self.base.loss(self.base_state(st))

    def loss_vector(self, v: np.ndarray) -> float:
        return self.loss(self.unpack(v))

    # --- Jacobian: T J_base E with E = ∂v_base/∂v, T = (E's sample block)ᵀ ----------
    def _left(self, A: np.ndarray) -> np.ndarray:
        """Mᵀ A for M = ∂vec X/∂vec S (X = U Sᵀ): rows (i,k) -> rows (k,j), Σ_i U_ij A_(i,k)."""
        N, d = self.base.graph.N, self.d
        A3 = A.reshape(N, d, -1)
        return np.einsum("ij,ikm->kjm", self.U, A3, optimize=True).reshape(d * self.D, -1)

    def _right(self, A: np.ndarray) -> np.ndarray:
        """A M: columns (i,k) -> columns (k,j)."""
        N, d = self.base.graph.N, self.d
        A3 = A.reshape(-1, N, d)
        return np.einsum("mik,ij->mkj", A3, self.U, optimize=True).reshape(A.shape[0], d * self.D)

    def jacobian(self, v: np.ndarray) -> sps.csr_matrix:
        """∂θ̇/∂θ from the base system's derived sparse Jacobian by the chain rule (dense
        entries in a sparse container: the stiff solvers then factorise it with SuperLU)."""
        Jb = self.base.jacobian(self.base_vector(v)).tocsr()
        nx = self.n_samples_entries
        Jxx = Jb[:nx, :nx]
        Jxo = Jb[:nx, nx:].toarray()
        Jox = Jb[nx:, :nx].toarray()
        Joo = Jb[nx:, nx:].toarray()
        n = self.d * self.D
        J = np.empty((self.size, self.size))
        J[:n, :n] = self._left(np.asarray(Jxx @ self._Mdense))
        J[:n, n:] = self._left(Jxo)
        J[n:, :n] = self._right(Jox)
        J[n:, n:] = Joo
        return sps.csr_matrix(J)

    @cached_property
    def _Mdense(self) -> np.ndarray:
        """M = ∂vec X/∂vec S: M[(i,k), (k',j)] = δ_kk' U_ij."""
        N, d, D = self.base.graph.N, self.d, self.D
        return np.einsum("ij,kl->iklj", self.U, np.eye(d)).reshape(N * d, d * D)

    # --- the nodes Z = [X; Y]: a linear flow there is solved exactly (docs/model.md §4) ---------
    def nodes(self, v: np.ndarray) -> np.ndarray:
        """Z = [X; Y] ((N+K)×d) at the state v, with X = U Sᵀ."""
        st = self.unpack(v)
        return np.vstack([self.samples(st), st[LABEL]])

    def _sample_change(self, dlead: np.ndarray) -> np.ndarray:
        """ΔX = U ΔSᵀ for a change ΔS of the lead block."""
        return self.U @ np.asarray(dlead).T

    def _lead_change(self, dX: np.ndarray) -> np.ndarray:
        """ΔS = (G⁻¹ΔX)ᵀ U: the change of S in the row space of U (where the flow keeps S − S₀)
        with U ΔSᵀ = ΔX."""
        return self._gram_solve(dX).T @ self.U

    def _gram_solve(self, B: np.ndarray) -> np.ndarray:
        if self._gram_factor is None:
            raise DerivationCheckError("G = UUᵀ is singular (fewer input dimensions D than inputs N): "
                                       "the samples do not determine the state")
        return cho_solve(self._gram_factor, B)

    @cached_property
    def _gram_factor(self):
        try:
            return cho_factor(self.gram)
        except np.linalg.LinAlgError:
            return None

    def state_change(self, dZ: np.ndarray) -> np.ndarray:
        """Δv for a node change dZ = [ΔX; ΔY] along the flow (S − S₀ in the row space of U):
        ΔS = (G⁻¹ΔX)ᵀ U, ΔY = dZ's label rows, every other block unchanged."""
        N = self.base.graph.N
        lead = self._lead_block[0]
        blocks = {b: np.zeros(s) for b, (_, s) in self.layout.items()}
        blocks[lead] = self._lead_change(np.asarray(dZ)[:N])
        blocks[LABEL] = np.asarray(dZ)[N:]
        return self.pack(blocks)

    @cached_property
    def node_metric(self) -> np.ndarray:
        """H = blockdiag(s·η_S G, s·η_y I_K): the induced flow is Ż = −H ∂L/∂Z (docs/model.md §4)."""
        N, K = self.base.graph.N, self.base.graph.K
        H = np.zeros((N + K, N + K))
        H[:N, :N] = self.scale * self.eta * self.gram
        H[N:, N:] = self.scale * self.base.rates[LABEL] * np.eye(K)
        return H

    def node_operator(self, *, seed: int = 0, tol: float = 1e-10) -> np.ndarray:
        r"""A = −H L_G on the nodes Z = [X; Y] (dense, (N+K)²), H = :attr:`node_metric`, when the
        flow is Ż = A Z column by column: the head-free student Ẋ = −s·η_S G (D_x X − P Y),
        Ẏ = −s·η_y (D_y Y − Pᵀ X) (docs/model.md §4).

        The base flow is checked to be Ż_b = −s·diag(η) L_G Z (:func:`.column_flow.node_operator`,
        against the derived base flow), and A against this system's own derived flow at two
        random states: Ż = [U Ṡᵀ; Ẏ] from the composed flow of (S, Y) must equal A Z (relative
        error ≤ tol). A flow that is not this linear map, or a singular G (the state then is
        not a function of Z), raises DerivationCheckError.
        """
        A_base = node_operator(self.base, seed=seed, tol=tol)  # raises for heads, shared blocks
        if self._gram_factor is None:
            raise DerivationCheckError("G = UUᵀ is singular: no exact node solution")
        N = self.base.graph.N
        A = A_base.toarray()
        A[:N] = self.gram @ A[:N]  # Ẋ = G Ẋ_base: the chain rule of x = S u
        rng = np.random.default_rng([seed, 1])
        lead = self._lead_block[0]
        for _ in range(2):
            v = rng.normal(size=self.size)
            f = self.flow_blocks(self.unpack(v))
            Zdot = np.vstack([self._sample_change(f[lead]), f[LABEL]])
            err = relative_error(Zdot, A @ self.nodes(v))
            if not within(err, tol):
                raise DerivationCheckError(f"the derived flow of (S, Y) is not Ż = −H L_G Z on the nodes "
                                           f"(relative error {err:.2e}); use a numerical integrator")
        return A

    # --- finite-difference checks ---------------------------------------------------------
    def frozen_loss_gradient_fd(self, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
        """∂L/∂θ in the (S, Y, θ) coordinates with every sg held at its value at v (central differences)."""
        vb0 = self.base_vector(v)
        return central_gradient(lambda w: self.base.frozen_loss(self.base_vector(w), vb0), v, h)

    def flow_jacobian_fd(self, v: np.ndarray, h: float = 1e-6) -> np.ndarray:
        return central_jacobian(self.flow_vector, v, h)

def verify_linear_map(compiled, seed: int = 2468, tol: float = 1e-6,
                      name: str = "S", dims: dict | None = None) -> dict:
    """Check the composed S-flow and its Jacobian on a small random instance; raise on failure.

    Ṡ = −η_S ∂L/∂S and θ̇ = −η ∂L/∂θ by central differences of the compiled loss in the
    (S, Y, θ) coordinates (sg held at its value); the chain-rule Jacobian against central
    differences of the flow; the row-space system (S = S₀ + Aᵀ U) against the direct flow
    (Ȧᵀ U = Ṡ) and its Jacobian against differences. Returns the relative errors.
    """
    if isinstance(compiled, MatrixCompiledFlow) and dims is None:
        dims = {s.name: 2 for s in compiled.loss.dims}  # the composition is d-generic NumPy
    return dict(_verify_cached(compiled, seed, tol, name, tuple(sorted((dims or {}).items()))))


@lru_cache(maxsize=None)
def _verify_cached(compiled, seed, tol, name, dims=()):
    rng = np.random.default_rng(seed)
    loss = compiled.loss
    dims = dict(dims) or None
    matrix = isinstance(compiled, MatrixCompiledFlow)
    learned = compiled.learned if matrix else compiled.flow.learned

    def shape(b):
        return loss.shape(b, dims) if matrix else loss.block(b).shape
    N, K, D = 5, 3, 4
    P = rng.uniform(0.2, 1.0, size=(N, K)) * (rng.uniform(size=(N, K)) < 0.6)
    P[np.arange(N), np.arange(N) % K] += 1.0
    rates = {b: float(rng.uniform(0.5, 1.5)) for b in loss.blocks if b != SAMPLE}
    rates[name] = float(rng.uniform(0.5, 1.5))
    frozen = {b: rng.normal(size=shape(b)) for b in loss.shared_names if b not in learned}
    params = {p.name: float(rng.uniform(0.5, 1.5)) for p in loss.parameters}
    sysm = LinearMapSystem(compiled, P, rng.normal(size=(N, D)), rates=rates, params=params,
                           frozen=frozen, name=name, dims=dims)
    v = rng.normal(size=sysm.size)
    f = sysm.flow_vector(v)
    errs = {"map flow vs central differences of the loss in S":
            relative_error(f, -sysm.rate_vector * sysm.frozen_loss_gradient_fd(v)),
            "map Jacobian vs central differences of the flow":
            relative_error(sysm.jacobian(v).toarray(), sysm.flow_jacobian_fd(v))}
    S0 = rng.normal(size=(sysm.d, sysm.D))
    rs = RowSpaceSystem(compiled, P, sysm.U, S0, rates=rates, params=params, frozen=frozen, name=name,
                        dims=dims)
    w = rng.normal(size=rs.size)
    st = rs.unpack(w)
    direct = sysm.flow_blocks({b: a for b, a in st.items() if b != rs.COORD})
    errs["row-space flow (A-dot^T U) vs direct S-flow"] = relative_error(
        rs.flow_blocks(st)[rs.COORD].T @ rs.U, direct[name])
    errs["row-space Jacobian vs central differences of the flow"] = relative_error(
        rs.jacobian(w).toarray(), rs.flow_jacobian_fd(w))
    for what, err in errs.items():
        if not within(err, tol):
            raise DerivationCheckError(f"{loss.name}: {what}: relative error {err:.3e} > {tol:g}")
    return tuple(errs.items())


class RowSpaceSystem(LinearMapSystem):
    """The same flow in row-space coordinates: S(t) = S₀ + Aᵀ U with A ∈ R^{N×d}.

    Since Ṡ = s·η_S F_Xᵀ U lies in the span of the input rows, S − S₀ stays there and
    Ȧ = s·η_S F_X, X = U S₀ᵀ + G A exactly: N·d unknowns instead of D·d (any D).
    State vector: A (row-major), Y, then shared blocks.
    """

    COORD = "A"

    def __init__(self, compiled, P, U, S0, *, rates: dict, params: dict | None = None,
                 frozen: dict | None = None, scale: float = 1.0, path: str = "auto", name: str = "S",
                 dims: dict | None = None):
        super().__init__(compiled, P, U, rates=rates, params=params, frozen=frozen, scale=scale,
                         path=path, name=name, dims=dims)
        self.S0 = check_array(f"{name}0", S0, ndim=2, shape=(self.d, self.D))
        self.X0 = self.U @ self.S0.T

    @property
    def _lead_block(self) -> tuple[str, tuple]:
        """The row-space coordinates A (N×d) with S = S₀ + Aᵀ U."""
        return self.COORD, (self.base.graph.N, self.d)

    @cached_property
    def rate_vector(self) -> np.ndarray:
        return np.concatenate([np.full(int(np.prod(s)), self.eta if b == self.COORD else self.base.rates[b])
                               for b, (_, s) in self.layout.items()])

    def unpack(self, v) -> dict:
        """{A, y, shared…} and the map S = S₀ + Aᵀ U."""
        out = super().unpack(v)
        out[self.name] = self.S0 + out[self.COORD].T @ self.U
        return out

    def samples(self, st: dict) -> np.ndarray:
        """X = U S₀ᵀ + G A."""
        if self.COORD in st:
            return self.X0 + self.gram @ np.asarray(st[self.COORD])
        return self.U @ np.asarray(st[self.name]).T

    def _sample_change(self, dlead: np.ndarray) -> np.ndarray:
        """ΔX = G ΔA."""
        return self.gram @ np.asarray(dlead)

    def _lead_change(self, dX: np.ndarray) -> np.ndarray:
        """ΔA = G⁻¹ΔX."""
        return self._gram_solve(dX)

    def base_state(self, st: dict) -> dict:
        out = {b: v for b, v in st.items() if b not in (self.name, self.COORD)}
        out[SAMPLE] = self.samples(st)
        return out

    def base_vector(self, v: np.ndarray) -> np.ndarray:
        n = self.base.graph.N * self.d
        return np.concatenate([(self.X0 + self.gram @ v[:n].reshape(-1, self.d)).ravel(), v[n:]])

    def flow_blocks(self, st: dict) -> dict:
        """Ȧ = s·η_S F_X; the rest as in the base system."""
        F = self.base.forces(self.base_state(st))
        out = {self.COORD: self.scale * self.eta * F[SAMPLE]}
        for b in self.base.layout:
            if b != SAMPLE:
                out[b] = self.scale * self.base.rates[b] * F[b]
        return out

    def jacobian(self, v: np.ndarray) -> sps.csr_matrix:
        """[[J_xx M_G, J_xo], [J_ox M_G, J_oo]] with M_G = ∂vec X/∂vec A = G ⊗ I_d."""
        Jb = self.base.jacobian(self.base_vector(v)).tocsr()
        nx = self.n_samples_entries
        J = Jb.toarray()
        J[:, :nx] = np.asarray(Jb[:, :nx] @ self._MG)
        return sps.csr_matrix(J)

    @cached_property
    def _MG(self) -> np.ndarray:
        return np.kron(self.gram, np.eye(self.d))
