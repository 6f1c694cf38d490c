"""One exception hierarchy for everything symcollapse refuses or cannot do."""
from __future__ import annotations


class SymcollapseError(Exception):
    """Base class of every error raised on purpose by symcollapse."""


class InvalidParameterError(SymcollapseError, ValueError):
    """A user-supplied parameter is outside its allowed range (the message names both)."""


class DerivationCheckError(SymcollapseError):
    """A derived symbolic result disagreed with its independent numerical check."""


class IntegrationError(SymcollapseError):
    """A numerical integration failed or produced non-finite values."""


class ProblemTooLargeError(SymcollapseError):
    """The problem is too large for the chosen method (the message gives its size, what the method
    needs and which option to use instead)."""


class UnsupportedExpression(SymcollapseError, ValueError):
    """The expression is outside the polynomial matrix grammar of the matrix calculus."""
