"""The losses every matrix-level kernel is checked on (shared by the kernel tests): the head with
each stop-gradient placement, with and without a learned head, the embedding model and the
teacher–student model (docs/model.md §2–§4)."""
import numpy as np

from symcollapse.symbolic import losses

CASES = ([("head", sg, lh) for sg in losses.SG_CHOICES for lh in (True, False)]
         + [("embedding", None, None), ("student", "both", False), ("student", "both", True),
            ("student", "none", True)])


def matrix_case(case, d: int, rng: np.random.Generator, P, D: int):
    """(matrix loss, rates, dims, extra system options, frozen blocks) of one case at head width d
    (data dimension D for the teacher–student model), random data and frozen blocks from ``rng``."""
    kind, sg, flag = case
    dims, kw = {"d": d}, {}
    if kind == "head":
        ml = losses.head_matrix_loss(sg, flag)
        rates = {"x": 1.1, "y": 0.6, "W": 0.8}
    elif kind == "embedding":
        ml = losses.embedding_matrix_loss()
        rates = {"x": 1.1, "y": 0.6}
    else:
        ml = losses.student_matrix_loss(flag, sg)
        rates = {"y": 0.6, "S": 0.9, "W": 0.8} if flag else {"y": 0.6, "S": 0.9}
        dims["D"] = D
        kw["data"] = rng.normal(size=(P.shape[0], D))
    frozen = {b: rng.normal(size=ml.shape(b, dims)) for b in ml.shared_names if b not in ml.learned}
    return ml, rates, dims, kw, frozen
