"""Compile a .tex file with pdflatex and read its log: LaTeX errors and overfull boxes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PDFLATEX = shutil.which("pdflatex")
OVERFULL = re.compile(r"^Overfull \\[hv]box \(([0-9.]+)pt too (?:wide|high)\).*?(?:at lines? ([0-9-]+))?", re.M)


def compile_tex(tex: Path, outdir: Path, runs: int = 1, timeout: float = 180.0) -> tuple[int, str, Path]:
    """pdflatex in nonstop mode (files it includes are found next to ``tex``); (exit, log, pdf)."""
    tex = Path(tex).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TEXINPUTS=f"{tex.parent}{os.pathsep}")
    for _ in range(runs):
        res = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error",
                              f"-output-directory={outdir}", tex.name], cwd=tex.parent, env=env,
                             capture_output=True, timeout=timeout)
    log = (outdir / (tex.stem + ".log")).read_text(errors="replace")
    return res.returncode, log, outdir / (tex.stem + ".pdf")


def problems(log: str, max_overfull_pt: float = 10.0) -> list[str]:
    """LaTeX errors ('! …' lines) and overfull boxes wider than ``max_overfull_pt``."""
    errs = [ln for ln in log.splitlines() if ln.startswith("! ")]
    over = [m.group(0) for m in OVERFULL.finditer(log) if float(m.group(1)) > max_overfull_pt]
    return errs + over
