"""Deprecated alias of :mod:`symcollapse.models.head.meanfield` (the model's package)."""
from ..deprecation import alias_module

__deprecated_alias_of__ = "symcollapse.models.head.meanfield"
alias_module(__name__, __deprecated_alias_of__)
