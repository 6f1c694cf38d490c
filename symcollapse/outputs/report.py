r"""The verified derivation report: for every model job, its verification rows (claim, what it
was compared with, measured error) and its figures, as one LaTeX document (report.tex) and a
Markdown version (report.md); the PDF too when ``pdflatex`` is available. Atomic writes."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..deprecation import moved_names
from ..verification import Check
from .io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .latex import PREAMBLE

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon", "η": r"\eta",
    "θ": r"\theta", "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma",
    "τ": r"\tau", "φ": r"\phi", "ω": r"\omega", "Δ": r"\Delta", "Σ": r"\Sigma", "Ω": r"\Omega",
    "ℓ": r"\ell", "∂": r"\partial", "∇": r"\nabla", "√": r"\surd", "≡": r"\equiv", "≈": r"\approx",
    "≤": r"\le", "≥": r"\ge", "≠": r"\ne", "→": r"\to", "±": r"\pm", "×": r"\times", "·": r"\cdot",
    "−": "-", "∈": r"\in", "∝": r"\propto", "∞": r"\infty", "⊗": r"\otimes", "‖": r"\|",
    "²": "^{2}", "³": "^{3}", "ᵀ": "^{T}", "₀": "_{0}", "₁": "_{1}", "₂": "_{2}", "₊": "_{+}", "₋": "_{-}",
    "ᵢ": "_{i}", "ₖ": "_{k}", "ᶜ": "^{c}", "\u0307": "",  # combining dot: dropped (u̇ -> u)
    "κ": r"\kappa", "ξ": r"\xi", "ψ": r"\psi", "χ": r"\chi", "ζ": r"\zeta", "Φ": r"\Phi", "Λ": r"\Lambda",
    "Γ": r"\Gamma", "∫": r"\int", "½": r"\tfrac{1}{2}", "∑": r"\sum", "⟨": r"\langle", "⟩": r"\rangle",
    "ⁿ": "^{n}", "₃": "_{3}", "ₙ": "_{n}", "ᵦ": "_{\\beta}", "…": r"\ldots", "′": "'", "∀": r"\forall",
    "≪": r"\ll", "≫": r"\gg", "⊂": r"\subset", "∪": r"\cup", "∩": r"\cap", "⁺": "^{+}", "⁻": "^{-}",
}
_TEX_TEXT = {"§": r"\S{}", "—": "---", "–": "--", "’": "'", "“": "``", "”": "''", "é": r"\'e", "ü": r'\"u'}


def latex_text(s: str) -> str:
    """Plain text (with the Unicode math the claims use) as pdflatex-safe LaTeX; adjacent math
    symbols share one $…$ group (τ² -> $\\tau^{2}$); unknown non-ASCII characters become '?'."""
    pieces = []  # (is_math, text)
    for ch in str(s):
        if ch in _TEX_SPECIAL:
            pieces.append((False, _TEX_SPECIAL[ch]))
        elif ch in _TEX_TEXT:
            pieces.append((False, _TEX_TEXT[ch]))
        elif ch in _TEX_UNICODE:
            if _TEX_UNICODE[ch]:
                pieces.append((True, _TEX_UNICODE[ch]))
        else:
            pieces.append((False, ch if ord(ch) < 128 else "?"))
    out, k = [], 0
    while k < len(pieces):
        is_math, text = pieces[k]
        if not is_math:
            out.append(text)
            k += 1
            continue
        group = []
        while k < len(pieces) and pieces[k][0]:
            group.append(pieces[k][1])
            k += 1
        body = "".join(g if not (g[:1] == "\\" and g[-1:].isalpha() and j + 1 < len(group)
                                 and group[j + 1][:1].isalpha()) else g + " "
                       for j, g in enumerate(group))
        out.append(f"${body}$")
    return "".join(out)


def checks_table_latex(rows, *, long: bool = True) -> str:
    """A table of verification rows: claim, compared with, relative error, tolerance, result
    (a longtable, which needs the longtable package, or a plain tabular with ``long=False``)."""
    body = []
    for c in rows:
        res = "pass" if c.passed else r"\textbf{FAIL}"
        body.append(f"{latex_text(c.claim)} & {latex_text(c.compared_with)} & {c.rel_error:.2e} & "
                    f"{c.tol:.0e} & {res} \\\\")
    cols = ("{>{\\raggedright\\arraybackslash}p{0.45\\textwidth}"
            ">{\\raggedright\\arraybackslash}p{0.24\\textwidth}rrl}")  # ragged: no stretched words
    head = "claim & verified against & rel.\\ error & tol & \\\\ \\hline\n"
    if long:
        return ("{\\small\n\\begin{longtable}" + cols + "\n" + head + "\\endhead\n"
                + "\n".join(body) + "\n\\end{longtable}}\n")
    return ("\\begin{center}{\\small\n\\begin{tabular}" + cols + "\n" + head
            + "\n".join(body) + "\n\\end{tabular}}\\end{center}\n")


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def checks_table_markdown(rows) -> str:
    """The same rows as a Markdown table."""
    lines = ["| claim | derived | verified against | rel. error | tol | result |",
             "|---|---|---|---:|---:|---|"]
    for c in rows:
        lines.append(f"| {_md_cell(c.claim)} | {_md_cell(c.derived)} | {_md_cell(c.compared_with)} | "
                     f"{c.rel_error:.2e} | {c.tol:.0e} | {'pass' if c.passed else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ModelSection:
    """One job's part of the report."""

    model: str
    rows: tuple
    figures: tuple  # paths relative to the report folder
    documents: tuple  # LaTeX derivation documents, relative paths
    captions: tuple = ()  # one per figure (the job's CAPTIONS[stem]); None where it has none


@dataclass(frozen=True)
class Report:
    """What was written: paths, the PDF (or None) with the reason, and the verification tally."""

    tex: Path
    md: Path
    pdf: Path | None
    pdf_message: str
    sections: tuple

    @property
    def n_checks(self) -> int:
        return sum(len(s.rows) for s in self.sections)

    @property
    def failed(self) -> list[Check]:
        return [r for s in self.sections for r in s.rows if not r.passed]


def collect(modules, out: Path, *, figures: bool = True, documents: bool = True) -> tuple:
    """Run each job's checks and write its LaTeX and figures under ``out``; return the sections."""
    fig_dir = ensure_writable_dir(out / "figures")
    tex_dir = ensure_writable_dir(out / "derivations")
    sections = []
    for m in modules:
        rows = tuple(m.checks())
        figs = tuple(Path(p).relative_to(out) for p in m.write_figures(fig_dir)) if figures else ()
        docs = tuple(Path(p).relative_to(out) for p in m.write_latex(tex_dir)) if documents else ()
        caps = getattr(m, "CAPTIONS", {}) or {}
        sections.append(ModelSection(m.MODEL, rows, figs, docs, tuple(caps.get(p.stem) for p in figs)))
    return tuple(sections)


def document_body(text: str) -> str:
    """The body of a standalone derivation document, to be included in the report: what lies
    between \\maketitle and \\end{document}, with sections demoted one level and the abstract
    kept as a paragraph."""
    start = text.find("\\maketitle")
    start = text.find("\\begin{document}") + len("\\begin{document}") if start < 0 else start + len("\\maketitle")
    end = text.rfind("\\end{document}")
    body = text[start:end if end >= 0 else len(text)]
    body = body.replace("\\begin{abstract}", "").replace("\\end{abstract}", "")
    for a, b in (("\\subsubsection", "\\paragraph"), ("\\subsection", "\\subsubsection"),
                 ("\\section", "\\subsection")):
        body = body.replace(a + "{", b + "{").replace(a + "*{", b + "*{")
    return body.strip() + "\n"


def _caption(s, k: int, *, tex: bool) -> str:
    """The job's caption (LaTeX text with $…$ math, also readable in Markdown), else a plain one."""
    cap = s.captions[k] if k < len(s.captions) else None
    if cap:
        return cap
    plain = f"{s.model}: {s.figures[k].stem.replace('_', ' ')}"
    return latex_text(plain) if tex else plain


def report_latex(sections, folder: Path | None = None) -> str:
    """The report as one LaTeX document: per model, its derivation documents (the equations
    SymPy derived, included from ``folder``), its verification table and its figures (the
    vector PDF beside each PNG when there is one) with captions."""
    total = sum(len(s.rows) for s in sections)
    failed = sum(1 for s in sections for r in s.rows if not r.passed)
    parts = [PREAMBLE, "\\usepackage{longtable}\n",
             "\\title{symcollapse: verified derivation report}\n\\date{}\n\\begin{document}\n\\maketitle\n",
             f"Every derived statement below was compared with an independent number or a published "
             f"closed form: {total} checks, {total - failed} passed, {failed} failed. A symbolic row "
             f"passes when the simplified difference is exactly 0 (tolerance 0).\n"]
    for s in sections:
        parts.append(f"\\section{{{latex_text(s.model)}}}\n")
        if s.documents:
            parts.append("Derivation documents: " + ", ".join(
                f"\\texttt{{{latex_text(str(p))}}}" for p in s.documents) + ".\n\n")
            for p in s.documents:
                src = (folder / p) if folder is not None else None
                if src is not None and src.exists():
                    parts.append(f"\\subsection{{Derivation: {latex_text(p.stem)}}}\n"
                                 + document_body(src.read_text(encoding="utf-8")))
        parts.append("\\subsection{Verification}\n")
        parts.append(checks_table_latex(s.rows) if s.rows else "No checks.\n")
        for k, p in enumerate(s.figures):
            vec = p.with_suffix(".pdf")
            use = vec if folder is not None and p.suffix == ".png" and (folder / vec).exists() else p
            parts.append("\\begin{figure}[htbp]\\centering\n\\includegraphics[width=0.8\\textwidth]{"
                         f"{use.as_posix()}}}\n\\caption{{{_caption(s, k, tex=True)}}}\n\\end{{figure}}\n")
        parts.append("\\clearpage\n")
    parts.append("\\end{document}\n")
    return "".join(parts)


def report_markdown(sections) -> str:
    """The report in Markdown (tables and image links), readable on a code-hosting site."""
    total = sum(len(s.rows) for s in sections)
    failed = sum(1 for s in sections for r in s.rows if not r.passed)
    parts = ["# symcollapse: verified derivation report\n",
             f"{total} checks, {total - failed} passed, {failed} failed. Each row compares a derived "
             "statement with an independent number or a published closed form; a symbolic row passes "
             "when the simplified difference is exactly 0.\n"]
    for s in sections:
        parts.append(f"\n## {s.model}\n")
        if s.documents:
            parts.append("Derivations: " + ", ".join(f"[{p.name}]({p.as_posix()})" for p in s.documents) + "\n")
        parts.append("\n" + (checks_table_markdown(s.rows) if s.rows else "No checks.\n"))
        for k, p in enumerate(s.figures):
            parts.append(f"\n![{p.stem}]({p.as_posix()})\n\n*Figure: {_md_cell(_caption(s, k, tex=False))}*\n")
    return "".join(parts)


def build_pdf(tex_path: Path, timeout: float = 120.0) -> tuple[Path | None, str]:
    """Run pdflatex (twice, for the longtables) in a scratch folder and move the PDF into place
    atomically; returns (path or None, message)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        return None, "pdflatex is not installed: report.pdf was not built (report.tex and report.md were)"
    tex_path = Path(tex_path).resolve()  # TEXINPUTS must not be relative to pdflatex's cwd (--out report)
    with tempfile.TemporaryDirectory(dir=tex_path.parent, prefix=".pdf.") as tmp:
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp}", tex_path.name]
        try:
            for _ in range(2):
                res = subprocess.run(cmd, cwd=tex_path.parent, capture_output=True, timeout=timeout,
                                     env={**os.environ, "TEXINPUTS": f"{tex_path.parent}:"})
                if res.returncode != 0:
                    return None, f"pdflatex failed (exit {res.returncode}); see report.tex"
        except subprocess.TimeoutExpired:
            return None, f"pdflatex did not finish within {timeout:g} s"
        pdf = Path(tmp) / (tex_path.stem + ".pdf")
        target = tex_path.with_suffix(".pdf")
        atomic_write_bytes(target, pdf.read_bytes())
    return target, f"built {target.name}"


def build_report(out, modules, *, figures: bool = True, documents: bool = True, pdf: bool = True) -> Report:
    """Run the given jobs, write their outputs and report.tex / report.md (and report.pdf) under ``out``.
    (:func:`symcollapse.jobs.write_report` runs every job when none are given.)"""
    out = ensure_writable_dir(out)
    sections = collect(modules, out, figures=figures, documents=documents)
    tex = atomic_write_text(out / "report.tex", report_latex(sections, out))
    md = atomic_write_text(out / "report.md", report_markdown(sections))
    pdf_path, msg = build_pdf(tex) if pdf else (None, "PDF not requested")
    return Report(tex, md, pdf_path, msg, sections)


# write_report's default (every job) belongs to the jobs layer: symcollapse.jobs.write_report
MOVED = {"write_report": "symcollapse.jobs"}
__getattr__ = moved_names(__name__, MOVED)
