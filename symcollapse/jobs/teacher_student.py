"""Deprecated alias of :mod:`symcollapse.models.teacher_student.job` (the model's package)."""
from ..deprecation import alias_module

__deprecated_alias_of__ = "symcollapse.models.teacher_student.job"
alias_module(__name__, __deprecated_alias_of__)
