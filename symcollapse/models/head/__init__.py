r"""Model (b): a shared projection head W, with or without stop-gradient (docs/model.md §3).

Edge loss ℓ = ½(‖W x − sg(y)‖² + ‖W y − sg(x)‖²), total L = Σ_{i,c} P_ic ℓ(x_i, y_c).
The flow is derived by the engine from this loss; nothing here is a hand-written
right-hand side. Fixed points (stop-gradient): Z = Σ_k φ_k a_kᵀ over generalised graph modes
Aφ_k = ν_k Dφ_k, with the self-consistent head W = (ZᵀAZ)(ZᵀDZ)⁺, W a_k = ν_k a_k.

The model's package: this module (loss, model, graph modes, ν_sep), :mod:`.sector` (the
class-separation sector of D⁻¹A), :mod:`.meanfield` (the K = 2 mean-field reduction and its
self-consistency), :mod:`.stability` (exact fixed points and their linear stability),
:mod:`.phase` (closed forms on grids, collapse sweeps) and :mod:`.job` (checks, LaTeX, figures).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy.linalg import eigh

from ...errors import InvalidParameterError
from ...numerics.graph import CouplingGraph
from ...numerics.kernels import compile_loss
from ...numerics.matrix_kernels import StructureError, compile_matrix_loss
from ...numerics.matrix_system import MatrixFlowSystem
from ...numerics.system import FlowSystem
from ...numerics.trajectory import Trajectory, check_method, check_seeds, simulate_many_system, simulate_system
from ...symbolic import losses
from ...symbolic.loss import EdgeLoss
from ...symbolic.matrix_flow import MatrixEdgeLoss
from ...validation import check_array, check_int, check_rate, check_real
from ..base import Model
from ..couplings import balanced_couplings
from ..graph_model import OnGraph, coupling_graph, model_latex
from .sector import nu_sep_kernel

#: stop-gradient variants: which target is held fixed in each half of the symmetrised loss
SG_VARIANTS = {True: ("x", "y"), "both": ("x", "y"), False: (), "none": (),
               "labels": ("y",), "samples": ("x",)}


def _sg_targets(stop_gradient) -> tuple:
    return losses.sg_targets(stop_gradient)


def head_loss(d: int, stop_gradient=True, learn_head: bool = True) -> EdgeLoss:
    """ℓ = ½(‖W x − sg(y)‖² + ‖W y − sg(x)‖²) in components at dimension d (shared block W, d×d);
    the one head loss of :mod:`symcollapse.symbolic.losses` (``sc.head_loss`` is the same object).

    ``stop_gradient`` chooses which targets carry sg (True/'both', False/'none', 'labels': y,
    'samples': x); ``learn_head=False`` freezes W (its value is given to the FlowSystem).
    """
    return losses.head_loss(d, stop_gradient, learn_head)


def head_matrix_loss(stop_gradient=True, learn_head: bool = True) -> MatrixEdgeLoss:
    """The same loss in matrix form, x, y ∈ R^d, W ∈ R^{d×d} for every d (docs/model.md §3)."""
    return losses.head_matrix_loss(losses.canonical_sg(stop_gradient), learn_head)


def self_consistent_head(P, Z) -> np.ndarray:
    r"""W = (ZᵀAZ)(ZᵀDZ)⁺: the head that makes Ẇ = −η_W(W ZᵀDZ − ZᵀAZ) vanish at Z."""
    g = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
    Z = check_array("Z", Z, ndim=2, shape=(g.N + g.K, None))
    ZDZ = Z.T @ (Z * g.degree[:, None])
    ZAZ = Z.T @ (g.adjacency @ Z)
    return ZAZ @ np.linalg.pinv(ZDZ, rcond=1e-12, hermitian=True)


def graph_modes(P) -> tuple[np.ndarray, np.ndarray]:
    r"""Generalised graph modes Aφ = νDφ (ν ascending, φ D-orthonormal); needs no isolated node."""
    g = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
    if np.any(g.degree <= 0):
        raise InvalidParameterError("P must give every sample and every label at least one edge "
                                    "(a node of degree 0 has no mode)")
    return eigh(g.adjacency.toarray(), np.diag(g.degree))


def nu_sep(K: int, n: int, mu: int, omega: float = 2.0) -> float:
    r"""ν_sep of the balanced ensemble, from the derived sector matrix of D⁻¹A:
    ν_sep² = (n + ωμ(K−2)/4) / (n + ωμ(K−1)/2)."""
    K = check_int("K", K, 2)
    n = check_int("n", n, 1)
    mu = check_int("mu", mu, 0)
    omega = check_real("omega", omega, 0.0, None, strict_min=True)
    return float(nu_sep_kernel()(K, n, mu, omega))


def require_frustration(P) -> CouplingGraph:
    """The graph of P, refusing a P without frustrated samples (no sample couples two labels)."""
    g = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
    if not np.any((g.P > 0).sum(axis=1) >= 2):
        raise InvalidParameterError("P must contain at least one frustrated sample (a row with two "
                                    "or more positive entries) for this statement")
    return g


class HeadModel(OnGraph, Model):
    r"""Samples, labels and a shared head W on the graph of P, trained by gradient flow of
    ℓ = ½(‖W x − sg(y)‖² + ‖W y − sg(x)‖²) (sg optional), rates η_x, η_y, η_W.

    State: the pair (Z, W) or the block dict {'x': X, 'y': Y, 'W': W}
    (:class:`~symcollapse.models.base.Model`); methods return the form they are given."""

    head_block = "W"

    def __init__(self, P, d: int = 8, eta_x: float = 1.0, eta_y: float = 1.0, eta_W: float = 1.0,
                 stop_gradient=True, learn_head: bool = True, W_frozen=None, scale: float = 1.0):
        self.graph = coupling_graph(P)
        self.d = check_int("d", d, 1)
        self.eta_x = check_rate("eta_x", eta_x)
        self.eta_y = check_rate("eta_y", eta_y)
        self.eta_W = check_rate("eta_W", eta_W)
        _sg_targets(stop_gradient)
        self.stop_gradient = stop_gradient
        if not isinstance(learn_head, (bool, np.bool_)):
            raise InvalidParameterError(f"learn_head must be True or False; got {learn_head!r}")
        self.learn_head = bool(learn_head)
        self.W_frozen = (np.eye(self.d) if W_frozen is None else
                         check_array("W_frozen", W_frozen, shape=(self.d, self.d)))
        self.scale = check_real("scale", scale, 0.0, None, strict_min=True)

    @classmethod
    def example(cls) -> "HeadModel":
        """B(K=2, n=2, μ=1), d = 2 (conformance test)."""
        return cls(balanced_couplings(2, 2, 1), d=2, eta_x=1.0, eta_y=0.5, eta_W=0.8)

    # --- engine objects ------------------------------------------------------------------
    @property
    def loss(self) -> EdgeLoss:
        """The edge loss in components at this d (built on first use; the flow does not need it)."""
        return head_loss(self.d, self.stop_gradient, self.learn_head)

    @property
    def edge_loss(self) -> EdgeLoss:
        """The edge loss (the same object as ``loss``)."""
        return self.loss

    def blocks(self, state) -> dict:
        """(Z, W), Z (frozen head) or {'x', 'y', 'W'} -> the block dict."""
        if isinstance(state, dict):
            Z = np.vstack([check_array("x", state.get("x"), ndim=2, shape=(self.N, self.d)),
                           check_array("y", state.get("y"), ndim=2, shape=(self.K, self.d))])
            W = state.get("W")
        elif isinstance(state, tuple):
            if len(state) != 2:
                raise InvalidParameterError(f"state must be a pair (Z, W); got a tuple of {len(state)}")
            Z, W = state
        else:
            Z, W = state, None
        Z, W = self._check_state(Z, W)
        return {"x": Z[:self.N], "y": Z[self.N:], "W": W}

    def from_blocks(self, blocks: dict, like=None):
        if like is None or isinstance(like, dict):
            return dict(blocks)
        dW = blocks.get("W", np.zeros((self.d, self.d)))
        return np.vstack([blocks["x"], blocks["y"]]), dW

    def invariants(self, state) -> np.ndarray:
        r"""The conserved quantities: [I] with stop-gradient on both targets and a learned head
        (I = Σ_k ‖z_k‖²/η_k − ‖W‖_F²/η_W, docs/model.md §3); otherwise no invariant is provided
        (an empty array)."""
        st = self.blocks(state)
        if self.learn_head and _sg_targets(self.stop_gradient) == ("x", "y"):
            return np.array([self.invariant(np.vstack([st["x"], st["y"]]), st["W"])])
        return np.zeros(0)

    @property
    def matrix_loss(self) -> MatrixEdgeLoss:
        """The edge loss in matrix form (the one the flow is derived from, for every d)."""
        return head_matrix_loss(self.stop_gradient, self.learn_head)

    def _repr_latex_(self) -> str:
        return model_latex("HeadModel", self.matrix_loss, N=self.N, K=self.K, d=self.d, eta_x=self.eta_x,
                           eta_y=self.eta_y, eta_W=self.eta_W)

    @cached_property
    def system(self) -> MatrixFlowSystem:
        """The assembled flow, from the matrix-level derivation (cost independent of d and N)."""
        frozen = None if self.learn_head else {"W": self.W_frozen}
        rates = {"x": self.eta_x, "y": self.eta_y, "W": self.eta_W}
        try:
            compiled = compile_matrix_loss(self.matrix_loss)
        except StructureError:  # pragma: no cover - the head loss is always of moment form
            return FlowSystem(compile_loss(self.loss), self.graph, frozen=frozen, scale=self.scale, rates=rates)
        return MatrixFlowSystem(compiled, self.graph, frozen=frozen, scale=self.scale, rates=rates,
                                dims={"d": self.d})

    # --- states -----------------------------------------------------------------------
    def _check_state(self, Z, W, names=("Z", "W")):
        Z = check_array(names[0], Z, ndim=2, shape=(self.N + self.K, self.d))
        if W is None and self.learn_head:
            raise InvalidParameterError(f"{names[1]} must be given (a {self.d}×{self.d} array) for a learned head")
        W = self.W_frozen if (W is None and not self.learn_head) else check_array(names[1], W, shape=(self.d, self.d))
        return Z, np.asarray(W, dtype=float).reshape(self.d, self.d)

    def pack(self, Z, W=None, *, names=("Z", "W")) -> np.ndarray:
        """(Z, W) -> the engine's flat state (W omitted when the head is frozen)."""
        Z, W = self._check_state(Z, W, names)
        return self.system.pack({"x": Z[:self.N], "y": Z[self.N:], "W": W})

    def unpack(self, v) -> tuple[np.ndarray, np.ndarray]:
        st = self.system.unpack(np.asarray(v, dtype=float))
        return np.vstack([st["x"], st["y"]]), np.array(st["W"], dtype=float)

    def initial_state(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """x_i ~ 0.1·N(0, I_d), y_c ~ N(0, I_d), W = I_d (frozen head: its frozen value)."""
        seed = check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        Z = np.empty((self.N + self.K, self.d))  # filled in place (the same draws as 0.1·normal, normal)
        rng.standard_normal(out=Z[:self.N])
        Z[:self.N] *= 0.1
        Z[self.N:] = rng.normal(size=(self.K, self.d))
        W = np.eye(self.d) if self.learn_head else self.W_frozen.copy()
        return Z, W

    # --- dynamics ---------------------------------------------------------------------
    def flow(self, Z, W=None) -> tuple[np.ndarray, np.ndarray]:
        """(dZ/dt, dW/dt) at (Z, W); dW/dt = 0 for a frozen head (a block dict or a (Z, W) pair
        given as Z comes back in the same form)."""
        if isinstance(Z, (dict, tuple)):
            return Model.flow(self, Z)
        Z, W = self._check_state(Z, W)
        st = {"x": Z[:self.N], "y": Z[self.N:], "W": W}
        if isinstance(self.system, MatrixFlowSystem):  # written in place: no N-row temporaries
            dZ = np.empty_like(Z)
            f = self.system.flow_blocks(st, out={"x": dZ[:self.N], "y": dZ[self.N:]})
        else:  # pragma: no cover - component fallback
            f = self.system.flow_blocks(st)
            dZ = np.vstack([f["x"], f["y"]])
        dW = f["W"] if self.learn_head else np.zeros((self.d, self.d))
        return dZ, dW

    def invariant(self, Z, W=None) -> float:
        r"""I = Σ_k ‖z_k‖²/η_k − ‖W‖_F²/η_W (conserved with stop-gradient and a learned head)."""
        Z, W = self._check_state(Z, W)
        X, Y = Z[:self.N], Z[self.N:]
        return float(np.sum(X * X) / self.eta_x + np.sum(Y * Y) / self.eta_y - np.sum(W * W) / self.eta_W)

    def loss_value(self, Z, W=None) -> float:
        """L at (Z, W) (or at a block dict / (Z, W) pair given as Z)."""
        if isinstance(Z, (dict, tuple)):
            st = self.blocks(Z)
            Z, W = np.vstack([st["x"], st["y"]]), st["W"]
        Z, W = self._check_state(Z, W)
        return self.system.loss({"x": Z[:self.N], "y": Z[self.N:], "W": W})

    def simulate(self, t_end: float = 3000.0, seed: int = 0, *, n_points: int = 200, Z0=None, W0=None,
                 keep_states: bool = False, t_eval=None, rtol: float = 1e-8, atol: float = 1e-11,
                 method: str = "auto", use_jacobian: bool = True, stop_residual: float | None = None,
                 lu_limit: int | None = None) -> Trajectory:
        """Integrate from the default initial state (or Z0, W0) and record Δ_min, accuracy
        (argmin_c ‖W x_i − y_c‖), loss; ``extra['invariant']`` holds I(t) when states are kept.

        ``method='auto'`` (default) measures the stiffness ρ(J)·t_end of the derived Jacobian and
        takes DOP853 when it is small, else BDF with the analytic Jacobian — "BDF-nodes" (the
        block-diagonal sample rows eliminated exactly, only labels + W factorised densely);
        ``extra['method']``/``['method_reason']`` record the choice. Any SciPy
        method name forces that integrator. ``stop_residual``: end when ‖θ̇‖_∞ ≤ stop_residual
        (``extra['stopped']``, ``['t_reached']``, ``['residual']``)."""
        check_method(method)
        if Z0 is None:
            Z0, Wd = self.initial_state(seed)
            W0 = Wd if W0 is None else W0
        elif W0 is None:
            W0 = np.eye(self.d) if self.learn_head else self.W_frozen
        v0 = self.pack(Z0, W0, names=("Z0", "W0"))
        tr = simulate_system(self.system, v0, t_end, labels=self.labels, n_points=n_points, head="W",
                             keep_states=keep_states, t_eval=t_eval, rtol=rtol, atol=atol, method=method,
                             use_jacobian=use_jacobian, stop_residual=stop_residual, lu_limit=lu_limit)
        if keep_states:
            inv = np.array([self.invariant(*self.unpack(v)) for v in tr.states])
            tr.extra["invariant"] = inv
        return tr

    def simulate_many(self, seeds=(0,), t_end: float = 3000.0, *, Z0s=None, W0s=None,
                      n_points: int = 200, keep_states: bool = False, t_eval=None, rtol: float = 1e-8,
                      atol: float = 1e-11, method: str = "auto", use_jacobian: bool = True,
                      stop_residual: float | None = None, lu_limit: int | None = None) -> list[Trajectory]:
        """One trajectory per seed (or per (Z0s[i], W0s[i])), each equal to
        ``simulate(t_end, seed, method=tr.extra['method'], ...)`` to the integrator tolerance:
        'auto' is resolved once, from the first state, and the choice (measured stiffness, method)
        is shared by the batch; with 'BDF-nodes' up to 64 seeds are integrated together
        (``tr.extra['batch']``): each seed takes the steps of its own BDF run, the flows of all
        seeds are batched kernel calls (:mod:`symcollapse.numerics.seed_bdf`).

        For phase sweeps: ``model.simulate_many(seeds=range(8), t_end=T, stop_residual=1e-9,
        n_points=3)`` gives end states ``tr.Z``, ``tr.W`` with ``tr.extra['stopped']``,
        ``['t_reached']`` and ``['residual']`` (‖θ̇‖_∞) per seed."""
        check_method(method)
        if Z0s is None:
            states = [self.initial_state(s) for s in check_seeds(seeds)]
        else:
            W0s = [None] * len(Z0s) if W0s is None else list(W0s)
            if not len(Z0s) or len(W0s) != len(Z0s):
                raise InvalidParameterError(f"Z0s and W0s must be non-empty and of equal length; got "
                                            f"{len(Z0s)} and {len(W0s)}")
            states = [(Z, np.eye(self.d) if self.learn_head else self.W_frozen) if W is None else (Z, W)
                      for Z, W in zip(Z0s, W0s)]
        V0 = np.array([self.pack(Z, W, names=("Z0s[i]", "W0s[i]")) for Z, W in states])
        trs = simulate_many_system(self.system, V0, t_end, labels=self.labels, n_points=n_points,
                                   head="W", keep_states=keep_states, t_eval=t_eval, rtol=rtol,
                                   atol=atol, method=method, use_jacobian=use_jacobian,
                                   stop_residual=stop_residual, lu_limit=lu_limit)
        if keep_states:
            for tr in trs:
                tr.extra["invariant"] = np.array([self.invariant(*self.unpack(v)) for v in tr.states])
        return trs
