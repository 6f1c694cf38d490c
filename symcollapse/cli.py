"""Command line: ``symcollapse reproduce`` (main job), ``symcollapse check`` (verification only),
``symcollapse report`` (one LaTeX + Markdown report of every job's checks and figures),
``symcollapse sweep`` (simulation grids), ``symcollapse phase`` (stability phase diagram of the head
model: derived families + simulated basins, resumable).

Every argument is validated before any derivation or simulation starts, and before SymPy,
SciPy or matplotlib are imported: a bad argument exits with status 2 and one line on stderr
within a fraction of a second. Heavy modules are imported inside the command functions.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .atomic import ensure_writable_dir
from .errors import DerivationCheckError, IntegrationError, InvalidParameterError, SymcollapseError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, no usage dump
        print(f"symcollapse: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _out_path(text: str) -> str:
    """argparse type of --out: a non-empty path (an empty one would silently mean '.')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty path (to write here, say --out .)")
    return text


def _check_models(only) -> None:
    """--model values must name jobs; checked from the job sources, before any heavy import."""
    from .jobs import job_names

    if only:
        names = job_names()
        unknown = [o for o in only if o not in names]
        if unknown:
            raise InvalidParameterError(f"--model must be among {names}; got {unknown}")


def _select(only):
    from .jobs import job_modules

    _check_models(only)
    mods = job_modules()
    if only:
        mods = [m for m in mods if m.MODEL in only]
    return mods


def run_checks(mods) -> list:
    from .verification import format_table

    rows = []
    for m in mods:
        _progress(f"deriving and verifying: {m.MODEL}")
        t0 = time.time()
        rows.extend(m.checks())
        _progress(f"  {m.MODEL}: done in {time.time() - t0:.1f} s")
    print(format_table(rows))
    return rows


def cmd_check(args) -> int:
    rows = run_checks(_select(args.model))
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_reproduce(args) -> int:
    _check_models(args.model)  # refuse unknown models before creating any folder
    out = Path(args.out)
    try:
        tex_dir = ensure_writable_dir(out / "derivations")
        fig_dir = ensure_writable_dir(out / "figures")
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"--out: {exc}") from exc
    mods = _select(args.model)
    rows = run_checks(mods)
    for m in mods:
        _progress(f"writing LaTeX: {m.MODEL}")
        for p in m.write_latex(tex_dir):
            _progress(f"  wrote {p}")
        _progress(f"writing figures: {m.MODEL}")
        for p in m.write_figures(fig_dir):
            _progress(f"  wrote {p}")
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_report(args) -> int:
    _check_models(args.model)
    try:
        out = ensure_writable_dir(Path(args.out))
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"--out: {exc}") from exc
    from .outputs.report import build_report

    mods = _select(args.model)
    _progress("deriving, verifying and writing the report: " + ", ".join(m.MODEL for m in mods))
    rep = build_report(out, mods)
    print(f"wrote {rep.tex} and {rep.md}; {rep.pdf_message}")
    print(f"{rep.n_checks - len(rep.failed)} passed, {len(rep.failed)} failed")
    return 1 if rep.failed else 0


def cmd_sweep(args) -> int:
    from .numerics.sweeps import parse_param, run_sweep
    from .sweep_points import model_function

    fn = model_function(args.model)
    params = {}
    for text in args.param or []:
        name, values = parse_param(text)
        if name in params:
            raise InvalidParameterError(f"--param {name} is given twice")
        params[name] = values
    if not params:
        raise InvalidParameterError("give at least one --param name=v1,v2,…")
    # run_sweep validates every grid point (fn.validate), the backend, workers, scheduler and
    # --out before it starts any worker or touches the results file
    recs = run_sweep(fn, params, args.out, scheduler=args.scheduler, workers=args.workers,
                     backend=args.backend,
                     progress=lambda k, n, rec: _progress(f"  {k}/{n} {rec['params']}"))
    print(f"{len(recs)} points in {args.out}")
    return 0


def _floats(name, text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidParameterError(f"--{name} must be comma-separated numbers; got {text!r}") from None


def _ints(name, text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidParameterError(f"--{name} must be comma-separated integers; got {text!r}") from None


def cmd_phase(args) -> int:
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many small eigenproblems: one thread each
    from .phase import check_phase_args

    if args.model != "head":
        raise InvalidParameterError(f"--model must be 'head' (the only model with a phase diagram); got {args.model!r}")
    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        raise InvalidParameterError(f"--workers must be >= 1; got {workers}")
    if args.regenerate:
        return _phase_regenerate(args, workers)
    missing = [f"--{n}" for n in ("K", "eps", "d") if getattr(args, n) is None]
    if missing:
        raise InvalidParameterError(f"{', '.join(missing)} required (or --regenerate for the default grids)")
    if args.n_max < 1:
        raise InvalidParameterError(f"--n-max must be >= 1; got {args.n_max}")
    K, eps, d, seeds, eta_W = check_phase_args(args.K, _floats("eps", args.eps), _ints("d", args.d), args.seeds,
                                               _floats("eta-W", args.eta_W))
    if not args.t_max > 0:
        raise InvalidParameterError(f"--t-max must be > 0; got {args.t_max}")
    try:
        out = ensure_writable_dir(Path(args.out))
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"--out: {exc}") from exc
    from .phase import write_outputs

    paths = write_outputs(K, eps, d, seeds, out, eta_W=eta_W, workers=workers, t_max=args.t_max,
                          figures=not args.no_figures, n_max=args.n_max,
                          progress=lambda k, n, rec: _progress(f"  {k}/{n} {rec['params']}"))
    for p_ in paths:
        print(f"wrote {p_}")
    return 0


def _phase_regenerate(args, workers: int) -> int:
    """``symcollapse phase --regenerate``: the default grids of K = 2, 3, 4, 10 (slow, resumable) and the
    paper figures drawn from their summaries (into --figures, default: --out)."""
    from .phase import regenerate

    given = [f"--{n.replace('_', '-')}" for n in ("K", "eps", "d") if getattr(args, n) is not None]
    if given:
        raise InvalidParameterError(f"--regenerate runs the default grids; do not give {', '.join(given)}")
    try:
        out = ensure_writable_dir(Path(args.out))
        figs = ensure_writable_dir(Path(args.figures)) if args.figures else out
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"--out/--figures: {exc}") from exc
    paths = regenerate(out, workers=workers, figures=None if args.no_figures else figs,
                       progress=lambda k, n, rec: _progress(f"  {k}/{n} {rec['params']}"))
    for p_ in paths:
        print(f"wrote {p_}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="symcollapse", description="Derive, verify and plot the dynamics of representation collapse.")
    p.add_argument("--version", action="version", version=f"symcollapse {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    r = sub.add_parser("reproduce", help="derive every model, verify, write LaTeX and figures")
    r.add_argument("--out", default=".", type=_out_path, help="folder for derivations/*.tex and figures/*.png (default: .)")
    r.add_argument("--model", action="append", help="only this model (repeatable)")
    r.set_defaults(func=cmd_reproduce)
    c = sub.add_parser("check", help="run the verification table only")
    c.add_argument("--model", action="append", help="only this model (repeatable)")
    c.set_defaults(func=cmd_check)
    rp = sub.add_parser("report", help="write report.tex / report.md (and the PDF if pdflatex exists)")
    rp.add_argument("--out", default="report", type=_out_path, help="folder for the report (default: report)")
    rp.add_argument("--model", action="append", help="only this model (repeatable)")
    rp.set_defaults(func=cmd_report)
    s = sub.add_parser("sweep", help="run a grid of simulations (Dask if installed), streamed to JSON lines")
    s.add_argument("--model", required=True, help="built-in sweep model (embedding)")
    s.add_argument("--param", action="append", help="name=v1,v2,… (repeatable; the grid is their product)")
    s.add_argument("--out", required=True, type=_out_path, help="JSON-lines results file; finished points are skipped on rerun")
    s.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (default: local processes)")
    s.add_argument("--workers", type=int, help="local worker processes (default: CPU count)")
    s.add_argument("--backend", default="auto", choices=["auto", "dask", "processes", "serial"])
    s.set_defaults(func=cmd_sweep)
    ph = sub.add_parser("phase", help="stability phase diagram: derived families + seeded basins (resumable)")
    ph.add_argument("--model", default="head", help="model (head)")
    ph.add_argument("--K", type=int, help="number of classes (>= 2)")
    ph.add_argument("--eps", help="frustration fractions, comma-separated, in [0, 1)")
    ph.add_argument("--d", help="head dimensions, comma-separated, >= 1")
    ph.add_argument("--n-max", dest="n_max", type=int, default=4,
                    help="largest n (samples per class) of the balanced ensemble realising each eps (default 4)")
    ph.add_argument("--regenerate", action="store_true",
                    help="the default grids of K = 2, 3, 4, 10 and the paper figures (slow; resumable)")
    ph.add_argument("--figures", type=_out_path, help="with --regenerate: folder for the figures (default: --out)")
    ph.add_argument("--seeds", type=int, default=8, help="seeds per cell (default 8)")
    ph.add_argument("--eta-W", dest="eta_W", default="1", help="head rates eta_W/eta_x, comma-separated (default 1)")
    ph.add_argument("--t-max", dest="t_max", type=float, default=2e4, help="longest integration time (default 2e4)")
    ph.add_argument("--workers", type=int, help="worker processes (default 1)")
    ph.add_argument("--no-figures", action="store_true", help="data only")
    ph.add_argument("--out", required=True, type=_out_path, help="folder for phase_K*.jsonl, the summary JSON and figures")
    ph.set_defaults(func=cmd_phase)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except InvalidParameterError as exc:
        print(f"symcollapse: error: {exc}", file=sys.stderr)
        return 2
    except (DerivationCheckError, IntegrationError) as exc:
        print(f"symcollapse: verification failed: {exc}", file=sys.stderr)
        return 1
    except SymcollapseError as exc:
        print(f"symcollapse: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. disk full or a folder removed while writing
        print(f"symcollapse: error: cannot write output: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("symcollapse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
