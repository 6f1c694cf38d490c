"""Every command in the README runs in a test, as written (in a scratch folder), and the
outputs of the main job are checked: every written .tex compiles with pdflatex without errors
or overfull boxes wider than 10 pt, a vector PDF lies beside every PNG, every figure has a
caption, and the verification table fits 100 columns.

A README command without an entry in HOW fails :func:`test_every_readme_command_is_run`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from latex_log import PDFLATEX, compile_tex, problems

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`((?:symcollapse|python|pip) [^`]+)`")


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README)]


def readme_commands() -> list[str]:
    """Shell lines of the non-Python code blocks, and inline `symcollapse …` / `python …` /
    `pip …` spans of the prose."""
    cmds = [ln.strip() for lang, body in readme_blocks() if lang != "python"
            for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    prose = FENCE.sub("", README)
    cmds += [m.group(1).strip() for m in INLINE.finditer(prose)]
    return list(dict.fromkeys(cmds))


# command -> the test that runs it (or, for package installs, what is checked instead)
HOW = {
    "pip install . && symcollapse reproduce": "test_install_metadata + test_reproduce_as_written (slow)",
    "pip install -e '.[test]' && python -m pytest -q": "test_test_command_is_what_ci_runs",
    "symcollapse reproduce": "test_reproduce_as_written (slow; default: the jobs' own tests + below)",
    "symcollapse check": "test_check_prints_the_reproduce_table (slow; default: test_cli check --model engine)",
    "symcollapse report": "test_report_as_written (slow; default: test_report_of_real_jobs)",
    "symcollapse report --out report": "test_report_as_written (slow; default: test_report_of_real_jobs)",
    "symcollapse sweep": "test_sweep_commands",
    "symcollapse --version": "tests/test_cli.py::test_version",
    "symcollapse phase --model head --K 2 --eps 0.25 --d 1 --seeds 3 --out phase":
        "tests/test_phase.py::test_readme_phase_command_end_states_are_derived_stable_fixed_points_and_resume",
    "symcollapse phase --regenerate --out phase_grids --figures figures":
        "tests/test_phase.py::test_regenerate_cli_writes_summaries_and_paper_figures_and_resumes (tiny grids; "
        "the default grids: tests/test_phase.py::test_default_grids_regenerate, slow)",
    "python derivations/embedding.py": "test_derivation_scripts",
    "python derivations/variant_example.py": "test_derivation_scripts",
    "python benchmarks/run.py": "tests/test_benchmarks.py (--smoke: the same code at tiny sizes)",
    "python benchmarks/run.py --smoke": "tests/test_benchmarks.py",
    "pip install torch==2.13.0": "test_optional_installs",
    "pip install 'symcollapse[distributed]'": "test_optional_installs",
    "symcollapse sweep --model embedding --param eps=0.05,0.1 --param seed=0,1 --out sweep.jsonl": "test_sweep_commands",
    "symcollapse sweep --model embedding --param eps=0.05,0.1 --out sweep.jsonl --scheduler tcp://host:8786": "test_sweep_commands",
}


def env():
    e = dict(os.environ, MPLBACKEND="Agg")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def argv(cmd: str) -> list[str]:
    """A README command as an argv; `symcollapse` is the console script of `pip install`."""
    words = shlex.split(cmd)
    if words[0] == "symcollapse":
        return [sys.executable, "-m", "symcollapse.cli", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"not a runnable command: {cmd}")


def run(cmd: str, cwd: Path, timeout: float = 900):
    return subprocess.run(argv(cmd), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def test_every_readme_command_is_run():
    missing = [c for c in readme_commands() if c not in HOW]
    assert not missing, f"README commands no test runs (add them to HOW and run them): {missing}"
    stale = [c for c in HOW if c not in readme_commands()]
    assert not stale, f"HOW lists commands the README no longer has: {stale}"


def test_test_command_is_what_ci_runs():
    """CI (.ci/run) runs the README's test command verbatim on a fresh machine."""
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, tests = "pip install -e '.[test]' && python -m pytest -q".partition(" && ")
    assert install in ci and tests in ci


def test_install_metadata():
    """`pip install .`: the console script exists and every subpackage is included (the CI
    install builds the same pyproject; this test runs without a network)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["symcollapse"] == "symcollapse.cli:main"
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    pkgs = [".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "symcollapse").rglob("__init__.py")]
    assert all(any(re.fullmatch(pat.replace(".", r"\.").replace("*", ".*"), p) for pat in include) for p in pkgs)


def test_optional_installs():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(r.startswith("dask[distributed]") for r in meta["project"]["optional-dependencies"]["distributed"])
    assert "pip install torch==2.13.0" in (ROOT / "benchmarks" / "run.py").read_text()  # the skip message


@pytest.mark.parametrize("k", range(sum(1 for lang, _ in FENCE.findall(README) if lang == "python")))
def test_python_blocks(k, tmp_path):
    code = [body for lang, body in readme_blocks() if lang == "python"][k]
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_sweep_commands(tmp_path):
    """Both sweep commands, as written; the second with `host` replaced by a running local
    Dask scheduler's address."""
    from dask.distributed import LocalCluster

    cmds = [c for c in readme_commands() if c.startswith("symcollapse sweep --")]
    assert len(cmds) == 2
    res = run(cmds[0], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Compute Failed" not in res.stderr
    assert len((tmp_path / "sweep.jsonl").read_text().splitlines()) == 4
    (tmp_path / "sweep.jsonl").unlink()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        res = run(cmds[1].replace("tcp://host:8786", cluster.scheduler_address), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len((tmp_path / "sweep.jsonl").read_text().splitlines()) == 2


# --- the main job, run once; its outputs are checked below -------------------------------------
# Slow: `symcollapse reproduce` runs every job (minutes on 2 shared cores). The default run covers
# the same claims with faster tests: each job's checks and LaTeX in its own test file, the README's
# derivation scripts and their LaTeX compiled below, the report of two real jobs compiled, the
# captions checked statically, the table width in tests/test_cli.py.
@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    where = tmp_path_factory.mktemp("reproduce")
    res = run("symcollapse reproduce", where)
    return where, res


@pytest.mark.slow
def test_reproduce_as_written(reproduced):
    where, res = reproduced
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^\d+ passed, 0 failed$", res.stdout, re.M)
    assert max(map(len, res.stdout.splitlines())) <= 100  # the verification table fits 100 columns
    assert sorted(p.name for p in where.iterdir()) == ["derivations", "figures"]


@pytest.mark.slow
def test_every_png_has_a_vector_pdf_and_a_caption(reproduced):
    from symcollapse.jobs import job_modules

    where, _ = reproduced
    pngs = sorted((where / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes().startswith(b"%PDF"), pdf
    captions = {k for m in job_modules() for k in getattr(m, "CAPTIONS", {})}
    assert {p.stem for p in pngs} <= captions, sorted({p.stem for p in pngs} - captions)


@pytest.mark.slow
def test_literature_latex_uses_the_variables_names(reproduced):
    where, _ = reproduced
    tex = (where / "derivations" / "literature.tex").read_text()
    assert not re.search(r"[xy]_\{\d+ \d+\}", tex), "internal node names (x_{0 0}) in the literature LaTeX"
    assert re.search(r"I_\{1\} = .*a\^\{2\}.*b\^\{2\}", tex)  # Saxe: τa² − τb²


needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed")


@pytest.mark.slow
@needs_pdflatex
def test_every_written_tex_compiles_cleanly(reproduced, tmp_path):
    where, _ = reproduced
    texs = sorted((where / "derivations").glob("*.tex"))
    assert texs
    bad = {}
    for tex in texs:
        rc, log, pdf = compile_tex(tex, tmp_path / tex.stem)
        found = problems(log)
        if rc != 0 or found or not pdf.exists():
            bad[tex.name] = (rc, found[:5])
    assert not bad, bad


def _check_report(tmp_path, cmd: str, min_equations: int, min_figures: int) -> None:
    res = run(cmd, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "report"
    tex = (out / "report.tex").read_text()
    assert "\\usepackage[T1]{fontenc}" in tex
    assert tex.count("\\begin{equation}") >= min_equations  # the derivations' equations are in the report
    assert tex.count("\\caption{") == tex.count("\\includegraphics") >= min_figures
    assert not re.search(r"\\includegraphics[^{]*\{[^}]*\.png\}", tex)  # vector figures
    assert not re.search(r"\\caption\{[^}]*fig\d", tex)  # captions are sentences, not file names
    if PDFLATEX is not None:
        assert (out / "report.pdf").exists(), res.stdout
        rc, log, _ = compile_tex(out / "report.tex", tmp_path / "build")
        assert rc == 0 and not problems(log), problems(log)[:5]


@pytest.mark.slow
def test_report_as_written(tmp_path):
    """`symcollapse report --out report`: report.tex/.md (and the PDF when pdflatex exists),
    with the derived equations, captioned vector figures and T1 fonts; compiled cleanly.
    Slow (every job again, ~80 s): the default run checks the same on two real jobs below."""
    _check_report(tmp_path, "symcollapse report --out report", 30, 10)


def test_report_of_real_jobs(tmp_path):
    """The same checks as :func:`test_report_as_written` on the engine and literature jobs (real
    tables, a real derivation document, real captioned figures); the literature LaTeX compiles on
    its own too and names the variables as the losses do."""
    _check_report(tmp_path, "symcollapse report --out report --model engine --model literature", 8, 3)
    out = tmp_path / "report"
    for png in (out / "figures").glob("*.png"):
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF"), png
    lit = out / "derivations" / "literature.tex"
    text = lit.read_text()
    assert not re.search(r"[xy]_\{\d+ \d+\}", text), "internal node names (x_{0 0}) in the literature LaTeX"
    assert re.search(r"I_\{1\} = .*a\^\{2\}.*b\^\{2\}", text)  # Saxe: τa² − τb²
    if PDFLATEX is not None:
        rc, log, _ = compile_tex(lit, tmp_path / "lit")
        assert rc == 0 and not problems(log), problems(log)[:5]


def test_every_figure_a_job_writes_has_a_caption():
    """Every figure file name in a job's source has an entry in that job's CAPTIONS (the report
    captions figures with sentences, not file names)."""
    import importlib

    for src in sorted((ROOT / "symcollapse" / "jobs").glob("*.py")):
        names = set(re.findall(r"[\"'](\w+)\.png[\"']", src.read_text()))
        if names:
            mod = importlib.import_module(f"symcollapse.jobs.{src.stem}")
            missing = names - set(getattr(mod, "CAPTIONS", {}))
            assert not missing, (src.name, sorted(missing))


@pytest.mark.slow
def test_check_prints_the_reproduce_table(reproduced, tmp_path):
    """`symcollapse check` prints the table of `symcollapse reproduce` and writes nothing
    (slow: it repeats every derivation and check of the reproduce fixture)."""
    _, rep = reproduced
    res = run("symcollapse check", tmp_path)
    assert res.returncode == 0 and list(tmp_path.iterdir()) == []
    table = lambda text: [ln.split()[0] for ln in text.splitlines() if ln.startswith(("  pass", "  FAIL"))]  # noqa: E731
    assert table(res.stdout) == table(rep.stdout) and table(res.stdout)


_RUN_SCRIPTS = r"""
import runpy, sys
for path in sys.argv[1:]:
    sys.argv = [path]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
"""


def test_derivation_scripts(tmp_path):
    """The derivation scripts the README names run (as `__main__`, one after the other in one
    interpreter so that they share its derivation caches) and write their LaTeX; copies run in
    a scratch folder, so the checkout is not rewritten. That LaTeX compiles cleanly."""
    named = re.findall(r"`(?:python derivations/)?(\w+)\.py`", README)
    scripts = sorted({n for n in named if (ROOT / "derivations" / f"{n}.py").exists()})
    assert {"embedding", "head", "teacher_student", "variant_example"} <= set(scripts)
    work = tmp_path / "derivations"
    work.mkdir()
    for name in scripts:
        shutil.copy(ROOT / "derivations" / f"{name}.py", work)
    res = subprocess.run([sys.executable, "-c", _RUN_SCRIPTS, *(f"derivations/{n}.py" for n in scripts)],
                         cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in scripts:
        tex = work / f"{name}.tex"
        assert tex.exists(), name
        if PDFLATEX is not None:
            rc, log, _ = compile_tex(tex, tmp_path / "build" / name)
            assert rc == 0 and not problems(log), (name, problems(log)[:5])


def test_committed_figures_have_vector_pdfs():
    pngs = sorted((ROOT / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF"), png.name


@needs_pdflatex
def test_committed_latex_compiles_cleanly(tmp_path):
    """The LaTeX documents in derivations/ (linked from the README) compile without errors or
    overfull boxes wider than 10 pt."""
    bad = {}
    for tex in sorted((ROOT / "derivations").glob("*.tex")):
        rc, log, pdf = compile_tex(tex, tmp_path / tex.stem)
        if rc != 0 or problems(log) or not pdf.exists():
            bad[tex.name] = (rc, problems(log)[:5])
    assert not bad, bad
