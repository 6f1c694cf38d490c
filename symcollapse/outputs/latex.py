r"""LaTeX from derived objects: every equation is printed by SymPy's printer, none typed in."""
from __future__ import annotations

import sympy as sp

from ..symbolic.stopgrad import stop_gradient  # noqa: F401  (its _latex prints \operatorname{sg})

PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage{amsmath,amssymb}
\usepackage[margin=2.2cm]{geometry}
\allowdisplaybreaks
"""


def tex(expr) -> str:
    """SymPy's LaTeX of an expression or matrix."""
    return sp.latex(expr)


def equation(lhs, rhs=None, *, label: str | None = None) -> str:
    """A display equation ``lhs = rhs`` (strings are used verbatim, other objects via SymPy)."""
    left = lhs if isinstance(lhs, str) else tex(lhs)
    body = left if rhs is None else f"{left} = {rhs if isinstance(rhs, str) else tex(rhs)}"
    lab = f"\\label{{{label}}}" if label else ""
    return f"\\begin{{equation}}{lab}\n{body}\n\\end{{equation}}\n"


def section(title: str, *parts: str) -> str:
    return f"\\section{{{title}}}\n" + "\n".join(parts) + "\n"


def document(title: str, *sections: str, abstract: str | None = None) -> str:
    """A standalone article (compiles with pdflatex); deterministic text for fixed input."""
    abs_ = f"\\begin{{abstract}}\n{abstract}\n\\end{{abstract}}\n" if abstract else ""
    return (PREAMBLE + f"\\title{{{title}}}\n\\date{{}}\n\\begin{{document}}\n\\maketitle\n"
            + abs_ + "\n".join(sections) + "\\end{document}\n")
