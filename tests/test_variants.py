"""docs/model.md §5 variants through the public builders: each derived by the same engine."""
import numpy as np
import pytest
import sympy as sp

import symcollapse.closed_forms as cf
from symcollapse.errors import InvalidParameterError
from symcollapse.models.couplings import balanced_couplings
from symcollapse.numerics.graph import CouplingGraph
from symcollapse.symbolic.flow import derive_flow
from symcollapse.variants import embedding_loss, head_loss, make_variant, student_loss


def _expected_head_forces(loss, sg):
    # 'sample'/'none': the target y in ‖W x − y‖² is not detached; 'label'/'none': nor is x in ‖W y − x‖²
    detached = {"both": ("x", "y"), "label": ("y",), "sample": ("x",), "none": ()}[sg]
    fx, fy, _ = cf.head_edge_forces(loss.x, loss.y, loss.block("W"), detached)
    return fx, fy


@pytest.mark.parametrize("sg", ["both", "label", "sample", "none"])
def test_stop_gradient_placements_give_the_expected_forces(sg):
    loss = head_loss(2, sg)
    flow = derive_flow(loss)
    fx, fy = _expected_head_forces(loss, sg)
    assert sp.expand(flow.force("x") - fx) == sp.zeros(2, 1)
    assert sp.expand(flow.force("y") - fy) == sp.zeros(2, 1)
    _, _, fW = cf.head_edge_forces(loss.x, loss.y, loss.block("W"))  # the head force does not depend on sg
    assert sp.expand(flow.force("W") - fW) == sp.zeros(2, 2)


def test_frozen_identity_head_is_the_embedding_model():
    """docs/model.md §3: with W frozen at I the stop-gradient head flow is model (a)."""
    P = balanced_couplings(3, 2, 1)
    rates = {"x": 1.0, "y": 0.3}
    a = make_variant(head_loss(2, "both", learn_head=False), P, rates=rates).system()
    b = make_variant(embedding_loss(2), P, rates=rates).system()
    assert a.size == b.size
    v = np.random.default_rng(1).normal(size=a.size)
    np.testing.assert_allclose(a.flow_vector(v), b.flow_vector(v), rtol=1e-12, atol=1e-12)
    # but not without stop-gradient (then the frozen-head flow is twice the embedding flow)
    c = make_variant(head_loss(2, "none", learn_head=False), P, rates=rates).system()
    np.testing.assert_allclose(c.flow_vector(v), 2 * b.flow_vector(v), rtol=1e-12, atol=1e-12)


def test_mean_loss_divides_every_rate_by_N():
    P = balanced_couplings(2, 3, 1)
    s = make_variant(embedding_loss(1), P).system()
    m = make_variant(embedding_loss(1), P, mean=True).system()
    v = np.random.default_rng(2).normal(size=s.size)
    np.testing.assert_allclose(m.flow_vector(v) * P.shape[0], s.flow_vector(v), rtol=1e-12)
    assert m.loss_vector(v) * P.shape[0] == pytest.approx(s.loss_vector(v), rel=1e-12)


@pytest.mark.parametrize("omega", [1.0, 2.0])
def test_embedding_jacobian_is_minus_H_laplacian(omega):
    """Any ω, per-block rates: Jacobian = −(H L_G) ⊗ I_d (docs/model.md §2), assembled from the loss."""
    P = balanced_couplings(3, 2, 1, omega=omega)
    rates = {"x": 0.7, "y": 1.9}
    sysm = make_variant(embedding_loss(1), P, rates=rates).system()
    g = CouplingGraph.from_couplings(P)
    N, K = P.shape
    A = np.block([[np.zeros((N, N)), P], [P.T, np.zeros((K, K))]])
    L = np.diag(A.sum(1)) - A
    H = np.diag([rates["x"]] * N + [rates["y"]] * K)
    J = sysm.jacobian(np.zeros(sysm.size)).toarray()
    np.testing.assert_allclose(J, -H @ L, atol=1e-12)
    assert g.N == N


def test_student_slow_rate_is_the_weighted_laplacian_eigenvalue():
    """docs/model.md §4: spectrum of the student flow = −spec(blockdiag(η_S G, η_y I)·L_G)."""
    P = balanced_couplings(2, 2, 1)
    N, K = P.shape
    rng = np.random.default_rng(4)
    U = rng.normal(size=(N, N))
    rates = {"S": 0.8, "y": 1.3}
    loss = student_loss(1, N)
    var = make_variant(loss, P, rates=rates)
    sysm = var.system(data=U)
    J = sysm.jacobian(np.zeros(sysm.size)).toarray()
    A = np.block([[np.zeros((N, N)), P], [P.T, np.zeros((K, K))]])
    L = np.diag(A.sum(1)) - A
    M = np.block([[rates["S"] * U @ U.T, np.zeros((N, K))], [np.zeros((K, N)), rates["y"] * np.eye(K)]]) @ L
    ev_j = np.sort(np.linalg.eigvals(J).real)
    ev_m = np.sort(-np.linalg.eigvals(M).real)
    np.testing.assert_allclose(ev_j, ev_m, atol=1e-9)


def test_per_block_rate_symbols():
    loss = head_loss(1, "both", rates={"W": "alpha"})
    assert loss.rate("W") == sp.Symbol("alpha", positive=True)
    assert loss.rate("x") == sp.Symbol("eta_x", positive=True)
    flow = derive_flow(loss)
    assert flow.learned == ("x", "y", "W")


def test_bad_arguments_name_the_parameter():
    with pytest.raises(InvalidParameterError, match="sg must be one of"):
        head_loss(2, "target")
    with pytest.raises(InvalidParameterError, match="d must be"):
        embedding_loss(0)
    with pytest.raises(InvalidParameterError, match="rates must name blocks"):
        embedding_loss(1, rates={"W": "a"})
    with pytest.raises(InvalidParameterError, match="eta_x"):
        make_variant(embedding_loss(1), [[1.0]], rates={"x": -1.0})
    with pytest.raises(InvalidParameterError, match="P must"):
        make_variant(embedding_loss(1), [[np.nan]])


def test_notebook_latex_reprs():
    loss = head_loss(1, "label")
    assert loss._repr_latex_().startswith("$") and r"\operatorname{sg}\left(y\right)" in loss._repr_latex_()
    flow_tex = derive_flow(loss)._repr_latex_()
    assert "F_{x}" in flow_tex and "F_{W}" in flow_tex and r"\operatorname{sg}" in flow_tex
    var = make_variant(embedding_loss(1), balanced_couplings(2, 1, 1), mean=True)
    tex = var._repr_latex_()
    assert r"\frac{1}{3}" in tex and r"\mathbb{R}^{3\times2}" in tex


def test_models_display_as_latex_with_their_derived_edge_loss():
    import symcollapse as sc

    P = sc.balanced_couplings(2, 3, 1)
    emb = sc.EmbeddingModel(P, d=2)._repr_latex_()
    head = sc.HeadModel(P, d=2)._repr_latex_()
    ts = sc.TeacherStudentModel(D=20, n_inputs=10, K=2, d=2, eps=0.2, seed=0)._repr_latex_()
    for text, title in ((emb, "EmbeddingModel"), (head, "HeadModel"), (ts, "TeacherStudentModel")):
        assert text.startswith("$") and text.endswith("$") and title in text
        assert text.count("{") == text.count("}")
    assert r"\operatorname{sg}" in head          # the head loss carries its stop-gradient
    assert r"\operatorname{sg}" not in emb
    assert "N = 7" in emb and "K = 2" in emb    # N = Kn + mu K(K-1)/2 = 6 + 1
    assert r"\eta_{W} = 1" in head
