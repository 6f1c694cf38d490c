r"""The symmetry tangent of a stop-gradient head fixed point as a structured orthogonal projector
(docs/model.md §3.3), for matrix-free spectra at large d.

At a fixed point Z = Σ_{k∈S} φ_k a_kᵀ (every kept ν_k ≠ 0, so every node residual
Σ_c P_ic (W x_i − y_c) vanishes) the fixed points near (Z, W) form a d²-dimensional family; its
tangent T is the null space of the Jacobian. With R the row space of Z (rank r), Q_R (d×r) an
orthonormal basis of R and Π_⊥ = I − Q_R Q_Rᵀ:

- free head:  T_f = {(δZ = 0, δW = B Π_⊥)}, d(d − r) directions, projector (0, δW Π_⊥);
- gauge:      (δZ = Z Mᵀ, δW = MW − WM); with M = C Q_Rᵀ (C ∈ R^{d×r}; M Π_⊥ lands in T_f) and
  its T_f part removed, T_g = {G(C) = (Z̃ Cᵀ, (C W_R − W C) Q_Rᵀ)}, Z̃ = Z Q_R, W_R = Q_Rᵀ W Q_R,
  d r directions, orthogonal to T_f. Its projector is G Γ⁻¹ G*, with the dr × dr Gram matrix
  Γ = I_d ⊗ Z̃ᵀZ̃ + LᵀL, L = I_d ⊗ W_Rᵀ − W ⊗ I_r (row-major vec), and
  G*(δZ, δW) = δZᵀ Z̃ + δW Q_R W_Rᵀ − Wᵀ δW Q_R.

One projection costs O((N + K) d r + d² r + (dr)²) — no N × d² basis is ever stored. Whether
T really is a null space is checked numerically (:meth:`HeadTangent.check_null`): a wrong tangent
raises :class:`~symcollapse.errors.DerivationCheckError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from ..errors import DerivationCheckError, InvalidParameterError
from ..symbolic import losses
from ..symbolic.loss import LABEL, SAMPLE
from ..tolerance import within
from ..validation import check_real

#: the block of the shared head in the stop-gradient head loss
HEAD = "W"


def is_sg_head(loss) -> bool:
    """True iff ``loss`` is the stop-gradient head loss of docs/model.md §3 (sg on both targets,
    learned head W ∈ R^{d×d}, no per-sample data): the flow whose fixed-point family has the
    tangent of this module."""
    if getattr(loss, "data", None) is not None or getattr(loss, "x", None) is None:
        return False
    if frozenset(getattr(loss, "learned", ())) != frozenset({SAMPLE, LABEL, HEAD}):
        return False
    if tuple(getattr(loss, "shared_names", ())) != (HEAD,):
        return False
    return loss.expr == losses.head_matrix_loss("both", True).expr


@dataclass(frozen=True)
class HeadTangent:
    r"""T = T_f ⊕ T_g at (Z, W) in the flat layout of a system with blocks x (N×d), y (K×d), W (d×d)
    (docs/model.md §3.3). ``project(v)`` is the orthogonal projection onto T."""

    layout: dict = field(repr=False)
    Z: np.ndarray = field(repr=False)
    W: np.ndarray = field(repr=False)
    QR: np.ndarray = field(repr=False)
    Zt: np.ndarray = field(repr=False)
    WR: np.ndarray = field(repr=False)
    chol: tuple = field(repr=False)
    rank: int = 0
    d: int = 0
    N: int = 0

    @property
    def dim(self) -> int:
        """dim T = d(d − r) + d r = d²."""
        return self.d * self.d

    def _blocks(self, v: np.ndarray):
        (ox, sx), (oy, sy), (ow, sw) = (self.layout[b] for b in (SAMPLE, LABEL, HEAD))
        return (v[ox:ox + sx[0] * sx[1]].reshape(sx), v[oy:oy + sy[0] * sy[1]].reshape(sy),
                v[ow:ow + sw[0] * sw[1]].reshape(sw))

    def _gauge_coords(self, v: np.ndarray) -> np.ndarray:
        """C = Γ⁻¹ G*(v), the T_g coordinates of v (d×r)."""
        dX, dY, dW = self._blocks(v)
        N = self.N
        dWQ = dW @ self.QR
        g = dX.T @ self.Zt[:N] + dY.T @ self.Zt[N:] + dWQ @ self.WR.T - self.W.T @ dWQ
        return sla.cho_solve(self.chol, g.ravel()).reshape(self.d, self.rank)

    def _gauge_vector(self, C: np.ndarray, out: np.ndarray, add: bool = True) -> np.ndarray:
        """out (+)= G(C) = (Z̃ Cᵀ, (C W_R − W C) Q_Rᵀ)."""
        oX, oY, oW = self._blocks(out)
        N = self.N
        dZ = self.Zt @ C.T
        dW = (C @ self.WR - self.W @ C) @ self.QR.T
        if add:
            oX += dZ[:N]
            oY += dZ[N:]
            oW += dW
        else:
            oX[...], oY[...], oW[...] = dZ[:N], dZ[N:], dW
        return out

    def project(self, v: np.ndarray) -> np.ndarray:
        """P v: (0, δW Π_⊥) + G(Γ⁻¹ G*(v)) (orthogonal projection onto T)."""
        v = np.asarray(v, dtype=float)
        out = np.zeros_like(v)
        _, _, dW = self._blocks(v)
        _, _, oW = self._blocks(out)
        oW[...] = dW - (dW @ self.QR) @ self.QR.T
        if self.rank:
            self._gauge_vector(self._gauge_coords(v), out)
        return out

    def check_projector(self, n: int = 3, seed: int = 0, tol: float = 1e-10) -> float:
        """max over random g, h of |⟨Pg, h⟩ − ⟨g, Ph⟩| and ‖P(Pg) − Pg‖ (relative): a projector
        that is not symmetric and idempotent raises DerivationCheckError."""
        rng = np.random.default_rng(seed)
        size = sum(int(np.prod(s)) for _, s in self.layout.values())
        err = 0.0
        for _ in range(n):
            g, h = rng.normal(size=size), rng.normal(size=size)
            Pg, Ph = self.project(g), self.project(h)
            scale = max(float(np.linalg.norm(g) * np.linalg.norm(h)), 1e-300)
            err = max(err, abs(float(Pg @ h - g @ Ph)) / scale,
                      float(np.linalg.norm(self.project(Pg) - Pg)) / max(float(np.linalg.norm(g)), 1e-300))
        if not within(err, tol):
            raise DerivationCheckError(f"the structured zero-mode projector is not an orthogonal projector "
                                       f"(error {err:.2e} > {tol:g})")
        return err

    def check_null(self, matvec, rho: float, n: int = 4, seed: int = 1, tol: float = 1e-6) -> float:
        r"""max ‖J t‖ / (ρ ‖t‖) over ``n`` random tangent vectors t = P g (plus one pure gauge and one
        pure free-head vector): T must lie in the null space of J. Raises DerivationCheckError when
        it exceeds ``tol`` (a wrong tangent must not deflate nonzero modes silently)."""
        rng = np.random.default_rng(seed)
        size = sum(int(np.prod(s)) for _, s in self.layout.values())
        vecs = [self.project(rng.normal(size=size)) for _ in range(n)]
        if self.rank:
            vecs.append(self._gauge_vector(rng.normal(size=(self.d, self.rank)), np.zeros(size), add=False))
        if self.rank < self.d:
            free = np.zeros(size)
            _, _, fW = self._blocks(free)
            B = rng.normal(size=(self.d, self.d))
            fW[...] = B - (B @ self.QR) @ self.QR.T
            vecs.append(free)
        err = 0.0
        for t in vecs:
            nt = float(np.linalg.norm(t))
            if nt == 0.0:
                continue
            err = max(err, float(np.linalg.norm(matvec(t))) / (max(rho, 1e-300) * nt))
        if not within(err, tol):
            raise DerivationCheckError(
                f"the symmetry tangent (gauge + free head, docs/model.md §3.3) is not in the null space of "
                f"the Jacobian: max ‖J t‖/(ρ‖t‖) = {err:.2e} > {tol:g}; the state is not a stop-gradient "
                "head fixed point with every kept ν ≠ 0 (use zero_modes='lock')")
        return err


def head_tangent(layout: dict, X: np.ndarray, Y: np.ndarray, W: np.ndarray, *,
                 rank_tol: float = 1e-6) -> HeadTangent:
    r"""The structured tangent at (Z = [X; Y], W). Z's rank r counts singular values above
    ``rank_tol`` times the largest (smaller ones are decaying remnants of dropped modes)."""
    rank_tol = check_real("rank_tol", rank_tol, 0.0, 1.0, strict_min=True)
    for b in (SAMPLE, LABEL, HEAD):
        if b not in layout:
            raise InvalidParameterError(f"the structured tangent needs blocks x, y, W; the layout has {list(layout)}")
    X, Y, W = (np.asarray(a, dtype=float) for a in (X, Y, W))
    d = W.shape[0]
    if W.shape != (d, d) or X.shape[1] != d or Y.shape[1] != d:
        raise InvalidParameterError(f"the structured tangent needs x, y ∈ R^d and W ∈ R^{{d×d}}; got shapes "
                                    f"{X.shape}, {Y.shape}, {W.shape}")
    Z = np.vstack([X, Y])
    _, s, Vt = np.linalg.svd(Z, full_matrices=False)
    r = int(np.sum(s > rank_tol * s[0])) if s.size and s[0] > 0 else 0
    QR = Vt[:r].T.copy()
    Zt = Z @ QR
    WR = QR.T @ W @ QR
    Ir, Id = np.eye(r), np.eye(d)
    # Γ = I ⊗ Z̃ᵀZ̃ + LᵀL with LᵀL = I ⊗ W_R W_Rᵀ − W ⊗ W_R − Wᵀ ⊗ W_Rᵀ + WᵀW ⊗ I (Kronecker products)
    Gamma = (np.kron(Id, Zt.T @ Zt + WR @ WR.T) - np.kron(W, WR) - np.kron(W.T, WR.T)
             + np.kron(W.T @ W, Ir))
    chol = sla.cho_factor(Gamma) if r else (np.zeros((0, 0)), False)
    return HeadTangent(layout=dict(layout), Z=Z, W=W, QR=QR, Zt=Zt, WR=WR, chol=chol, rank=r, d=d,
                       N=X.shape[0])


__all__ = ["HeadTangent", "head_tangent", "is_sg_head"]
