"""The state vector of an assembled system and its named parameter blocks.

θ = (vec θ_b)_b concatenated in ``layout`` order (docs/model.md §1: samples, labels, then
shared blocks); frozen blocks are not part of θ but are returned by :meth:`BlockState.unpack`.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from ..errors import InvalidParameterError
from ..validation import check_rate, check_real


class BlockState:
    """State vector ↔ {block: array}. A subclass provides ``layout`` ({b: (offset, shape)}),
    ``frozen`` ({b: array} of the blocks that do not move) and ``rates`` ({b: η_b})."""

    layout: dict
    frozen: dict
    rates: dict

    @property
    def size(self) -> int:
        """Number of state entries Σ_b |θ_b| over the learned blocks."""
        return sum(math.prod(s) for _, s in self.layout.values())  # math.prod: ~20× cheaper than np.prod here

    def unpack(self, v) -> dict:
        """State vector -> {block: array} (frozen shared blocks included)."""
        out = {b: v[o:o + math.prod(s)].reshape(s) for b, (o, s) in self.layout.items()}
        out.update(self.frozen)
        return out

    def pack(self, blocks: dict) -> np.ndarray:
        """{block: array} -> state vector."""
        return np.concatenate([np.asarray(blocks[b], dtype=float).ravel() for b in self.layout])

    @cached_property
    def rate_vector(self) -> np.ndarray:
        """η of each state entry (η_b repeated over block b)."""
        m = getattr(self, "multiplicity", None)
        return np.concatenate([np.repeat(self.rates[b] / m, s[1]) if (b == "x" and m is not None) else
                               np.full(int(np.prod(s)), self.rates[b]) for b, (_, s) in self.layout.items()])


def checked_rates(loss, learned, rates) -> dict:
    """{b: η_b > 0} for the blocks of ``loss``; every learned block needs one, unknown blocks are refused."""
    if not isinstance(rates, dict):
        raise InvalidParameterError(f"rates must be a dict {{block: rate > 0}} over blocks {loss.blocks}; "
                                    f"got {type(rates).__name__}")
    unknown = sorted(map(str, set(rates) - set(loss.blocks)))
    if unknown:
        raise InvalidParameterError(f"rates names unknown blocks {unknown}; blocks are {loss.blocks}")
    out = {b: check_rate(f"eta_{b}", rates[b]) for b in loss.blocks if b in rates}
    for b in learned:
        if b not in out:
            raise InvalidParameterError(f"eta_{b} must be given (a rate > 0) for learned block {b!r}")
    return out


def checked_params(loss, params) -> dict:
    """Numeric values of the loss's free parameters (e.g. a weight-decay λ), each finite."""
    params = dict(params or {})
    missing = [p.name for p in loss.parameters if p.name not in params]
    if missing:
        raise InvalidParameterError(f"loss parameters {missing} need numeric values (params=...)")
    return {p.name: check_real(p.name, params[p.name]) for p in loss.parameters}


def check_frozen_names(loss, learned, frozen) -> None:
    """``frozen`` must be a dict naming only the shared blocks of ``loss`` that do not move."""
    if frozen is not None and not isinstance(frozen, dict):
        raise InvalidParameterError(f"frozen must be a dict {{block: value}}; got {type(frozen).__name__}")
    stray = sorted(map(str, set(frozen or {}) - {b for b in loss.shared_names if b not in learned}))
    if stray:
        raise InvalidParameterError(f"frozen names blocks {stray} that are not frozen shared blocks of "
                                    f"{loss.name} (shared: {loss.shared_names}, learned: {tuple(learned)})")
