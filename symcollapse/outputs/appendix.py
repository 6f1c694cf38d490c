r"""The one helper the derivation scripts share (derivations/*.py, one per model).

A derivation script reads like a paper's appendix: numbered steps, each printed from the
derived objects as it is derived, calling the model's package directly; it ends by writing
its LaTeX beside itself (for the models, the document their job writes in
``symcollapse reproduce``, so the two cannot diverge).
"""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write_text


def step(title: str) -> None:
    """Print the heading of one step of a derivation."""
    print(f"\n== {title} ==")


def write_latex(script, text: str) -> Path:
    """Write ``text`` atomically to ``<script's folder>/<script's name>.tex`` and say so."""
    path = atomic_write_text(Path(script).resolve().with_suffix(".tex"), text)
    print(f"\nwrote {path.name}")
    return path
