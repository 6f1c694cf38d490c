r"""Model (a), embedding only: L = s·½ Σ_{i,c} P_ic ‖x_i − y_c‖², Ż = −s·H L_G Z.

The loss is handed to the engine (derive → compile → assemble); nothing here writes the
right-hand side by hand. Spectra come from :mod:`symcollapse.numerics.spectra`, the
class-separation sector from :mod:`symcollapse.symbolic.sectors`.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from ...errors import InvalidParameterError
from ...numerics import spectra
from ...numerics.matrix_kernels import compile_matrix_loss
from ...numerics.matrix_system import MatrixFlowSystem
from ...numerics.trajectory import Trajectory, check_method, check_seeds, simulate_many_system, simulate_system
from ...symbolic import losses
from ...symbolic.loss import EdgeLoss
from ...validation import check_array, check_int, check_rate, check_real
from ..base import Model
from ..couplings import balanced_couplings
from ..graph_model import OnGraph, coupling_graph, model_latex
from ...symbolic.sectors import balanced_separation_sector


def embedding_loss(d: int) -> EdgeLoss:
    """ℓ(x, y) = ½‖x − y‖² in components at dimension d (rates η_x, η_y); the one embedding
    loss of :mod:`symcollapse.symbolic.losses`."""
    return losses.embedding_loss(d)


class EmbeddingModel(OnGraph, Model):
    """Embedding-only gradient flow on the coupling graph of P (N×K, non-negative, finite).

    scale multiplies the loss (scale = 1/N gives the mean loss): every rate is multiplied by it.
    State: the array Z ((N+K)×d, samples first) or the block dict {'x': X, 'y': Y}
    (:class:`~symcollapse.models.base.Model`); methods return the form they are given.
    """

    def __init__(self, P, d: int = 2, eta_x: float = 1.0, eta_y: float = 1.0, *, scale: float = 1.0):
        self.graph = coupling_graph(P)
        self.d = check_int("d", d, 1)
        self.eta_x = check_rate("eta_x", eta_x)
        self.eta_y = check_rate("eta_y", eta_y)
        self.scale = check_real("scale", scale, 0.0, None, strict_min=True)
        self.loss_def = embedding_loss(self.d)
        #: the matrix-level derivation (x, y ∈ R^d for every d), compiled to matrix products
        self.compiled = compile_matrix_loss(losses.embedding_matrix_loss())
        self.system = MatrixFlowSystem(self.compiled, self.graph, rates={"x": self.eta_x, "y": self.eta_y},
                                       scale=self.scale, dims={"d": self.d})

    @classmethod
    def example(cls) -> "EmbeddingModel":
        """B(K=2, n=2, μ=1), d = 2 (conformance test)."""
        return cls(balanced_couplings(2, 2, 1), d=2, eta_x=1.0, eta_y=0.7)

    # --- sizes and state ---------------------------------------------------------------

    @cached_property
    def eta(self) -> np.ndarray:
        """Effective rate s·η_k of each of the N+K nodes."""
        return self.scale * spectra.rate_diagonal(self.graph, self.eta_x, self.eta_y)

    def _check_state(self, Z, name: str = "Z") -> np.ndarray:
        if isinstance(Z, dict):
            Z = self._stack(self.blocks(Z))
        return check_array(name, Z, ndim=2, shape=(self.N + self.K, self.d))

    @property
    def edge_loss(self) -> EdgeLoss:
        """ℓ(x, y) = ½‖x − y‖² (the same object as ``loss_def``)."""
        return self.loss_def

    def blocks(self, state) -> dict:
        """Z or {'x', 'y'} -> the block dict {'x': N×d, 'y': K×d}."""
        if isinstance(state, dict):
            return {b: check_array(b, state.get(b), ndim=2, shape=(n, self.d))
                    for b, n in (("x", self.N), ("y", self.K))}
        Z = check_array("Z", state, ndim=2, shape=(self.N + self.K, self.d))
        return {"x": Z[:self.N], "y": Z[self.N:]}

    def from_blocks(self, blocks: dict, like=None):
        return dict(blocks) if like is None or isinstance(like, dict) else self._stack(blocks)

    @staticmethod
    def _stack(blocks: dict) -> np.ndarray:
        return np.vstack([blocks["x"], blocks["y"]])

    def initial_state(self, seed: int = 0) -> np.ndarray:
        """x_i ~ 0.1·N(0, I_d), y_c ~ N(0, I_d) from numpy.random.default_rng(seed)."""
        seed = check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        X = 0.1 * rng.standard_normal((self.N, self.d))
        Y = rng.standard_normal((self.K, self.d))
        return np.vstack([X, Y])

    # --- flow and loss --------------------------------------------------------------
    def flow(self, Z) -> np.ndarray:
        """dZ/dt = −s·H L_G Z at Z ((N+K)×d, samples first), from the compiled derived flow
        (a block dict in, a block dict out)."""
        if isinstance(Z, dict):
            return Model.flow(self, Z)
        Z = self._check_state(Z)
        return self.system.flow_vector(Z.ravel()).reshape(Z.shape)

    def _repr_latex_(self) -> str:
        return model_latex("EmbeddingModel", self.loss_def, N=self.N, K=self.K, d=self.d,
                           eta_x=self.eta_x, eta_y=self.eta_y)

    def loss(self, Z) -> float:
        """L = s·½ Σ P_ic ‖x_i − y_c‖²."""
        Z = self._check_state(Z)
        return self.system.loss_vector(Z.ravel())

    def loss_value(self, state) -> float:
        """L at ``state`` (Z or the block dict); the protocol's name for :meth:`loss`."""
        return self.loss(state)

    def jacobian(self):
        """∂Ż/∂Z (sparse, (N+K)d square): −s·H L_G ⊗ I_d, assembled from the derived edge Jacobian."""
        return self.system.jacobian(np.zeros(self.system.size))

    # --- spectrum -------------------------------------------------------------------
    def decay_rates(self) -> np.ndarray:
        """Eigenvalues of s·H L_G, ascending (N+K values)."""
        return spectra.decay_rates(self.graph, self.scale * self.eta_x, self.scale * self.eta_y)

    def decay_modes(self) -> tuple[np.ndarray, np.ndarray]:
        """(rates, right eigenvectors of s·H L_G as columns), ascending (dense; small graphs)."""
        return spectra.decay_modes(self.graph, self.scale * self.eta_x, self.scale * self.eta_y)

    def slow_rate(self, method: str = "auto") -> float:
        """Smallest nonzero eigenvalue of s·H L_G."""
        return spectra.slow_rate(self.graph, self.scale * self.eta_x, self.scale * self.eta_y,
                                 method=method)

    # --- conserved quantities and end state ---------------------------------------------
    def invariants(self, Z) -> np.ndarray:
        """Σ_{k∈C} z_k/(s η_k) for each connected component C: (n_components, d)."""
        Z = self._check_state(Z)
        n, lab = self.graph.components
        out = np.zeros((n, self.d))
        np.add.at(out, lab, Z / self.eta[:, None])
        return out

    def end_state(self, Z0) -> np.ndarray:
        """lim Z(t): on each component the (1/η)-weighted mean of Z0 (fixed point with Z0's invariants)."""
        Z0 = self._check_state(Z0, "Z0")
        n, lab = self.graph.components
        w = np.zeros(n)
        np.add.at(w, lab, 1.0 / self.eta)
        return (self.invariants(Z0) / w[:, None])[lab]

    # --- simulation -------------------------------------------------------------------
    def simulate(self, t_end: float = 300.0, seed: int = 0, *, Z0=None, n_points: int = 200,
                 t_eval=None, rtol: float = 1e-10, atol: float = 1e-12,
                 keep_states: bool = False, method: str = "auto", stop_residual: float | None = None,
                 lu_limit: int | None = None) -> Trajectory:
        """Solve the derived flow from Z0 (default: :meth:`initial_state` (seed)) to t_end.

        ``method='auto'`` (default) solves Ż = −s·H L_G Z exactly (no time steps, no sparse LU;
        'exact-spectral' or 'exact-expm', see numerics/column_flow.py); a SciPy method name
        ('BDF', 'DOP853', …) integrates step by step. ``stop_residual``: end when ‖Ż‖_∞ ≤ it.
        ``trajectory.extra['method']`` / ``['method_reason']`` say what ran and why."""
        t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
        n_points = check_int("n_points", n_points, 3)
        Z0 = self.initial_state(seed) if Z0 is None else self._check_state(Z0, "Z0")
        if t_eval is not None:
            t_eval = check_array("t_eval", t_eval, ndim=1)
            if t_eval[0] != 0.0 or np.any(np.diff(t_eval) <= 0) or abs(t_eval[-1] - t_end) > 1e-12 * t_end:
                raise InvalidParameterError("t_eval must increase from 0 to t_end")
        check_method(method)
        return simulate_system(self.system, Z0.ravel(), t_end, labels=self.labels, n_points=n_points,
                               rtol=rtol, atol=atol, keep_states=keep_states, t_eval=t_eval,
                               method=method, stop_residual=stop_residual, lu_limit=lu_limit)

    def simulate_many(self, seeds=(0,), t_end: float = 300.0, *, Z0s=None, n_points: int = 200,
                      t_eval=None, rtol: float = 1e-10, atol: float = 1e-12, keep_states: bool = False,
                      method: str = "auto", stop_residual: float | None = None,
                      lu_limit: int | None = None) -> list[Trajectory]:
        """One trajectory per seed (or per initial state in ``Z0s``), each equal to
        ``simulate(t_end, seed, ...)``; the exact solution acts on all seeds' columns at once
        (Z's of B seeds stacked into one (N+K)×(d·B) matrix: one propagator, batched products)."""
        t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
        n_points = check_int("n_points", n_points, 3)
        check_method(method)
        if Z0s is None:
            Z0s = [self.initial_state(s) for s in check_seeds(seeds)]
        else:
            Z0s = [self._check_state(Z, "Z0s[i]") for Z in Z0s]
            if not Z0s:
                raise InvalidParameterError("Z0s must hold at least one initial state")
        if t_eval is not None:
            t_eval = check_array("t_eval", t_eval, ndim=1)
            if t_eval[0] != 0.0 or np.any(np.diff(t_eval) <= 0) or abs(t_eval[-1] - t_end) > 1e-12 * t_end:
                raise InvalidParameterError("t_eval must increase from 0 to t_end")
        return simulate_many_system(self.system, np.array([Z.ravel() for Z in Z0s]), t_end,
                                    labels=self.labels, n_points=n_points, rtol=rtol, atol=atol,
                                    keep_states=keep_states, t_eval=t_eval, method=method,
                                    stop_residual=stop_residual, lu_limit=lu_limit)


def embedding_sector(omega=None):
    """The class-separation sector of the balanced ensemble B(K, n, μ, ω), derived from the flow.

    Returns a :class:`symcollapse.symbolic.sectors.SectorReduction` with ``.matrix`` (3×3 on
    (X, F, Y)), ``.charpoly`` = det(r I + M) in the symbol r, and the closure proofs. ``omega``
    may be a number (e.g. 2) or None for the symbol ω.
    """
    return balanced_separation_sector(embedding_loss(1), omega=omega)
