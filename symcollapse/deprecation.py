"""Old module paths kept as deprecated aliases of a module's new home.

A moved module keeps its old path as an alias module of four lines and nothing else (the
import-graph test checks the shape)::

    \"\"\"Deprecated alias of :mod:`new.path`.\"\"\"
    from symcollapse.deprecation import alias_module

    __deprecated_alias_of__ = "new.path"
    alias_module(__name__, __deprecated_alias_of__)

Importing the old path warns (DeprecationWarning) and binds the old name to the new module
itself, so every name — functions, constants, caches, private helpers — is the same object
under both paths.

A module that lost a few names to a higher layer declares them with :func:`moved_names`
(``__getattr__ = moved_names(__name__, MOVED)``, ``MOVED = {name: new module}``): reading one
warns and returns the object from its new module.
"""
from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

MARKER = "__deprecated_alias_of__"


def alias_module(old: str, new: str) -> None:
    """Make module ``old`` an alias of module ``new`` (importing ``old`` warns once)."""
    warnings.warn(f"{old} is deprecated: it moved to {new} (import it from there)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)


def is_alias(path) -> bool:
    """Whether the source file at ``path`` is an alias module (it assigns the marker at top level)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == MARKER for t in n.targets)
               for n in tree.body)


def moved_names(old: str, moved: dict):
    """A module ``__getattr__`` for names that left module ``old``: ``moved`` maps each name to
    the module that now defines it. Reading one warns (DeprecationWarning) and returns the new
    object; the old module no longer imports the new one (the import graph stays one-way)."""

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(f"{old}.{name} is deprecated: it moved to {moved[name]}.{name} (import it from there)",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
