r"""The sample–label coupling graph: A = [[0, P], [Pᵀ, 0]], D = diag(A·1), L_G = D − A."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sps
from scipy.sparse.csgraph import connected_components

from ..errors import InvalidParameterError
from ..validation import check_array


@dataclass(frozen=True, eq=False)
class CouplingGraph:
    """Edges (i_e, c_e, p_e) of a coupling matrix P ∈ R^{N×K}, P ≥ 0, with sparse operators."""

    P: np.ndarray

    @staticmethod
    def from_couplings(P) -> "CouplingGraph":
        """Validate P (2-D, finite, non-negative, at least one edge) and build the graph."""
        if isinstance(P, CouplingGraph):
            return P
        if sps.issparse(P):
            P = P.toarray()
        arr = check_array("P", P, ndim=2, nonnegative=True)
        if not np.any(arr > 0):
            raise InvalidParameterError("P must have at least one positive entry (an edge)")
        arr = arr.copy()
        arr.setflags(write=False)
        return CouplingGraph(arr)

    @property
    def N(self) -> int:
        return self.P.shape[0]

    @property
    def K(self) -> int:
        return self.P.shape[1]

    @cached_property
    def csr(self) -> sps.csr_matrix:
        """P as a sparse N×K matrix."""
        return sps.csr_matrix(self.P)

    @cached_property
    def csr_T(self) -> sps.csr_matrix:
        return self.csr.T.tocsr()

    @cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i_e, c_e, p_e) for every positive entry, row-major."""
        coo = self.csr.tocoo()
        order = np.lexsort((coo.col, coo.row))
        return coo.row[order].astype(np.int64), coo.col[order].astype(np.int64), coo.data[order]

    @property
    def n_edges(self) -> int:
        return len(self.edges[0])

    @cached_property
    def sample_degree(self) -> np.ndarray:
        """D_i = Σ_c P_ic."""
        return np.asarray(self.csr.sum(axis=1)).ravel()

    @cached_property
    def label_degree(self) -> np.ndarray:
        """D_c = Σ_i P_ic."""
        return np.asarray(self.csr.sum(axis=0)).ravel()

    @cached_property
    def adjacency(self) -> sps.csr_matrix:
        """A = [[0, P], [Pᵀ, 0]] on N+K nodes (samples first)."""
        return sps.bmat([[None, self.csr], [self.csr_T, None]], format="csr")

    @cached_property
    def degree(self) -> np.ndarray:
        return np.concatenate([self.sample_degree, self.label_degree])

    @cached_property
    def laplacian(self) -> sps.csr_matrix:
        """L_G = D − A."""
        return (sps.diags(self.degree) - self.adjacency).tocsr()

    @cached_property
    def components(self) -> tuple[int, np.ndarray]:
        """(number of connected components, component label of each of the N+K nodes)."""
        n, labels = connected_components(self.adjacency, directed=False)
        return int(n), labels

    @cached_property
    def sample_incidence(self) -> sps.csr_matrix:
        """B_x ∈ {0,1}^{N×E}: B_x[i, e] = 1 if edge e starts at sample i."""
        i, _, _ = self.edges
        E = len(i)
        return sps.csr_matrix((np.ones(E), (i, np.arange(E))), shape=(self.N, E))

    @cached_property
    def label_incidence(self) -> sps.csr_matrix:
        """B_y ∈ {0,1}^{K×E}: B_y[c, e] = 1 if edge e ends at label c."""
        _, c, _ = self.edges
        E = len(c)
        return sps.csr_matrix((np.ones(E), (c, np.arange(E))), shape=(self.K, E))
