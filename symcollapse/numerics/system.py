r"""A compiled flow on a concrete graph: θ̇_b = s·η_b Σ_e p_e F_b(e), its Jacobian and its loss.

The state vector stacks the learned blocks row-major: X (N×d), Y (K×d), then the shared
blocks, so that for the embedding-only model it is Z = [X; Y] flattened.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sps

from ..errors import InvalidParameterError
from ..symbolic.loss import LABEL, SAMPLE
from ..validation import check_array, check_real
from .finite_differences import central_jacobian
from .blocks import BlockState, check_frozen_names, checked_params, checked_rates
from .graph import CouplingGraph
from .lambdify import _stack


class FlowSystem(BlockState):
    """Assembled dynamics of a compiled edge flow on the graph of ``P``."""

    def __init__(self, compiled: CompiledFlow, P, *, rates: dict, params: dict | None = None,
                 data=None, frozen: dict | None = None, scale: float = 1.0, path: str = "auto",
                 ):
        if not (hasattr(compiled, "edge_force") and hasattr(compiled, "loss")):  # a CompiledFlow
            raise InvalidParameterError(f"compiled must be a CompiledFlow (compile_loss(loss)); "
                                        f"got {type(compiled).__name__}")
        self.compiled = compiled
        loss = compiled.loss
        self.graph = P if isinstance(P, CouplingGraph) else CouplingGraph.from_couplings(P)
        self.rates = checked_rates(loss, compiled.flow.learned, rates)
        self.params = checked_params(loss, params)
        self.scale = check_real("scale", scale, 0.0, None, strict_min=True)
        r = len(loss.data_symbols)
        if r:
            if data is None:
                raise InvalidParameterError(f"data must be an (N, {r}) array of per-sample inputs")
            self.data = check_array("data", data, ndim=2, shape=(self.graph.N, r))
        else:
            self.data = np.zeros((self.graph.N, 0))
        check_frozen_names(loss, compiled.flow.learned, frozen)
        self.frozen = {}
        for b in loss.shared_names:
            if b not in compiled.flow.learned:
                shape = loss.block(b).shape
                val = (frozen or {}).get(b)
                if val is None:
                    raise InvalidParameterError(f"frozen block {b!r} needs a value of shape {shape}")
                self.frozen[b] = check_array(b, val, shape=shape).reshape(shape)
        if path not in ("auto", "edge", "moment"):
            raise InvalidParameterError(f"path must be 'auto', 'edge' or 'moment'; got {path!r}")
        if path == "moment" and not compiled.fast:
            raise InvalidParameterError("path='moment' needs a loss quadratic in the node variables")
        self.path = ("moment" if compiled.fast else "edge") if path == "auto" else path

    # --- layout ------------------------------------------------------------------
    @cached_property
    def layout(self) -> dict:
        """block -> (offset, shape) in the state vector."""
        out, off = {}, 0
        for b in self.compiled.flow.learned:
            shape = self._shape(b)
            out[b] = (off, shape)
            off += int(np.prod(shape))
        return out

    def _shape(self, b):
        loss = self.compiled.loss
        if b == SAMPLE:
            return (self.graph.N, len(loss.x))
        if b == LABEL:
            return (self.graph.K, len(loss.y))
        return loss.block(b).shape

    # --- argument assembly ---------------------------------------------------------------
    def _shared_args(self, st: dict) -> list:
        loss = self.compiled.loss
        vals = []
        for b in loss.shared_names:
            vals.extend(np.asarray(st[b], dtype=float).ravel().tolist())
        vals.extend(self.params[p.name] for p in loss.parameters)
        return vals

    def _edge_columns(self, st: dict) -> list:
        i, c, _ = self.graph.edges
        cols = []
        loss = self.compiled.loss
        if len(loss.x):
            X = st[SAMPLE]
            cols.extend(X[i, k] for k in range(X.shape[1]))
        if loss.data_symbols:
            cols.extend(self.data[i, k] for k in range(self.data.shape[1]))
        Y = st[LABEL]
        cols.extend(Y[c, k] for k in range(Y.shape[1]))
        return cols

    def _node_state(self, st: dict) -> dict:
        loss = self.compiled.loss
        st = dict(st)
        if SAMPLE not in st:
            st[SAMPLE] = np.zeros((self.graph.N, len(loss.x)))
        return st

    # --- flow --------------------------------------------------------------------------
    def forces(self, st: dict) -> dict:
        """{block: Σ_e p_e F_b(e) assembled} (without rates and scale)."""
        st = self._node_state(st)
        return self._forces_moment(st) if self.path == "moment" else self._forces_edge(st)

    def _forces_edge(self, st: dict) -> dict:
        cp = self.compiled
        _, _, p = self.graph.edges
        E = len(p)
        args = self._edge_columns(st) + self._shared_args(st)
        out = {}
        for b in cp.flow.learned:
            shape = cp.loss.block(b).shape
            vals = _stack(cp.edge_force[b](*args), (int(np.prod(shape)),), E) * p[:, None]
            if b == SAMPLE:
                out[b] = self.graph.sample_incidence @ vals
            elif b == LABEL:
                out[b] = self.graph.label_incidence @ vals
            else:
                out[b] = vals.sum(axis=0).reshape(shape)
        return out

    def _forces_moment(self, st: dict, factors: dict | None = None, out: dict | None = None) -> dict:
        """Moment path: f_b·Σ_e p_e F_b(e) for every learned block, written into ``out``
        (views of the state vector) when given; scalar coefficients and the factors f_b are
        folded into the degree weights so each block costs a few passes over its rows."""
        cp = self.compiled
        g = self.graph
        X, Y, U = st[SAMPLE], st[LABEL], self.data
        sh = self._shared_args(st)
        res, cache = {}, {}
        for b, coefs in cp.affine.items():
            f = 1.0 if factors is None else factors[b]
            if b == SAMPLE:
                own, keys, deg = (X, U), ("x", "u"), g.sample_degree
                nbrs = (("y", lambda: _keep(cache, "PY", g.csr @ Y)),)
            else:
                own, keys, deg = (Y,), ("y",), g.label_degree
                nbrs = (("x", lambda: g.csr_T @ X), ("u", lambda: g.csr_T @ U))
            shape = self._shape(b)
            buf = out[b] if out is not None else np.empty(shape)
            filled = False
            for key, arr in zip(keys, own):
                coef = coefs[key](sh)
                if not arr.shape[1] or (isinstance(coef, float) and coef == 0.0):
                    continue
                if isinstance(coef, float):
                    term_w = (f * coef) * deg
                    if filled:
                        buf += arr * term_w[:, None]
                    else:
                        np.multiply(arr, term_w[:, None], out=buf)
                        filled = True
                    continue
                if b == SAMPLE and key == "x":  # D X, shared with the moments
                    arr_d = _keep(cache, "SD", arr * deg[:, None])
                else:
                    arr_d = arr * deg[:, None]
                if filled:
                    buf += arr_d @ (f * coef).T
                else:
                    np.matmul(arr_d, (f * coef).T, out=buf)
                    filled = True
            c = coefs["c"](sh)
            if not isinstance(c, float):
                t = np.outer(deg, f * np.asarray(c, dtype=float).ravel())
                if filled:
                    buf += t
                else:
                    buf[...] = t
                    filled = True
            for key, make in nbrs:
                coef = coefs[key](sh)
                if isinstance(coef, float) and coef == 0.0:
                    continue
                nb = make()
                if not nb.shape[1]:
                    continue
                if isinstance(coef, float):
                    if cp.moment:  # P·Y is reused by the moments: keep it
                        nb = nb * (f * coef)
                    else:
                        nb *= f * coef
                else:
                    nb = nb @ (f * coef).T
                if filled:
                    buf += nb
                else:
                    buf[...] = nb
                    filled = True
            if not filled:
                buf[...] = 0.0
            res[b] = buf
        if cp.moment:
            margs = self.moments(st, cache.get("PY"), cache.get("SD"))
            for b, fn in cp.moment.items():
                f = 1.0 if factors is None else factors[b]
                shape = cp.loss.block(b).shape
                val = f * np.array(fn(*sh, *margs), dtype=float).reshape(shape)
                if out is not None:
                    out[b][...] = val
                    val = out[b]
                res[b] = val
        return res

    def moments(self, st: dict, PY: np.ndarray | None = None, XD: np.ndarray | None = None) -> list:
        """[M₀, M₁…, M₂(p ≤ q)…] of the node variables z_e = (x_i, u_i, y_c) over the edges
        (``PY`` = P·Y and ``XD`` = D_s X if already computed)."""
        g = self.graph
        Ds, Dy = g.sample_degree, g.label_degree
        if self.data.shape[1]:
            S = np.hstack([st[SAMPLE], self.data])
            SD = S * Ds[:, None]
        else:
            S = st[SAMPLE]
            SD = S * Ds[:, None] if XD is None else XD
        Y = st[LABEL]
        SS = S.T @ SD
        SY = S.T @ (g.csr @ Y if PY is None else PY)
        YY = Y.T @ (Y * Dy[:, None])
        M2 = np.block([[SS, SY], [SY.T, YY]])
        M1 = np.concatenate([S.T @ Ds, Y.T @ Dy])
        nz = M2.shape[0]
        iu = np.triu_indices(nz)
        return [float(Ds.sum()), *M1.tolist(), *M2[iu].tolist()]

    def _factors(self) -> dict:
        return {b: self.scale * self.rates[b] for b in self.compiled.flow.learned}

    def flow_blocks(self, st: dict) -> dict:
        """{block: θ̇_b} = s·η_b·(assembled force)."""
        if self.path == "moment":
            return self._forces_moment(self._node_state(st), self._factors())
        F = self.forces(st)
        return {b: self.scale * self.rates[b] * F[b] for b in self.compiled.flow.learned}

    def flow_vector(self, v: np.ndarray) -> np.ndarray:
        """θ̇ as a flat vector at the flat state v."""
        if self.path == "moment":
            v = np.asarray(v, dtype=float)
            res = np.empty(self.size)
            views = {b: res[o:o + int(np.prod(s))].reshape(s) for b, (o, s) in self.layout.items()}
            self._forces_moment(self._node_state(self.unpack(v)), self._factors(), views)
            return res
        return self.pack(self.flow_blocks(self.unpack(v)))

    # --- loss ---------------------------------------------------------------------------
    def loss(self, st: dict) -> float:
        """L = s Σ_e p_e ℓ(e)."""
        st = self._node_state(st)
        _, _, p = self.graph.edges
        val = self.compiled.loss_fn(*(self._edge_columns(st) + self._shared_args(st)))[0]
        return float(self.scale * np.sum(p * np.broadcast_to(val, p.shape)))

    def loss_vector(self, v: np.ndarray) -> float:
        return self.loss(self.unpack(v))

    def frozen_loss(self, v, v0) -> float:
        """L(θ; θ₀): the loss with every sg(a) evaluated at the state v0 (for gradient checks)."""
        st, st0 = self._node_state(self.unpack(v)), self._node_state(self.unpack(v0))
        loss = self.compiled.loss
        i, c, p = self.graph.edges
        frozen = []
        if len(loss.x):
            frozen.extend(st0[SAMPLE][i, k] for k in range(len(loss.x)))
        frozen.extend(st0[LABEL][c, k] for k in range(len(loss.y)))
        for b in loss.shared_names:
            frozen.extend(np.asarray(st0[b]).ravel().tolist())
        args = self._edge_columns(st) + self._shared_args(st) + frozen
        val = self.compiled.frozen_loss_fn(*args)[0]
        return float(self.scale * np.sum(p * np.broadcast_to(val, p.shape)))

    def _frozen_loss_batch(self, V: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """frozen_loss(V[b], v0) for every row of V in one broadcast kernel call."""
        loss = self.compiled.loss
        i, c, p = self.graph.edges
        B = V.shape[0]
        blocks = {b: V[:, o:o + int(np.prod(s))].reshape((B,) + tuple(s)) for b, (o, s) in self.layout.items()}
        st0 = self._node_state(self.unpack(v0))
        args = []
        if len(loss.x):
            X = blocks.get(SAMPLE, np.zeros((B, self.graph.N, len(loss.x))))
            args.extend(X[:, i, k] for k in range(len(loss.x)))
        if loss.data_symbols:
            args.extend(self.data[i, k] for k in range(self.data.shape[1]))
        Y = blocks[LABEL] if LABEL in blocks else np.broadcast_to(st0[LABEL], (B,) + st0[LABEL].shape)
        args.extend(Y[:, c, k] for k in range(len(loss.y)))
        for b in loss.shared_names:
            arr = blocks[b].reshape(B, -1) if b in blocks else np.broadcast_to(
                np.asarray(self.frozen[b]).ravel(), (B, int(np.prod(loss.block(b).shape))))
            args.extend(arr[:, j][:, None] for j in range(arr.shape[1]))
        args.extend(self.params[q.name] for q in loss.parameters)
        if len(loss.x):
            args.extend(st0[SAMPLE][i, k] for k in range(len(loss.x)))
        args.extend(st0[LABEL][c, k] for k in range(len(loss.y)))
        for b in loss.shared_names:
            args.extend(np.asarray(st0[b]).ravel().tolist())
        val = np.broadcast_to(self.compiled.frozen_loss_fn(*args)[0], (B, len(p)))
        return self.scale * (val @ p)

    def frozen_loss_gradient_fd(self, v: np.ndarray, h: float = 1e-5, chunk: int = 256) -> np.ndarray:
        """∂L/∂θ with every sg(a) held at its value at v, by central differences
        (the perturbed states are evaluated in batches of ``chunk`` in one kernel call)."""
        v = np.asarray(v, dtype=float)
        n = len(v)
        g = np.empty(n)
        for lo in range(0, n, chunk):
            ks = np.arange(lo, min(lo + chunk, n))
            E = np.zeros((len(ks), n))
            E[np.arange(len(ks)), ks] = h
            up = self._frozen_loss_batch(v + E, v)
            down = self._frozen_loss_batch(v - E, v)
            g[ks] = (up - down) / (2 * h)
        return g

    def flow_jacobian_fd(self, v: np.ndarray, h: float = 1e-6) -> np.ndarray:
        """∂θ̇/∂θ by central differences of the compiled flow."""
        return central_jacobian(self.flow_vector, v, h)

    # --- Jacobian -----------------------------------------------------------------------
    def jacobian(self, v: np.ndarray) -> sps.csr_matrix:
        """The sparse Jacobian ∂θ̇/∂θ assembled from the derived per-edge blocks ∂F_b/∂θ_b'."""
        st = self._node_state(self.unpack(v))
        cp = self.compiled
        i, c, p = self.graph.edges
        E = len(p)
        args = self._edge_columns(st) + self._shared_args(st)
        rows, cols, vals = [], [], []
        for (b, b2), (jr, jc, fn) in cp.edge_jac.items():
            nb = int(np.prod(cp.loss.block(b).shape))
            nb2 = int(np.prod(cp.loss.block(b2).shape))
            J = _stack(fn(*args), (len(jr),), E)
            w = (self.scale * self.rates[b]) * p
            rows.append(self._index(b, i, c, nb)[:, jr].ravel())
            cols.append(self._index(b2, i, c, nb2)[:, jc].ravel())
            vals.append((J * w[:, None]).ravel())
        n = self.size
        if not rows:
            return sps.csr_matrix((n, n))
        return sps.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n, n))

    def _index(self, b, i, c, nb):
        off, _ = self.layout[b]
        ar = np.arange(nb)
        if b == SAMPLE:
            return off + i[:, None] * nb + ar[None, :]
        if b == LABEL:
            return off + c[:, None] * nb + ar[None, :]
        return np.broadcast_to(off + ar[None, :], (len(i), nb))


def _keep(cache: dict, key: str, value):
    """Store ``value`` under ``key`` (for reuse by the moments) and return it."""
    cache[key] = value
    return value
