r"""The model contract: what every model of symcollapse provides, and how to add one.

A model is an edge loss ℓ(x_i, y_c) on the coupling graph of P (docs/model.md §1), handed to
the engine, plus whatever non-gradient terms it adds (docs/model.md §6). The engine derives
the flow; the model only names its blocks, rates and initial state.

Adding a model (the guide)
--------------------------
1. Make a package ``symcollapse/models/<name>/`` holding
   - the edge loss, written once with :mod:`symcollapse.symbolic` (``EdgeLoss`` with
     ``stop_gradient`` where it acts);
   - a subclass of :class:`Model` below that builds ``edge_loss`` and ``system`` (the assembled
     flow: a :class:`~symcollapse.numerics.system.FlowSystem`, or one composed with extra terms
     by :mod:`symcollapse.numerics.terms`), and implements :meth:`Model.initial_state` and
     :meth:`Model.invariants`;
   - its closed forms, if the specification has any, in :mod:`symcollapse.closed_forms`
     (the reference the derived results are checked against, written independently);
   - ``example()``, a small instance the conformance test runs;
   - its reductions and exact statements, one module each, beside the model (the head model's
     package is the example: ``sector`` — the class-separation sector and ν_sep, ``meanfield``
     — the mean-field reduction and self-consistency, ``stability`` — fixed points and their
     linear stability, ``phase`` — the closed forms on whole grids);
   - optionally a ``job`` module (checks, LaTeX, figures: the jobs layer) defining ``MODEL``,
     ``ORDER``, ``checks()``, ``write_latex(folder)``, ``write_figures(folder)``.
2. Register it with ONE line in :data:`symcollapse.models.registry.MODELS`.
   ``symcollapse reproduce`` then runs its job, and the conformance test
   (tests/test_conformance.py) checks its flow against finite differences, its invariants
   along a trajectory and the simulate/invariants contract.

The state convention
--------------------
The one state of every model is the **block dict** ``{block name: array}`` of the engine
(``'x'``: N×d samples, ``'y'``: K×d labels, then shared blocks such as ``'W'``, or the target
copies of the EMA model), exactly what ``system.unpack`` returns and ``system.pack`` takes.
Every method below accepts that dict; :meth:`Model.blocks` converts a model's own legacy
form (EmbeddingModel's Z array, HeadModel's (Z, W) tuple) to it, so the older methods keep
working unchanged. ``flow(state)`` returns the same kind of object it was given.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import InvalidParameterError
from ..numerics.trajectory import Trajectory, simulate_system
from ..validation import check_int, check_real


class Model(ABC):
    """Base class of the models: edge loss → assembled system → flow, loss, invariants, simulate.

    Subclasses set ``edge_loss`` (the EdgeLoss handed to the engine) and ``system`` (an object
    with ``flow_vector(v)``, ``jacobian(v)``, ``pack(blocks)``, ``unpack(v)``, ``loss(blocks)``,
    ``size``), and implement :meth:`initial_state` and :meth:`invariants`.
    """

    #: name of the head block used for accuracy (argmin_c ‖W x_i − y_c‖), or None
    head_block: str | None = None

    # --- required ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def edge_loss(self):
        """The edge loss ℓ(x, y) (an EdgeLoss) the engine derives the flow from."""

    @abstractmethod
    def initial_state(self, seed: int = 0):
        """The default initial state from ``seed`` (docs/model.md §1)."""

    @abstractmethod
    def invariants(self, state) -> np.ndarray:
        """The model's conserved quantities at ``state`` (an array; constant along the flow)."""

    @classmethod
    def example(cls) -> "Model":
        """A small instance (a few nodes, d = 2) for the conformance test and the docs."""
        raise NotImplementedError(f"{cls.__name__} must define example() to be registered")

    # --- state conversion -------------------------------------------------------------------
    def blocks(self, state) -> dict:
        """``state`` as the block dict {block: array} (the one state convention)."""
        if isinstance(state, dict):
            missing = [b for b in self.block_names if b not in state]
            if missing:
                raise InvalidParameterError(f"state must hold the blocks {self.block_names}; missing {missing}")
            return {b: np.asarray(v, dtype=float) for b, v in state.items()}
        raise InvalidParameterError(f"state must be a dict of blocks {self.block_names}; "
                                    f"got {type(state).__name__}")

    def from_blocks(self, blocks: dict, like=None):
        """The block dict back in the form of ``like`` (default: the block dict itself)."""
        return blocks

    @property
    def block_names(self) -> tuple:
        """The learned blocks of the state, in state order."""
        return tuple(getattr(self.system, "block_names", None) or self.system.layout)

    def vector(self, state) -> np.ndarray:
        """The flat state vector of the engine (``system.pack``)."""
        return self.system.pack(self.blocks(state))

    def initial_blocks(self, seed: int = 0) -> dict:
        """:meth:`initial_state` as the block dict."""
        return self.blocks(self.initial_state(seed))

    # --- dynamics (implemented once) ----------------------------------------------------------
    def flow_blocks(self, state) -> dict:
        """dθ_b/dt for every learned block, as a block dict."""
        v = self.vector(state)
        names = self.block_names
        return {b: a for b, a in self.system.unpack(self.system.flow_vector(v)).items() if b in names}

    def loss_value(self, state) -> float:
        """L = s Σ_{i,c} P_ic ℓ(x_i, y_c) at ``state``."""
        return float(self.system.loss(self.system.unpack(self.vector(state))))

    def simulate(self, t_end: float = 300.0, seed: int = 0, *, state0=None, n_points: int = 200,
                 t_eval=None, rtol: float = 1e-10, atol: float = 1e-12, keep_states: bool = False,
                 method: str = "BDF") -> Trajectory:
        """Integrate the assembled flow from ``state0`` (default :meth:`initial_state` (seed)) and
        record Δ_min, accuracy and the loss (delegates to the engine's ``simulate_system``)."""
        t_end = check_real("t_end", t_end, 0.0, None, strict_min=True)
        n_points = check_int("n_points", n_points, 3)
        v0 = self.vector(self.initial_state(seed) if state0 is None else state0)
        return simulate_system(self.system, v0, t_end, labels=self.labels, n_points=n_points,
                               head=self.head_block, keep_states=keep_states, t_eval=t_eval,
                               rtol=rtol, atol=atol, method=method)

    def flow(self, state):
        """dstate/dt at ``state``, in the same form as ``state``."""
        return self.from_blocks(self.flow_blocks(state), like=state)
