"""Atomic output: write to a temporary file in the target folder, then rename over the target
(the writers are :mod:`symcollapse.atomic`'s, re-exported here), and byte-reproducible figures."""
from __future__ import annotations

import io
import re
from pathlib import Path

from matplotlib.text import Text

from ..atomic import (STALE_TEMP_AGE, _HOST, _TEMP, _pid_alive, _temp_name,  # noqa: F401  (re-exported)
                      atomic_write_bytes, atomic_write_text, ensure_writable_dir, sweep_stale_temps)


_SUBSCRIPT = None


def mathtext_label(text: str) -> str:
    """Literal subscripts as mathtext: 'Δ_min' -> '$Δ_{\\mathrm{min}}$', 'r_s' -> '$r_{s}$',
    'η_x=η_y=1' -> '$η_{x}$=$η_{y}$=1' (text already between $…$ is left alone)."""
    global _SUBSCRIPT
    if _SUBSCRIPT is None:
        _SUBSCRIPT = re.compile(r"(?<![\w\\])([^\W\d_]|∞)_(\{[^}$]*\}|[^\W_]+|∞)")

    def sub(m):
        base, idx = m.group(1), m.group(2).strip("{}")
        idx = rf"\mathrm{{{idx}}}" if len(idx) > 1 and idx.isalpha() else idx
        return f"${base}_{{{idx}}}$"

    parts = text.split("$")
    if len(parts) % 2 == 0:  # an unmatched $: not mathtext, leave as is
        return text
    return "$".join(_SUBSCRIPT.sub(sub, seg) if k % 2 == 0 else seg for k, seg in enumerate(parts))


def _mathtext_labels(fig) -> None:
    for t in fig.findobj(Text):
        txt = t.get_text()
        if "_" in txt:
            new = mathtext_label(txt)
            if new != txt:
                t.set_text(new)


def atomic_savefig(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure as PNG atomically with fixed metadata (byte-reproducible), and
    the same figure as a vector PDF beside it (``x.png`` -> ``x.pdf``, no dates or software
    metadata). Literal subscripts in every text ('r_s') are written as mathtext first."""
    path = Path(path)
    _mathtext_labels(fig)
    buf = io.BytesIO()
    kwargs.setdefault("dpi", 120)
    fig.savefig(buf, format="png", metadata={"Software": None}, **kwargs)
    if path.suffix.lower() == ".png":
        vec = io.BytesIO()
        pdf_kw = {k: v for k, v in kwargs.items() if k != "dpi"}
        fig.savefig(vec, format="pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None},
                    **pdf_kw)
        atomic_write_bytes(path.with_suffix(".pdf"), vec.getvalue())
    return atomic_write_bytes(path, buf.getvalue())
