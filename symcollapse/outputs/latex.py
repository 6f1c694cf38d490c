r"""LaTeX from derived objects: every equation is printed by SymPy's printer, none typed in."""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions import MatrixSymbol

from ..symbolic import matcalc as mc
from ..symbolic.invariants import QuadraticInvariant
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


#: visible characters of display math that fit the text width (11pt, 2.2 cm margins), with room
LINE_CHARS = 62


def visible_length(latex: str) -> int:
    """A rough width of display math: characters left after dropping macros, braces and \\left/\\right."""
    import re

    s = re.sub(r"\\(left|right|operatorname|mathrm|frac|sqrt)", "", latex)
    s = re.sub(r"\\[a-zA-Z]+", "x", s)
    s = re.sub(r"[{}^_ ]", "", s)
    return len(s)


def _terms(expr) -> list:
    """Signed LaTeX of the top-level terms of a sum, in SymPy's print order."""
    out = []
    for t in sp.Add.make_args(expr) if isinstance(expr, sp.Add) else (expr,):
        neg = t.could_extract_minus_sign()
        out.append(("- " if neg else "+ ") + tex(-t if neg else t))
    return out


def split_lines(terms: list, width: int = LINE_CHARS) -> list:
    """Greedy grouping of signed terms into lines of at most ``width`` visible characters."""
    lines, cur, n = [], [], 0
    for t in terms:
        w = visible_length(t)
        if cur and n + w > width:
            lines.append(" ".join(cur))
            cur, n = [], 0
        cur.append(t)
        n += w
    if cur:
        lines.append(" ".join(cur))
    first = lines[0]
    lines[0] = first[2:] if first.startswith("+ ") else first
    return lines


def equation(lhs, rhs=None, *, label: str | None = None) -> str:
    """A display equation ``lhs = rhs`` (strings are used verbatim, other objects via SymPy); a
    long scalar SymPy sum (or a fraction whose numerator is one) is broken over several lines,
    any other equation is shrunk to the line width if it is wider (``\\fitmath`` of :data:`PREAMBLE`)."""
    left = lhs if isinstance(lhs, str) else tex(lhs)
    lab = f"\\label{{{label}}}" if label else ""
    if rhs is not None and not isinstance(rhs, (str, sp.MatrixBase)) and isinstance(rhs, sp.Expr):
        body = tex(rhs)
        if visible_length(left) + visible_length(body) > LINE_CHARS:
            expr = rhs
            if not isinstance(expr, sp.Add):
                expr = sp.expand(expr)
            if isinstance(expr, sp.Add) and len(expr.args) > 1:
                terms = _terms(expr)
                if max(map(visible_length, terms)) > LINE_CHARS:  # products of sums: multiply out
                    terms = _terms(sp.expand(expr))
                lines = split_lines(terms)
                joined = (" \\\\\n").join([f"{left} = {lines[0]}"] + lines[1:])
                return f"\\begin{{multline}}{lab}\n{joined}\n\\end{{multline}}\n"
    body = left if rhs is None else f"{left} = {rhs if isinstance(rhs, str) else tex(rhs)}"
    return f"\\begin{{equation}}{lab}\n\\fitmath{{{body}}}\n\\end{{equation}}\n"


def section(title: str, *parts: str) -> str:
    return f"\\section{{{title}}}\n" + "\n".join(parts) + "\n"


def document(title: str, *sections: str, abstract: str | None = None) -> str:
    """A standalone article (compiles with pdflatex); deterministic text for fixed input."""
    abs_ = f"\\begin{{abstract}}\n{abstract}\n\\end{{abstract}}\n" if abstract else ""
    return (PREAMBLE + f"\\title{{{title}}}\n\\date{{}}\n\\begin{{document}}\n\\maketitle\n"
            + abs_ + "\n".join(sections) + "\\end{document}\n")


# --- matrix-level flows -----------------------------------------------------------------------
def _long_equation(lhs: str, prefix: str, terms: list, per_line: int = 4) -> str:
    r"""``lhs = prefix [t₁ t₂ …]`` over several lines (multline) when there are many terms."""
    first = terms[0][2:] if terms and terms[0].startswith("+ ") else (terms[0] if terms else "0")
    rest = terms[1:]
    if len(terms) <= per_line:
        body = " ".join([first] + rest)
        inner = body if not prefix else prefix + r"\left[" + body + r"\right]"
        return f"\\begin{{equation*}}\n\\fitmath{{{lhs} = {inner}}}\n\\end{{equation*}}\n"
    lines, cur = [], [first]
    for t in rest:
        if len(cur) >= per_line:
            lines.append(" ".join(cur))
            cur = []
        cur.append(t)
    lines.append(" ".join(cur))
    open_, close = (prefix + r"\Big[", r"\Big]") if prefix else ("", "")
    body = (" \\\\\n").join([f"{lhs} = {open_}{lines[0]}"] + lines[1:-1] + [lines[-1] + close] if len(lines) > 1
                            else [f"{lhs} = {open_}{lines[0]}{close}"])
    return f"\\begin{{multline*}}\n{body}\n\\end{{multline*}}\n"


def matrix_flow_latex(mflow, *, jvp: bool = True) -> str:
    r"""The derived flow of a matrix-level loss in matrix notation, valid for every d:
    ẋ_i = η_x Σ_c P_ic F_x(x_i, y_c), ẏ_c = η_y Σ_i P_ic F_y(x_i, y_c), θ̇ = η_θ Σ_{i,c} P_ic F_θ,
    the forces F_b = −∂ℓ/∂θ_b with sg shown where it acted, and (``jvp``) the Jacobian-vector
    products δθ̇ = (∂θ̇/∂θ) δθ; every expression printed by SymPy's printer from the derived chains."""
    loss = mflow.loss
    sym = dict(loss.symbols)
    edge = {}
    for b, m in sym.items():
        idx = "c" if b == "y" else ("i" if b in ("x", "u") else None)
        edge[m.name] = MatrixSymbol(f"{m.name}_{{{idx}}}", *m.shape) if idx else m
    plain = {m.name: m for m in sym.values()}
    used = loss.expr.atoms(MatrixSymbol)
    out = [equation(r"\ell(" + ", ".join(tex(sym[b]) for b in ("x", "y", "u") if b in sym and sym[b] in used) + ")",
                    loss.expr)]
    for b in mflow.learned:
        out.append(f"\\begin{{equation*}}\n\\fitmath{{F_{{{b}}} = {mc.factored_latex(mflow.forces_with_sg[b], plain)}}}\n"
                   "\\end{equation*}\n")
    for b in mflow.learned:
        eta = tex(loss.rate(b))
        m = sym[b]
        if b == "x":
            lhs, pre = r"\dot " + tex(m) + "_{i}", eta + r" \sum_{c} P_{ic}"
        elif b == "y":
            lhs, pre = r"\dot " + tex(m) + "_{c}", eta + r" \sum_{i} P_{ic}"
        else:
            lhs, pre = r"\dot " + tex(m), eta + r" \sum_{i,c} P_{ic}"
        out.append(_long_equation(lhs, pre, mc.factored_terms(mflow.forces[b], edge)))
    if jvp:
        for b in mflow.learned:
            m = sym[b]
            lhs = {"x": r"\delta\dot " + tex(m) + "_{i}", "y": r"\delta\dot " + tex(m) + "_{c}"}.get(
                b, r"\delta\dot " + tex(m))
            pre = tex(loss.rate(b)) + (r" \sum_{c} P_{ic}" if b == "x" else r" \sum_{i} P_{ic}" if b == "y"
                                       else r" \sum_{i,c} P_{ic}")
            out.append(_long_equation(lhs, pre, mc.factored_terms(mflow.jvps[b], edge), per_line=3))
    return "".join(out)


def invariants_latex(invariants) -> str:
    """LaTeX display equations I_k = θᵀQ_kθ, one per invariant found."""
    if not invariants:
        return "No invariant of this form exists.\n"
    return "".join(equation(f"I_{{{k + 1}}}", inv.expr if isinstance(inv, QuadraticInvariant) else inv)
                   for k, inv in enumerate(invariants))
