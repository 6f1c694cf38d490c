r"""Symbolic relaxation terms added to an assembled flow: θ̇_t += τ(θ_s − θ_t), or −λθ_t
without a source (docs/model.md §6). The symbolic twin of :mod:`symcollapse.numerics.terms`,
for the exact statements (invariants, fixed points) on small graphs."""
from __future__ import annotations

import sympy as sp

from ..errors import InvalidParameterError
from .assemble import SymbolicSystem


def add_relaxation(system: SymbolicSystem, targets, rate, sources=None) -> SymbolicSystem:
    """The system with θ̇_t += rate·(θ_s − θ_t) for each target symbol t (paired with sources s),
    or θ̇_t += −rate·θ_t when ``sources`` is None."""
    index = {s: k for k, s in enumerate(system.state)}
    targets = list(targets)
    sources = None if sources is None else list(sources)
    if sources is not None and len(sources) != len(targets):
        raise InvalidParameterError(f"sources and targets must pair up; got {len(sources)} and {len(targets)}")
    missing = [t for t in targets + (sources or []) if t not in index]
    if missing:
        raise InvalidParameterError(f"relaxation symbols must be state symbols; got {missing[:3]}")
    flow = list(system.flow)
    for j, t in enumerate(targets):
        src = sources[j] if sources is not None else 0
        flow[index[t]] = sp.expand(flow[index[t]] + rate * (src - t))
    return SymbolicSystem(system.state, sp.ImmutableMatrix(flow), system.blocks, system.rates)
