"""Old module paths kept as deprecated aliases of a module's new home.

An alias module is four lines and nothing else (the import-graph test checks the shape)::

    \"\"\"Deprecated alias of :mod:`new.path`.\"\"\"
    from symcollapse.deprecation import alias_module

    __deprecated_alias_of__ = "new.path"
    alias_module(__name__, __deprecated_alias_of__)

Importing the old path warns (DeprecationWarning) and binds the old name to the new module
itself, so every name — functions, constants, caches, private helpers — is the same object
under both paths.
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
