"""Per-model jobs of the main command: each module here derives one model, verifies it,
and writes its LaTeX and figures. ``symcollapse reproduce`` runs them all in ORDER.

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


def job_modules() -> list:
    """All job modules, sorted by ORDER."""
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.MODEL))


def job_names() -> list[str]:
    return [m.MODEL for m in job_modules()]
