r"""The derived per-sector stability conditions of the head model's fixed-point families on the
balanced ensemble B(K, n, μ, ω), evaluated (docs/model.md §3.1).

A *member* of a family is given by its kept modes (sector, pattern/deviation index, sign of ν,
D-norm amplitude ℓ) and its spare head eigenvalues; its head is symmetric, W = diag(ν_j, s_i)
(up to a rotation, which does not change the spectrum). The linearised flow splits into one block
per head direction i (eigenvalue w_i) and sector; each block's characteristic polynomial
λ^{|κ|}·p(λ) is derived in :mod:`symcollapse.models.head.sector_blocks`. Here p is evaluated, the
symmetry zeros are removed (|κ| gauge zeros per block — already divided out —, one level-swap zero
per unkept mode with ν = w_i, d − |S| free-head zeros per direction), and the member is classified
from the Hurwitz conditions and the roots. The whole spectrum it predicts is checked against the
eigenvalues of the engine's Jacobian by :func:`compare_with_jacobian`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import sympy as sp
from scipy.optimize import linear_sum_assignment

from ...errors import InvalidParameterError
from ...numerics import families as fm
from ...tolerance import spectrum_counts
from ...validation import check_int, check_real
from . import sector_blocks as hs

LEVEL_NAMES = ("-1", "-s", "0", "+s", "+1")  # the five ν-levels of B(K, n, μ ≥ 1), ascending


@dataclass(frozen=True)
class KeptMode:
    """One kept graph mode: sector ('uniform', 'sep', 'xdev', 'fdev'), index (class-separation pattern
    or deviation vector), sign of ν (±1; 0 for the ν = 0 deviation modes) and D-norm amplitude ℓ."""

    sector: str
    index: int
    sign: int
    length: float


@dataclass(frozen=True)
class Member:
    """A fixed point of a family of B(K, n, μ, ω) with head dimension d: kept modes (head directions
    0 … |S|−1) and spare head eigenvalues (directions |S| … d−1)."""

    K: int
    n: int
    mu: int
    d: int
    kept: tuple
    spares: tuple
    omega: float = 2.0

    @property
    def ranks(self) -> tuple:
        """Ranks per ν-level in ascending ν (−1, −ν_s, 0, +ν_s, +1): the family's rank vector."""
        cnt = dict.fromkeys(LEVEL_NAMES, 0)
        for m in self.kept:
            cnt[_level_name(m)] += 1
        return tuple(cnt[k] for k in LEVEL_NAMES)


def _level_name(m: KeptMode) -> str:
    if m.sign == 0:
        return "0"
    return ("+" if m.sign > 0 else "-") + ("1" if m.sector == "uniform" else "s")


def nu_s(K: int, n: int, mu: int, omega: float = 2.0) -> float:
    """ν_s = √(ν²) of the derived class-separation sector (docs/model.md §3)."""
    return float(np.sqrt(_nu2_kernel("sep2" if K == 2 else "sep")(K, n, mu, omega)))


@lru_cache(maxsize=None)
def _nu2_kernel(name):
    return sp.lambdify(hs.PARAMS[:4], hs.sector(name).nu2, "math")


def n_deviation_sectors(K: int, n: int, mu: int) -> tuple[int, int]:
    """(#xdev, #fdev): K(n−1) within-class deviations; K(K−1)/2·(μ−1) within-pair deviations plus
    the K(K−3)/2 pair-sector patterns (K ≥ 3), all with A u = 0."""
    return K * (n - 1), K * (K - 1) // 2 * (mu - 1) + max(K * (K - 3) // 2, 0)


def aligned_member(K: int, n: int, mu: int, d: int, ranks, *, lengths=None, spares=None,
                   omega: float = 2.0) -> Member:
    r"""The member of the family ``ranks`` (per level −1, −ν_s, 0, +ν_s, +1) whose kept ±ν_s modes use
    the same class-separation patterns (pattern p kept at +ν_s iff p < r_{+s}, at −ν_s iff p < r_{−s}),
    ν = 0 modes in within-class then within-pair deviations; amplitudes ``lengths`` (default 1) in the
    order −1, −ν_s…, 0…, +ν_s…, +1; spare head eigenvalues ``spares`` (default 0.5)."""
    K, n, mu, d = check_int("K", K, 2), check_int("n", n, 1), check_int("mu", mu, 1), check_int("d", d, 1)
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) != 5 or min(ranks) < 0:
        raise InvalidParameterError(f"ranks must be 5 non-negative integers (levels −1, −ν_s, 0, +ν_s, +1); "
                                    f"got {ranks}")
    nx, nf = n_deviation_sectors(K, n, mu)
    caps = (1, K - 1, nx + nf, K - 1, 1)
    if any(r > c for r, c in zip(ranks, caps)) or sum(ranks) > d:
        raise InvalidParameterError(f"ranks {ranks} exceed the level multiplicities {caps} or d = {d}")
    modes = []
    modes += [("uniform", 0, -1)] * ranks[0]
    modes += [("sep", p, -1) for p in range(ranks[1])]
    modes += [("xdev", p, 0) if p < nx else ("fdev", p - nx, 0) for p in range(ranks[2])]
    modes += [("sep", p, 1) for p in range(ranks[3])]
    modes += [("uniform", 0, 1)] * ranks[4]
    ln = np.ones(len(modes)) if lengths is None else np.asarray(lengths, float)
    if ln.shape != (len(modes),) or not np.all(ln > 0):
        raise InvalidParameterError(f"lengths must be {len(modes)} positive numbers; got {lengths}")
    sp_ = np.full(d - len(modes), 0.5) if spares is None else np.asarray(spares, float)
    if sp_.shape != (d - len(modes),) or not np.all(np.isfinite(sp_)):
        raise InvalidParameterError(f"spares must be {d - len(modes)} finite numbers; got {spares}")
    kept = tuple(KeptMode(s, i, g, float(v)) for (s, i, g), v in zip(modes, ln))
    return Member(K, n, mu, d, kept, tuple(float(x) for x in sp_), float(omega))


# --- node-space state of a member ------------------------------------------------------------------
def _helmert(m: int) -> np.ndarray:
    """m−1 orthonormal zero-sum vectors in R^m (rows)."""
    H = np.zeros((m - 1, m))
    for k in range(1, m):
        H[k - 1, :k] = 1.0
        H[k - 1, k] = -k
        H[k - 1] /= np.linalg.norm(H[k - 1])
    return H


def _pairs(K):
    return [(a, b) for a in range(K) for b in range(a + 1, K)]


def node_degrees(K: int, n: int, mu: int, omega: float = 2.0) -> np.ndarray:
    """Degrees of B(K, n, μ, ω) in the balanced row order (samples, then labels)."""
    P = len(_pairs(K))
    return np.concatenate([np.ones(K * n), np.full(mu * P, omega), np.full(K, n + (K - 1) * mu * omega / 2)])


def sector_embedding(K: int, n: int, mu: int, sector: str, index: int = 0) -> np.ndarray:
    r"""U: the (N+K) × c matrix whose columns are the sector's coordinates in node space (balanced row
    order): 'uniform' and 'sep' (pattern ``index`` of an orthonormal zero-sum basis) have (X, F, Y),
    or (X, Y) for 'sep' at K = 2; 'xdev'/'fdev' one column (deviation vector ``index``, unit norm)."""
    pairs = _pairs(K)
    N = K * n + mu * len(pairs)
    if sector in ("uniform", "sep"):
        v = np.ones(K) if sector == "uniform" else _helmert(K)[index]
        X = np.zeros(N + K)
        F = np.zeros(N + K)
        Y = np.zeros(N + K)
        X[:K * n] = np.repeat(v, n)
        # frustrated samples: pattern 1 in the uniform sector, v_a + v_b in a separation pattern
        F[K * n:N] = 1.0 if sector == "uniform" else np.repeat([v[a] + v[b] for a, b in pairs], mu)
        Y[N:] = v
        return np.array([X, Y]).T if (sector == "sep" and K == 2) else np.array([X, F, Y]).T
    u = np.zeros(N + K)
    if sector == "xdev":
        c, j = divmod(index, n - 1)
        u[c * n:(c + 1) * n] = _helmert(n)[j]
    elif sector == "fdev":
        within = len(pairs) * (mu - 1)
        if index < within:
            p, j = divmod(index, mu - 1)
            u[K * n + p * mu:K * n + (p + 1) * mu] = _helmert(mu)[j]
        else:  # pair-sector pattern g(a, b) with Σ_b g(a, b) = 0 for every a
            g = _pair_sector_basis(K)[index - within]
            u[K * n:N] = np.repeat(g, mu) / np.sqrt(mu)
    else:
        raise InvalidParameterError(f"sector must be 'uniform', 'sep', 'xdev' or 'fdev'; got {sector!r}")
    return u[:, None]


def sector_name(K: int, sector: str) -> str:
    """The derived sector of :mod:`symcollapse.models.head.sector_blocks` ('sep2' for 'sep' at K = 2)."""
    return "sep2" if (sector == "sep" and K == 2) else sector


def sector_vector(mem: Member, mode: KeptMode) -> np.ndarray:
    r"""The node-space vector U ψ of a kept mode, normalised to D-norm 1."""
    U = sector_embedding(mem.K, mem.n, mem.mu, mode.sector, mode.index)
    if mode.sector in ("uniform", "sep"):
        u = U @ _psi(sector_name(mem.K, mode.sector), mode.sign, mem.K, mem.n, mem.mu, mem.omega)
    else:
        u = U[:, 0]
    deg = node_degrees(mem.K, mem.n, mem.mu, mem.omega)
    return u / np.sqrt(float(u @ (deg * u)))


@lru_cache(maxsize=None)
def _pair_sector_basis(K: int) -> np.ndarray:
    pairs = _pairs(K)
    B = np.zeros((K, len(pairs)))  # label image of a pair function
    for k, (a, b) in enumerate(pairs):
        B[a, k] = B[b, k] = 1.0
    _, s, Vt = np.linalg.svd(B)
    return Vt[int(np.sum(s > 1e-12)):]


@lru_cache(maxsize=None)
def _psi_kernel(name, sign):
    return sp.lambdify((*hs.PARAMS[:4], hs.nu_), list(hs.sector(name).mode(sign)), "math")


def _psi(name, sign, K, n, mu, omega):
    nu = 1.0 if name == "uniform" else nu_s(K, n, mu, omega)
    return np.array(_psi_kernel(name, sign)(K, n, mu, omega, nu), float)


def member_state(mem: Member, rotation=None) -> tuple[np.ndarray, np.ndarray]:
    r"""(Z, W) of the member: Z = Σ_j ℓ_j φ_j e_jᵀ, W = diag(ν_j, spares), both rotated by an orthogonal
    ``rotation`` R (Z → Z Rᵀ, W → R W Rᵀ; the spectrum does not change)."""
    cols = [m.length * sector_vector(mem, m) for m in mem.kept]
    nN = mem.K * mem.n + mem.mu * len(_pairs(mem.K)) + mem.K
    Z = np.zeros((nN, mem.d))
    for j, c in enumerate(cols):
        Z[:, j] = c
    W = np.diag(np.concatenate([[_nu_value(mem, m) for m in mem.kept], mem.spares]))
    if rotation is not None:
        R = np.asarray(rotation, float)
        Z, W = Z @ R.T, R @ W @ R.T
    return Z, W


def _nu_value(mem: Member, m: KeptMode) -> float:
    if m.sign == 0:
        return 0.0
    return float(m.sign) * (1.0 if m.sector == "uniform" else nu_s(mem.K, mem.n, mem.mu, mem.omega))


# --- the derived prediction ------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _block_kernel(name: str, kept: tuple):
    b = hs.derive_block(name, kept)
    args = (*hs.PARAMS, hs.w_, hs.nu_, *b.alphas)
    coef = [b.in_parameters(c) for c in b.coefficients]
    hur = [b.in_parameters(h) for h in b.hurwitz]
    return sp.lambdify(args, coef, "math"), sp.lambdify(args, hur, "math")


@lru_cache(maxsize=None)
def _alpha_kernel(name: str, sign: int):
    return sp.lambdify(hs.PARAMS[:4] + (hs.nu_,), hs.amplitude_norm2(name, sign), "math")


@dataclass(frozen=True)
class SectorPrediction:
    """The derived spectrum of a member: the eigenvalues that are not symmetry zeros, the number of
    symmetry zeros, the classification, and every block's Hurwitz values (all > 0 ⟺ block stable)."""

    kind: str  # 'stable' | 'saddle' | 'degenerate'
    n_unstable: int
    n_degenerate: int
    eigenvalues: np.ndarray = field(repr=False)
    n_symmetry: int
    hurwitz: tuple = field(repr=False)  # (direction, sector, multiplicity, kept, values)

    @property
    def label(self) -> str:
        return f"saddle({self.n_unstable})" if self.kind == "saddle" else self.kind


def _sector_modes(name):
    """Signs of the modes of a sector (ν = sign·ν_sector; 0 for the ν = 0 mode)."""
    return {"uniform": (1, 0, -1), "sep": (1, 0, -1), "sep2": (1, -1), "xdev": (0,), "fdev": (0,)}[name]


def predict(mem: Member, eta_x: float, eta_y: float, eta_W: float, *, tol: float = 1e-9) -> SectorPrediction:
    r"""Spectrum and classification of the member from the derived block polynomials (no Jacobian)."""
    for nm, v in (("eta_x", eta_x), ("eta_y", eta_y), ("eta_W", eta_W)):
        check_real(nm, v, 0.0, None, strict_min=True)
    tol = check_real("tol", tol, 0.0, None, strict_min=True)
    K, n, mu, om = mem.K, mem.n, mem.mu, mem.omega
    ns = nu_s(K, n, mu, om)
    sep_name = "sep2" if K == 2 else "sep"
    nx, nf = n_deviation_sectors(K, n, mu)
    # group kept modes by sector instance
    groups: dict = {}
    for m in mem.kept:
        name = sep_name if m.sector == "sep" else m.sector
        groups.setdefault((name, m.index), []).append(m)
    instances = [("uniform", 0)] + [(sep_name, p) for p in range(K - 1)]
    instances += [("xdev", p) for p in range(nx)] + [("fdev", p) for p in range(nf)]
    ws = [_nu_value(mem, m) for m in mem.kept] + list(mem.spares)
    pars = (K, n, mu, om, eta_x, eta_y, eta_W)
    eig, n_sym, hur = [], 0, []
    classes: dict = {}  # sector instances with the same kept modes and amplitudes: one block each
    for name, idx in instances:
        ms = sorted(groups.get((name, idx), []), key=lambda m: -m.sign)
        key = (name, tuple(m.sign for m in ms), tuple(m.length for m in ms))
        classes[key] = classes.get(key, 0) + 1
    for i, w in enumerate(ws):
        n_sym += mem.d - len(mem.kept)  # free head: δW_ij, j ∉ S
        for (name, kept, lengths), mult in classes.items():
            roots, z, hv = _evaluate_block(name, kept, lengths, float(w), pars, ns)
            n_sym += mult * (len(kept) + z)  # gauge zeros (divided out symbolically) and level swaps
            eig.extend(list(roots) * mult)
            hur.append((i, name, mult, kept, hv))
    ev = np.array(eig, complex)
    n_uns, n_deg, kind = spectrum_counts(ev, tol, "sector-block roots")
    return SectorPrediction(kind, n_uns, n_deg, np.sort_complex(ev), n_sym, tuple(hur))


@lru_cache(maxsize=65536)
def _evaluate_block(name, kept, lengths, w, pars, ns):
    """Roots of one block's p(λ) without its level-swap zeros, their number, and the Hurwitz values
    (cached: identical blocks, e.g. every unkept deviation sector, are evaluated once)."""
    K, n, mu, om = pars[:4]
    nuv = 1.0 if name == "uniform" else (ns if name.startswith("sep") else 0.0)
    alphas = [ln / np.sqrt(_alpha_kernel(name, sg)(K, n, mu, om, nuv)) for sg, ln in zip(kept, lengths)]
    coef_f, hur_f = _block_kernel(name, kept)
    c = np.array(coef_f(*pars, w, nuv, *alphas), float)
    # level swaps: unkept modes of this sector with ν = w are zero roots (symmetries)
    z = sum(1 for s in _sector_modes(name) if s not in kept and abs(s * nuv - w) <= 1e-12)
    if z:
        if not float(np.max(np.abs(c[:z]))) <= 1e-9 * max(1.0, float(np.max(np.abs(c)))):
            raise InvalidParameterError(f"level-swap zero expected in sector {name} at w = {w}")
        c = c[z:]
    roots = np.roots(np.concatenate([[1.0], c[::-1]])) if len(c) else np.zeros(0)
    if z:  # the symbolic conditions are those of λ^z p̃(λ): apply Hurwitz to the deflated p̃
        return roots, z, tuple(float(h) for h in hs.hurwitz_conditions(list(c))) if len(c) else ()
    return roots, z, tuple(float(h) for h in hur_f(*pars, w, nuv, *alphas))


def derived_family_table(K: int, n: int, mu: int, d: int, eta_x: float, eta_y: float, eta_W: float, *,
                         spare: float = 0.5, lengths: float = 1.0) -> list[dict]:
    r"""Every family without a ν = 0 mode (ranks per level −1, −ν_s, 0, +ν_s, +1; one representative
    per rank vector — the level degeneracy is a symmetry), classified from the derived blocks alone
    at its aligned member (amplitudes ``lengths``, spare head eigenvalue ``spare``). A family with a
    kept ν = 0 mode has a w = 0 head direction and is degenerate (docs/model.md §3.1). No Jacobian:
    this is the classification used at large K and d."""
    rows = []
    caps = (1, K - 1, 0, K - 1, 1)
    for r in itertools.product(*[range(min(c, d) + 1) for c in caps]):
        if sum(r) > d:
            continue
        mem = aligned_member(K, n, mu, d, r, lengths=np.full(sum(r), float(lengths)),
                             spares=np.full(d - sum(r), float(spare)))
        p = predict(mem, eta_x, eta_y, eta_W)
        rows.append({"ranks": r, "kind": p.kind, "label": p.label, "n_unstable": p.n_unstable,
                     "hurwitz": hurwitz_stable(p)})
    return rows


def hurwitz_stable(pred: SectorPrediction) -> bool:
    """True iff every block's Hurwitz values are > 0 (the symbolic stability conditions hold)."""
    return all(all(h > 0 for h in vals) for *_, vals in pred.hurwitz)


def compare_with_jacobian(model, mem: Member, pred: SectorPrediction | None = None, rotation=None) -> dict:
    r"""The member's state in ``model`` (a HeadModel on B(K, n, μ, ω) with the member's d): max distance
    between the predicted non-symmetry eigenvalues and those of the engine's Jacobian (symmetry tangent
    removed, :func:`~symcollapse.numerics.families.classify_state`, optimal matching), both
    classifications and the symmetry counts."""
    pred = predict(mem, model.eta_x, model.eta_y, model.eta_W) if pred is None else pred
    Z, W = member_state(mem, rotation)
    st = fm.classify_state(model, Z, W)
    a, b = pred.eigenvalues, st.eigenvalues
    if len(a) != len(b):
        return {"match": float("inf"), "pred": pred, "numeric": st, "sizes": (len(a), len(b))}
    C = np.abs(a[:, None] - b[None, :])
    r, c = linear_sum_assignment(C)
    scale = max(1.0, float(np.max(np.abs(b))))
    return {"match": float(np.max(C[r, c])) / scale, "pred": pred, "numeric": st, "sizes": (len(a), len(b))}
