"""Speed and memory benchmarks of symcollapse against the natural alternatives.

    python benchmarks/run.py                 # all benchmarks, prints the table
    python benchmarks/run.py --only 1 --only 3
    python benchmarks/run.py --markdown benchmarks/RESULTS.md   # also record table + machine
    python benchmarks/run.py --smoke         # tiny sizes, seconds: same code, agreement only

Every ratio is measured in one run: the two sides are timed alternately, several repeats,
and the median of the per-repeat ratios is reported. Each benchmark first asserts that both
sides compute the same thing (a benchmark of a wrong result is meaningless).

Adding a benchmark: write ``def bench_x(*, size..., repeats) -> list[Row]`` that asserts
agreement with :func:`agree` and returns its rows, and register it with
``@benchmark(rows=(8,), full=dict(...), smoke=dict(...))`` — ``full`` are the keyword
arguments of the recorded run, ``smoke`` tiny ones that run in seconds (the test suite runs
``--smoke``, so every registered benchmark is exercised on every test run).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sps
import scipy.sparse.linalg  # noqa: F401  (sps.linalg)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from symcollapse import closed_forms  # noqa: E402
from symcollapse.models.couplings import balanced_couplings, frustration_fraction  # noqa: E402
from symcollapse.numerics.kernels import compile_loss, relative_error  # noqa: E402
from symcollapse.numerics.system import FlowSystem  # noqa: E402
from symcollapse.errors import InvalidParameterError  # noqa: E402


@dataclass
class Row:
    bench: str
    timed: str
    alternative: str
    ratio: float
    target: str
    ok: bool
    note: str = ""


def timer(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_ratio(fa, fb, repeats: int = 7, warmup: int = 1) -> tuple[float, float, float]:
    """(median of t_a/t_b over alternating repeats, median t_a, median t_b)."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timer(fa))
        tb.append(timer(fb))
    return (statistics.median(a / b for a, b in zip(ta, tb)), statistics.median(ta),
            statistics.median(tb))


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark: ``fn(**full)`` is the recorded run, ``fn(**smoke)`` the smoke run."""
    name: str
    rows: tuple[int, ...]
    fn: Callable[..., list[Row]]
    full: dict
    smoke: dict


REGISTRY: dict[str, Benchmark] = {}


def benchmark(*, rows: tuple[int, ...], full: dict, smoke: dict):
    """Register ``fn`` as producing table rows ``rows``, with full-run and smoke-run keywords."""
    def deco(fn):
        name = fn.__name__.removeprefix("bench_")
        if name in REGISTRY or any(set(rows) & set(b.rows) for b in REGISTRY.values()):
            raise ValueError(f"benchmark {name} rows {rows}: name or row number already registered")
        REGISTRY[name] = Benchmark(name, tuple(rows), fn, dict(full), dict(smoke))
        return fn
    return deco


def agree(what: str, err: float, tol: float) -> None:
    """Both sides of a comparison compute the same thing: ``err ≤ tol`` (NaN/inf fail)."""
    err = float(err)
    if not err <= tol:
        raise AssertionError(f"{what}: the two sides disagree (error {err:.3e} > {tol:.0e})")


def max_rel(a, b) -> float:
    """max|a − b| / max|b| with NaN propagated (np.max, not Python's max, which drops NaN)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def balanced(K: int, N_target: int, eps: float, omega: float = 2.0):
    """Balanced couplings with K classes, about N_target samples and frustration ≈ eps."""
    pairs = K * (K - 1) // 2
    mu = max(1, round(eps * N_target / pairs))
    n = max(1, round((N_target - mu * pairs) / K))
    return balanced_couplings(K, n, mu, omega), n, mu


# --- (1)+(2): flow kernels ------------------------------------------------------------------
def _embedding_hand(Pc, eta_x, eta_y):
    Ds = np.asarray(Pc.sum(axis=1)).ravel()
    Dy = np.asarray(Pc.sum(axis=0)).ravel()
    PT = Pc.T.tocsr()

    def flow(X, Y):
        return (-eta_x * (Ds[:, None] * X - Pc @ Y), -eta_y * (Dy[:, None] * Y - PT @ X))
    return flow


def _head_hand(Pc, eta_x, eta_y, eta_W):
    """docs/model.md §3 with stop-gradient: Ẋ = −η_x (D_s X Wᵀ − P Y) W, Ẏ = −η_y (D_y Y Wᵀ − Pᵀ X) W,
    Ẇ = −η_W (W ZᵀDZ − ZᵀAZ)."""
    Ds = np.asarray(Pc.sum(axis=1)).ravel()
    Dy = np.asarray(Pc.sum(axis=0)).ravel()
    PT = Pc.T.tocsr()

    def flow(X, Y, W):
        PY, PtX = Pc @ Y, PT @ X
        Xd, Yd = X * Ds[:, None], Y * Dy[:, None]
        dX = -eta_x * ((Xd @ W.T) - PY) @ W
        dY = -eta_y * ((Yd @ W.T) - PtX) @ W
        ZDZ = X.T @ Xd + Y.T @ Yd
        ZAZ = X.T @ PY
        dW = -eta_W * (W @ ZDZ - (ZAZ + ZAZ.T))
        return dX, dY, dW
    return flow


def _torch_flows(P, eta, head: bool):
    import torch

    i, c = np.nonzero(P)
    ti, tc = torch.as_tensor(i), torch.as_tensor(c)
    tp = torch.as_tensor(P[i, c])

    def flow(X, Y, W=None):
        X = X.detach().requires_grad_(True)
        Y = Y.detach().requires_grad_(True)
        xs, ys = X[ti], Y[tc]
        if head:
            W = W.detach().requires_grad_(True)
            r1 = xs @ W.T - ys.detach()
            r2 = ys @ W.T - xs.detach()
            L = 0.5 * (tp * ((r1 * r1).sum(1) + (r2 * r2).sum(1))).sum()
            L.backward()
            return -eta["x"] * X.grad, -eta["y"] * Y.grad, -eta["W"] * W.grad
        r = xs - ys
        L = 0.5 * (tp * (r * r).sum(1)).sum()
        L.backward()
        return -eta["x"] * X.grad, -eta["y"] * Y.grad
    return flow


@benchmark(rows=(1, 2), full=dict(N=100_000, d=16, repeats=15), smoke=dict(N=400, d=2, repeats=2))
def bench_flow(*, N: int, d: int, repeats: int) -> list[Row]:
    from symcollapse.models.embedding import embedding_loss
    from symcollapse.models.head import head_loss

    K, eps = 10, 0.05
    P, n, mu = balanced(K, N, eps)
    N = P.shape[0]
    Pc = sps.csr_matrix(P)
    rng = np.random.default_rng(0)
    eta = {"x": 1.0, "y": 0.5, "W": 0.25}
    rows = []
    try:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        torch = None
    where = f"N={N}, d={d}, K={K}, ε={frustration_fraction(K, n, mu):.3f}"
    for model in ("embedding", "head"):
        loss = embedding_loss(d) if model == "embedding" else head_loss(d)
        cl = compile_loss(loss)
        rates = {b: eta[b] for b in cl.flow.loss.blocks}  # the embedding loss has no head block W
        sysm = FlowSystem(cl, P, rates=rates, path="moment")
        X, Y = 0.1 * rng.normal(size=(N, d)), rng.normal(size=(K, d))
        W = np.eye(d) + 0.1 * rng.normal(size=(d, d))
        st = {"x": X, "y": Y} if model == "embedding" else {"x": X, "y": Y, "W": W}
        v = sysm.pack(st)
        if model == "embedding":
            hand = _embedding_hand(Pc, eta["x"], eta["y"])
            args = (X, Y)
        else:
            hand = _head_hand(Pc, eta["x"], eta["y"], eta["W"])
            args = (X, Y, W)
        ref = np.concatenate([a.ravel() for a in hand(*args)])
        got = sysm.flow_vector(v)
        agree(f"{model}: compiled flow vs hand-written flow", relative_error(got, ref), 1e-12)
        r, ta, tb = median_ratio(lambda: sysm.flow_vector(v), lambda: hand(*args), repeats)
        rows.append(Row("1", f"compiled flow, {model} ({ta*1e3:.1f} ms)",
                        f"hand NumPy ({tb*1e3:.1f} ms)", r, "≤ 1.2", r <= 1.2, where))
        if torch is None:
            rows.append(Row("2", f"compiled flow, {model}", "PyTorch autograd", float("nan"),
                            "≤ 1.0", False, "skipped: torch not installed (pip install torch==2.13.0)"))
            continue
        targs = [torch.as_tensor(a) for a in args]
        tflow = _torch_flows(P, eta, model == "head")
        tref = np.concatenate([g.detach().numpy().ravel() for g in tflow(*targs)])
        agree(f"{model}: compiled flow vs torch autograd flow", relative_error(got, tref), 1e-10)
        r, ta, tb = median_ratio(lambda: sysm.flow_vector(v), lambda: tflow(*targs), repeats)
        rows.append(Row("2", f"compiled flow, {model} ({ta*1e3:.1f} ms)",
                        f"torch {torch.__version__} autograd CPU ({tb*1e3:.1f} ms)", r, "≤ 1.0",
                        r <= 1.0, where + f", torch threads={torch.get_num_threads()}"))
    return rows


# --- (3): integration ------------------------------------------------------------------------
@benchmark(rows=(3,), full=dict(N=10_000, eps=0.01, repeats=3), smoke=dict(N=1000, eps=0.05, repeats=1))
def bench_integration(*, N: int, eps: float, repeats: int, full_rk45: bool = False) -> list[Row]:
    """BDF + analytic Jacobian and the exact propagators vs RK45 to t = 5/r_s.

    RK45's step is stability-limited (h ≈ 3/λ_max) and expm_multiply's work grows with
    ‖J t‖₁, so both costs are linear in t: by default RK45 is timed on [0, t/100] and
    expm_multiply on [0, t/1000] (both far past the fast transient, t ~ 1/λ_max) and the
    times are scaled (``--full-rk45``: RK45 over the whole interval). Every state is
    compared with an independent one at the same time.
    """
    from symcollapse.models.embedding import EmbeddingModel
    from symcollapse.numerics.integrate import integrate
    from symcollapse.numerics.propagator import linear_propagator, spectral_propagator

    K, d = 10, 2
    P, n, mu = balanced(K, N, eps)
    model = EmbeddingModel(P, d=d)
    sysm = model.system
    rs = model.slow_rate()
    t_end = 5.0 / rs
    v0 = model.initial_state(0).ravel()
    jac = sysm.jacobian(np.zeros(sysm.size))
    prop = linear_propagator(sysm)
    tol = dict(rtol=1e-8, atol=1e-10)
    f_rk = 1.0 if full_rk45 else 0.01
    f_ex = 0.001
    out = {}

    def bdf(t):
        return integrate(sysm.flow_vector, v0, np.array([0.0, t]), jac=lambda y: jac, method="BDF",
                         **tol).y[-1]

    def run_bdf():
        out["bdf"] = bdf(t_end)

    def run_spectral():  # includes finding the modes (shift-invert Lanczos)
        out["spec"] = spectral_propagator(sysm, t_min=t_end, tol=1e-12)(v0, t_end)

    def run_expm():
        out["expm"] = prop(v0, f_ex * t_end)

    def run_rk45():
        out["rk45"] = integrate(sysm.flow_vector, v0, np.array([0.0, f_rk * t_end]), method="RK45",
                                **tol).y[-1]

    t_rk = timer(run_rk45) / f_rk  # once: it is the slow side
    t_ex = timer(run_expm) / f_ex  # once
    t_bdf = statistics.median(timer(run_bdf) for _ in range(repeats))
    t_sp = statistics.median(timer(run_spectral) for _ in range(repeats))

    e_bdf = max_rel(out["bdf"], out["spec"])
    e_ex = max_rel(out["expm"], bdf(f_ex * t_end))
    e_rk = max_rel(out["rk45"], bdf(f_rk * t_end) if f_rk < 1 else out["spec"])
    agree("BDF vs spectral propagator at t", e_bdf, 1e-5)
    agree("expm_multiply vs BDF", e_ex, 1e-5)
    agree("RK45 vs BDF", e_rk, 1e-5)
    lam = float(abs(sps.linalg.eigsh(-jac, k=1, which="LA", return_eigenvectors=False)[0]))
    where = (f"N={P.shape[0]}, d={d}, K={K}, ε={frustration_fraction(K, n, mu):.3f}, "
             f"t=5/r_s={t_end:.0f}, λ_max={lam:.0f}")
    rk = f"RK45, no Jacobian ({t_rk:.0f} s{'' if full_rk45 else ' = 100 × time on t/100'})"
    return [Row("3", f"BDF + analytic sparse Jacobian ({t_bdf:.2f} s)", rk, t_rk / t_bdf,
                "≥ 10× faster", t_rk / t_bdf >= 10,
                where + f"; BDF = spectral propagator to {e_bdf:.0e}; RK45 = BDF (at t/100) to {e_rk:.0e}"),
            Row("3", f"exact propagator expm_multiply ({t_ex:.0f} s = 1000 × time on t/1000)", rk,
                t_rk / t_ex, "≥ 10× faster", t_rk / t_ex >= 10,
                f"its work grows with ‖J t‖₁ = O(λ_max t) like RK45's step count; = BDF at t/1000 to {e_ex:.0e}"),
            Row("3", f"spectral propagator, modes below ln(1e12)/t ({t_sp:.2f} s)", rk, t_rk / t_sp,
                "≥ 10× faster", t_rk / t_sp >= 10,
                "exact to 1e-12 for t ≥ t_min (dropped modes bounded); includes the eigsh shift-invert")]


# --- (4): slow rate at N = 10⁶ ----------------------------------------------------------------
@benchmark(rows=(4,), full=dict(N_big=1_000_000, N_small=2000, repeats=3),
           smoke=dict(N_big=20_000, N_small=200, repeats=1))
def bench_slow_rate(*, N_big: int, N_small: int, repeats: int) -> list[Row]:
    from symcollapse.numerics import spectra

    K = 10
    big, n, mu = balanced(K, N_big, 0.05)
    small, n2, mu2 = balanced(K, N_small, 0.05)
    r_big = spectra.slow_rate(big, method="schur")
    r_small_s = spectra.slow_rate(small, method="schur")
    r_small_d = spectra.slow_rate(small, method="dense")
    agree("slow rate: Schur vs dense eigvalsh", abs(r_small_s - r_small_d) / r_small_d, 1e-9)
    # the big one against the smallest root of docs/model.md §2's sector cubic (η = 1)
    root = closed_forms.slow_rate(K, n, mu)
    agree("slow rate: Schur vs smallest root of the sector cubic", abs(r_big - root) / root, 1e-8)
    t_big = statistics.median(timer(lambda: spectra.slow_rate(big, method="schur")) for _ in range(repeats))
    t_dense = statistics.median(timer(lambda: spectra.slow_rate(small, method="dense")) for _ in range(repeats))
    return [Row("4", f"slow rate, Schur complement, N={big.shape[0]} ({t_big:.2f} s)",
                f"dense eigvalsh, N={small.shape[0]} ({t_dense:.2f} s)", t_big / t_dense, "≤ 1",
                t_big / t_dense <= 1,
                f"r_s={r_big:.6g} = cubic root to {abs(r_big - root) / root:.0e}; N={small.shape[0]}: Schur = dense")]


# --- (5): 512×512 grid of the closed-form slow rate ------------------------------------------
@benchmark(rows=(5,), full=dict(G=512, repeats=5, samples=300), smoke=dict(G=16, repeats=1, samples=20))
def bench_grid(*, G: int, repeats: int, samples: int) -> list[Row]:
    """The smallest root of the derived sector cubic (docs/model.md §2) by Viète's trigonometric
    closed form (three real roots), lambdified over a 512×512 grid of (μ/n, η_y/η_x)."""
    import sympy as sp

    from symcollapse.models.embedding import embedding_sector

    sec = embedding_sector(omega=2)
    r = sp.Symbol("r")
    cp = sp.Poly(sp.expand(sec.charpoly), r)
    a = cp.all_coeffs()
    lead = a[0]
    b, c, dd = [sp.simplify(e / lead) for e in a[1:]]
    # r³ + b r² + c r + d: depressed cubic t³ + p t + q with r = t − b/3
    p = c - b**2 / 3
    q = 2 * b**3 / 27 - b * c / 3 + dd
    m = 2 * sp.sqrt(-p / 3)
    theta = sp.acos(sp.Max(-1, sp.Min(1, 3 * q / (p * m)))) / 3
    smallest = m * sp.cos(theta + 2 * sp.pi / 3) - b / 3  # the k = 2 root of Viète's form
    syms = sorted(smallest.free_symbols, key=lambda s: s.name)
    fn = sp.lambdify(syms, smallest, "numpy")
    names = [s.name for s in syms]
    mu_over_n = np.geomspace(1e-4, 1.0, G)[:, None]
    eta_y = np.geomspace(1e-2, 1e2, G)[None, :]
    vals = {"K": 10.0, "n": 100.0, "eta_x": 1.0}

    fc = sp.lambdify(syms, [b, c, dd], "numpy")

    def run():
        kw = dict(vals)
        kw["mu"] = 100.0 * mu_over_n
        kw["eta_y"] = eta_y
        args = [kw[nm] for nm in names]
        r0 = np.broadcast_to(fn(*args), (G, G))
        B, C, D = (np.broadcast_to(v, (G, G)) for v in fc(*args))
        # one vectorised Newton step polishes the acos round-off near a double root
        return r0 - (((r0 + B) * r0 + C) * r0 + D) / ((3 * r0 + 2 * B) * r0 + C)

    t = statistics.median(timer(run) for _ in range(repeats))
    grid = run()
    # check against batched companion-matrix roots on a sample of the grid
    rng = np.random.default_rng(1)
    ii, jj = rng.integers(0, G, samples), rng.integers(0, G, samples)
    errs = []
    for i, j in zip(ii, jj):
        kw = dict(vals, mu=100.0 * mu_over_n[i, 0], eta_y=eta_y[0, j])
        bb, cc, d0 = (float(v) for v in fc(*[kw[nm] for nm in names]))
        ref = min(np.roots([1.0, bb, cc, d0]).real)
        errs.append(abs(grid[i, j] - ref) / ref)
    worst = float(np.max(errs))  # NaN propagates
    agree("closed-form grid vs companion-matrix roots", worst, 1e-6)
    return [Row("5", f"{G}×{G} closed-form slow rate ({t*1e3:.0f} ms)", "target 1 s", t / 1.0,
                "< 1 s", t < 1.0, f"Viète form of the derived cubic + 1 Newton step; = companion roots to {worst:.0e} "
                "(no closed-form r_s exported by models.embedding)")]


# --- (6): derivation + compilation, cold and warm --------------------------------------------
_ALL_MODELS = textwrap.dedent("""
    import sys, time
    t, c = time.perf_counter(), time.process_time()
    from symcollapse.numerics.kernels import compile_loss
    from symcollapse.models.embedding import embedding_loss
    from symcollapse.models.head import head_loss
    from symcollapse.models.teacher_student import student_loss
    d_head, every = int(sys.argv[1]), sys.argv[2] == "all"
    variants = [(sg, learn) for sg in (True, False, "labels") for learn in (True, False)]
    losses = [embedding_loss(2)] + [head_loss(d_head, sg, learn) for sg, learn in
              (variants if every else variants[:1])] + [student_loss(2), student_loss(2, head=True)][:2 if every else 0]
    for l in losses:
        compile_loss(l)
    # the matrix-level derivations the models use (every d at once, cross-checked at d = 1, 2, 3)
    from symcollapse.numerics.matrix_kernels import compile_matrix_loss
    from symcollapse.symbolic import losses as L
    mats = [L.embedding_matrix_loss(), L.student_matrix_loss(False), L.student_matrix_loss(True)]
    mats += [L.head_matrix_loss(sg, learn) for sg in L.SG_CHOICES for learn in (True, False)] if every else []
    for m in mats:
        compile_matrix_loss(m)
    print(time.perf_counter() - t, len(losses) + len(mats), time.process_time() - c)
""")


@benchmark(rows=(6,), full=dict(d_head=8, every=True, warm_runs=3), smoke=dict(d_head=2, every=False, warm_runs=1))
def bench_cache(*, d_head: int, every: bool, warm_runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SYMCOLLAPSE_CACHE_DIR=tmp, PYTHONPATH=str(ROOT))
        env.pop("SYMCOLLAPSE_CACHE", None)

        def run():
            out = subprocess.run([sys.executable, "-c", _ALL_MODELS, str(d_head), "all" if every else "one"],
                                 env=env, capture_output=True, text=True, check=True).stdout.split()
            return float(out[0]), int(out[1]), float(out[2])
        cold, n, cold_cpu = run()
        warms = [run() for _ in range(warm_runs)]
        warm = statistics.median(w[0] for w in warms)
        warm_cpu = statistics.median(w[2] for w in warms)
    return [Row("6", f"derive+compile {n} model losses, warm cache ({warm:.2f} s wall, {warm_cpu:.2f} s CPU)",
                f"cold, no cache ({cold:.2f} s wall, {cold_cpu:.2f} s CPU)", cold / warm,
                "warm ≤ 2 s", warm_cpu <= 2.0,
                f"fresh process each, incl. imports; head d={d_head}{' (HeadModel default)' if d_head == 8 else ''}; 'met' judged on "
                "CPU time since wall time includes waiting for the shared cores")]


# --- (8): dimension-free build and kernels ---------------------------------------------------
#: one BLAS thread in the timed subprocesses of row 8: on a 2-core machine shared with other jobs a
#: second OpenBLAS thread mostly spins waiting for the busy core, and process CPU time then
#: measures that contention (a 2-5x spread between identical runs), not the work
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_HEAD_BUILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import symcollapse as sc
    import symcollapse.models.head, symcollapse.symbolic.matrix_flow  # noqa: F401  (imports not timed)
    from symcollapse.models.couplings import balanced_couplings
    K, n, mu, d = 10, int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    P = balanced_couplings(K, n, mu)
    t, c = time.perf_counter(), time.process_time()
    m = sc.HeadModel(P, d=d, eta_y=0.5)
    m.system  # derive (matrix level, cross-checked at d = 1, 2, 3), classify, self-check
    tb, cb = time.perf_counter(), time.process_time()
    Z, W = m.initial_state(0)
    dZ, dW = m.flow(Z, W)
    assert np.all(np.isfinite(dZ)) and np.all(np.isfinite(dW))
    print(time.perf_counter() - t, time.process_time() - c, P.shape[0], cb - c)
""")

_HEAD_KERNEL = textwrap.dedent("""
    import sys, statistics
    import numpy as np, scipy.sparse as sps
    sys.path.insert(0, sys.argv[1])
    import symcollapse as sc
    from run import _head_hand, _head_hand_best, agree, median_ratio, relative_error
    from symcollapse.models.couplings import balanced_couplings
    n, mu, d, repeats = (int(a) for a in sys.argv[2:6])
    P = balanced_couplings(10, n, mu)
    Pc = sps.csr_matrix(P)
    eta = {"x": 1.0, "y": 0.5, "W": 0.25}
    m = sc.HeadModel(P, d=d, eta_x=eta["x"], eta_y=eta["y"], eta_W=eta["W"])
    sysm = m.system
    rng = np.random.default_rng(0)
    X, Y = 0.1 * rng.normal(size=(P.shape[0], d)), rng.normal(size=(10, d))
    W = np.eye(d) + 0.1 * rng.normal(size=(d, d))
    v = sysm.pack({"x": X, "y": Y, "W": W})
    out = [P.shape[0]]
    for hand in (_head_hand(Pc, eta["x"], eta["y"], eta["W"]), _head_hand_best(Pc, eta["x"], eta["y"], eta["W"])):
        ref = np.concatenate([a.ravel() for a in hand(X, Y, W)])
        agree("matrix-path flow vs hand-written flow", relative_error(sysm.flow_vector(v), ref), 1e-12)
        out += list(median_ratio(lambda: sysm.flow_vector(v), lambda: hand(X, Y, W), repeats))
    print(*out)
""")


def _head_hand_best(Pc, eta_x, eta_y, eta_W):
    """The same flow as :func:`_head_hand`, hand-written with the cheapest association:
    Ẋ = −η_x (D_s X (WᵀW) − P (Y W)), Ẏ = −η_y (D_y Y (WᵀW) − (Pᵀ X) W),
    Ẇ = −η_W (W (Xᵀ D_s X + Yᵀ D_y Y) − (C + Cᵀ)), C = (Pᵀ X)ᵀ Y, Xᵀ D X as Sᵀ S (S = D^{1/2} X)."""
    Ds = np.asarray(Pc.sum(axis=1)).ravel()
    Dy = np.asarray(Pc.sum(axis=0)).ravel()
    rs, ry = np.sqrt(Ds), np.sqrt(Dy)
    PT = Pc.T.tocsr()

    def flow(X, Y, W):
        G = W.T @ W
        PtX = PT @ X
        dX = -eta_x * ((X @ G) * Ds[:, None] - Pc @ (Y @ W))
        dY = -eta_y * ((Y @ G) * Dy[:, None] - PtX @ W)
        S, T = X * rs[:, None], Y * ry[:, None]
        C = PtX.T @ Y
        dW = -eta_W * (W @ (S.T @ S + T.T @ T) - (C + C.T))
        return dX, dY, dW
    return flow


@benchmark(rows=(8,), full=dict(dims=(8, 32, 128, 256), n=950, mu=11, d_kernel=128, repeats=9),
           smoke=dict(dims=(2, 4), n=20, mu=1, d_kernel=4, repeats=2))
def bench_dimension_free(*, dims: tuple, n: int, mu: int, d_kernel: int, repeats: int) -> list[Row]:
    """HeadModel cold build (matrix-level derivation, its cross-check at d = 1, 2, 3, kernel
    classification and self-check) + initial state + first flow, fresh process, cache off, one
    BLAS thread; and the matrix-path flow at d_kernel against two hand-written NumPy flows of the
    same equations (as written in docs/model.md §3, and with the cheapest association)."""
    env = dict(os.environ, SYMCOLLAPSE_CACHE="0", PYTHONPATH=str(ROOT), **_ONE_THREAD)
    times = {}
    N = None
    for d in dims:
        out = subprocess.run([sys.executable, "-c", _HEAD_BUILD, str(n), str(mu), str(d)], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        times[d] = (float(out[0]), float(out[1]), float(out[3]))
        N = int(out[2])
    rows = []
    where = f"K=10, N={N}, cache off, fresh process (imports excluded), one BLAS thread"
    for d in dims:
        wall, cpu, build = times[d]
        rows.append(Row("8", f"HeadModel build + first flow, d={d} ({wall:.2f} s wall, {cpu:.2f} s CPU; "
                        f"build alone {build:.2f} s CPU)", "target 2 s", cpu / 2.0, "≤ 2 s", cpu <= 2.0,
                        where + "; 'met' on CPU time"))
    lo, hi = dims[0], dims[-1]
    r = times[hi][1] / times[lo][1]
    rows.append(Row("8", f"build + first flow ratio t(d={hi})/t(d={lo}) (CPU)", f"d={lo}", r, "≤ 1.5", r <= 1.5,
                    where + "; includes the initial state and the first O(N d²) flow"))
    rb = times[hi][2] / times[lo][2]
    rows.append(Row("8", f"build alone (derive + check + compile) ratio t(d={hi})/t(d={lo}) (CPU)", f"d={lo}", rb,
                    "≤ 1.5", rb <= 1.5, where + "; the kernel self-check runs at d = 3 and, in one direction, at d"))
    # the flow kernel at d_kernel vs the hand-written flows, in one single-BLAS-thread process
    env = dict(os.environ, PYTHONPATH=str(ROOT), **_ONE_THREAD)
    out = subprocess.run([sys.executable, "-c", _HEAD_KERNEL, str(Path(__file__).resolve().parent), str(n),
                          str(mu), str(d_kernel), str(repeats)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    Nk, (r1, ta1, tb1, r2, ta2, tb2) = int(out[0]), map(float, out[1:])
    rows.append(Row("8", f"matrix-path flow kernel, head d={d_kernel} ({ta1*1e3:.1f} ms)",
                    f"hand NumPy as written in docs/model.md §3 ({tb1*1e3:.1f} ms)", r1, "≤ 1.2", r1 <= 1.2,
                    f"N={Nk}, K=10, one BLAS thread"))
    rows.append(Row("8", f"matrix-path flow kernel, head d={d_kernel} ({ta2*1e3:.1f} ms)",
                    f"hand NumPy, cheapest association ({tb2*1e3:.1f} ms)", r2, "≤ 1.2", r2 <= 1.2,
                    f"N={Nk}, K=10, one BLAS thread; X(WᵀW), P(YW), (PᵀX)ᵀY, SᵀS by hand"))
    return rows


# --- (14): a stop-gradient head at large d to its fixed point --------------------------------
_HEAD_FIXED_POINT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import symcollapse as sc
    K, n, mu, d, c, t_end, stop = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                   float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]))
    P = sc.balanced_couplings(K, n, mu)
    N = P.shape[0]
    m = sc.HeadModel(P, d=d, eta_x=1.0, eta_y=1.0 / n, eta_W=c / N)
    Z0, _ = m.initial_state(0)
    W0 = np.diag(np.r_[np.ones(d // 2), -np.ones(d - d // 2)])  # a head that starts with both signs
    t0, c0 = time.perf_counter(), time.process_time()
    tr = m.simulate(t_end=t_end, Z0=Z0, W0=W0, method="DOP853", stop_residual=stop, n_points=20, rtol=1e-12,
                    atol=1e-15)  # at rtol = 1e-10 the stability-limited late steps leave ‖θ̇‖∞ above 1e-9
    t_sim, c_sim = time.perf_counter() - t0, time.process_time() - c0
    ev = np.linalg.eigvals(tr.W)
    nu = sc.nu_sep(K, n, mu)
    errs = []
    for target, mult in ((1.0, 1), (nu, K - 1), (-1.0, 1), (-nu, K - 1)):
        errs.append(float(np.sort(np.abs(ev - target))[mult - 1]))
    v = m.pack(tr.Z, tr.W)
    t1, c1 = time.perf_counter(), time.process_time()
    sm = m.system.slowest_modes(v, k=4)
    t_eig, c_eig = time.perf_counter() - t1, time.process_time() - c1
    dense = float("nan")
    if d <= 12:  # the other side at small size: the assembled Jacobian's rightmost nonzero eigenvalues
        e = np.linalg.eigvals(m.system.jacobian(v).toarray())
        rho = float(np.max(np.abs(e)))
        nz = np.array(sorted(e[np.abs(e) > 1e-9 * rho], key=lambda z: -z.real))[:4]
        dense = float(np.max(np.abs(nz - sm["eigenvalues"]))) / rho
    print(N, tr.extra["t_reached"], tr.extra["residual"], int(tr.extra["stopped"]), t_sim, c_sim, *errs,
          *sm["eigenvalues"].real, float(np.max(np.abs(sm["eigenvalues"].imag))), sm["n_matvec"], t_eig, c_eig,
          float(np.max(sm["residuals"])), sm["invariance"], sm["null_check"], sm["n_tangent"], sm["n_locked"],
          sm["rank"], sm["rounds"], sm["rho"], dense, tr.d_min[0], tr.d_min[-1])
""")


@benchmark(rows=(14,), full=dict(K=10, n=950, mu=11, d=64, c=1.0, t_end=2000.0, stop=1e-9),
           smoke=dict(K=2, n=3, mu=1, d=4, c=10.0, t_end=2000.0, stop=1e-8))
def bench_large_d_fixed_point(*, K: int, n: int, mu: int, d: int, c: float, t_end: float, stop: float) -> list[Row]:
    """A stop-gradient head (rates η_x = 1, η_y = 1/n, η_W = c/N: every block relaxes at O(1) per
    node, so DOP853 is not stiff) started with both signs, W(0) = diag(+I, −I) (with W(0) = I the
    ν < 0 modes are not reached: a basin question, #13), integrated to its fixed point
    (‖θ̇‖_∞ ≤ stop); the head's eigenvalues against ±1 and ±ν_sep (docs/model.md §3), and the four
    slowest decay rates at the end state from the JVP LinearOperator with the structured symmetry
    tangent projected out (docs/model.md §3.3), each eigenpair checked through the JVP (and, at
    d ≤ 12, against the assembled Jacobian). One BLAS thread."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **_ONE_THREAD)
    out = subprocess.run([sys.executable, "-c", _HEAD_FIXED_POINT, str(K), str(n), str(mu), str(d), str(c),
                          str(t_end), str(stop)], env=env, capture_output=True, text=True, check=True).stdout.split()
    N, t_reached, residual, stopped, t_sim, c_sim = int(out[0]), float(out[1]), float(out[2]), bool(int(out[3])), \
        float(out[4]), float(out[5])
    e_p1, e_pnu, e_m1, e_mnu = (float(x) for x in out[6:10])
    slow = [float(x) for x in out[10:14]]
    imag, n_mv, t_eig, c_eig, eres, inv, null = float(out[14]), int(out[15]), float(out[16]), float(out[17]), \
        float(out[18]), float(out[19]), float(out[20])
    n_tan, n_lock, rank, rounds, rho, dense, dmin0, dmin1 = int(out[21]), int(out[22]), int(out[23]), int(out[24]), \
        float(out[25]), float(out[26]), float(out[27]), float(out[28])
    agree("the run reached its fixed point", 0.0 if stopped else float("inf"), 0.0)
    agree("the eigenpairs are the Jacobian's (‖J u − λ u‖/ρ‖u‖ through the JVP)", eres, 1e-8)
    if d <= 12:
        agree("LinearOperator vs assembled Jacobian, rightmost nonzero eigenvalues (/ρ)", dense, 1e-8)
    where = f"K={K}, N={N}, d={d}, rates (1, 1/n, {c:g}/N), W(0) = diag(+I, −I), DOP853 rtol 1e-12, one BLAS thread"
    pos, neg = max(e_p1, e_pnu), max(e_m1, e_mnu)
    return [
        Row("14", f"sg head to its fixed point: t = {t_reached:.1f}, ‖θ̇‖∞ = {residual:.1e} "
                  f"({t_sim:.0f} s wall, {c_sim:.0f} s CPU; Δ_min {dmin0:.3g} → {dmin1:.3g})", "stop_residual",
            residual / stop, f"≤ {stop:g}", residual <= stop, where),
        Row("14", f"head eigenvalues +1 ({e_p1:.1e}) and +ν_sep, (K−1)-fold ({e_pnu:.1e}): max distance", "1e-6",
            pos / 1e-6, "≤ 1e-6", pos <= 1e-6, where),
        Row("14", f"head eigenvalues −1 ({e_m1:.1e}) and −ν_sep, (K−1)-fold ({e_mnu:.1e}): max distance", "1e-6",
            neg / 1e-6, "≤ 1e-6", neg <= 1e-6, where),
        Row("14", "4 slowest decay rates at the end state from the LinearOperator: "
                  + ", ".join(f"{x:.6g}" for x in slow)
                  + f" (ARPACK on the tangent-projected JVP, {rounds} rounds, {n_mv} JVPs, {t_eig:.0f} s wall, "
                    f"{c_eig:.0f} s CPU)", "—", float(max(slow)), "< 0 (stable)", max(slow) < 0,
            f"{where}; ρ(J) ≈ {rho:.3g}; tangent dim {n_tan} = d², rank Z = {rank}, {n_lock} further zero modes "
            f"locked; max ‖J t‖/ρ‖t‖ on T {null:.1e}; eigenpair residuals ≤ {eres:.1e}, invariance {inv:.1e}, "
            f"max |Im λ| {imag:.1e}" + (f"; vs assembled Jacobian {dense:.1e} (/ρ)" if d <= 12 else "")),
    ]


# --- (7): peak memory ---------------------------------------------------------------------------
_MEMORY = textwrap.dedent("""
    import resource, sys, numpy as np
    from scipy.integrate import RK45
    from symcollapse.models.head import head_loss
    from symcollapse.models.couplings import balanced_couplings
    from symcollapse.numerics.kernels import compile_loss
    from symcollapse.numerics.system import FlowSystem
    K, d, n, mu = 10, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    P = balanced_couplings(K, n, mu)
    cp = compile_loss(head_loss(d))
    sysm = FlowSystem(cp, P, rates={"x": 1.0, "y": 1.0, "W": 1.0})
    rng = np.random.default_rng(0)
    v = sysm.pack({"x": 0.1 * rng.normal(size=(P.shape[0], d)), "y": rng.normal(size=(K, d)), "W": np.eye(d)})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    which = sys.argv[1]
    if which == "flow":
        out = sysm.flow_vector(v)
    else:
        s = RK45(lambda t, y: sysm.flow_vector(y), 0.0, v, 1.0, rtol=1e-6, atol=1e-9)
        s.step()
        out = s.y
    assert np.all(np.isfinite(out)), "non-finite flow"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peak * 1024, base * 1024, P.shape[0], v.size)
""")


@benchmark(rows=(13,), full=dict(K=10, eps=0.1, d=24, seeds=8), smoke=dict(K=2, eps=0.25, d=2, seeds=2))
def bench_phase_cell(*, K: int, eps: float, d: int, seeds: int) -> list[Row]:
    """One (ε, d) cell of the phase diagram (issue #13), end to end: ``seeds`` seeded head simulations
    (one at a time, method 'auto') until every residual ≤ 1e-9, each end state's family
    (ranks per ν-level) and its stability from the dense engine Jacobian with the symmetry tangent
    removed (at d = 24 the dense eig is the faster classifier of a real end state: 8 s against 46 s
    for the operator path, RESULTS.md), each reached family derived stable (at a scanned member or at
    its reached amplitudes), every family of the cell classified from the derived sector blocks. The
    matrix-free classification (JVP operator + ARPACK) runs on the first end state as the alternative:
    both must give the same verdict and λ_max."""
    from symcollapse import phase as ph
    from symcollapse.models.head import sector_stability as ss
    from symcollapse.numerics import families as fm
    from symcollapse.numerics.basins import residual
    from symcollapse.numerics.operator_stability import classify_state_operator

    model, n, mu, e = ph._model(K, eps, d, 1.0, 0.1, 1.0, 4)
    c0, w0 = time.process_time(), time.perf_counter()
    states = [model.initial_state(s) for s in range(seeds)]
    t_reached, chunk = np.zeros(seeds), 500.0
    todo = list(range(seeds))
    while todo and chunk <= 64000:  # one seed at a time ('auto': the structured one-seed BDF)
        for i in todo:
            tr = model.simulate(Z0=states[i][0], W0=states[i][1], t_end=chunk, stop_residual=1e-9, n_points=3)
            states[i] = (tr.Z, tr.W)
            t_reached[i] += float(tr.extra.get("t_reached", chunk))
        todo = [i for i in todo if not residual(model, *states[i]) <= 1e-9]
        chunk *= 2
    c_sim, w_sim = time.process_time() - c0, time.perf_counter() - w0
    res = max(residual(model, Z, W) for Z, W in states)
    agree("phase cell: end states are fixed points", res / 1e-9, 1.0)
    c0, w0 = time.process_time(), time.perf_counter()
    found = [fm.state_family(model.graph, Z)[0] for Z, _ in states]
    fams = [f.key for f in found]
    dense = [fm.classify_state(model, Z, W) for Z, W in states]
    c_cls, w_cls = time.process_time() - c0, time.perf_counter() - w0
    c0 = time.process_time()
    members = {}
    for f, (Z, W) in zip(found, states):
        mem = ph.member_of(ph.member_fields(model.graph, Z, W, f) | {"rank": f.rank})
        members.setdefault(f.key, [])
        if mem is not None and mem not in members[f.key]:
            members[f.key].append(mem)
    verdicts = {k: ph.reached_family_verdict(K, eps, d, 1.0, 0.1, 1.0, 4, k, tuple(m)) for k, m in members.items()}
    c_fam = time.process_time() - c0
    c0 = time.process_time()
    table = ss.derived_family_table(K, n, mu, d, 1.0, 0.1, 1.0) if mu >= 1 else []
    c_tab = time.process_time() - c0
    c0, w0 = time.process_time(), time.perf_counter()
    op = classify_state_operator(model, *states[0])
    c_op, w_op = time.process_time() - c0, time.perf_counter() - w0
    c_one = c_cls / seeds
    agree("phase cell: operator verdict = dense verdict", float(op.label != dense[0].label), 0.0)
    agree("phase cell: operator λ_max = dense λ_max",
          abs(op.max_real - dense[0].max_real) / max(1.0, abs(dense[0].max_real)), 1e-6)
    counts = {}
    for f in fams:
        counts[f] = counts.get(f, 0) + 1
    stable = sum(o.kind == "stable" for o in dense)
    labels = {}
    for f, o in zip(fams, dense):
        labels[o.label] = labels.get(o.label, 0) + 1
    failed = sorted(k for k, v in verdicts.items() if v == ph.REACHED_NONE)
    n_stable_fam = sum(r["kind"] == "stable" for r in table)
    total = c_sim + c_cls + c_fam + c_tab
    load = os.getloadavg()[0]
    where = (f"B({K},{n},{mu}), ε'={e:.2f} (closest with n ≤ 4), N+K={model.N + model.K}, state {model.system.size}; "
             f"load avg {load:.1f}")
    return [Row("13", f"phase cell K={K}, d={d}, {seeds} seeds end to end, CPU: simulate {c_sim:.0f} s "
                f"(wall {w_sim:.0f} s, t ≤ {t_reached.max():.0f}) + classify {c_cls:.1f} s (dense) + reached "
                f"families {c_fam:.1f} s + family table {c_tab:.1f} s", "target 450 s CPU", total / 450.0,
                "≤ 450 s", total <= 450.0,
                f"{where}; {stable}/{seeds} end states stable (dense J: "
                + ", ".join(f"{v}× {k}" for k, v in sorted(labels.items()))
                + f"; by seed {[o.label for o in dense]}, λ_max {[float(f'{o.max_real:.2g}') for o in dense]}, "
                f"t_end {[int(t) for t in t_reached]}); families reached (derived verdict): "
                + "; ".join(f"{v}× [{k}] ({verdicts[k]})" for k, v in sorted(counts.items()))
                + f"; {len(failed)} reached families without a stable member; {len(table)} families derived, "
                f"{n_stable_fam} stable; max residual {res:.0e}"),
            Row("13", f"end-state classification via JVP operator + ARPACK ({c_op:.1f} s CPU, wall {w_op:.1f} s)",
                f"dense eig of the Jacobian ({c_one:.1f} s CPU per end state)", c_op / c_one, "≤ 1",
                c_op <= c_one, "first end state, identical verdict and λ_max")]


@benchmark(rows=(7,), full=dict(d=16, n=97778, mu=222), smoke=dict(d=2, n=50, mu=1))
def bench_memory(*, d: int, n: int, mu: int) -> list[Row]:
    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for which, label in (("flow", "one flow evaluation"), ("step", "one RK45 integration step")):
        out = subprocess.run([sys.executable, "-c", _MEMORY, which, str(d), str(n), str(mu)], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        peak, base, N, size = int(out[0]), int(out[1]), int(out[2]), int(out[3])
        gb = peak / 2**30
        rows.append(Row("7", f"peak RSS, head model, {label} ({gb:.2f} GB)", "target 3 GB", gb / 3.0,
                        "< 3 GB", gb < 3.0,
                        f"N={N}, d={d}, state {size} floats; whole process incl. P and setup "
                        f"({base / 2**30:.2f} GB before)"))
    return rows


# --- (9)–(11): simulation speed (issue #12) -----------------------------------------------------
def _no_sparse_lu():
    """Context: any SuperLU factorisation raises (proves a run used none)."""
    import contextlib

    import scipy.integrate._ivp.bdf as bdf
    import scipy.sparse.linalg as sla

    import symcollapse.numerics.integrate as integ

    @contextlib.contextmanager
    def ctx():
        def no_lu(*a, **k):
            raise AssertionError("sparse LU called")
        saved = [(m, m.splu) for m in (sla, bdf, integ)]
        for m, _ in saved:
            m.splu = no_lu
        try:
            yield
        finally:
            for m, f in saved:
                m.splu = f
    return ctx()


@benchmark(rows=(9,), full=dict(Ns=(10_000, 100_000, 1_000_000), eps=0.01, spectral_upto=100_000, repeats=2),
           smoke=dict(Ns=(500,), eps=0.05, spectral_upto=500, repeats=1))
def bench_linear_simulate(*, Ns, eps: float, spectral_upto: int, repeats: int, K: int = 10, d: int = 2) -> list[Row]:
    """EmbeddingModel.simulate (method='auto': exact, no sparse LU) to t = 5/r_s on its 200-point grid
    vs the exact propagator used by hand: the node operator −H L_G built from the graph, its
    degree-reduced spectral solution at the same times and the same metrics (Δ_min, accuracy,
    loss) computed by the caller; Δ_min(t_end) checked against the package's older spectral
    propagator (eigsh shift-invert on the (N+K)d system, independent code) where affordable."""
    from symcollapse.models.embedding import EmbeddingModel
    from symcollapse.numerics.column_flow import column_propagator
    from symcollapse.numerics.integrate import time_grid
    from symcollapse.numerics.metrics import accuracy, d_min
    from symcollapse.numerics.propagator import spectral_propagator

    rows = []
    for N_target in Ns:
        P, n, mu = balanced(K, N_target, eps)
        model = EmbeddingModel(P, d=d)
        g = model.graph
        rs = model.slow_rate()
        t_end = 5.0 / rs
        out = {}
        model.system  # the compiled system is built once per model, outside the timing (as the hand side's graph)

        def run_sim():
            with _no_sparse_lu():
                out["sim"] = model.simulate(t_end, seed=0)

        def run_hand():
            h = np.concatenate([np.full(g.N, 1.0), np.full(g.K, 1.0)])
            L = sps.diags(g.degree) - g.adjacency
            A = sps.csr_matrix(-(sps.diags(h) @ L))
            prop = column_propagator(A, g.N, g.K, h=h)
            Z0 = model.initial_state(0)
            dm, acc, ls = [], [], []
            for Z in prop.states(Z0, time_grid(t_end, 200)):
                X, Y = Z[:g.N], Z[g.N:]
                dm.append(d_min(Y))
                acc.append(accuracy(X, Y, model.labels))
                ls.append(0.5 * float(np.sum(Z * (L @ Z))))
            out["hand"] = np.array(dm), np.array(ls)

        ratio, t_sim, t_hand = median_ratio(run_sim, run_hand, repeats=repeats, warmup=0)
        tr = out["sim"]
        agree(f"N={g.N}: simulate Δ_min(t) = hand propagator Δ_min(t)", max_rel(tr.d_min, out["hand"][0]), 1e-12)
        agree(f"N={g.N}: simulate loss(t) = ½ tr(ZᵀLZ)", max_rel(tr.loss, out["hand"][1]), 1e-9)
        note = (f"N={g.N}, d={d}, K={K}, ε={frustration_fraction(K, n, mu):.3f}, t=5/r_s={t_end:.0f}, "
                f"method={tr.extra['method']} (reduced size {tr.extra.get('reduced_size')}), no sparse LU (SuperLU "
                "patched to raise)")
        if g.N <= spectral_upto:
            t0 = time.perf_counter()
            ref = spectral_propagator(model.system if hasattr(model.system, "rate_vector") else model.system,
                                      t_min=t_end, tol=1e-12)(model.initial_state(0).ravel(), t_end)
            t_spec = time.perf_counter() - t0
            e = abs(d_min(ref.reshape(-1, d)[g.N:]) / tr.d_min[-1] - 1.0)
            agree(f"N={g.N}: Δ_min(t_end) = older spectral propagator", e, 1e-8)
            note += f"; Δ_min(t_end) = eigsh spectral propagator to {e:.0e} (which took {t_spec:.2f} s for t_end alone)"
        else:
            note += "; older eigsh propagator not run (its shift-invert LU of the (N+K)d system is the crash case)"
        rows.append(Row("9", f"simulate, linear, N={g.N} ({t_sim:.2f} s)",
                        f"exact propagator + same metrics by hand ({t_hand:.2f} s)", ratio, "≤ 1.5",
                        ratio <= 1.5, note))
    return rows


def _head_hand_vec(P, eta_x, eta_y, eta_W, N, K, d):
    flow = _head_hand(sps.csr_matrix(P), eta_x, eta_y, eta_W)
    nx, ny = N * d, K * d

    def f(t, v):
        X, Y, W = v[:nx].reshape(N, d), v[nx:nx + ny].reshape(K, d), v[nx + ny:].reshape(d, d)
        a, b, c = flow(X, Y, W)
        return np.concatenate([a.ravel(), b.ravel(), c.ravel()])
    return f


#: largest state for the hand BDF with jac_sparsity: the W rows are dense, so no two columns share a
#: finite-difference group and scipy's FD Jacobian costs n flows and O(n²) memory (N = 10⁴, d = 4,
#: 40 032 unknowns: killed for memory at 24 GB)
HAND_SPARSE_UPTO = 20_000


def _head_hand_sparsity(P, N, K, d) -> sps.csr_matrix:
    """The Jacobian pattern of the hand flow (X, Y, W): a sample couples to itself, its labels and W;
    a label to itself, its samples and W; W to everything."""
    E = sps.csr_matrix((np.asarray(P.toarray() if sps.issparse(P) else P) > 0).astype(float))
    B = np.ones((d, d))
    xx = sps.kron(sps.eye(N), B)
    xy = sps.kron(E, B)
    yy = sps.kron(sps.eye(K), B)
    n_w = d * d
    xw, yw = sps.csr_matrix(np.ones((N * d, n_w))), sps.csr_matrix(np.ones((K * d, n_w)))
    wa = sps.csr_matrix(np.ones((n_w, (N + K) * d + n_w)))
    return sps.vstack([sps.hstack([xx, xy, xw]), sps.hstack([xy.T, yy, yw]), wa]).tocsr()


def _filed_default_row(m, v0, t_max, tol, tr, c_auto, budget, label, note) -> Row:
    """The default when issue #12 was filed — SciPy's BDF with the analytic sparse Jacobian on the
    full system (rtol 1e-8, atol 1e-11), stopped at ‖θ̇‖_∞ ≤ tol — run for at most ``budget`` × auto's
    CPU time: finished, the ratio is measured; unfinished, it is at least ``budget`` (a lower bound).
    Sizes whose Jacobian cannot be assembled record that the default cannot run."""
    from scipy.integrate import BDF

    sysm = m.system
    try:
        sysm.jacobian(v0)
    except InvalidParameterError as exc:
        return Row("10", label + f" [{c_auto:.1f} s CPU]", "default when filed: BDF (cannot run)", float("nan"),
                   "≥ 10× faster where it runs", True,
                   note + f"; not applicable: the filed default needs the assembled Jacobian ({exc})")
    c1 = time.process_time()
    s = BDF(lambda t, v: sysm.flow_vector(v), 0.0, v0, t_max, rtol=1e-8, atol=1e-11, jac=lambda t, v: sysm.jacobian(v))
    res, steps = float("inf"), 0
    while s.status == "running" and time.process_time() - c1 < budget * c_auto and res > tol:
        s.step()
        steps += 1
        res = float(np.max(np.abs(sysm.flow_vector(s.y))))
    c_old = time.process_time() - c1
    done = res <= tol
    if done:
        Y = sysm.unpack(s.y)["y"]
        agree("the filed default reaches the same end state (Δ_min, relative to its largest value)",
              abs(sc_dmin(Y) - tr.d_min[-1]) / np.max(tr.d_min), 1e-4)
    ratio = c_old / c_auto
    return Row("10", label + f" [{c_auto:.1f} s CPU]",
               f"default when filed: BDF ({c_old:.1f} s CPU, {'finished' if done else 'unfinished'})",
               ratio, "≥ 10× faster", ratio >= 10,
               note + f"; BDF {steps} steps to t = {s.t:.3g}, ‖θ̇‖∞ = {res:.1e}" +
               ("" if done else f", stopped at {budget:g}× auto's CPU time (the ratio is a lower bound)"))


#: The package as it was when issue #12 was filed: the parent of its first commit (6ea5440,
#: "simulate(method='auto') ..."). Row 10 runs this tree's own default (``HeadModel.simulate``,
#: method 'BDF' with its analytic Jacobian and its own kernels) as "today's default".
FILED_COMMIT = "0b0e2598571c896f947bb3e6623a276c64969c0f"

_FILED_RUN = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    tree, K, N, d, t_end, eta_x, eta_y, eta_W, budget = sys.argv[1:10]
    sys.path.insert(0, tree)
    import symcollapse
    assert symcollapse.__file__.startswith(tree), symcollapse.__file__
    from symcollapse.models.head import HeadModel
    from symcollapse.numerics.metrics import d_min
    P = np.load(tree + "/P.npy")
    m = HeadModel(P, d=int(d), eta_x=float(eta_x), eta_y=float(eta_y), eta_W=float(eta_W))
    v0 = m.pack(*m.initial_state(0))
    m.system.flow_vector(v0)  # build outside the timing
    c0 = time.process_time()
    soft = int(c0 + float(budget)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 30))  # SIGXCPU ends an unfinished run
    tr = m.simulate(float(t_end), seed=0, n_points=3)
    c = time.process_time() - c0
    print(json.dumps({"cpu": c, "d_min": float(tr.d_min[-1]), "v0": v0.tolist()}))
""")


def filed_tree(dest: Path) -> Path | None:
    """Export the package at FILED_COMMIT into ``dest`` (``git archive``); None without git history."""
    try:
        arch = subprocess.run(["git", "-C", str(ROOT), "archive", FILED_COMMIT, "symcollapse"],
                              capture_output=True, check=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return dest


def _last_frame(stderr: str) -> str:
    """The source line of a traceback's last frame (Python 3.11's caret lines skipped), shortened."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and set(ln.strip()) - set("^~ ")]
    return lines[-2][:120] if len(lines) > 1 else ""


def _filed_package_row(P, eta, d: int, v0, t_fixed: float, tr, c_auto: float, budget: float,
                       label: str, note: str) -> Row:
    """The filed package's own default run from the same initial state to auto's t_fixed, in a
    subprocess with a CPU limit of ``budget`` × auto's CPU time (killed there: the ratio is a lower
    bound). Its initial state must equal this package's (checked), its end Δ_min auto's to 1e-4."""
    import json
    import signal

    K = P.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        tree = filed_tree(Path(tmp))
        if tree is None:
            return Row("10", label + f" [{c_auto:.1f} s CPU]", f"filed package {FILED_COMMIT[:7]} (not available)",
                       float("nan"), "≥ 10× faster", True, note + "; no git history to export the filed package")
        np.save(Path(tmp) / "P.npy", np.asarray(P))
        limit = budget * c_auto
        out = subprocess.run([sys.executable, "-c", _FILED_RUN, str(tree), str(K), str(P.shape[0]), str(d),
                              repr(float(t_fixed)), *(repr(float(e)) for e in eta), repr(limit)],
                             capture_output=True, text=True, env={**os.environ, **_ONE_THREAD}, timeout=limit * 4 + 600)
    if out.returncode == -signal.SIGXCPU:
        return Row("10", label + f" [{c_auto:.1f} s CPU]",
                   f"filed package {FILED_COMMIT[:7]}, its default BDF (unfinished at {limit:.1f} s CPU)",
                   float("nan"), "≥ 10× faster", True,
                   note + f"; the filed package's default did not reach t = {t_fixed:.0f} within {budget:g}× "
                   "auto's CPU time (so auto is ≥ that much faster)")
    if out.returncode != 0 and "MemoryError" in out.stderr:
        return Row("10", label + f" [{c_auto:.1f} s CPU]",
                   f"filed package {FILED_COMMIT[:7]}, its default BDF (cannot finish: out of memory)",
                   float("nan"), "≥ 10× faster", True,
                   note + "; the filed package's default ran out of memory (MemoryError; its last frame: "
                   f"{_last_frame(out.stderr)}), so it does not finish this cell")
    if out.returncode != 0:
        raise RuntimeError(f"filed package run failed: {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    agree("the filed package starts from the same initial state", float(np.max(np.abs(np.asarray(res["v0"]) - v0))), 0.0)
    agree("the filed package reaches the same end state (Δ_min, relative to its largest value)",
          abs(res["d_min"] - tr.d_min[-1]) / np.max(tr.d_min), 1e-4)
    ratio = res["cpu"] / c_auto
    return Row("10", label + f" [{c_auto:.1f} s CPU]",
               f"filed package {FILED_COMMIT[:7]}, its default BDF ({res['cpu']:.1f} s CPU)", ratio, "≥ 10× faster",
               ratio >= 10, note + f"; the package as filed, run to auto's t_fixed = {t_fixed:.0f}")


@benchmark(rows=(10,), full=dict(cases=tuple((K, N, d) for d in (4, 16, 64) for N in (100, 1000, 10000)
                                              for K in (4, 10)),
                                 t_max=1e5, eps=0.05, default_upto=10**6, hand_upto=2000, hand_budget=3.0,
                                 default_budget=12.0, filed_upto=10**6),
           smoke=dict(cases=((2, 12, 2), (2, 30, 2), (2, 30, 2, "per-node")), t_max=2000.0, eps=0.2, default_upto=100, hand_upto=40,
                      hand_budget=1.5, default_budget=12.0, filed_upto=40))
def bench_head_fixed_point(*, cases, t_max: float, eps: float, default_upto: int, hand_upto: int,
                           hand_budget: float = 1.5, default_budget: float = 12.0, filed_upto: int = 0,
                           baselines: tuple = ("hand", "default", "filed")) -> list[Row]:
    """Head model (sg): time to the fixed point (‖θ̇‖_∞ ≤ 1e-9) with simulate(method='auto',
    stop_residual=1e-9) vs the default the package had when issue #12 was filed (method='BDF', same
    stop) and vs LSODA on the hand-written NumPy flow of docs/model.md §3 (terminal event at the
    same residual); one run each. The baselines run only up to ``default_upto`` / ``hand_upto``
    state entries (a sparse LU of the dense W columns, resp. LSODA's dense finite-difference
    Jacobian, grow far beyond the time available); above ``hand_upto`` the hand flow runs DOP853
    (the SciPy integrator that needs no Jacobian) for ``hand_budget`` × auto's CPU time, and the
    row records how far it got (unfinished: auto is more than 1/hand_budget × faster). At d = 64 auto
    is the matrix-free 'BDF-krylov' (the Jacobian is not assembled), so plain BDF cannot run. Up to
    ``filed_upto`` state entries the package as filed (FILED_COMMIT, exported from git) also runs
    its own default to auto's t_fixed (its kernels, its BDF): "today's default" of the issue.
    ``baselines`` selects which of 'hand', 'default' (the filed default rebuilt on today's kernels)
    and 'filed' run. The cost growth in N of auto is a row of its own."""
    from scipy.integrate import BDF, DOP853, solve_ivp

    from symcollapse.models.head import HeadModel

    rows = []
    tol = 1e-9
    auto_times = {}
    for case in cases:
        K, N_target, d = case[:3]
        per_node = len(case) > 3 and case[3] == "per-node"
        P, n, mu = balanced(K, N_target, eps)
        # rates (1, 0.5, 1) on the summed loss; 'per-node': (1, 1/n, 1/N), every block relaxing at O(1)
        eta = (1.0, 1.0 / n, 1.0 / P.shape[0]) if per_node else (1.0, 0.5, 1.0)
        m = HeadModel(P, d=d, eta_x=eta[0], eta_y=eta[1], eta_W=eta[2])
        N, size = m.N, m.system.size
        v0 = m.pack(*m.initial_state(0))
        m.system.flow_vector(v0)  # build outside the timing
        t0, c0 = time.perf_counter(), time.process_time()
        tr = m.simulate(t_max, seed=0, stop_residual=tol, n_points=3)
        t_auto, c_auto = time.perf_counter() - t0, time.process_time() - c0
        auto_times[(K, N_target, d, per_node)] = (t_auto, N)
        agree(f"K={K} N={N} d={d}: auto reaches the fixed point", tr.extra["residual"] / tol, 1.0)
        note = (f"K={K}, N={N}, d={d}, size {size}, rates {'(1, 1/n, 1/N)' if per_node else '(1, 0.5, 1)'}; "
                f"auto={tr.extra['method']}, {tr.extra['nsteps']} steps, t_fixed={tr.t[-1]:.0f}")
        red = tr.extra.get("sample_reduction")
        if red:
            note += f"; samples reduced exactly to {red['pseudo_samples']} pseudo-samples"
        kr = tr.extra.get("krylov")
        if kr:
            note += (f"; {kr['solves']} GMRES solves, {kr['iterations'] / kr['solves']:.1f} iterations each "
                     f"(max {kr['max_iterations']}), {kr['failures']} failed, {kr['jacobians']} Jacobians")
        label = f"head K={K} N={N} d={d}{' (1, 1/n, 1/N)' if per_node else ''} to fixed point, auto ({t_auto:.2f} s)"
        if "hand" not in baselines:
            pass
        elif size <= hand_upto:
            f = _head_hand_vec(P, *eta, N, K, d)

            def event(t, v):
                return np.max(np.abs(f(t, v))) - tol
            event.terminal = True
            t0, c1 = time.perf_counter(), time.process_time()
            sol = solve_ivp(f, (0.0, t_max), v0, method="LSODA", rtol=1e-8, atol=1e-11, events=event)
            t_hand, c_hand = time.perf_counter() - t0, time.process_time() - c1
            agree(f"K={K} N={N} d={d}: hand LSODA reaches the fixed point", float(sol.status == 1) * 1e-9, 1e-8)
            agree(f"K={K} N={N} d={d}: same end state (Δ_min)", abs(
                sc_dmin(sol.y[:, -1][N * d:(N + K) * d].reshape(K, d)) - tr.d_min[-1]) / np.max(tr.d_min), 1e-4)
            # CPU times (the machine is shared: wall times carry the other jobs' load); wall in the note
            rows.append(Row("10", label + f" [{c_auto:.2f} s CPU]", f"hand NumPy flow + LSODA ({c_hand:.2f} s CPU)",
                            c_auto / c_hand, "≤ 1.5", c_auto / c_hand <= 1.5,
                            note + f" (hand t_fixed {sol.t[-1]:.0f}; wall: auto {t_auto:.2f} s, hand {t_hand:.2f} s)"))
        else:  # hand BDF (FD Jacobian on the hand sparsity pattern) and hand DOP853, each budgeted
            f = _head_hand_vec(P, *eta, N, K, d)
            hands = [("DOP853", lambda: DOP853(f, 0.0, v0, t_max, rtol=1e-8, atol=1e-11))]
            if size <= HAND_SPARSE_UPTO:  # scipy's grouped FD Jacobian holds n × n here (dense W rows)
                hands.insert(0, ("BDF + jac_sparsity", lambda: BDF(f, 0.0, v0, t_max, rtol=1e-8, atol=1e-11,
                                                                   jac_sparsity=_head_hand_sparsity(P, N, K, d))))
            for name, make in hands:
                c1 = time.process_time()
                s = make()
                res, steps = float("inf"), 0
                while s.status == "running" and time.process_time() - c1 < hand_budget * c_auto and res > tol:
                    s.step()
                    steps += 1
                    res = float(np.max(np.abs(f(s.t, s.y))))
                c_hand = time.process_time() - c1
                done = res <= tol
                if done:
                    agree(f"K={K} N={N} d={d}: same end state (Δ_min), hand {name}", abs(
                        sc_dmin(s.y[N * d:(N + K) * d].reshape(K, d)) - tr.d_min[-1]) / np.max(tr.d_min), 1e-4)
                rows.append(Row("10", label + f" [{c_auto:.1f} s CPU]",
                                f"hand NumPy flow + {name} ({c_hand:.1f} s CPU, {'finished' if done else 'unfinished'})",
                                c_auto / c_hand if done else float("nan"), "≤ 1.5",
                                (c_auto / c_hand <= 1.5) if done else True,
                                note + f"; size {size} > hand_upto = {hand_upto} (LSODA's dense FD Jacobian): hand "
                                f"{name} {steps} steps to t = {s.t:.3g}, ‖θ̇‖∞ = {res:.1e}" +
                                ("" if done else f" when stopped at {hand_budget:g}× auto's CPU time "
                                 f"(unfinished: auto is more than {hand_budget:g}× faster)")))
        if size <= default_upto and "default" in baselines:
            rows.append(_filed_default_row(m, v0, t_max, tol, tr, c_auto, default_budget, label, note))
        if size <= filed_upto and "filed" in baselines:
            rows.append(_filed_package_row(P, eta, d, v0, tr.t[-1], tr, c_auto, default_budget, label, note))
    for K, d, pn in sorted({(K, d, pn) for K, _, d, pn in auto_times}):
        Ns = sorted((N, t) for (k, _, dd, p), (t, N) in auto_times.items() if k == K and dd == d and p == pn)
        if len(Ns) >= 2:
            (N0, t0_), (N1, t1_) = Ns[0], Ns[-1]
            growth = (t1_ / t0_) / (N1 / N0)
            rows.append(Row("10", f"head K={K} d={d}{' rates (1, 1/n, 1/N)' if pn else ''}: auto time growth N={N0}→{N1}",
                            f"linear in N (×{N1 / N0:.0f})", growth, "≲ 1 (at most ~linear)", growth <= 1.5,
                            f"t = {t0_:.2f} s → {t1_:.2f} s"))
    return rows


def sc_dmin(Y):
    from symcollapse.numerics.metrics import d_min

    return d_min(Y)


@benchmark(rows=(11,), full=dict(seeds=64, K=4, N=1000, d=8, head_cases=((3, 30, 8, 16), (4, 1000, 8, 64))),
           smoke=dict(seeds=4, K=2, N=40, d=2, head_cases=((2, 12, 2, 2),)))
def bench_simulate_many(*, seeds: int, K: int, N: int, d: int, head_cases) -> list[Row]:
    """simulate_many(seeds) vs the same seeds one by one: the embedding model at K, N, d to 5/r_s
    (all seeds' columns under one exact propagator, batched metrics); the head model (sg) to its
    fixed point (‖θ̇‖_∞ ≤ 1e-9) for each (K, N, d, seeds) of ``head_cases`` (each seed with its
    own BDF steps, the flows, Jacobians and Newton solves of all seeds in batched kernel calls,
    vs single runs with method='auto'; both on the sample-reduced system)."""
    from symcollapse.models.embedding import EmbeddingModel
    from symcollapse.models.head import HeadModel

    P, n, mu = balanced(K, N, 0.05)
    m = EmbeddingModel(P, d=d)
    T = 5.0 / m.slow_rate()
    out = {}
    ss = list(range(seeds))

    def many():
        out["many"] = m.simulate_many(seeds=ss, t_end=T)

    def single():
        out["single"] = [m.simulate(T, seed=s) for s in ss]

    def wall_cpu(fn):  # (wall, CPU) seconds of one call: the machine may be shared, so both
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    (t_many, c_many), (t_single, c_single) = wall_cpu(many), wall_cpu(single)
    err = max(max(max_rel(a.d_min, b.d_min), max_rel(a.loss, b.loss), float(np.max(np.abs(a.accuracy - b.accuracy))))
              for a, b in zip(out["many"], out["single"]))
    agree("simulate_many = single runs (embedding Δ_min, loss, accuracy)", err, 1e-12)
    rows = [Row("11", f"simulate_many, embedding, {seeds} seeds ({t_many:.2f} s wall, {c_many:.2f} s CPU)",
                f"{seeds} single runs ({t_single:.2f} s wall, {c_single:.2f} s CPU)",
                t_single / t_many, "≥ 5× faster", t_single / t_many >= 5,
                f"K={K}, N={m.N}, d={d}, t=5/r_s, 200 times; ratio of CPU times {c_single / c_many:.2f}; "
                f"Δ_min, loss, accuracy equal to {err:.0e}")]
    for Kh, Nh, dh, Sh in head_cases:
        Ph, _, _ = balanced(Kh, Nh, 0.05 if Nh >= 100 else 0.1)
        h = HeadModel(Ph, d=dh, eta_y=0.5)
        h.system.flow_vector(h.pack(*h.initial_state(0)))
        hs = list(range(Sh))
        kw = dict(t_end=1e5, stop_residual=1e-9, n_points=3)

        def hmany():
            out["hmany"] = h.simulate_many(seeds=hs, **kw)

        def hsingle():
            out["hsingle"] = [h.simulate(seed=s, **kw) for s in hs]

        (t_many, c_many), (t_single, c_single) = wall_cpu(hmany), wall_cpu(hsingle)
        err = max(max(max_rel(a.Z, b.Z), max_rel(a.W, b.W)) for a, b in zip(out["hmany"], out["hsingle"]))
        agree("simulate_many = single runs (head Z, W to the integrator tolerance)", err, 1e-6)
        agree("every seed stopped at the fixed point", float(not all(tr.extra["stopped"] for tr in out["hmany"])), 0.0)
        e = out["hmany"][0].extra
        rows.append(Row("11", f"simulate_many, head K={Kh} N={h.N} d={dh}, {Sh} seeds ({t_many:.2f} s wall, {c_many:.2f} s CPU)",
                        f"{Sh} single runs ({t_single:.2f} s wall, {c_single:.2f} s CPU)", t_single / t_many,
                        "≥ 5× faster", t_single / t_many >= 5,
                        f"to ‖θ̇‖_∞ ≤ 1e-9; ratio of CPU times {c_single / c_many:.2f}; single runs "
                        f"{out['hsingle'][0].extra['method']}; method {e['method']} batch {e['batch']}; steps summed over the seeds "
                        f"{sum(t.extra['nsteps'] for t in out['hmany'])} batched vs "
                        f"{sum(t.extra['nsteps'] for t in out['hsingle'])} single; end states equal to {err:.1e}"))
    return rows


@benchmark(rows=(15,), full=dict(cases=((4, 102, 4, True), (10, 105, 4, False), (4, 102, 16, False),
                                        (4, 1000, 8, True)), calls=2000, jac_calls=60, repeats=5),
           smoke=dict(cases=((3, 60, 2, True),), calls=20, jac_calls=3, repeats=1))
def bench_kernel_calls(*, cases, calls: int, jac_calls: int, repeats: int) -> list[Row]:
    """Per-call CPU cost of a MatrixFlowSystem's flow θ̇(θ) and assembled Jacobian, the generated
    kernels (flow_vector, jacobian) vs the plan-walking Evaluator and the scipy.sparse kron/bmat
    assembly (flow_vector_generic, jacobian_generic), on the stop-gradient head at rates
    (1, 0.5, 1), each (K, N, d, reduced) of ``cases`` (reduced: the exact sample reduction's
    pseudo-samples, docs/model.md §3.5). Both sides alternate, ``repeats`` blocks of ``calls``."""
    from symcollapse.models.head import HeadModel
    from symcollapse.numerics.sample_reduction import reduction

    def per_call(fn, arg, n):
        t = time.process_time()
        for _ in range(n):
            fn(arg)
        return (time.process_time() - t) / n

    rows = []
    for K, N, d, reduced in cases:
        P, _, _ = balanced(K, N, 0.05)
        m = HeadModel(P, d=d, eta_x=1.0, eta_y=0.5, eta_W=1.0)
        v = m.pack(*m.initial_state(0))
        S = m.system
        if reduced:
            red = reduction(S)
            if red is None:
                raise AssertionError(f"K={K} N={N} d={d}: the sample reduction does not apply")
            S, (v, _) = red.system, red.reduce(v)
        v = v + 0.1 * np.random.default_rng(0).normal(size=v.size)  # off the symmetric start
        agree("generated flow = Evaluator flow", max_rel(S.flow_vector(v), S.flow_vector_generic(v)), 1e-12)
        J, J0 = S.jacobian(v), S.jacobian_generic(v)
        agree("filled Jacobian = kron/bmat Jacobian", max_rel(J.toarray(), J0.toarray()), 1e-12)
        where = (f"K={K}, N={m.N}" + (f" reduced to {S.graph.N} pseudo-samples" if reduced else "")
                 + f", d={d}: {S.size} unknowns; CPU time, medians of {repeats} alternating blocks")
        for what, new, old, n, target in (("flow", S.flow_vector, S.flow_vector_generic, calls, 1 / 3),
                                          ("Jacobian", S.jacobian, S.jacobian_generic, jac_calls, 0.2)):
            tn, to = [], []
            for _ in range(repeats):
                tn.append(per_call(new, v, n))
                to.append(per_call(old, v, n))
            r = statistics.median(a / b for a, b in zip(tn, to))
            unit, f = ("µs", 1e6) if what == "flow" else ("ms", 1e3)
            rows.append(Row("15", f"{what}, generated ({statistics.median(tn) * f:.1f} {unit}/call)",
                            f"{'Evaluator' if what == 'flow' else 'kron/bmat'} ({statistics.median(to) * f:.1f} {unit}/call)",
                            r, f"≤ {target:.2g}", r <= target, where))
    return rows


def _rows_to_bench() -> dict[int, Benchmark]:
    return {r: b for b in REGISTRY.values() for r in b.rows}


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "not installed"
    import sympy
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {cpu} (load average {load} during the run); Python {platform.python_version()}, NumPy {np.__version__}, "
            f"SciPy {scipy.__version__}, SymPy {sympy.__version__}, torch {tv}")


def table(rows: list[Row], smoke: bool = False) -> str:
    """Markdown table; a smoke run has no verdicts (its sizes are too small to mean anything)."""
    head = "| # | timed | alternative | median ratio | target | met | notes |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        ratio = "—" if r.ratio != r.ratio else f"{r.ratio:.3g}"
        lines.append(f"| {r.bench} | {r.timed} | {r.alternative} | {ratio} | {r.target} | "
                     f"{'—' if smoke else 'yes' if r.ok else 'NO'} | {r.note} |")
    return "\n".join(lines)


def run(chosen: list[int], *, smoke: bool = False, full_rk45: bool = False) -> list[Row]:
    """Run the registered benchmarks producing rows ``chosen`` (each benchmark once)."""
    by_row = _rows_to_bench()
    rows, done = [], set()
    for k in chosen:
        b = by_row[k]
        if b.name in done:
            continue
        done.add(b.name)
        kw = dict(b.smoke if smoke else b.full)
        if full_rk45 and "full_rk45" in b.fn.__code__.co_varnames:
            kw["full_rk45"] = True
        print(f"[benchmark {'/'.join(map(str, b.rows))}] {b.name}{' (smoke)' if smoke else ''} {kw} …",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        res = b.fn(**kw)
        print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        rows.extend(r for r in res if int(r.bench) in chosen)
    rows.sort(key=lambda r: int(r.bench))
    return rows


def main(argv=None) -> int:
    by_row = _rows_to_bench()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=int, action="append", choices=sorted(by_row),
                    help="run only this benchmark (repeatable)")
    ap.add_argument("--markdown", help="also write the table and the machine to this Markdown file")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes (seconds): run every code path and check that both sides agree; "
                         "the ratios and 'met' column mean nothing at these sizes")
    ap.add_argument("--full-rk45", action="store_true",
                    help="benchmark 3: integrate RK45 over the whole interval (tens of minutes) instead of t/100")
    args = ap.parse_args(argv)
    if args.smoke and args.markdown:
        ap.error("--smoke results are not benchmark results: do not record them with --markdown")
    chosen = sorted(set(args.only or by_row))
    rows = run(chosen, smoke=args.smoke, full_rk45=args.full_rk45)
    text = table(rows, smoke=args.smoke)
    print(text)
    if args.smoke:
        print(f"\nsmoke run: {len(rows)} rows, every comparison agreed (timings not meaningful)")
        return 0
    print(f"\nmachine: {machine()}")
    if args.markdown:
        from symcollapse.outputs.io import atomic_write_text

        md = (f"# Benchmark results\n\nRecorded with `python benchmarks/run.py --markdown "
              f"benchmarks/RESULTS.md` on {time.strftime('%Y-%m-%d', time.gmtime())}.\n\n"
              f"Machine: {machine()}.\n\n{text}\n")
        atomic_write_text(args.markdown, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
