r"""Unconstrained-features model of neural collapse, MSE loss, weight decay, no bias.

    L = 1/(2N) ‖W H − Y‖_F² + λ_W/2 ‖W‖_F² + λ_H/2 ‖H‖_F²,   W ∈ R^{K×d}, H ∈ R^{d×N},
Y = I_K ⊗ 1_nᵀ (n samples per class, N = Kn), gradient flow Ẇ = −∂L/∂W, Ḣ = −∂L/∂H.
Compared with the known closed form (Tirer & Bruna 2022; also Zhou et al. 2022): if
K√(nλ_Hλ_W) < 1 the minimisers are collapsed, W Wᵀ = ρ I_K with
ρ = ‖w_c‖² = √(nλ_H/λ_W) − Knλ_H, every feature equal to its class mean; otherwise the only
minimiser is W = H = 0 — and at the same threshold W = H = 0 loses stability.

Matrix path (:func:`ufm_matrix_loss`): the same loss as an edge loss over the samples, each
sample's feature h_i ∈ R^d the 'sample' block, its one-hot target u_i ∈ R^K per-sample data and
W ∈ R^{K×d} shared, ℓ_i = ‖W h_i − u_i‖²/(2N) + λ_H‖h_i‖²/2 + λ_W‖W‖_F²/(2N), derived once for
every d and K (Σ_i ℓ_i = L); the component derivation of the full loss is its cross-check, and
the simulations integrate the engine's matrix-path flow.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from scipy.optimize import brentq
from sympy import MatrixSymbol, Trace

from ..numerics.integrate import integrate
from ..numerics.matrix_kernels import compile_matrix_loss
from ..numerics.matrix_system import MatrixFlowSystem
from ..symbolic import matcalc as mc
from ..symbolic import polydiff
from ..symbolic.matrix_flow import MatrixEdgeLoss, derive_matrix_flow
from ..verification import Check, close, identity

MODEL = "literature: UFM neural collapse"
lam_W, lam_H = sp.symbols("lambda_W lambda_H", positive=True)
a, b = sp.symbols("a b", real=True)


def ufm_loss(K: int, n: int, d: int):
    """(L, W, H) for concrete K, n, d with symbolic λ_W, λ_H."""
    N = K * n
    W = sp.Matrix(K, d, lambda i, j: sp.Symbol(f"W_{i}_{j}", real=True))
    H = sp.Matrix(d, N, lambda i, j: sp.Symbol(f"H_{i}_{j}", real=True))
    Y = sp.Matrix(K, N, lambda c, i: 1 if i // n == c else 0)
    R = W * H - Y
    L = (sum(e**2 for e in R) / (2 * N) + lam_W / 2 * sum(e**2 for e in W)
         + lam_H / 2 * sum(e**2 for e in H))
    return sp.expand(L), W, H, Y


N_s = sp.Symbol("N", positive=True)  # the number of samples, a parameter of the edge loss


@lru_cache(maxsize=None)
def ufm_matrix_loss() -> MatrixEdgeLoss:
    """ℓ_i = ‖W h_i − u_i‖²/(2N) + λ_H‖h_i‖²/2 + λ_W‖W‖_F²/(2N) with h ∈ R^d (learned, rate 1),
    the one-hot target u ∈ R^K as per-sample data, W ∈ R^{K×d} (rate 1); the label block y is
    not used (the targets are fixed)."""
    d, Kd = sp.Symbol("d", integer=True, positive=True), sp.Symbol("K", integer=True, positive=True)
    h, y, u, W = MatrixSymbol("h", d, 1), MatrixSymbol("y", Kd, 1), MatrixSymbol("u", Kd, 1), MatrixSymbol("W", Kd, d)
    r = W * h - u
    expr = Trace(r.T * r) / (2 * N_s) + lam_H / 2 * Trace(h.T * h) + lam_W / (2 * N_s) * Trace(W.T * W)
    return MatrixEdgeLoss(expr, h, y, shared=(("W", W),), data=u, rates=(("x", sp.S.One), ("W", sp.S.One)),
                          learned=frozenset({"x", "W"}), name="ufm")


def matrix_path_flow(K: int, n: int, d: int):
    """(Ẇ, Ḣ) of the matrix-level flow assembled on the instance (K, n, d): Ẇ = Σ_i F_W(h_i, u_i),
    ḣ_i = F_h(h_i, u_i), with the explicit symbols of :func:`ufm_loss`."""
    _, W, H, Y = ufm_loss(K, n, d)
    mflow = derive_matrix_flow(ufm_matrix_loss())
    N = K * n
    Wd, Hd = sp.zeros(K, d), sp.zeros(d, N)
    for i in range(N):
        vals = {"W": W, "h": H[:, i], "u": Y[:, i]}
        Hd[:, i] = mc.explicit_chains(mflow.forces["x"], vals, (d, 1)).subs(N_s, N)
        Wd += mc.explicit_chains(mflow.forces["W"], vals, (K, d)).subs(N_s, N)
    return Wd.applyfunc(sp.expand), Hd.applyfunc(sp.expand)


def published_norm(K, n):
    """ρ = ‖w_c‖² = √(nλ_H/λ_W) − Knλ_H at the collapsed minimiser."""
    return sp.sqrt(n * lam_H / lam_W) - K * n * lam_H


def published_threshold(K, n):
    """λ_Wλ_H at which the collapsed solution appears / W = H = 0 loses stability: K²n λ_Wλ_H = 1."""
    return sp.Rational(1, K**2 * n)


@lru_cache(maxsize=None)
def derive(K: int = 2, n: int = 2) -> dict:
    """Flow of the full loss, reduction on the collapsed ansatz W = a I, H = b Y (d = K)."""
    L, W, H, Y = ufm_loss(K, n, K)
    g = polydiff.gradient(L, [*W, *H])
    Wd = W.applyfunc(lambda w: -g[w])
    Hd = H.applyfunc(lambda h: -g[h])
    ans = {W[i, j]: (a if i == j else 0) for i in range(K) for j in range(K)}
    ans.update({H[i, j]: b * Y[i, j] for i in range(K) for j in range(K * n)})
    Wa, Ha = Wd.xreplace(ans).applyfunc(sp.expand), Hd.xreplace(ans).applyfunc(sp.expand)
    adot, bdot = Wa[0, 0], Ha[0, 0]
    closure = sp.Matrix([*(Wa - adot * sp.eye(K)), *(Ha - bdot * Y)])
    fixed = sp.solve([adot, bdot], [a, b], dict=True)
    vs = [*W, *H]
    zero = {v: 0 for v in vs}
    rows = [polydiff.gradient(g[v], vs) for v in vs]  # Hessian of L = Jacobian of its gradient
    hess = sp.Matrix(len(vs), len(vs), lambda i, j: sp.sympify(rows[i][vs[j]]))
    hess0 = hess.xreplace(zero)
    mW, mH = matrix_path_flow(K, n, K)
    return {"L": L, "W": W, "H": H, "Y": Y, "adot": adot, "bdot": bdot, "closure": closure,
            "matrix_minus_component": sp.Matrix([*(mW - Wd), *(mH - Hd)]),
            "matrix_flow": derive_matrix_flow(ufm_matrix_loss()),
            "fixed": fixed, "hess0": hess0, "hess": hess, "vars": vs, "ansatz": ans, "K": K, "n": n}


@lru_cache(maxsize=None)
def checks() -> tuple[Check, ...]:
    d = derive()
    K, n = d["K"], d["n"]
    rows = [identity(MODEL, f"matrix-level flow (every d, K) assembled on K = {K}, n = {n} = derivation of the full loss",
                     d["matrix_minus_component"], "component derivation (polydiff of L)"),
            identity(MODEL, f"collapsed ansatz W = a I, H = b Y is closed under the flow (K = {K}, n = {n})",
                     d["closure"], "derived flow of the full loss")]
    nonzero = [f for f in d["fixed"] if f[a] != 0]
    # ρ = a² on the non-trivial branch with ab > 0, at random λ below threshold
    rng = np.random.default_rng(11)
    errs, seen = [], 0
    for _ in range(4):
        lw = rng.uniform(0.01, 0.1)
        lh = rng.uniform(0.01, 0.1)
        pt = {lam_W: lw, lam_H: lh}
        vals = [(complex(f[a].subs(pt)), complex(f[b].subs(pt))) for f in nonzero]
        real = [(x.real, y.real) for x, y in vals if abs(x.imag) < 1e-12 and abs(y.imag) < 1e-12 and x.real * y.real > 0]
        ref = float(published_norm(K, n).subs(pt))
        seen += len(real)
        errs += [abs(x**2 - ref) / ref for x, _ in real]
    rows.append(Check(MODEL, "non-trivial fixed points of the reduced flow: ‖w_c‖² = √(nλ_H/λ_W) − Knλ_H",
                      f"{seen} roots", "Tirer & Bruna 2022 closed form",
                      float(max(errs)) if errs and seen >= 4 else float("inf"), 1e-12))
    # existence threshold: a b = 1 − K√(nλ_Wλ_H) vanishes at K²nλ_Wλ_H = 1
    prod = sp.symbols("q", positive=True)  # q = λ_Wλ_H
    ab_vals = {sp.simplify((f[a] * f[b]).subs(lam_H, prod / lam_W)) for f in nonzero}
    thr = [sp.solve(sp.Eq(v, 0), prod) for v in ab_vals]
    ok = any(t == [published_threshold(K, n)] for t in thr)
    rows.append(Check(MODEL, "the collapsed branch (a b > 0) ends at K²n λ_Wλ_H = 1",
                      ", ".join(str(t) for t in thr), f"λ_Wλ_H = {published_threshold(K, n)}",
                      0.0 if ok else float("inf"), 0.0))
    # W = H = 0 loses stability at the same threshold: smallest Hessian eigenvalue crosses 0
    h0 = sp.lambdify([lam_W, lam_H], d["hess0"], "numpy")
    lw = 0.07
    lmin = lambda lh: float(np.linalg.eigvalsh(np.array(h0(lw, lh), dtype=float)).min())  # noqa: E731
    lh_star = brentq(lmin, 1e-6, 100.0, xtol=1e-14, rtol=1e-14)
    rows.append(close(MODEL, f"W = H = 0 loses stability at λ_H* (λ_W = {lw}): Hessian eigenvalue crossing",
                      lh_star, float(published_threshold(K, n)) / lw, 1e-10,
                      reference_text="1/(K²nλ_W)"))
    # below threshold the collapsed fixed point is a minimum: Hessian ≥ 0 with exactly the
    # d(d−1)/2 zero modes of the rotations W → W Rᵀ, H → R H (d = K)
    pt = {lam_W: 0.05, lam_H: 0.03}
    f = next(f for f in nonzero if complex(f[a].subs(pt)).real > 0 and complex((f[a] * f[b]).subs(pt)).real > 0)
    at = {v: float(sp.sympify(e).subs({a: f[a], b: f[b]}).subs(pt)) for v, e in d["ansatz"].items()}
    hess_fn = sp.lambdify([d["vars"], lam_W, lam_H], d["hess"], "numpy")
    ev = np.linalg.eigvalsh(np.array(hess_fn([at[v] for v in d["vars"]], 0.05, 0.03), dtype=float))
    n_zero = int(np.sum(np.abs(ev) < 1e-10 * np.abs(ev).max()))
    rows.append(Check(MODEL, "collapsed fixed point below threshold is a minimum: Hessian ≥ 0, "
                      "zero modes = rotations", f"min eig {ev.min():.1e}, {n_zero} zero",
                      f"{K * (K - 1) // 2} zero mode(s), rest > 0",
                      0.0 if n_zero == K * (K - 1) // 2 and ev.min() > -1e-10 * np.abs(ev).max() else float("inf"), 0.0))
    rows.extend(_simulated(K=3, n=2))
    return tuple(rows)


def _flow_fn(K, n, d):
    """Numeric flow of the full loss (its gradient written by hand in matrix form) — an
    independent check of the symbolic derivation on a larger instance."""
    N = K * n
    Y = np.kron(np.eye(K), np.ones((1, n)))

    def unpack(v):
        return v[:K * d].reshape(K, d), v[K * d:].reshape(d, N)

    def f(v, lw, lh):
        W, H = unpack(v)
        R = W @ H - Y
        return np.concatenate([(-(R @ H.T) / N - lw * W).ravel(), (-(W.T @ R) / N - lh * H).ravel()])
    return f, unpack


def matrix_system(K: int, n: int, d: int, lw: float, lh: float) -> MatrixFlowSystem:
    """The engine's matrix-path system of the UFM on K classes of n samples (state: H rows, then W)."""
    Y = np.kron(np.eye(K), np.ones((n, 1)))  # sample i -> its class (the edge) and its one-hot target
    return MatrixFlowSystem(compile_matrix_loss(ufm_matrix_loss()), Y, rates={"x": 1.0, "W": 1.0},
                            dims={"d": d, "K": K}, data=Y, params={"lambda_W": lw, "lambda_H": lh, "N": K * n})


def _simulated(K: int, n: int) -> list[Check]:
    d = K
    f, unpack = _flow_fn(K, n, d)
    L, Ws, Hs, _ = ufm_loss(K, n, d)
    g = polydiff.gradient(L, [*Ws, *Hs])  # term-wise: fast on the expanded loss
    grad = sp.lambdify([[*Ws, *Hs], lam_W, lam_H], [-g[s] for s in [*Ws, *Hs]], "numpy")
    rng = np.random.default_rng(5)
    v0 = rng.normal(scale=0.5, size=K * d + d * K * n)
    rows = [close(MODEL, f"derived symbolic flow = matrix-form gradient at a random point (K = {K}, n = {n})",
                  np.array(grad(v0, 0.03, 0.02), dtype=float), f(v0, 0.03, 0.02), 1e-12)]
    below, above = (0.03, 0.02), (0.3, 0.2)  # K√(nλλ): 0.104 and 1.04

    def to_engine(v):  # (W, H) -> the engine's state (rows h_iᵀ, then W)
        W, H = unpack(v)
        return np.concatenate([H.T.ravel(), W.ravel()])

    def from_engine(u):
        H = u[:K * n * d].reshape(K * n, d).T
        return np.concatenate([u[K * n * d:], H.ravel()])
    ms = matrix_system(K, n, d, *below)
    rows.append(close(MODEL, f"engine matrix-path flow = hand-written matrix-form gradient (K = {K}, n = {n})",
                      from_engine(ms.flow_vector(to_engine(v0))), f(v0, *below), 1e-12,
                      derived_text="MatrixFlowSystem (derived once for every d, K)"))
    for (lw, lh), label in ((below, "below"), (above, "above")):
        ms = matrix_system(K, n, d, lw, lh)
        sol = integrate(ms.flow_vector, to_engine(v0), np.array([0.0, 3000.0]), rtol=1e-11, atol=1e-13)
        sol_end = from_engine(sol.y[-1])
        W, H = unpack(sol_end)
        if label == "below":
            rho = float(published_norm(K, n).subs({lam_W: lw, lam_H: lh}))
            rows.append(close(MODEL, f"integrated flow below threshold: W Wᵀ = ρ I_K (λ_W, λ_H = {lw}, {lh})",
                              W @ W.T, rho * np.eye(K), 1e-6, reference_text=f"ρ = {rho:.6g}"))
            means = np.repeat(H.reshape(d, K, n).mean(axis=2), n, axis=1)
            spread = float(np.abs(H - means).max() / np.abs(H).max())
            rows.append(Check(MODEL, "features collapse to their class means (NC1): max|h − mean|/max|h|",
                              f"{spread:.2e}", "0", spread, 1e-6))
        else:
            size = float(np.abs(sol_end).max() / np.abs(v0).max())
            rows.append(Check(MODEL, f"integrated flow above threshold collapses to W = H = 0 (λ = {lw}, {lh})",
                              f"{size:.2e}", "0", size, 1e-6))
    return rows
