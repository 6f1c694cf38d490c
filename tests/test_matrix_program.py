"""The generated flow/JVP kernels and the fixed-structure Jacobian of a MatrixFlowSystem against the
plan-walking Evaluator and the scipy.sparse assembly they replace (and finite differences)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

import symcollapse as sc
from symcollapse.models.registry import get_model, model_names
from symcollapse.numerics import matrix_jacobian, matrix_kernels, matrix_program
from symcollapse.numerics.finite_differences import central_jacobian
from symcollapse.numerics.kernels import relative_error
from symcollapse.numerics.matrix_kernels import compile_matrix_loss
from symcollapse.numerics.matrix_system import MatrixFlowSystem
from symcollapse.numerics.sample_reduction import reduction
from matrix_cases import CASES, matrix_case

#: round-off: the kernels do the same products, in places in another order or through another BLAS call
TOL = 1e-12


def _matrix_systems(model):
    """The MatrixFlowSystems inside a model's system (itself, the base of a linear-map system such
    as the teacher–student's, or the terms of a composed system)."""
    sysm = model.system
    found = [sysm, getattr(sysm, "base", None)] + [getattr(t, "system", None) for t in getattr(sysm, "terms", ())]
    return [s for s in found if isinstance(s, MatrixFlowSystem)]


def _assert_same(sysm, rng, n_states=2):
    """Fast = generic to round-off (the same products in the same order; ndarray.dot and np.matmul
    may still round differently, depending on the BLAS)."""
    for _ in range(n_states):
        v, w = rng.normal(size=sysm.size), rng.normal(size=sysm.size)
        pairs = [(sysm.flow_vector(v), sysm.flow_vector_generic(v)), (sysm.jvp(v, w), sysm.jvp_generic(v, w))]
        J, J0 = sysm.jacobian(v), sysm.jacobian_generic(v)
        assert sps.isspmatrix_csr(J) and J.shape == (sysm.size, sysm.size)
        assert J.has_canonical_format
        pairs.append((J.toarray(), J0.toarray()))
        for new, old in pairs:
            assert relative_error(new, old) <= TOL
        assert relative_error(J @ w, sysm.jvp_generic(v, w)) <= TOL


def _registry_instances():
    out = [(name, get_model(name).example()) for name in model_names()]
    head = get_model("head")
    out.append(("head-no-sg", head(head.example().P, d=2, eta_x=1.0, eta_y=0.5, eta_W=0.8, stop_gradient=False)))
    return [(n, m) for n, m in out if _matrix_systems(m)]


@pytest.mark.parametrize("name,model", _registry_instances(), ids=lambda x: x if isinstance(x, str) else "")
def test_registered_models_fast_kernels_equal_the_evaluator(name, model):
    rng = np.random.default_rng(11)
    for sysm in _matrix_systems(model):
        _assert_same(sysm, rng)


def _system(case, rng, P, d=3):
    ml, rates, dims, kw, frozen = matrix_case(case, d, rng, P, D=2)
    return MatrixFlowSystem(compile_matrix_loss(ml), P, rates=rates, dims=dims, frozen=frozen, scale=0.7, **kw)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(p) for p in c))
def test_every_loss_variant_fast_kernels_equal_the_evaluator(case):
    """Every stop-gradient variant of the head (with and without learned head), the embedding and
    the teacher–student losses, dense and CSR graph paths."""
    rng = np.random.default_rng(5)
    P = sc.balanced_couplings(3, 3, 1)
    _assert_same(_system(case, rng, P), rng)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense-P"])
def test_graph_branches_and_row_blocked_programs_equal_the_evaluator(monkeypatch, dense):
    """The CSR graph sums (the default) and the optional dense P (graphs with N·K ≤
    DENSE_GRAPH_ENTRIES), with the row-blocked sums (several blocks per array) of the generated
    code, give the Evaluator's numbers; the CSR sums bit for bit."""
    rng = np.random.default_rng(7)
    P = sc.balanced_couplings(3, 250, 20)  # N = 810
    monkeypatch.setattr(matrix_program, "DENSE_GRAPH_ENTRIES", 10**9 if dense else 0)
    monkeypatch.setattr(matrix_kernels, "_BLOCK_ENTRIES", 1)
    for case in (("head", "both", True), ("head", "none", True), ("embedding", None, None)):
        sysm = _system(case, rng, P, d=2)
        _assert_same(sysm, rng, n_states=1)
        src = sysm._flow_program.source + sysm._jvp_program.source
        assert ("_mv(" in src) != dense and ("_P" in src) == dense
        if case[0] == "head":  # moments X^T D X and own-side accumulations in row blocks
            assert "for _r in" in sysm._flow_program.source and "for _r in" in sysm._jvp_program.source


def test_a_label_swap_symmetric_state_stays_exactly_symmetric():
    """A sample coupled equally to two labels with y₁ = −y₂ feels exactly no force (the CSR sums
    add p·y₁ + p·y₂ without a fused multiply-add): the symmetric collapse of docs/model.md §3 stays
    on its manifold instead of leaving it along an unstable mode grown from round-off."""
    P = np.array([[5.0, 0.0], [0.0, 5.0], [10.0, 10.0]])
    m = sc.HeadModel(P, d=1, eta_x=1.0, eta_y=0.5, eta_W=0.1)
    v = m.pack(np.array([[0.3], [-0.3], [0.0], [0.7], [-0.7]]), np.ones((1, 1)))
    f = m.system.flow_vector(v)
    assert f[2] == 0.0 and f[0] == -f[1] and f[3] == -f[4]
    assert np.array_equal(f, m.system.flow_vector_generic(v))


def test_reduced_head_system_fast_kernels_and_jacobian_against_finite_differences():
    """A sample-reduced stop-gradient head system (pseudo-samples with multiplicities m_i, docs/model.md
    §3.5): fast = generic, and the Jacobian equals central differences of the flow."""
    P = sc.balanced_couplings(4, 10, 1)
    m = sc.HeadModel(P, d=3, eta_x=1.0, eta_y=0.5, eta_W=1.0)
    red = reduction(m.system)
    assert red is not None and red.system.multiplicity is not None
    S = red.system
    rng = np.random.default_rng(3)
    _assert_same(S, rng)
    v = rng.normal(size=S.size)
    Jfd = central_jacobian(S.flow_vector, v)
    assert relative_error(S.jacobian(v).toarray(), Jfd) <= 1e-6


def test_jacobian_structure_does_not_depend_on_the_state():
    """Every entry of the deg ⊗ A / P ⊗ A patterns is stored, also where the state makes it zero
    (W = I, Y = 0): the solvers that factor the Jacobian see one structure."""
    m = sc.HeadModel(sc.balanced_couplings(3, 3, 1), d=3, eta_x=1.0, eta_y=0.5, eta_W=1.0)
    S = m.system
    rng = np.random.default_rng(2)
    Z = np.zeros((m.N + m.K, 3))
    J1 = S.jacobian(m.pack(Z, np.eye(3)))
    J2 = S.jacobian(rng.normal(size=S.size))
    assert J1.nnz == J2.nnz and np.array_equal(J1.indices, J2.indices) and np.array_equal(J1.indptr, J2.indptr)
    J1.data[:] = 1.0  # a caller's edit of one returned matrix does not reach the next
    J1.indices[:] = 0
    v = rng.normal(size=S.size)
    assert relative_error(S.jacobian(v).toarray(), S.jacobian_generic(v).toarray()) <= TOL


def test_jacobian_falls_back_to_the_generic_assembly_on_an_unknown_structure(monkeypatch):
    def refuse(*args, **kw):
        raise matrix_jacobian.UnsupportedStructure("test")

    S = sc.HeadModel(sc.balanced_couplings(3, 3, 1), d=2, eta_x=1.0, eta_y=0.5, eta_W=1.0).system
    monkeypatch.setattr(S, "_jac_assembler", {})
    from symcollapse.numerics import matrix_system
    monkeypatch.setattr(matrix_system, "JacobianAssembler", refuse)
    v = np.random.default_rng(1).normal(size=S.size)
    assert relative_error(S.jacobian(v).toarray(), S.jacobian_generic(v).toarray()) == 0.0
    assert list(S._jac_assembler.values()) == [None]


def _assert_rows_same(sysm, rng, B=3):
    """The batched kernels (B states at once) = the Evaluator state by state."""
    V, dV = rng.normal(size=(B, sysm.size)), rng.normal(size=(B, sysm.size))
    F, JV = sysm.flow_rows(V), sysm.jvp_rows(V, dV)
    assert F.shape == JV.shape == (B, sysm.size)
    assert relative_error(F, np.array([sysm.flow_vector_generic(v) for v in V])) <= TOL
    assert relative_error(JV, np.array([sysm.jvp_generic(v, w) for v, w in zip(V, dV)])) <= TOL
    # a zero tangent on every block but the first, and only the last block of the result
    blocks = list(sysm.layout)
    keep = np.zeros(sysm.size, dtype=bool)
    o, sh = sysm.layout[blocks[0]]
    keep[o:o + int(np.prod(sh))] = True
    dV0 = dV * keep
    got = sysm.jvp_rows(V, dV0, zero=blocks[1:], only=blocks[-1:])
    ref = np.array([sysm.jvp_generic(v, w) for v, w in zip(V, dV0)])
    o, sh = sysm.layout[blocks[-1]]
    part = slice(o, o + int(np.prod(sh)))
    assert relative_error(got[:, part], ref[:, part]) <= TOL
    assert not np.any(np.delete(got, np.arange(sysm.size)[part], axis=1))
    got = sysm.flow_rows(V, only=blocks[-1:])
    assert relative_error(got[:, part], F[:, part]) <= TOL
    assert not np.any(np.delete(got, np.arange(sysm.size)[part], axis=1))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(p) for p in c))
def test_every_loss_variant_batched_kernels_equal_the_evaluator(case):
    rng = np.random.default_rng(6)
    _assert_rows_same(_system(case, rng, sc.balanced_couplings(3, 3, 1)), rng)


def test_batched_kernels_sparse_and_row_blocked_and_reduced(monkeypatch):
    """The CSR and row-blocked branches of the batched kernels, and a sample-reduced system
    (against the batched evaluator of numerics.batched as well)."""
    from symcollapse.numerics import batched

    rng = np.random.default_rng(8)
    P = sc.balanced_couplings(4, 10, 1)
    S = reduction(sc.HeadModel(P, d=3, eta_x=1.0, eta_y=0.5, eta_W=1.0).system).system
    _assert_rows_same(S, rng)
    V, dV = rng.normal(size=(4, S.size)), rng.normal(size=(4, S.size))
    assert relative_error(S.flow_rows(V), batched.batched_flow(S, V)) <= TOL
    assert relative_error(S.jvp_rows(V, dV), batched.batched_jvp(S, V, dV)) <= TOL
    monkeypatch.setattr(matrix_program, "DENSE_GRAPH_ENTRIES", 0)
    monkeypatch.setattr(matrix_kernels, "_BLOCK_ENTRIES", 1)
    sysm = _system(("head", "both", True), rng, sc.balanced_couplings(3, 250, 20), d=2)
    _assert_rows_same(sysm, rng, B=2)
    src = sysm._rows_program(False).source
    assert "_spread_rows" in src and "for _r in" in src
    monkeypatch.setattr(matrix_program, "DENSE_GRAPH_ENTRIES", 10**9)  # the dense-P batched branch
    _assert_rows_same(_system(("head", "both", True), rng, sc.balanced_couplings(3, 3, 1)), rng)


def test_dense_jacobian_equals_the_sparse_one_and_refuses_large_systems():
    from symcollapse.errors import InvalidParameterError

    rng = np.random.default_rng(4)
    P = sc.balanced_couplings(4, 10, 1)
    for S in (sc.HeadModel(P, d=3, eta_x=1.0, eta_y=0.5, eta_W=1.0).system,
              reduction(sc.HeadModel(P, d=3, eta_x=1.0, eta_y=0.5, eta_W=1.0).system).system):
        v = rng.normal(size=S.size)
        Jd = S.jacobian_dense(v)
        assert isinstance(Jd, np.ndarray) and Jd.shape == (S.size, S.size)
        assert relative_error(Jd, S.jacobian_generic(v).toarray()) <= TOL
        with pytest.raises(InvalidParameterError, match="max_entries"):
            S.jacobian_dense(v, max_entries=S.size ** 2 - 1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(p) for p in c))
def test_forces_by_the_generated_kernel_equal_the_evaluator(case):
    """MatrixFlowSystem.forces(st) (what the teacher–student's linear-map system evaluates) takes the
    generated kernel for the system's own state and the Evaluator for any other frozen value."""
    rng = np.random.default_rng(9)
    sysm = _system(case, rng, sc.balanced_couplings(3, 3, 1))
    st = sysm.unpack(rng.normal(size=sysm.size))
    assert sysm._own_state(st)
    F = sysm.forces(st)
    ref = sysm._blocks_from(sysm._evaluator(st), sysm.compiled.forces)
    assert sorted(F) == sorted(ref)
    assert relative_error(np.concatenate([F[b].ravel() for b in ref]),
                          np.concatenate([ref[b].ravel() for b in ref])) <= TOL
    for b in sysm.frozen:  # another frozen value than the system's: the Evaluator, with that value
        other = dict(st, **{b: st[b] + 1.0})
        assert not sysm._own_state(other)
        got, want = sysm.forces(other), sysm._blocks_from(sysm._evaluator(other), sysm.compiled.forces)
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_system_with_generated_kernels_still_pickles():
    """Models are sent to worker processes: the generated functions are dropped and rebuilt."""
    import pickle

    m = sc.HeadModel(sc.balanced_couplings(3, 3, 1), d=2, eta_x=1.0, eta_y=0.5, eta_W=1.0)
    v = np.random.default_rng(0).normal(size=m.system.size)
    f, J = m.system.flow_vector(v), m.system.jacobian(v)
    m.system.flow_rows(v[None]), m.system.jvp(v, v)
    m2 = pickle.loads(pickle.dumps(m))
    assert np.array_equal(m2.system.flow_vector(v), f)
    assert np.array_equal(m2.system.jacobian(v).toarray(), J.toarray())
