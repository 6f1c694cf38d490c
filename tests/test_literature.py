"""Literature cases: derived from their losses and compared with the published closed forms."""
import numpy as np
import pytest
import sympy as sp

from symcollapse.literature import invariants_demo, saxe, simsiam, ufm
from symcollapse.symbolic.flow import derive_flow
from symcollapse.symbolic.loss import EdgeLoss
from symcollapse.symbolic.stopgrad import strip_stop_gradient


@pytest.mark.parametrize("case", [saxe, simsiam, ufm, invariants_demo], ids=lambda m: m.MODEL)
def test_every_literature_row_passes(case):
    rows = case.checks()
    assert len(rows) >= 4
    bad = [(r.claim, r.rel_error) for r in rows if not r.passed]
    assert not bad


def test_saxe_trajectory_matches_closed_form_to_1e8():
    tt, ab, _ = saxe.simulate()
    ref = sp.lambdify(saxe.t, saxe.published_u().subs({saxe.s: 2.0, saxe.tau: 1.5, saxe.u0: 1e-3}))(tt)
    assert np.max(np.abs(ab - ref)) / np.max(np.abs(ref)) < 1e-8
    assert np.all(np.diff(ab) > 0) and 1.9 < ab[-1] < 2.0  # sigmoidal rise towards u = s = 2


def test_saxe_comparison_can_fail():
    """A wrong learning time (τ/s instead of τ/2s) is refused by the same comparison."""
    d = saxe.derive()
    row = saxe._numeric_identity("wrong", d["t_learn"], 2 * saxe.published_learning_time())
    assert not row.passed


def test_simsiam_without_stop_gradient_is_not_the_paper_flow():
    """The paper's equations need the stop-gradient: the full gradient of the same loss differs."""
    loss = simsiam.mode_loss()
    plain = EdgeLoss(strip_stop_gradient(loss.expr), loss.x, loss.y, rates=loss.rates, name="simsiam_plain")
    flow = derive_flow(plain)
    w, p = loss.x[0], loss.y[0]
    pw, _ = simsiam.paper_mode_flow(w, p)
    assert sp.expand(flow.force("x")[0] - pw) != 0
    assert sp.expand(flow.force("x")[0] - pw - simsiam.tau_ * simsiam.sj * p * w) == 0  # the extra target gradient


def test_simsiam_fixed_point_values():
    """p± at the test point against numpy's roots of s p (τ − (1+σ²) p) − η = 0."""
    P = simsiam.POINT
    roots = np.sort(np.roots([-P["s_j"] * (1 + P["sigma2"]), P["s_j"] * P["tau"], -P["eta"]]).real)
    pts = simsiam.paper_fixed_points()
    assert simsiam._num(pts[3][1]) == pytest.approx(roots[0], rel=1e-12)
    assert simsiam._num(pts[1][1]) == pytest.approx(roots[1], rel=1e-12)
    assert simsiam._num(pts[1][0]) ** 2 == pytest.approx(roots[1] ** 2 / P["alpha_p"], rel=1e-12)


def test_ufm_threshold_and_norm_are_the_published_ones():
    d = ufm.derive()
    K, n = d["K"], d["n"]
    # ‖w_c‖² from the reduced fixed point at one point, against the closed form
    pt = {ufm.lam_W: sp.Rational(1, 20), ufm.lam_H: sp.Rational(1, 30)}
    vals = [sp.N(f[ufm.a] ** 2 * 1, 30).subs(pt) for f in d["fixed"] if f[ufm.a] != 0]
    ref = sp.N(ufm.published_norm(K, n).subs(pt), 30)
    assert any(abs(complex(sp.N(v.subs(pt))) - complex(ref)) < 1e-20 for v in vals)
    # the zero solution's Hessian is singular exactly at K²n λ_W λ_H = 1
    lw = sp.Rational(1, 10)
    lh = ufm.published_threshold(K, n) / lw
    H0 = d["hess0"].subs({ufm.lam_W: lw, ufm.lam_H: lh})
    assert H0.det() == 0
    assert d["hess0"].subs({ufm.lam_W: lw, ufm.lam_H: lh * sp.Rational(11, 10)}).det() != 0


def _balanced(tex):
    depth = 0
    prev = ""
    for ch in tex:
        if ch == "{" and prev != "\\":
            depth += 1
        elif ch == "}" and prev != "\\":
            depth -= 1
            if depth < 0:
                return False
        prev = ch if not (prev == "\\" and ch == "\\") else ""
    return depth == 0


def test_literature_latex_is_plain_ascii_and_balanced(tmp_path):
    from symcollapse.jobs import literature

    (path,) = literature.write_latex(tmp_path)
    tex = path.read_text()
    assert all(ord(ch) < 128 for ch in tex)
    assert _balanced(tex)
    for env in ("document", "equation", "tabular", "center"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") > 0
    assert "longtable" not in tex  # the document does not load that package
    assert r"\operatorname{sg}" in tex  # the SimSiam loss is printed with its stop-gradient


@pytest.mark.slow
def test_literature_figures_are_written(tmp_path):
    from symcollapse.jobs import literature

    paths = literature.write_figures(tmp_path)
    assert [p.name for p in paths] == ["literature_saxe.png", "literature_simsiam.png", "literature_ufm.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_literature_job_is_registered():
    from symcollapse.jobs import job_modules, literature

    assert literature in job_modules()
    assert literature.MODEL == "literature" and literature.ORDER == 40
