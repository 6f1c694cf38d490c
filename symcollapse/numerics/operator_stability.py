r"""Matrix-free linear stability of a head-model fixed point for large d (docs/model.md §3.1):
the rightmost eigenvalues of the engine's Jacobian, through its JVP LinearOperator, with the
symmetry zero modes moved out of the way.

With T the orthonormal symmetry tangent (gauge, free head, level swaps; J T = 0) and
P = I − TTᵀ, the operator J̃ = P J P − σ T Tᵀ has spectrum spec(QᵀJQ) ∪ {−σ}: the non-symmetry
spectrum of the dense classification (:func:`~symcollapse.numerics.families.classify_state`) plus
the symmetry modes shifted to −σ (σ > ρ(J)). J̃ + ρI is handed to ARPACK (same order of the real
parts; its relative tolerance then means an absolute one ∝ ρ, and a cluster of zero eigenvalues —
a degenerate state — converges). ARPACK (``scipy.sparse.linalg.eigs``, which='LR')
gives its k rightmost eigenvalues, one copy of each (a Krylov space from one start vector misses
repeated eigenvalues, and the family symmetries make them common). Every unstable eigenvalue
found (Re λ > tol·scale) is locked: its invariant subspace joins T (Schur deflation: the deflated
operator has the remaining spectrum), and ARPACK runs again, until a round finds none. The
unstable count is then complete; degenerate eigenvalues (|Re λ| ≤ tol·scale, e.g. the whole
column of a w = 0 head direction) are detected but counted only as far as found (a lower bound).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs

from ..errors import InvalidParameterError
from ..tolerance import spectrum_counts
from ..validation import check_int, check_real
from . import families as fm
from .slow_spectrum import finite_jvp


@dataclass(frozen=True)
class OperatorStability:
    """Classification from the locked unstable eigenvalues plus the last round's k rightmost ones
    (``complete``: the deflation ended with a round without unstable eigenvalues; ``n_degenerate``
    is a lower bound)."""

    kind: str
    n_unstable: int
    n_degenerate: int
    max_real: float
    eigenvalues: np.ndarray = field(repr=False)
    n_symmetry: int
    scale: float
    complete: bool
    n_matvec: int

    @property
    def label(self) -> str:
        return f"saddle({self.n_unstable})" if self.kind == "saddle" else self.kind


def spectral_radius_estimate(op, n: int, iters: int = 30, seed: int = 0) -> float:
    """ρ(J) estimated by power iteration on JᵀJ-free ‖J x‖/‖x‖ (an upper-ish scale for thresholds)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x /= np.linalg.norm(x)
    est = 0.0
    for _ in range(iters):
        y = op.matvec(x)
        ny = float(np.linalg.norm(y))
        if ny == 0:
            return est
        est = max(est, ny)
        x = y / ny
    return est


def classify_state_operator(model, Z, W, *, k: int = 8, k_max: int = 200, tol: float = 1e-6,
                            scale: float | None = None, residual_tol: float = 1e-7,
                            arpack_tol: float = 1e-10) -> OperatorStability:
    r"""Stability of the fixed point (Z, W) from the rightmost eigenvalues of J̃ = PJP − σTTᵀ, J the
    JVP LinearOperator of the derived flow. Thresholds: |Re λ| ≤ tol·scale is degenerate, scale = ρ(J)
    estimated (or ``scale``)."""
    k = check_int("k", k, 1)
    k_max = check_int("k_max", k_max, 1)
    tol = check_real("tol", tol, 0.0, None, strict_min=True)
    v = model.pack(Z, W)
    f = model.system.flow_vector(v)
    res = float(np.max(np.abs(f))) / max(1.0, float(np.max(np.abs(v))))
    if not res <= residual_tol:
        raise InvalidParameterError(f"(Z, W) is not a fixed point: max |flow| / max|state| = {res:.2e} "
                                    f"> {residual_tol:g}")
    J = model.system.linear_operator(v)
    n = J.shape[0]
    T = fm.symmetry_tangent(model, Z, W)
    rho = spectral_radius_estimate(J, n)
    sc_ = rho if scale is None else check_real("scale", scale, 0.0, None, strict_min=True)
    if T.shape[1]:
        probe = J.matmat(T[:, :min(T.shape[1], 8)])
        if not float(np.max(np.abs(probe))) <= 1e-5 * max(rho, 1e-300):
            raise InvalidParameterError("the symmetry tangent is not in the kernel of the Jacobian "
                                        f"(max |J T| = {np.max(np.abs(probe)):.2e})")
    sigma = 2.0 * rho + 1.0
    thr = tol * sc_
    count = [0]
    B = T  # orthonormal basis of a J-invariant subspace: symmetry tangent + locked eigenvectors
    found, last = [], np.zeros(0, complex)
    rng = np.random.default_rng(1)
    for _ in range(k_max):
        if n - B.shape[1] <= kk_min(k):
            raise InvalidParameterError(f"too few free directions ({n - B.shape[1]}) for ARPACK; use "
                                        "the dense classification")

        def mv(x, B=B):
            x = np.ravel(x)
            count[0] += 1
            if not B.shape[1]:
                return finite_jvp(J.matvec(x)) + rho * x
            c = B.T @ x
            y = finite_jvp(J.matvec(x - B @ c))
            return y - B @ (B.T @ y) - sigma * (B @ c) + rho * x

        op = LinearOperator((n, n), matvec=mv, dtype=float)
        try:
            ev, vec = eigs(op, k=k, which="LR", tol=arpack_tol, maxiter=20 * n, v0=rng.normal(size=n),
                           ncv=min(n - B.shape[1] - 1, max(4 * k + 1, 40)))
        except ArpackNoConvergence as err:  # pragma: no cover - reported, not hidden
            raise InvalidParameterError(f"ARPACK did not converge for k = {k} ({len(err.eigenvalues)} "
                                        "eigenvalues found); raise arpack_tol") from err
        ev = ev - rho  # the operator is shifted by +ρ: ARPACK's relative tolerance then means ~tol·ρ
        keep = ev.real > -sigma / 2  # the shifted symmetry / locked modes are not eigenvalues of J
        ev, vec = ev[keep], vec[:, keep]
        last = ev
        lock = ev.real > thr  # unstable: lock and look for more copies (degenerate ones are only counted)
        if not np.any(lock):
            break
        found.extend(ev[lock])
        V = np.hstack([vec[:, lock].real, vec[:, lock].imag])
        V = V - B @ (B.T @ V)
        U, sv, _ = np.linalg.svd(V, full_matrices=False)
        B = np.hstack([B, U[:, sv > 1e-8 * max(float(sv[0]), 1e-300)]])
    else:
        raise InvalidParameterError(f"more than {k_max} rounds of deflation: raise k_max")
    ev = np.concatenate([np.asarray(found, complex), last])
    n_uns, n_deg, kind = spectrum_counts(ev, thr, "ARPACK eigenvalues of the JVP operator")
    return OperatorStability(kind, n_uns, n_deg, float(np.max(ev.real)), np.sort_complex(ev), int(T.shape[1]),
                             float(sc_), True, count[0])


def kk_min(k: int) -> int:
    """ARPACK needs k < n − 1 free directions."""
    return k + 2
