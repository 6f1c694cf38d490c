r"""The k rightmost nonzero eigenvalues of a Jacobian known only as a matrix-free operator, with a
known part of its null space projected out (docs/model.md §3.3).

With Π the orthogonal projector onto Π₀'s range (the known null space T, e.g. the symmetry tangent)
plus an orthonormal basis B of zero modes locked on the way plus an orthonormal basis F of the
eigen-subspaces already found, ARPACK (which='LR') runs on

    J̃ = (I − Π) J (I − Π) − σ Π + α I,   σ = 2ρ + 1,

whose spectrum is J's with those directions moved to −σ (shifted by α: the Krylov spaces are the
same, ARPACK's relative tolerance then means one ∝ α). One Krylov space holds one copy of each
repeated eigenvalue, so the found Schur vectors join F and ARPACK runs again until a round finds
nothing to the right of the k-th eigenvalue found (repeated eigenvalues are then all counted
among the first k). The result is a Rayleigh–Ritz step on F checked through J itself:
‖(I − Π_{T,B} − FFᵀ) J F‖ ≤ tol·ρ (span(F) ⊕ T ⊕ B is J-invariant) and ‖J u − λ u‖ ≤ tol·ρ‖u‖ for
every returned eigenpair, u = F y + Π_{T,B} J F y / λ (the eigenvector of J lifted from H y = λ y,
H = FᵀJF); a failure raises :class:`~symcollapse.errors.DerivationCheckError`.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs

from ..errors import DerivationCheckError, InvalidParameterError
from ..tolerance import within


def finite_jvp(y: np.ndarray) -> np.ndarray:
    """y itself if every entry is finite; else DerivationCheckError, before ARPACK sees it (a NaN
    makes ARPACK fail inside LAPACK, and a NaN eigenvalue fails every comparison and is dropped)."""
    if not np.all(np.isfinite(y)):
        raise DerivationCheckError("the Jacobian-vector product is not finite at this state")
    return y


def _orth_against(V: np.ndarray, project, bases) -> np.ndarray:
    """An orthonormal basis of the part of V's columns outside range(project) ⊕ span(bases)."""
    for _ in range(2):  # twice is enough (Kahan): the columns end orthogonal to working precision
        V = V - np.column_stack([project(c) for c in V.T]) if V.shape[1] else V
        for B in bases:
            if B.shape[1]:
                V = V - B @ (B.T @ V)
    if not V.shape[1]:
        return V
    U, sv, _ = np.linalg.svd(V, full_matrices=False)
    return U[:, sv > 1e-8 * max(float(sv[0]), 1e-300)]


def rightmost_nonzero(matvec, n: int, k: int, *, project=None, rho: float, zero_tol: float = 1e-9,
                      block: int | None = None, arpack_tol: float = 1e-12, shift: float = 0.0,
                      ncv: int | None = None, max_zero: int = 2000, max_rounds: int = 50,
                      residual_tol: float = 1e-8, seed: int = 0) -> dict:
    r"""The k rightmost eigenvalues λ ≠ 0 (|λ| > zero_tol·ρ) of J (``matvec``, size n), counted with
    multiplicity, with ``project`` (an orthogonal projector onto a known null space of J, or None)
    removed. Returns {'eigenvalues', 'residuals' (‖J u − λ u‖/ρ‖u‖), 'invariance' (‖R‖/ρ of the found
    subspace), 'n_locked' (zero modes outside ``project``), 'n_found' (dim F), 'rounds', 'n_matvec'}."""
    if project is None:
        def project(w):
            return np.zeros_like(w)
    sigma, thr = 2.0 * rho + 1.0, zero_tol * max(rho, 1e-300)
    tie = 1e-8 * max(rho, 1e-300)
    kk0 = k if block is None else block
    rng = np.random.default_rng(seed)
    count = [0]
    B, F = np.zeros((n, 0)), np.zeros((n, 0))
    vals: list = []  # the eigenvalues found so far (ARPACK's; the final ones come from H)
    rounds = 0
    while True:
        rounds += 1
        if rounds > max_rounds:
            raise InvalidParameterError(f"more than max_rounds = {max_rounds} ARPACK rounds; raise max_rounds "
                                        "or lower k")

        def mv(w, B=B, F=F):
            w = np.ravel(w)
            count[0] += 1
            c, f = B.T @ w, F.T @ w
            p = project(w) + B @ c + F @ f
            y = finite_jvp(matvec(w - p))
            y = y - project(y) - B @ (B.T @ y) - F @ (F.T @ y)
            return y - sigma * p + shift * w

        op = LinearOperator((n, n), matvec=mv, dtype=float)
        kk = min(kk0, n - 2 - B.shape[1] - F.shape[1])
        if kk < 1:
            raise InvalidParameterError("too few free directions left for ARPACK")
        nv = min(n - 1, ncv if ncv is not None else max(2 * kk + 1, 20))
        try:
            ev, vec = eigs(op, k=kk, which="LR", tol=arpack_tol, maxiter=50 * n, v0=rng.normal(size=n), ncv=nv)
        except ArpackNoConvergence as err:
            raise InvalidParameterError(f"ARPACK did not converge ({len(err.eigenvalues)} of {kk} eigenvalues); "
                                        "raise arpack_tol or ncv") from err
        if not np.all(np.isfinite(ev)):  # a NaN would fail every comparison below and vanish unreported
            raise DerivationCheckError(f"ARPACK returned a non-finite eigenvalue ({ev[~np.isfinite(ev)][0]}): "
                                       "the Jacobian-vector product is not finite at this state")
        ev = ev - shift
        keep = ev.real > -sigma / 2  # the deflated directions sit at −σ
        ev, vec = ev[keep], vec[:, keep]
        zero = np.abs(ev) <= thr
        nz = ev[~zero]
        if np.any(zero):  # zero modes outside the known null space: lock them (they are not reported)
            B = np.hstack([B, _orth_against(np.hstack([vec[:, zero].real, vec[:, zero].imag]), project, (B, F))])
            if B.shape[1] > max_zero:
                raise InvalidParameterError(f"more than max_zero = {max_zero} zero modes locked; the family of "
                                            "fixed points is too large for deflation (give its tangent)")
        kth = sorted((v.real for v in vals), reverse=True)[k - 1] if len(vals) >= k else None
        if not np.any(zero) and (kth is not None and (not nz.size or float(np.max(nz.real)) <= kth + tie)):
            break  # nothing to the right of the k-th eigenvalue found: the first k are complete
        if nz.size:
            Vn = vec[:, ~zero]
            F = np.hstack([F, _orth_against(np.hstack([Vn.real, Vn.imag]), project, (B, F))])
            vals.extend(nz)
        elif not np.any(zero):
            raise InvalidParameterError("ARPACK found no nonzero eigenvalue outside the deflated space")
    # Rayleigh–Ritz on F, checked through J itself
    JF = np.column_stack([matvec(f) for f in F.T])
    H = F.T @ JF
    R = JF - np.column_stack([project(c) for c in JF.T]) - B @ (B.T @ JF) - F @ H
    inv = float(np.linalg.norm(R, 2)) / max(rho, 1e-300)
    lam, Y = np.linalg.eig(H)
    order = np.argsort(-lam.real, kind="stable")[:k]
    lam, Y = lam[order], Y[:, order]
    res = []
    for lm, y in zip(lam, Y.T):
        w = F @ y
        Jw = JF @ y
        u = w + (project(Jw.real) + 1j * project(Jw.imag) + B @ (B.T @ Jw)) / lm
        Ju = matvec(u.real) + 1j * matvec(u.imag)
        res.append(float(np.linalg.norm(Ju - lm * u)) / (max(rho, 1e-300) * float(np.linalg.norm(u))))
    res = np.array(res)
    if not within(inv, residual_tol) or not within(res, residual_tol):
        raise DerivationCheckError(
            f"the eigenpairs found by ARPACK are not the Jacobian's: invariance residual {inv:.2e}, max "
            f"‖J u − λ u‖/ρ‖u‖ = {np.max(res) if res.size else float('nan'):.2e} (tolerance {residual_tol:g})")
    return {"eigenvalues": lam, "residuals": res, "invariance": inv, "n_locked": int(B.shape[1]),
            "n_found": int(F.shape[1]), "rounds": rounds, "n_matvec": count[0] + 2 * F.shape[1] + 2 * len(lam)}


__all__ = ["finite_jvp", "rightmost_nonzero"]
