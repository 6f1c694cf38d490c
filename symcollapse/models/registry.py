r"""The registry of models: one line per model (docs/model.md §2–§4, §6).

Each entry names the model class and, optionally, its job module (checks, LaTeX, figures) as
import paths; nothing is imported until it is asked for, so the registry costs nothing at
import time and sits below every layer that uses it. ``symcollapse reproduce`` runs the jobs
of :mod:`symcollapse.jobs` and those of the registered models; the conformance test runs over
every registered model. Adding a model = its package + one line in :data:`MODELS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import InvalidParameterError


@dataclass(frozen=True)
class ModelEntry:
    """``model``: 'package.module:Class'; ``job``: its job module's path, or None."""

    model: str
    job: str | None = None

    def load(self):
        mod, _, cls = self.model.partition(":")
        return getattr(importlib.import_module(mod), cls)

    def load_job(self):
        return importlib.import_module(self.job) if self.job else None


MODELS: dict[str, ModelEntry] = {
    "embedding": ModelEntry("symcollapse.models.embedding:EmbeddingModel", "symcollapse.models.embedding.job"),
    "head": ModelEntry("symcollapse.models.head:HeadModel", "symcollapse.models.head.job"),
    "teacher_student": ModelEntry("symcollapse.models.teacher_student:TeacherStudentModel",
                                  "symcollapse.models.teacher_student.job"),
    "ema": ModelEntry("symcollapse.models.ema:EMATargetModel", "symcollapse.models.ema.job"),
}


def model_names() -> list[str]:
    """The registered model names."""
    return list(MODELS)


def get_model(name: str):
    """The model class registered under ``name``."""
    if name not in MODELS:
        raise InvalidParameterError(f"model must be one of {model_names()}; got {name!r}")
    return MODELS[name].load()


def registered_jobs() -> list:
    """The job modules of the registered models (imported on demand)."""
    return [j for j in (e.load_job() for e in MODELS.values()) if j is not None]
