r"""LaTeX from derived objects: every equation is printed by SymPy's printer, none typed in."""
from __future__ import annotations

import sympy as sp

from ..symbolic.stopgrad import stop_gradient  # noqa: F401  (its _latex prints \operatorname{sg})

PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage[T1]{fontenc}
\IfFileExists{lmodern.sty}{\usepackage{lmodern}}{}
\usepackage{amsmath,amssymb,graphicx,array}
\usepackage[margin=2.2cm]{geometry}
\allowdisplaybreaks
\newsavebox{\fitbox}
\newcommand{\fitmath}[1]{\sbox{\fitbox}{$\displaystyle #1$}%
\ifdim\wd\fitbox>\dimexpr\linewidth-3em\relax\resizebox{\dimexpr\linewidth-3em\relax}{!}{\usebox{\fitbox}}%
\else\usebox{\fitbox}\fi}
"""
# T1: <, >, | in text print as themselves (OT1 gave ¡, ¿, —). \fitmath: a display formula at its
# natural size, or scaled down to the line width (less the equation number) when it is wider,
# so no derived equation runs off the page.


def tex(expr) -> str:
    """SymPy's LaTeX of an expression or matrix."""
    return sp.latex(expr)


def equation(lhs, rhs=None, *, label: str | None = None) -> str:
    """A display equation ``lhs = rhs`` (strings are used verbatim, other objects via SymPy),
    shrunk to the line width if it is wider (``\\fitmath`` of :data:`PREAMBLE`)."""
    left = lhs if isinstance(lhs, str) else tex(lhs)
    body = left if rhs is None else f"{left} = {rhs if isinstance(rhs, str) else tex(rhs)}"
    lab = f"\\label{{{label}}}" if label else ""
    return f"\\begin{{equation}}{lab}\n\\fitmath{{{body}}}\n\\end{{equation}}\n"


def section(title: str, *parts: str) -> str:
    return f"\\section{{{title}}}\n" + "\n".join(parts) + "\n"


def document(title: str, *sections: str, abstract: str | None = None) -> str:
    """A standalone article (compiles with pdflatex); deterministic text for fixed input."""
    abs_ = f"\\begin{{abstract}}\n{abstract}\n\\end{{abstract}}\n" if abstract else ""
    return (PREAMBLE + f"\\title{{{title}}}\n\\date{{}}\n\\begin{{document}}\n\\maketitle\n"
            + abs_ + "\n".join(sections) + "\\end{document}\n")
