"""The symbolic core: losses, stop-gradient, flows, Jacobians, invariants, fixed points, sectors."""
from .flow import EdgeFlow, derive_flow
from .loss import EdgeLoss
from .stopgrad import has_stop_gradient, sg, stop_gradient, strip_stop_gradient
from .symbols import matrix, rate, sqnorm, vector

__all__ = ["EdgeFlow", "EdgeLoss", "derive_flow", "has_stop_gradient", "matrix", "rate", "sg",
           "sqnorm", "stop_gradient", "strip_stop_gradient", "vector"]
