r"""Compiled NumPy kernels of a derived (component-level) edge flow: the public names, re-exported.

The work is split by job: :mod:`.lambdify` (lambdified kernels), :mod:`.structure` (affine /
moment structure detection), :mod:`.compile` (:class:`CompiledFlow`, :func:`compile_loss`),
:mod:`.selfcheck` (finite-difference verification), :mod:`.kernel_cache` (serialisation of the
generated kernels). The dimension-free matrix-level path lives in :mod:`.matrix_kernels`.
"""
from __future__ import annotations

from .compile import CompiledFlow, compile_flow, compile_loss
from .kernel_cache import _from_source, _kernels_from_sources, kernel_sources
from .lambdify import CSE_MAX_TERMS, AffineCoefficient, LazyKernels, _affine_coefficient, _stack, lambdify_list
from .selfcheck import _check_instance, relative_error, verify_compiled, verify_flow, verify_jacobian
from .structure import _affine_structure, _moment_structure, _node_parts, moment_index

__all__ = ["CSE_MAX_TERMS", "AffineCoefficient", "CompiledFlow", "LazyKernels", "compile_flow",
           "compile_loss", "kernel_sources", "lambdify_list", "moment_index", "relative_error",
           "verify_compiled", "verify_flow", "verify_jacobian"]
