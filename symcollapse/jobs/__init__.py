"""The jobs of the main command: each job derives, verifies and writes its LaTeX and figures.
A model's job lives in its package (``symcollapse/models/<name>/job.py``, registered in
:mod:`symcollapse.models.registry`); the modules here are the jobs that are not one model's
(the engine's own 30-digit rows, the literature cases). ``symcollapse reproduce`` runs them all
in ORDER. (``jobs.embedding``, ``jobs.head``, ``jobs.teacher_student`` are deprecated aliases of
the model packages' jobs and are not run twice.)

A job module defines
    MODEL: str                      -- short name ('embedding', 'head', …)
    ORDER: int                      -- position in the main job
    checks() -> list[Check]         -- the verification rows of this model
    write_latex(folder) -> list[Path]    -- LaTeX documents (atomic writes)
    write_figures(folder) -> list[Path]  -- PNG figures (atomic writes)
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

from ..deprecation import is_alias
from ..models.registry import MODELS, registered_jobs


def _own_jobs() -> list:
    """The job modules of this folder (not private ones, not deprecated aliases of moved jobs)."""
    return [m for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
            and (m.ispkg or not is_alias(Path(__path__[0]) / f"{m.name}.py"))]


def job_modules() -> list:
    """All job modules (those here and those of the registered models), sorted by ORDER."""
    mods = {m.name: importlib.import_module(f"{__name__}.{m.name}") for m in _own_jobs()}
    found = {m.__name__: m for m in mods.values()}
    for job in registered_jobs():
        found.setdefault(job.__name__, job)
    return sorted(found.values(), key=lambda m: (getattr(m, "ORDER", 100), m.MODEL))


def _constants(path: Path) -> dict:
    """The module-level ``MODEL`` / ``ORDER`` literals of a job module's source (no import)."""
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("MODEL", "ORDER"):
                try:
                    out[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def job_names() -> list[str]:
    """The job names in ORDER, read from the modules' sources without importing them (the
    command line validates ``--model`` before SymPy, SciPy or matplotlib are loaded).
    A module whose MODEL is not a literal is imported to find it."""
    found = []
    for m in _own_jobs():
        c = _constants(Path(__path__[0]) / f"{m.name}.py") if not m.ispkg else {}
        if "MODEL" not in c:
            mod = importlib.import_module(f"{__name__}.{m.name}")
            c = {"MODEL": mod.MODEL, "ORDER": getattr(mod, "ORDER", 100)}
        found.append((c.get("ORDER", 100), c["MODEL"]))
    pkg_root = Path(__path__[0]).parent
    for entry in MODELS.values():
        if entry.job and not entry.job.startswith(f"{__name__}."):
            c = _constants(pkg_root.joinpath(*entry.job.split(".")[1:]).with_suffix(".py"))
            if "MODEL" not in c:
                mod = entry.load_job()
                c = {"MODEL": mod.MODEL, "ORDER": getattr(mod, "ORDER", 100)}
            found.append((c.get("ORDER", 100), c["MODEL"]))
    return [name for _, name in sorted(found)]


def write_report(out, modules=None, *, figures: bool = True, documents: bool = True,
                 pdf: bool = True):
    """Run the jobs (default: every job, :func:`job_modules`), write their outputs and
    report.tex / report.md (and report.pdf) under ``out``; returns the
    :class:`~symcollapse.outputs.report.Report`."""
    # imported here, not at the top: the command line imports this package to check --model
    # before SymPy and matplotlib are loaded (its startup rule)
    from ..outputs.report import build_report

    return build_report(out, job_modules() if modules is None else modules, figures=figures,
                        documents=documents, pdf=pdf)
