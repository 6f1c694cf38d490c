r"""The sparse Jacobian of a matrix flow from a fixed structure: indices once, values per call.

The Jacobian of θ̇_b = s·η_b Σ_e p_e F_b(e) has, for every (row block, column block), either a
dense block (shared rows or columns) or a node–node block deg ⊗ A / P ⊗ A with a d×d factor A
(docs/model.md §2–§4). Which of these a system has depends only on its derived chains, so the
CSR indices (every entry of these patterns stored, whatever the state) and the permutation that
brings the blocks' entries into CSR order are computed once; a call concatenates the blocks'
values and permutes them — no scipy.sparse kron/bmat/COO construction per call.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sps

from ..symbolic.loss import LABEL, SAMPLE


class UnsupportedStructure(ValueError):
    """A Jacobian block mixes pattern kinds (the caller assembles it the generic way)."""


class JacobianAssembler:
    """CSR structure of one system's Jacobian for one set of block kinds (see the module docstring)."""

    def __init__(self, system, parts: dict):
        g = system.graph
        layout = system.layout
        n = system.size
        self.shape = (n, n)
        self.order_keys = []   # (block key, kind) in the order their values are concatenated
        self.pat_data = {}     # (row block, kind) -> the pattern's values (deg, or the nonzeros of P / Pᵀ)
        self.dense_at = {}     # dense part -> (row slice, column slice) of the dense Jacobian
        self._kron_rc = {}     # kron part -> its (rows, cols) (the flat indices of the dense Jacobian on demand)
        rows, cols = [], []
        for key in sorted(parts, key=lambda k: (layout[k[0]][0], layout[k[1]][0])):
            slot = parts[key]
            if len(slot) != 1:
                raise UnsupportedStructure(f"Jacobian block {key} has parts {sorted(slot)}")
            (kind, M), = slot.items()
            b, tb = key
            ro, rshape = layout[b]
            co, cshape = layout[tb]
            nb, nt = int(np.prod(rshape)), int(np.prod(cshape))
            if kind == "dense":
                if M.shape != (nb, nt):
                    raise UnsupportedStructure(f"dense Jacobian block {key} has shape {M.shape}, not {(nb, nt)}")
                r = np.repeat(np.arange(nb, dtype=np.int64), nt)
                c = np.tile(np.arange(nt, dtype=np.int64), nb)
                self.dense_at[(key, kind)] = (slice(ro, ro + nb), slice(co, co + nt))
            else:
                if b not in (SAMPLE, LABEL) or tb not in (SAMPLE, LABEL):
                    raise UnsupportedStructure(f"Jacobian block {key}: a {kind} ⊗ A part outside the node blocks")
                da, db = M[0].shape
                if da != rshape[1] or db != cshape[1]:
                    raise UnsupportedStructure(f"Jacobian block {key}: factor of shape {M.shape}")
                if kind == "deg":
                    deg = g.sample_degree if b == SAMPLE else g.label_degree
                    i = j = np.arange(deg.size, dtype=np.int64)
                    p = np.asarray(deg, dtype=float)
                else:
                    coo = (g.csr if b == SAMPLE else g.csr_T).tocoo()
                    i, j, p = coo.row.astype(np.int64), coo.col.astype(np.int64), np.asarray(coo.data, dtype=float)
                self.pat_data[(key, kind)] = p
                r = (i[:, None, None] * da + np.arange(da)[None, :, None] + np.zeros((1, 1, db), dtype=np.int64)).ravel()
                c = (j[:, None, None] * db + np.arange(db)[None, None, :] + np.zeros((1, da, 1), dtype=np.int64)).ravel()
                self._kron_rc[(key, kind)] = (ro + r, co + c)
            rows.append(ro + r)
            cols.append(co + c)
            self.order_keys.append((key, kind))
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        self.perm = np.lexsort((cols, rows))
        idx = np.int32 if n < 2**31 - 1 else np.int64
        self.indices = cols[self.perm].astype(idx)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(idx)
        #: the sample rows of a reduced system are divided by m_i (docs/model.md §3.5)
        self.row_scale = self.sample_rows = None
        m = system.multiplicity
        if m is not None and SAMPLE in layout:
            o, (N, d) = layout[SAMPLE]
            scale = np.ones(n)
            scale[o:o + N * d] = np.repeat(1.0 / m, d)
            self.row_scale = scale[rows[self.perm]]
            self.sample_rows = (slice(o, o + N * d), np.repeat(1.0 / m, d)[:, None])
        self._flat = None

    def fill(self, parts: dict):
        """The CSR Jacobian whose blocks are ``parts`` (same keys and kinds as at construction)."""
        vals = []
        for key, kind in self.order_keys:
            M = parts[key][kind]
            if kind == "dense":
                vals.append(np.asarray(M, dtype=float).ravel())
            else:
                vals.append(_kron_values(self.pat_data[(key, kind)], M))
        data = np.concatenate(vals)[self.perm] if vals else np.zeros(0)
        if self.row_scale is not None:
            data *= self.row_scale
        return sps.csr_matrix((data, self.indices.copy(), self.indptr.copy()), shape=self.shape)

    def fill_dense(self, parts: dict) -> np.ndarray:
        """The same Jacobian as a dense array (small systems): dense parts by slices, the
        deg ⊗ A / P ⊗ A parts scattered to their entries."""
        n = self.shape[0]
        if self._flat is None:
            self._flat = {k: r * n + c for k, (r, c) in self._kron_rc.items()}
        J = np.zeros(self.shape)
        flat = J.reshape(-1)
        for key, kind in self.order_keys:
            M = parts[key][kind]
            if kind == "dense":
                rs, cs = self.dense_at[(key, kind)]
                J[rs, cs] = M
            else:
                flat[self._flat[(key, kind)]] = _kron_values(self.pat_data[(key, kind)], M)
        if self.sample_rows is not None:
            rs, f = self.sample_rows
            J[rs] *= f
        return J


def _kron_values(p: np.ndarray, factors) -> np.ndarray:
    """The stored entries of Σ_k pat ⊗ A_k (pattern entries p, in kron's order), each product
    formed before the sum, as the sum of the sparse kron matrices forms it."""
    out = (p[:, None, None] * factors[0][None]).ravel()
    for A in factors[1:]:
        out += (p[:, None, None] * A[None]).ravel()
    return out


__all__ = ["JacobianAssembler", "UnsupportedStructure"]
