"""The derivation report: LaTeX and Markdown with every job's rows and figures (fast fake jobs)."""
import types

import pytest

from symcollapse import cli
from symcollapse.outputs import report as rep
from symcollapse.verification import Check


def _fake_job(name, rows, with_figure=True):
    def write_figures(folder):
        if not with_figure:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from symcollapse.outputs.io import atomic_savefig

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        p = atomic_savefig(fig, folder / f"{name}_fig.png")
        plt.close(fig)
        return [p]

    def write_latex(folder):
        from symcollapse.outputs.io import atomic_write_text

        return [atomic_write_text(folder / f"{name}.tex", "\\documentclass{article}\\begin{document}x\\end{document}\n")]

    return types.SimpleNamespace(MODEL=name, ORDER=1, checks=lambda: list(rows),
                                 write_figures=write_figures, write_latex=write_latex)


GOOD = Check("alpha", "slow rate r_s ≈ Kη_xη_yμ/(2(η_x + η_y n)) & 50% of ‖W‖²", "0.1", "eigenvalue of H·L_G",
             3.2e-11, 1e-8)
BAD = Check("beta", "a deliberately failing row", "1", "2", 0.5, 1e-6)


def test_report_contains_rows_errors_and_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(rep.shutil, "which", lambda name: None)
    out = rep.build_report(tmp_path, [_fake_job("alpha", [GOOD]), _fake_job("beta", [BAD], False)])
    tex, md = out.tex.read_text(), out.md.read_text()
    assert out.n_checks == 2 and [r.claim for r in out.failed] == [BAD.claim]
    assert out.pdf is None and "pdflatex is not installed" in out.pdf_message
    assert "3.20e-11" in md and "3.20e-11" in tex
    assert "![alpha_fig](figures/alpha_fig.png)" in md
    # the vector PDF written beside the PNG is the one the LaTeX report includes, with a caption
    assert (tmp_path / "figures" / "alpha_fig.pdf").read_bytes().startswith(b"%PDF")
    assert "\\includegraphics[width=0.8\\textwidth]{figures/alpha_fig.pdf}" in tex
    assert "\\caption{alpha: alpha fig}" in tex and "alpha_fig.png}" not in tex
    assert (tmp_path / "figures" / "alpha_fig.png").stat().st_size > 0
    assert "[alpha.tex](derivations/alpha.tex)" in md
    assert "**FAIL**" in md and "\\textbf{FAIL}" in tex
    assert "2 checks, 1 passed, 1 failed" in md
    # the LaTeX is pdflatex-safe: specials escaped, Unicode math mapped, nothing left non-ASCII
    assert "\\&" in tex and "50\\%" in tex and "$\\eta$" in tex and "$\\approx$" in tex
    assert all(ord(ch) < 128 for ch in tex)
    assert tex.count("\\begin{longtable}") == 2 and tex.rstrip().endswith("\\end{document}")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_latex_text_escapes():
    assert rep.latex_text("a_b & 5% ~") == "a\\_b \\& 5\\% \\textasciitilde{}"
    assert rep.latex_text("τ²") == "$\\tau^{2}$"
    assert rep.latex_text("θ̇") == "$\\theta$"
    assert rep.latex_text("∂ℓ/∂θ") == "$\\partial\\ell$/$\\partial\\theta$"
    assert rep.latex_text("$η") == "\\$$\\eta$"  # escaped dollar, then one math group
    assert rep.latex_text("§2 ✓") == "\\S{}2 ?"  # unknown non-ASCII is never passed through


def test_cli_report_exit_codes(tmp_path, monkeypatch, capsys):
    import symcollapse.jobs as jobs

    monkeypatch.setattr(rep.shutil, "which", lambda name: None)
    monkeypatch.setattr(jobs, "job_modules", lambda: [_fake_job("alpha", [GOOD]), _fake_job("beta", [BAD], False)])
    monkeypatch.setattr(jobs, "job_names", lambda: ["alpha", "beta"])  # --model is checked against these
    assert cli.main(["report", "--out", str(tmp_path / "r1"), "--model", "alpha"]) == 0
    assert (tmp_path / "r1" / "report.md").exists() and (tmp_path / "r1" / "report.tex").exists()
    assert "beta" not in (tmp_path / "r1" / "report.md").read_text()
    assert "pdflatex is not installed" in capsys.readouterr().out
    assert cli.main(["report", "--out", str(tmp_path / "r2")]) == 1  # a failed row
    assert cli.main(["report", "--out", str(tmp_path / "r3"), "--model", "gamma"]) == 2
    assert not (tmp_path / "r3").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["report", "--out", str(blocker)]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.skipif(rep.shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_pdf_is_built_when_pdflatex_exists(tmp_path):
    out = rep.build_report(tmp_path, [_fake_job("alpha", [GOOD])])
    assert out.pdf is not None and out.pdf.stat().st_size > 0


@pytest.mark.skipif(__import__("shutil").which("pdflatex") is None, reason="needs pdflatex")
def test_pdf_is_built_for_a_relative_out_folder(tmp_path, monkeypatch):
    """`symcollapse report --out report` (relative): pdflatex must find the figures (TEXINPUTS was
    relative to the folder pdflatex runs in, so the PDF failed with the README's own command)."""
    monkeypatch.chdir(tmp_path)
    out = rep.build_report("report", [_fake_job("alpha", [GOOD])])
    assert out.pdf is not None and out.pdf.stat().st_size > 0, out.pdf_message


def test_derivation_helper_writes_the_latex_beside_the_script(tmp_path, capsys):
    from symcollapse.outputs.appendix import step, write_latex

    script = tmp_path / "my_model.py"
    step("1. The loss")
    out = write_latex(str(script), "\\documentclass{article}\n")
    assert out == (tmp_path / "my_model.tex").resolve() and out.read_text() == "\\documentclass{article}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_model.tex"]  # no temporary left
    printed = capsys.readouterr().out
    assert "== 1. The loss ==" in printed and "wrote my_model.tex" in printed
