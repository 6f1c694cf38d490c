"""The state vector of an assembled system and its named parameter blocks.

θ = (vec θ_b)_b concatenated in ``layout`` order (docs/model.md §1: samples, labels, then
shared blocks); frozen blocks are not part of θ but are returned by :meth:`BlockState.unpack`.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np


class BlockState:
    """State vector ↔ {block: array}. A subclass provides ``layout`` ({b: (offset, shape)}),
    ``frozen`` ({b: array} of the blocks that do not move) and ``rates`` ({b: η_b})."""

    layout: dict
    frozen: dict
    rates: dict

    @property
    def size(self) -> int:
        """Number of state entries Σ_b |θ_b| over the learned blocks."""
        return sum(int(np.prod(s)) for _, s in self.layout.values())

    def unpack(self, v) -> dict:
        """State vector -> {block: array} (frozen shared blocks included)."""
        out = {b: v[o:o + int(np.prod(s))].reshape(s) for b, (o, s) in self.layout.items()}
        out.update(self.frozen)
        return out

    def pack(self, blocks: dict) -> np.ndarray:
        """{block: array} -> state vector."""
        return np.concatenate([np.asarray(blocks[b], dtype=float).ravel() for b in self.layout])

    @cached_property
    def rate_vector(self) -> np.ndarray:
        """η of each state entry (η_b repeated over block b)."""
        return np.concatenate([np.full(int(np.prod(s)), self.rates[b]) for b, (_, s) in self.layout.items()])
