"""The stop-gradient operator sg: its value is its argument, its derivative is zero."""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions import MatrixExpr, Transpose

from ..errors import InvalidParameterError, UnsupportedExpression


class stop_gradient(sp.Function):  # noqa: N801  (reads like the math: sg(x))
    r"""sg(a): value a, d sg(a)/dθ = 0; printed as ``\operatorname{sg}``."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        """sg(sg(a)) = sg(a): the outer operator already blocks every derivative."""
        if isinstance(arg, stop_gradient):
            return arg
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero

    def _eval_derivative(self, s):  # chain rule with a zero outer derivative
        return sp.S.Zero

    def _latex(self, printer, exp=None):
        inner = printer._print(self.args[0])
        tex = r"\operatorname{sg}\left(%s\right)" % inner
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


class MatrixStopGradient(MatrixExpr):
    r"""sg(A) for a matrix expression A: value A, derivative zero; printed ``\operatorname{sg}``."""

    def __new__(cls, arg):
        arg = sp.sympify(arg)
        if not isinstance(arg, MatrixExpr):
            raise UnsupportedExpression("MatrixStopGradient needs a matrix expression")
        return sp.Basic.__new__(cls, arg)

    @property
    def arg(self):
        return self.args[0]

    @property
    def shape(self):
        return self.args[0].shape

    def _entry(self, i, j, **kw):
        return stop_gradient(self.args[0]._entry(i, j, **kw))

    def _eval_transpose(self):
        return MatrixStopGradient(Transpose(self.args[0]))

    def _latex(self, printer, exp=None):
        inner = printer._print(self.args[0])
        tex = r"\operatorname{sg}\left(%s\right)" % inner
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


def sg(expr):
    """Apply stop-gradient to a scalar expression, elementwise to an explicit matrix, or as one
    node sg(A) to a symbolic matrix expression (MatrixSymbol products of any size)."""
    if isinstance(expr, MatrixExpr) and not isinstance(expr, sp.MatrixBase):
        return MatrixStopGradient(expr)
    if isinstance(expr, sp.MatrixBase):
        return sp.ImmutableMatrix(expr.applyfunc(stop_gradient))
    if isinstance(expr, bool) or not isinstance(expr, (sp.Expr, int, float)):
        raise InvalidParameterError(
            f"sg applies to a SymPy expression or matrix; got {type(expr).__name__} {expr!r}")
    return stop_gradient(expr)


def strip_stop_gradient(expr):
    """Replace every sg(a) by a: the value of the expression, used after differentiation."""
    if isinstance(expr, sp.MatrixBase):
        return sp.ImmutableMatrix(expr.applyfunc(strip_stop_gradient))
    return sp.sympify(expr).replace(lambda e: isinstance(e, stop_gradient), lambda e: e.args[0])


def normalize_stop_gradient(expr):
    """sg(f(sg(a), b)) -> sg(f(a, b)): an sg inside an sg changes neither the value nor the
    derivative (the outer one already blocks it), so only outermost sg's are kept."""
    if isinstance(expr, sp.MatrixBase):
        return sp.ImmutableMatrix(expr.applyfunc(normalize_stop_gradient))
    return sp.sympify(expr).replace(
        lambda e: isinstance(e, stop_gradient) and e.args[0].has(stop_gradient),
        lambda e: stop_gradient(strip_stop_gradient(e.args[0])))


def freeze_stop_gradient(expr, frozen: dict):
    """Replace sg(a) by a(θ₀): a with its symbols swapped for frozen copies (for FD checks)."""
    return sp.sympify(expr).replace(lambda e: isinstance(e, stop_gradient),
                                    lambda e: e.args[0].xreplace(frozen))


def has_stop_gradient(expr) -> bool:
    """True if sg occurs anywhere in the expression."""
    if isinstance(expr, sp.MatrixBase):
        return any(has_stop_gradient(e) for e in expr)
    return sp.sympify(expr).has(stop_gradient)
