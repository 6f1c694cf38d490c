"""Per-model jobs of the main command: each module here derives one model, verifies it,
and writes its LaTeX and figures. ``symcollapse reproduce`` runs them all in ORDER, together with the jobs of the models
registered in :mod:`symcollapse.models.registry` (a model package may carry its own job).

A job module defines
    MODEL: str                      -- short name ('embedding', 'head', …)
    ORDER: int                      -- position in the main job
    checks() -> list[Check]         -- the verification rows of this model
    write_latex(folder) -> list[Path]    -- LaTeX documents (atomic writes)
    write_figures(folder) -> list[Path]  -- PNG figures (atomic writes)
"""
from __future__ import annotations

import importlib
import pkgutil
import warnings

from ..models.registry import registered_jobs


def job_modules() -> list:
    """All job modules (those here and those of the registered models), sorted by ORDER."""
    mods = {m.name: importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")}
    found = {m.__name__: m for m in mods.values()}
    for job in registered_jobs():
        found.setdefault(job.__name__, job)
    return sorted(found.values(), key=lambda m: (getattr(m, "ORDER", 100), m.MODEL))


def job_names() -> list[str]:
    """Deprecated: the names of the jobs; use ``[m.MODEL for m in job_modules()]``, or
    :func:`symcollapse.models.registry.model_names` for the models."""
    warnings.warn("symcollapse.jobs.job_names is deprecated; use [m.MODEL for m in job_modules()] "
                  "or symcollapse.models.registry.model_names()", DeprecationWarning, stacklevel=2)
    return [m.MODEL for m in job_modules()]
