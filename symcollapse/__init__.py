"""symcollapse: derive, verify and plot the dynamics of representation collapse.

Public names are imported lazily (SymPy derivations start only when used).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # symbolic core
    "EdgeLoss": "symbolic.loss", "derive_flow": "symbolic.flow", "EdgeFlow": "symbolic.flow",
    "stop_gradient": "symbolic.stopgrad", "sg": "symbolic.stopgrad",
    "vector": "symbolic.symbols", "matrix": "symbolic.symbols", "sqnorm": "symbolic.symbols",
    # numerics
    "compile_loss": "numerics.kernels", "FlowSystem": "numerics.system",
    "CouplingGraph": "numerics.graph",
    "run_sweep": "numerics.sweeps",
    # models
    "balanced_couplings": "models.couplings",
    "EmbeddingModel": "models.embedding", "embedding_sector": "models.embedding",
    "HeadModel": "models.head", "self_consistent_head": "models.head", "nu_sep": "models.head",
    "TeacherStudentModel": "models.teacher_student",
    "head_loss": "variants", "make_variant": "variants", "quadratic_invariants": "symbolic.invariants", "write_report": "jobs",
    # errors
    "SymcollapseError": "errors", "InvalidParameterError": "errors",
    "DerivationCheckError": "errors", "IntegrationError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'symcollapse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
