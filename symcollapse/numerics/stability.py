"""Deprecated alias of :mod:`symcollapse.models.head.stability` (the model's package)."""
from ..deprecation import alias_module

__deprecated_alias_of__ = "symcollapse.models.head.stability"
alias_module(__name__, __deprecated_alias_of__)
