r"""Model (c): the linear teacher–student model (docs/model.md §4).

Inputs u_i ∈ R^D (i = 1…N distinct inputs, unit norm, D ≥ N), a linear teacher T ∈ R^{K×D}
labels u by argmax_c (T u)_c. Inputs are isotropic (``inputs='gaussian'``) or carry
low-dimensional class structure (``inputs='clustered'``: most of their norm lies in the K-dim row
space of T, plus full-rank isotropic noise, so G stays full rank and the student can generalise). A fraction ε of the inputs appears a second time with a wrong
label b ≠ c(i). Student x_i = S u_i, S ∈ R^{d×D} learned at rate η_S; labels y_c learned at η_y;
edge loss ½‖x − y‖² (model (a)) or ½(‖W x − sg(y)‖² + ‖W y − sg(x)‖²) (model (b)).

Convention for duplicated inputs (docs/model.md §1, ω = 2): both training pairs (u_i, c(i)) and
(u_i, b) share one student output x_i = S u_i, so the input is ONE row of P with P_ic(i) = P_ib = 1;
its two edge losses add exactly as the two pairs do. Hence ε = m/N with m duplicated inputs.

The flow is derived by the engine from the loss through x = S u (symbolic/reparam.py):
Ṡ = η_S F_Xᵀ U, Ẋ = η_S G F_X = −η_S G ∂L/∂X with G = UUᵀ. Without a head the slow (collapse)
rate is the smallest nonzero eigenvalue of blockdiag(η_S G, η_y I)·L_G.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from ...errors import InvalidParameterError
from ...numerics.graph import CouplingGraph
from ...numerics.matrix_kernels import compile_matrix_loss
from ...numerics.matrix_system import MatrixFlowSystem
from ...numerics.linear_map import LinearMapSystem, RowSpaceSystem, verify_linear_map
from ...numerics.metrics import accuracy
from ...numerics.trajectory import Trajectory, simulate_system
from ...symbolic.assemble import assemble_symbolic
from ...symbolic.invariants import linear_invariants
from ...symbolic import losses
from ...symbolic.loss import EdgeLoss
from ...symbolic.reparam import derive_linear_map
from ...symbolic.stopgrad import sg
from ...symbolic.symbols import matrix, rate, sqnorm, vector
from ...validation import check_int, check_rate, check_real
from ..base import Model
from ..graph_model import model_latex

MAP = "S"


# --- data ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TeacherStudentData:
    """Training inputs U (N×D), couplings P (N×K), teacher labels, a fresh test set.

    labels[i] = c(i) = argmax_c (T u_i)_c; wrong[i] = the second (wrong) label of a duplicated
    input, −1 otherwise; train_labels = c(i) for single inputs, −1 for duplicated ones (the
    samples whose accuracy is measured, as in docs/model.md §1).
    """

    U: np.ndarray
    P: np.ndarray
    T: np.ndarray
    labels: np.ndarray
    wrong: np.ndarray
    U_test: np.ndarray
    labels_test: np.ndarray

    @property
    def train_labels(self) -> np.ndarray:
        return np.where(self.wrong >= 0, -1, self.labels)

    @property
    def eps(self) -> float:
        """The realised frustration fraction m/N."""
        return float(np.mean(self.wrong >= 0))


def unit_inputs(rng: np.random.Generator, n: int, D: int) -> np.ndarray:
    """n inputs u = g/‖g‖ with g ~ N(0, I_D): ‖u‖ = 1 and G = UUᵀ → I as D → ∞."""
    g = rng.normal(size=(n, D))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


INPUTS = ("gaussian", "clustered")


def check_inputs(inputs, signal, D: int, K: int) -> tuple[str, float]:
    """Validate the input distribution name and its signal fraction s ∈ [0, 1) (s < 1 keeps the
    noise, hence G, full rank); 'clustered' needs D > K (a noise space beyond the signal space)."""
    if not isinstance(inputs, str) or inputs not in INPUTS:
        raise InvalidParameterError(f"inputs must be one of {', '.join(map(repr, INPUTS))}; got {inputs!r}")
    signal = check_real("signal", signal, 0.0, 1.0, strict_max=True)
    if inputs == "clustered" and D <= K:
        raise InvalidParameterError(
            f"D must be an integer > K = {K} for inputs='clustered' (signal space of dimension K "
            f"plus noise); got {D}")
    return inputs, signal


def signal_basis(T: np.ndarray) -> np.ndarray:
    """Q ∈ R^{D×K} with orthonormal columns spanning the rows of the teacher T (QᵀQ = I_K)."""
    Q, _ = np.linalg.qr(np.asarray(T, dtype=float).T)
    return Q


def clustered_inputs(rng: np.random.Generator, n: int, Q: np.ndarray, signal: float) -> np.ndarray:
    r"""n inputs u = g/‖g‖ with g = √(s/r)·Q z + √((1−s)/D)·ξ, z ~ N(0, I_r), ξ ~ N(0, I_D).

    Q (D×r, orthonormal columns) spans the teacher-relevant directions; a fraction s of
    E‖g‖² = 1 lies in that r-dim space, the rest is isotropic noise of full rank D (s < 1), so
    G = UUᵀ has full rank for n ≤ D (almost surely). s = 0 gives the isotropic inputs. After the
    normalisation the mean of ‖Qᵀu‖² is somewhat below s (≈ 0.72 for s = 0.8, r = 3, D = 300)."""
    D, r = Q.shape
    g = (np.sqrt(signal / r) * rng.normal(size=(n, r)) @ Q.T
         + np.sqrt((1.0 - signal) / D) * rng.normal(size=(n, D)))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def teacher_data(D: int, n_inputs: int, K: int, eps: float, seed: int = 0,
                 n_test: int = 500, inputs: str = "gaussian",
                 signal: float = 0.8) -> TeacherStudentData:
    r"""Draw inputs, teacher T ~ N(0, 1)^{K×D}, labels argmax_c (T u)_c, and duplicate
    m = round(ε N) inputs (chosen at random) with a wrong label drawn uniformly from the others.

    ``inputs='gaussian'``: u = g/‖g‖, g ~ N(0, I_D) (``signal`` unused).
    ``inputs='clustered'``: u = g/‖g‖, g = √(s/K)·Q z + √((1−s)/D)·ξ with Q an orthonormal basis
    of the row space of T, z ~ N(0, I_K), ξ ~ N(0, I_D), s = ``signal`` ∈ [0, 1) (see
    :func:`clustered_inputs`); training and test inputs are drawn alike."""
    K = check_int("K", K, 2)
    n_inputs = check_int("n_inputs", n_inputs, K)
    D = check_int("D", D, 1)
    if D < n_inputs:
        raise InvalidParameterError(
            f"D must be an integer >= n_inputs = {n_inputs} (so that G = UUᵀ has full rank); got {D}")
    eps = check_real("eps", eps, 0.0, 1.0, strict_max=True)
    seed = check_int("seed", seed, 0)
    n_test = check_int("n_test", n_test, 1)
    inputs, signal = check_inputs(inputs, signal, D, K)
    rng = np.random.default_rng([seed, 0])
    if inputs == "gaussian":
        U = unit_inputs(rng, n_inputs, D)
        T = rng.normal(size=(K, D))

        def draw(n):
            return unit_inputs(rng, n, D)
    else:
        T = rng.normal(size=(K, D))
        Q = signal_basis(T)

        def draw(n):
            return clustered_inputs(rng, n, Q, signal)

        U = draw(n_inputs)
    labels = np.argmax(U @ T.T, axis=1)
    missing = sorted(set(range(K)) - set(labels.tolist()))
    if missing:
        raise InvalidParameterError(
            f"the teacher gives no input the classes {missing}; increase n_inputs (got {n_inputs}) "
            f"or change seed (got {seed})")
    m = int(round(eps * n_inputs))
    if eps > 0 and m == 0:
        raise InvalidParameterError(
            f"eps must be 0 or >= 0.5/n_inputs = {0.5 / n_inputs:g} (round(eps·n_inputs) duplicated "
            f"inputs); got {eps:g}, which would duplicate no input")
    wrong = np.full(n_inputs, -1)
    dup = rng.choice(n_inputs, size=m, replace=False)
    shift = rng.integers(1, K, size=m)
    wrong[dup] = (labels[dup] + shift) % K
    P = np.zeros((n_inputs, K))
    P[np.arange(n_inputs), labels] = 1.0
    P[dup, wrong[dup]] = 1.0
    U_test = draw(n_test)
    return TeacherStudentData(U, P, T, labels, wrong, U_test, np.argmax(U_test @ T.T, axis=1))


# --- losses --------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def student_loss(d: int, head: bool = False, stop_gradient: bool = True) -> EdgeLoss:
    """The edge loss in x (x = S u is applied by the linear sample map): ½‖x − y‖², or with a
    shared head ½(‖W x − sg(y)‖² + ‖W y − sg(x)‖²) (sg dropped if ``stop_gradient`` is False)."""
    d = check_int("d", d, 1)
    x, y = vector("x", d), vector("y", d)
    rates = (("x", rate("eta_S")), ("y", rate("eta_y")))
    half = sp.Rational(1, 2)
    if not head:
        return EdgeLoss(half * sqnorm(x - y), x, y, rates=rates, name=f"teacher_student_d{d}")
    W = matrix("W", d, d)
    s = sg if stop_gradient else (lambda v: v)
    expr = half * (sqnorm(W * x - s(y)) + sqnorm(W * y - s(x)))
    tag = "sg" if stop_gradient else "nosg"
    return EdgeLoss(expr, x, y, shared=(("W", W),), rates=rates + (("W", rate("eta_W")),),
                    name=f"teacher_student_head_{tag}_d{d}")


@lru_cache(maxsize=None)
def student_matrix_loss_in_x(head: bool = False, stop_gradient: bool = True):
    """:func:`student_loss` in matrix form (rates η_S for x, η_y, η_W): for every d at once."""
    rates = (("x", "eta_S"), ("y", "eta_y"))
    if not head:
        return losses.embedding_matrix_loss(rates, "teacher_student")
    return losses.head_matrix_loss("both" if stop_gradient else "none", True, rates + (("W", "eta_W"),),
                                   f"teacher_student_head_{'sg' if stop_gradient else 'nosg'}")


# --- spectra ------------------------------------------------------------------------------
def rate_spectrum(P, G, eta_S: float, eta_y: float) -> np.ndarray:
    """Eigenvalues (ascending) of blockdiag(η_S G, η_y I)·L_G, computed from the similar
    symmetric matrix H^{1/2} L_G H^{1/2} (G symmetric positive definite)."""
    graph = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
    w, V = np.linalg.eigh(np.asarray(G, dtype=float))
    if w.min() <= 0:
        raise InvalidParameterError("G must be positive definite (D >= number of distinct inputs)")
    half = np.zeros((graph.N + graph.K,) * 2)
    half[:graph.N, :graph.N] = np.sqrt(eta_S) * (V * np.sqrt(w)) @ V.T
    half[graph.N:, graph.N:] = np.sqrt(eta_y) * np.eye(graph.K)
    return np.linalg.eigvalsh(half @ graph.laplacian.toarray() @ half)


def smallest_nonzero_rate(P, G, eta_S: float, eta_y: float) -> float:
    """The smallest nonzero eigenvalue: the spectrum has one zero per connected component."""
    graph = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
    ev = rate_spectrum(graph, G, eta_S, eta_y)
    return float(ev[graph.components[0]])


# --- trajectory --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherStudentTrajectory(Trajectory):
    """A :class:`Trajectory` with the teacher-labelled test accuracy and the final map S."""

    test_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    S: np.ndarray | None = None


# --- the model -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TeacherStudentModel(Model):
    """Linear teacher–student model: x_i = S u_i, labels y_c, optional shared head W (± sg).

    ``inputs``: 'gaussian' (isotropic unit inputs, the default) or 'clustered' (unit inputs
    u ∝ √(s/K)·Q z + √((1−s)/D)·ξ, Q spanning the teacher's rows, s = ``signal`` ∈ [0, 1); see
    :func:`teacher_data`). ``signal`` is used only by 'clustered'.

    State: the block dict {'S': d×D, 'y': K×d[, 'W': d×d]} (:class:`~symcollapse.models.base.Model`)."""

    D: int = 200
    n_inputs: int = 120
    K: int = 3
    d: int = 8
    eps: float = 0.05
    eta_S: float = 1.0
    eta_y: float = 1.0
    head: bool = False
    stop_gradient: bool = True
    eta_W: float = 1.0
    seed: int = 0
    n_test: int = 500
    inputs: str = "gaussian"
    signal: float = 0.8

    def __post_init__(self):
        K = check_int("K", self.K, 2)
        n = check_int("n_inputs", self.n_inputs, K)
        D = check_int("D", self.D, 1)
        if D < n:
            raise InvalidParameterError(
                f"D must be an integer >= n_inputs = {n} (so that G = UUᵀ has full rank); got {D}")
        for name, val in (("K", K), ("n_inputs", n), ("D", D), ("d", check_int("d", self.d, 1)),
                          ("seed", check_int("seed", self.seed, 0)),
                          ("n_test", check_int("n_test", self.n_test, 1))):
            object.__setattr__(self, name, val)
        object.__setattr__(self, "eps", check_real("eps", self.eps, 0.0, 1.0, strict_max=True))
        inputs, signal = check_inputs(self.inputs, self.signal, D, K)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "signal", signal)
        for r in ("eta_S", "eta_y", "eta_W"):
            object.__setattr__(self, r, check_rate(r, getattr(self, r)))
        for b in ("head", "stop_gradient"):
            if not isinstance(getattr(self, b), (bool, np.bool_)):
                raise InvalidParameterError(f"{b} must be True or False; got {getattr(self, b)!r}")

    # --- derived objects ---------------------------------------------------------------
    @cached_property
    def data(self) -> TeacherStudentData:
        return teacher_data(self.D, self.n_inputs, self.K, self.eps, self.seed, self.n_test,
                            self.inputs, self.signal)

    def _repr_latex_(self) -> str:
        return model_latex("TeacherStudentModel", self.loss, D=self.D, n_inputs=self.n_inputs,
                           K=self.K, d=self.d, eta_S=self.eta_S, eta_y=self.eta_y)

    @cached_property
    def loss(self) -> EdgeLoss:
        return student_loss(self.d, self.head, self.stop_gradient)

    @classmethod
    def example(cls) -> "TeacherStudentModel":
        """D = 12, 6 inputs, K = 2, d = 2, ε = 0.2 (conformance test)."""
        return cls(D=12, n_inputs=6, K=2, d=2, eps=0.2)

    @property
    def edge_loss(self) -> EdgeLoss:
        """The edge loss in x (the same object as ``loss``); the engine composes it with x = S u."""
        return self.loss

    @property
    def head_block(self):
        return "W" if self.head else None

    @property
    def labels(self) -> np.ndarray:
        """Own class of each training input, −1 for the duplicated ones."""
        return self.data.train_labels

    @cached_property
    def matrix_loss(self):
        """The edge loss in x in matrix form (x, y ∈ R^d, W ∈ R^{d×d} for every d)."""
        return student_matrix_loss_in_x(self.head, self.stop_gradient)

    @cached_property
    def compiled(self):
        """The matrix-level compiled flow of the loss in x (derived once for every d, checked) and
        its composition with x = S u, checked."""
        compiled = compile_matrix_loss(self.matrix_loss).at(d=self.d)
        verify_linear_map(compiled, name=MAP, dims={"d": min(self.d, 3)})
        return compiled

    @cached_property
    def direct_system(self) -> MatrixFlowSystem:
        """The flow of (S, Y[, W]) derived from ℓ(S u, y) with S ∈ R^{d×D} as a block of its own
        (the student derived once for every d and D); equal to :attr:`system`."""
        ml = losses.student_matrix_loss(self.head, "both" if self.stop_gradient else "none",
                                        (("S", "eta_S"), ("y", "eta_y")) + ((("W", "eta_W"),) if self.head else ()))
        return MatrixFlowSystem(compile_matrix_loss(ml), self.data.P, rates=self.rates, data=self.data.U,
                                dims={"d": self.d, "D": self.D})

    @property
    def rates(self) -> dict:
        rates = {MAP: self.eta_S, "y": self.eta_y}
        if self.head:
            rates["W"] = self.eta_W
        return rates

    @cached_property
    def system(self) -> LinearMapSystem:
        """The flow of (S, Y[, W]) in the direct coordinates (state: S row-major, Y, W)."""
        return LinearMapSystem(self.compiled, self.data.P, self.data.U, rates=self.rates, name=MAP,
                               dims={"d": self.d})

    def rowspace_system(self, S0) -> RowSpaceSystem:
        """The same flow with S = S₀ + Aᵀ U (N·d unknowns instead of D·d)."""
        return RowSpaceSystem(self.compiled, self.data.P, self.data.U, S0, rates=self.rates, name=MAP,
                              dims={"d": self.d})

    @cached_property
    def graph(self) -> CouplingGraph:
        return CouplingGraph.from_couplings(self.data.P)

    @cached_property
    def gram(self) -> np.ndarray:
        """G = UUᵀ."""
        return self.data.U @ self.data.U.T

    @cached_property
    def _gram_inverse(self) -> np.ndarray:
        return np.linalg.inv(self.gram)

    def slow_rate(self) -> float:
        """Smallest nonzero eigenvalue of blockdiag(η_S G, η_y I)·L_G: the collapse rate of the
        head-free flow (it is the decay rate of Δ_min when frustration connects the classes).

        When D is close to N, G has small eigenvalues (Marchenko–Pastur edge (1 − √(N/D))²) and
        the slowest modes can be sample modes that barely move the labels; Δ_min then reaches
        this asymptotic rate only very late. For D ≫ N the collapse mode is the slowest one."""
        return smallest_nonzero_rate(self.graph, self.gram, self.eta_S, self.eta_y)

    def model_a_rate(self) -> float:
        """The same with G = I: model (a) on the same coupling graph (the D ≫ N limit)."""
        return smallest_nonzero_rate(self.graph, np.eye(self.n_inputs), self.eta_S, self.eta_y)

    def initial_state(self, seed: int | None = None) -> dict:
        """S ~ 0.1·N(0, 1) entries (so x = S u ~ 0.1·N(0, I_d) for ‖u‖ = 1), y ~ N(0, I_d), W = I.
        ``seed`` defaults to the model's own seed (which also draws the data)."""
        seed = self.seed if seed is None else check_int("seed", seed, 0)
        rng = np.random.default_rng([seed, 1])
        st = {MAP: 0.1 * rng.normal(size=(self.d, self.D)),
              "y": rng.normal(size=(self.K, self.d))}
        if self.head:
            st["W"] = np.eye(self.d)
        return st

    def invariants(self, st: dict) -> np.ndarray:
        """Per component C (rows) the conserved Σ_{i∈C} (G⁻¹X)_i/η_S + Σ_{c∈C} y_c/η_y (head=False).
        With a head: [‖S‖_F²/η_S + Σ‖y‖²/η_y − ‖W‖_F²/η_W] with stop-gradient, none without."""
        if self.head:
            return np.array([self.norm_invariant(st)]) if self.stop_gradient else np.zeros(0)
        X = self.data.U @ np.asarray(st[MAP]).T
        GX = self._gram_inverse @ X
        n, comp = self.graph.components
        N = self.n_inputs
        out = np.zeros((n, self.d))
        np.add.at(out, comp[:N], GX / self.eta_S)
        np.add.at(out, comp[N:], np.asarray(st["y"]) / self.eta_y)
        return out

    def norm_invariant(self, st: dict) -> float:
        """‖S‖_F²/η_S + Σ_c ‖y_c‖²/η_y − ‖W‖_F²/η_W (conserved with head and stop-gradient)."""
        W = st.get("W", np.eye(self.d))
        return float(np.sum(st[MAP] ** 2) / self.eta_S + np.sum(st["y"] ** 2) / self.eta_y
                     - np.sum(W ** 2) / self.eta_W)

    def simulate(self, t_end: float = 600.0, *, n_points: int = 200, t_eval=None,
                 method: str = "auto", rtol: float = 1e-10, atol: float = 1e-12,
                 keep_states: bool = False, state0: dict | None = None,
                 coordinates: str = "rowspace",
                 stop_residual: float | None = None) -> TeacherStudentTrajectory:
        """Integrate the derived flow of (S, Y[, W]) and record Δ_min, training accuracy (single
        inputs), test accuracy (fresh teacher-labelled inputs) and the loss at each time.

        ``coordinates='rowspace'`` integrates S = S₀ + Aᵀ U (exact, N·d unknowns); ``'S'`` the
        d·D entries of S directly (same flow, slower for D ≫ N). ``states`` (with keep_states)
        are the state vectors of the chosen coordinates. ``method='auto'`` (default): without a
        head the flow is linear on the nodes, Ż = −blockdiag(η_S G, η_y I) L_G Z with Z = [U Sᵀ; Y]
        (docs/model.md §4, checked against the derived flow), and is solved exactly ('exact-spectral'
        or 'exact-expm'); with a head it measures the stiffness ρ(J)·t_end of the derived Jacobian
        and takes DOP853 or BDF (numerics/method_choice.py); ``extra['method']``,
        ``extra['method_reason']`` record it. ``stop_residual``: end at the first time with
        ‖θ̇‖_∞ ≤ stop_residual (``extra['stopped']``, ``['t_reached']``, ``['residual']``)."""
        st0 = dict(state0 if state0 is not None else self.initial_state())
        if coordinates == "rowspace":
            sysm = self.rowspace_system(st0.pop(MAP))
            st0[sysm.COORD] = np.zeros((self.n_inputs, self.d))
        elif coordinates == "S":
            sysm = self.system
        else:
            raise InvalidParameterError(f"coordinates must be 'rowspace' or 'S'; got {coordinates!r}")
        # the one simulation of every model (Δ_min, accuracy, loss, method choice), with x = S u
        tr = simulate_system(sysm, sysm.pack(st0), t_end, labels=self.labels, n_points=n_points,
                             head=self.head_block, method=method, rtol=rtol, atol=atol, keep_states=True,
                             stop_residual=stop_residual,
                             t_eval=None if t_eval is None else np.asarray(t_eval, dtype=float))
        data = self.data
        tacc, inv = [], []
        for v in tr.states:  # what this model adds: the teacher-labelled test accuracy, the invariants
            st = sysm.unpack(v)
            tacc.append(accuracy(data.U_test @ st[MAP].T, st["y"], data.labels_test, st.get("W")))
            inv.append(self.norm_invariant(st) if self.head else self.invariants(st))
        final = sysm.unpack(tr.states[-1])
        tr.extra["invariant"] = np.array(inv)
        return TeacherStudentTrajectory(tr.t, tr.d_min, tr.accuracy, tr.loss, tr.Z, tr.W,
                                        tr.states if keep_states else None, tr.extra,
                                        test_accuracy=np.array(tacc), S=final[MAP])


# --- exact statements on small instances (SymPy) ----------------------------------------------
PATH_P = ((1, 0), (0, 1), (1, 1))  # x₁–y₁–f–y₂–x₂: two single inputs, one duplicated input
SPLIT_P = ((1, 0), (0, 1), (1, 0))  # ε = 0: two components (the classes)


@lru_cache(maxsize=None)
def derive_student_map(d: int = 1, head: bool = False, stop_gradient: bool = True, probe_dim: int = 3):
    """The engine's flow of ℓ(x = S u, …) with the chain rule checked against the composite loss."""
    return derive_linear_map(student_loss(d, head, stop_gradient), MAP, probe_dim, check_composite=True)


def _block_flow(system, block: str) -> sp.Matrix:
    """The time derivative of one block of a SymbolicSystem, in the block's shape."""
    off = 0
    for b, m in system.blocks.items():
        if b == block:
            return sp.Matrix(m.shape[0], m.shape[1], list(system.flow[off:off + len(m)]))
        off += len(m)
    raise KeyError(block)


def _symbolic_inputs(N: int, D0: int) -> sp.Matrix:
    return sp.Matrix(N, D0, lambda i, j: sp.Symbol(f"u{i}_{j}", real=True))


def induced_flow_difference(P=PATH_P, head: bool = False, stop_gradient: bool = True) -> sp.Matrix:
    """U Ṡᵀ − G Ẋ|_{X = U Sᵀ} on a small graph with symbolic inputs U (N×N), d = 1, where Ṡ is
    the assembled flow of the composite loss and Ẋ = η_S F_X the base flow: zero iff Ẋ_induced =
    η_S G F_X = −η_S G ∂L/∂X."""
    P = sp.Matrix(P)
    N = P.shape[0]
    lm = derive_student_map(1, head, stop_gradient, N)
    U = _symbolic_inputs(N, N)
    comp = assemble_symbolic(lm.composite, P, data=U)
    base = assemble_symbolic(lm.base, P)
    S = comp.blocks[MAP]
    Sdot = _block_flow(comp, MAP)
    X = base.blocks["x"]
    Xdot = _block_flow(base, "x").xreplace(dict(zip(X, U * S.T)))
    return sp.expand(U * Sdot.T - U * U.T * Xdot)


def induced_jacobian_difference(P=PATH_P, U=None) -> sp.Matrix:
    """∂(Ẋ, Ẏ)/∂(X, Y) − (−blockdiag(η_S G, η_y I) L_G) for the induced flow Ẋ = G·(base Ẋ), d = 1."""
    P = sp.Matrix(P)
    N, K = P.shape
    U = sp.Matrix(U) if U is not None else _symbolic_inputs(N, N)
    base = assemble_symbolic(derive_student_map(1).base, P)
    X, Y = base.blocks["x"], base.blocks["y"]
    induced = sp.Matrix.vstack(U * U.T * _block_flow(base, "x"), _block_flow(base, "y"))
    J = induced.jacobian(list(X) + list(Y))
    L = sp.Matrix(sp.BlockMatrix([[sp.diag(*[sum(P.row(i)) for i in range(N)]), -P],
                                  [-P.T, sp.diag(*[sum(P.col(c)) for c in range(K)])]]))
    eta_S, eta_y = derive_student_map(1).base.loss.rate("x"), derive_student_map(1).base.loss.rate("y")
    H = sp.diag(eta_S * U * U.T, eta_y * sp.eye(K))
    return sp.expand(J + H * L)


def component_invariants(P=PATH_P, U=None):
    """(found basis of linear invariants c·(S, Y), proposed I_C = Σ_{i∈C} (G⁻¹X)_i/η_S + Σ_{c∈C} y_c/η_y)
    on a small graph with an integer input matrix U (N×N, full rank), d = 1, in the S coordinates."""
    P = sp.Matrix(P)
    N, K = P.shape
    U = sp.Matrix(U) if U is not None else sp.Matrix(N, N, lambda i, j: 1 + (i == j) + (i * j) % 2)
    lm = derive_student_map(1, False, True, N)
    system = assemble_symbolic(lm.composite, P, data=U)
    S, Y = system.blocks[MAP], system.blocks["y"]
    X = U * S.T
    GX = (U * U.T).inv() * X
    eta_S, eta_y = lm.rate, lm.base.loss.rate("y")
    n, comp = CouplingGraph.from_couplings(np.array(P.tolist(), dtype=float)).components
    proposed = []
    for c in range(n):
        I = sum(GX[i] for i in range(N) if comp[i] == c) / eta_S
        I += sum(Y[k] for k in range(K) if comp[N + k] == c) / eta_y
        proposed.append(sp.simplify(I))
    return system, linear_invariants(system), proposed


def norm_invariant_rate(stop_gradient: bool = True, P=PATH_P) -> sp.Expr:
    """d/dt [‖S‖²/η_S + Σ‖y‖²/η_y − ‖W‖²/η_W] along the head flow (d = 1, symbolic inputs)."""
    P = sp.Matrix(P)
    N = P.shape[0]
    lm = derive_student_map(1, True, stop_gradient, 2)
    system = assemble_symbolic(lm.composite, P, data=_symbolic_inputs(N, 2))
    rates = system.rates
    I = sum(sqnorm(m) / rates[b] * (-1 if b == "W" else 1) for b, m in system.blocks.items())
    return sp.expand(system.time_derivative(I))
