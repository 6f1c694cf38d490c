"""What every model on a coupling graph shares: the validated graph and its sizes."""
from __future__ import annotations

from functools import cached_property

import numpy as np
import sympy as sp

from ..errors import InvalidParameterError
from ..numerics.graph import CouplingGraph
from .couplings import consistent_labels


def coupling_graph(P) -> CouplingGraph:
    """Validate P (N×K, finite, ≥ 0, K ≥ 2) and build its graph."""
    graph = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
    if graph.K < 2:
        raise InvalidParameterError(f"P must have K >= 2 label columns; got K = {graph.K}")
    return graph


class OnGraph:
    """Mixin for models holding ``self.graph``: P, N, K and the consistent samples' labels."""

    graph: CouplingGraph

    @property
    def P(self) -> np.ndarray:
        return self.graph.P

    @property
    def N(self) -> int:
        return self.graph.N

    @property
    def K(self) -> int:
        return self.graph.K

    @cached_property
    def labels(self) -> np.ndarray:
        """Own class of each consistent sample, −1 for frustrated ones."""
        return consistent_labels(self.graph.P)


def model_latex(title: str, loss, **sizes) -> str:
    r"""Notebook display of a model: L = s Σ_{i,c} P_ic ℓ(x_i, y_c) with its edge loss ℓ and sizes."""
    items = r",\ ".join(f"{sp.latex(sp.Symbol(k))} = {v:g}" if isinstance(v, float)
                          else f"{sp.latex(sp.Symbol(k))} = {v}" for k, v in sizes.items())
    return (rf"$\mathrm{{{title}}}:\ L = \sum_{{i,c}} P_{{ic}}\,\ell(x_i, y_c),\quad "
            rf"\ell = {sp.latex(loss.expr)};\quad {items}$")
