"""ProbCover: Yehuda, Dekel, Hacohen & Weinshall, "Active Learning Through a Covering Lens",
NeurIPS 2022.

"We select examples which maximise probability coverage": build the graph whose edges join points
closer than ``delta`` in the self-supervised embedding, remove every point already covered by a
labelled example, then greedily pick the point covering the most uncovered points and remove the
points it covers. Once everything is covered the remaining picks are random (as in the paper).

Scale. The delta-ball graph is stored as CSR arrays, never as an N x N matrix, and built in one of two
ways:

- ``N <= exact_threshold``: FAISS exact range search (``IndexFlatL2.range_search``) in row blocks.
- larger pools: an inverted-file layout done with BLAS. FAISS k-means (on a PCA projection, so the
  coarse step is cheap) splits the pool into ``~2 sqrt(N)`` cells with full-dimensional centroids c
  and radii r (largest member distance). Two cells A, B can only hold a pair closer than delta if
  ``||c_A - c_B|| < delta + r_A + r_B`` (triangle inequality); each unordered pair of cells passing
  that test is compared with exact distances in one GEMM. Up to ``nprobe`` partner cells per cell
  (nearest centroids first) this is exact; when more cells pass, only the ``nprobe`` nearest are
  searched and the graph becomes approximate (the tests measure the recall against the exact one).

Greedy max coverage is run *lazily* (Minoux 1978): coverage gains only shrink, so stale gains are upper
bounds and only the front-runners are recomputed at each step.

``delta`` is chosen, as in the paper, as the largest radius whose balls are ``purity`` pure with
respect to k-means pseudo-labels: a ball around x is pure iff no point of another cluster lies within
delta, i.e. iff delta <= the distance from x to the nearest other-cluster point, so delta is the
(1 - purity) quantile of that distance over a sample of points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from learning.query.base import (
    RngLike,
    as_float32,
    as_mask,
    as_rng,
    budget,
    fill_random,
    kmeans,
    members_by_cluster,
    sq_norms,
)

DEFAULT_EXACT_THRESHOLD = 20_000
DEFAULT_MAX_EDGES = 100_000_000
DEFAULT_NPROBE = 16
DEFAULT_MAX_DEGREE = 64


@dataclass
class CellPartition:
    """Coarse partition of a pool for blocked neighbour search.

    ``assign`` (N,): cell of each row; ``members``: row indices per cell; ``centroids`` (K, D) and
    ``radii`` (K,): full-dimensional mean and largest member distance of each cell.
    """

    assign: np.ndarray
    members: list[np.ndarray]
    centroids: np.ndarray
    radii: np.ndarray

    def neighbours(self, nprobe: int, delta: float | None = None) -> np.ndarray:
        """(K, min(nprobe, K)) partner cells of each cell, nearest centroid first (itself included),
        ``-1`` where a cell cannot hold a point within ``delta`` of the cell (triangle inequality)."""
        k = len(self.members)
        index = faiss.IndexFlatL2(self.centroids.shape[1])
        index.add(self.centroids)
        d2, near = index.search(self.centroids, min(nprobe, k))
        if delta is not None:
            reach = delta + self.radii[:, None] + self.radii[np.maximum(near, 0)]
            near = np.where(np.sqrt(np.maximum(d2, 0.0)) < reach, near, -1)
        return near


def partition_cells(
    x: np.ndarray,
    *,
    n_cells: int | None = None,
    pca_dim: int = 64,
    seed: int = 0,
) -> CellPartition:
    """Split the rows of ``x`` (N, D) into ``n_cells`` (default ``2 sqrt(N)``) k-means cells.

    k-means (FAISS, 10 iterations, <= 64 training points per centroid) runs on a ``pca_dim``-dimensional
    PCA projection fit on a sample; centroids and radii are then measured in the full dimension.
    """
    x = as_float32(x)
    n, dim = x.shape
    cells = max(1, min(n, n_cells if n_cells is not None else int(2 * math.sqrt(n))))
    rng = np.random.default_rng(seed)
    z = x
    if pca_dim < dim:
        sample = x[rng.choice(n, size=min(n, 64 * cells), replace=False)]
        pca = faiss.PCAMatrix(dim, pca_dim)
        pca.train(sample)
        z = np.empty((n, pca_dim), dtype=np.float32)
        for start in range(0, n, 65536):
            z[start : start + 65536] = pca.apply(x[start : start + 65536])
    _, assign = kmeans(z, cells, seed=seed, niter=10, max_points_per_centroid=64)
    members = members_by_cluster(assign, int(assign.max()) + 1)
    centroids = np.zeros((len(members), dim), dtype=np.float32)
    radii = np.zeros(len(members), dtype=np.float32)
    for c, rows in enumerate(members):
        if len(rows):
            pts = x[rows]
            centroids[c] = pts.mean(axis=0)
            radii[c] = np.sqrt(np.maximum(((pts - centroids[c]) ** 2).sum(axis=1), 0.0).max())
    return CellPartition(assign=assign, members=members, centroids=centroids, radii=radii)


def estimate_delta(
    embeddings: np.ndarray,
    *,
    n_clusters: int = 10,
    purity: float = 0.95,
    max_degree: int | None = DEFAULT_MAX_DEGREE,
    sample_size: int = 2000,
    rng: RngLike = None,
    cells: CellPartition | None = None,
    nprobe: int = DEFAULT_NPROBE,
) -> float:
    """Ball radius for ProbCover (Yehuda et al. 2022, sec. 4.1). ``embeddings``: (N, D).

    The paper's rule: the largest radius at which a ``purity`` fraction of balls hold no point of
    another k-means cluster (``n_clusters`` pseudo-classes, the number of classes in the paper). For
    ``sample_size`` random rows the nearest point of another cluster is found exactly, or among the
    rows of the ``nprobe`` nearest ``cells`` when a partition is given. On well separated embeddings
    that rule can swallow whole clusters into one ball (and the graph into O(N^2) edges), so the radius
    is also capped where the median sampled ball reaches ``max_degree`` points (None: no cap).
    """
    x = as_float32(embeddings)
    n = x.shape[0]
    generator = as_rng(rng)
    _, labels = kmeans(x, min(n_clusters, n), seed=int(generator.integers(2**31 - 1)))
    sample = np.sort(generator.choice(n, size=min(sample_size, n), replace=False))
    d_other = np.full(len(sample), np.inf, dtype=np.float32)
    m = min(max_degree, n) if max_degree is not None else 1
    nearest = np.full((len(sample), m), np.inf, dtype=np.float32)  # m smallest d2 seen so far
    norms = sq_norms(x)
    if cells is None:
        groups = [(np.arange(len(sample)), np.arange(n))]
    else:
        groups = []
        near = cells.neighbours(nprobe)
        for c in np.unique(cells.assign[sample]):
            rows = np.flatnonzero(cells.assign[sample] == c)
            cand = np.concatenate([cells.members[b] for b in near[c] if b >= 0])
            groups.append((rows, cand))
    for rows, cand in groups:
        queries = sample[rows]
        for start in range(0, len(cand), 8192):
            db = cand[start : start + 8192]
            d2 = np.maximum(norms[queries, None] + norms[db][None, :] - 2.0 * (x[queries] @ x[db].T), 0.0)
            if max_degree is not None:
                both = np.concatenate([nearest[rows], d2], axis=1)
                nearest[rows] = np.partition(both, m - 1, axis=1)[:, :m]
            d2[labels[queries][:, None] == labels[db][None, :]] = np.inf
            d_other[rows] = np.minimum(d_other[rows], d2.min(axis=1))
    # Rows with no other-cluster candidate are pure at every radius (their d_other stays +inf).
    ranked = np.sort(np.sqrt(d_other))  # +inf sorts last; np.quantile would turn it into NaN
    delta = float(ranked[int(np.floor((1.0 - purity) * (len(ranked) - 1)))])
    if max_degree is not None:
        # A ball of radius r around row i holds < m points iff r <= its m-th smallest distance.
        delta = min(delta, float(np.median(np.sqrt(nearest.max(axis=1)))))
    if not np.isfinite(delta):  # a single pseudo-cluster and no cap: fall back to the data scale
        delta = float(np.sqrt(np.median(norms))) if n else 1.0
    return delta


def delta_ball_graph(
    embeddings: np.ndarray,
    delta: float,
    *,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    cells: CellPartition | None = None,
    nprobe: int = DEFAULT_NPROBE,
    block_size: int = 4096,
    max_edges: int = DEFAULT_MAX_EDGES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed delta-ball graph in CSR form: row i covers ``indices[indptr[i]:indptr[i + 1]]``, the
    points j with ``||x_i - x_j|| < delta`` (i itself included). ``embeddings``: (N, D).

    Exact (FAISS range search) up to ``exact_threshold`` rows, cell-blocked beyond (see module doc).
    Returns ``(indptr (N + 1,) int64, indices (E,) int32, or int64 past 2**31 rows)``. Raises
    ValueError past ``max_edges`` edges: delta is then far too large for a meaningful cover.
    """
    x = as_float32(embeddings)
    n = x.shape[0]
    radius2 = float(delta) ** 2  # FAISS L2 indexes and our GEMMs work on squared distances
    if n <= exact_threshold and cells is None:
        src, dst = _exact_edges(x, radius2, block_size=block_size, max_edges=max_edges)
    else:
        part = cells if cells is not None else partition_cells(x, seed=seed)
        src, dst = _cell_edges(x, radius2, part, part.neighbours(nprobe, delta), max_edges=max_edges)
    # Every row covers itself, whatever rounding or probing did (neither method yields duplicates).
    has_self = np.zeros(n, dtype=bool)
    has_self[src[src == dst]] = True
    missing = np.flatnonzero(~has_self).astype(src.dtype)
    src = np.concatenate([src, missing])
    dst = np.concatenate([dst, missing])
    order = np.argsort(src, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order]


def _index_dtype(n: int) -> type[np.signedinteger]:
    """int32 row indices while they fit (halves the graph's memory), else int64."""
    return np.int32 if n < 2**31 - 1 else np.int64


def _check_edges(total: int, max_edges: int) -> None:
    if total > max_edges:
        raise ValueError(f"more than {max_edges} delta-ball edges; use a smaller delta or fewer rows")


def _exact_edges(
    x: np.ndarray, radius2: float, *, block_size: int, max_edges: int
) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    itype = _index_dtype(n)
    srcs: list[np.ndarray] = []
    dsts: list[np.ndarray] = []
    total = 0
    for start in range(0, n, block_size):
        block = x[start : start + block_size]
        lims, _, labels = index.range_search(block, radius2)
        srcs.append(
            np.repeat(np.arange(start, start + len(block), dtype=itype), np.diff(lims).astype(np.int64))
        )
        dsts.append(labels.astype(itype))
        total += len(labels)
        _check_edges(total, max_edges)
    return np.concatenate(srcs), np.concatenate(dsts)


def _cell_edges(
    x: np.ndarray, radius2: float, part: CellPartition, near: np.ndarray, *, max_edges: int, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    n_cells = len(part.members)
    norms = sq_norms(x)
    a = np.repeat(np.arange(n_cells), near.shape[1])
    b = near.ravel()
    keep = b >= 0
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    diagonal = np.arange(n_cells) * (n_cells + 1)  # every cell is compared with itself
    pairs = np.unique(np.concatenate([lo * n_cells + hi, diagonal]))
    itype = _index_dtype(x.shape[0])
    srcs: list[np.ndarray] = []
    dsts: list[np.ndarray] = []
    total = 0
    for cell in range(n_cells):
        partners = pairs[pairs // n_cells == cell] % n_cells if len(pairs) else pairs
        rows = part.members[cell]
        if len(rows) == 0 or len(partners) == 0:
            continue
        cand = np.concatenate([part.members[p] for p in partners])
        other = part.assign[cand] != cell
        for qs in range(0, len(rows), chunk):
            q = rows[qs : qs + chunk]
            xq = x[q]
            for cs in range(0, len(cand), chunk):
                c = cand[cs : cs + chunk]
                d2 = norms[q, None] + norms[c][None, :] - 2.0 * (xq @ x[c].T)
                qi, cj = np.nonzero(d2 < radius2)
                s, d = q[qi].astype(itype), c[cj].astype(itype)
                cross = other[cs : cs + chunk][cj]  # pairs across cells: add the reverse edge too
                srcs += [s, d[cross]]
                dsts += [d, s[cross]]
                total += len(s) + int(cross.sum())
                _check_edges(total, max_edges)
    if not srcs:
        return np.empty(0, dtype=itype), np.empty(0, dtype=itype)
    return np.concatenate(srcs), np.concatenate(dsts)


def max_coverage_greedy(
    indptr: np.ndarray,
    indices: np.ndarray,
    k: int,
    *,
    covered: np.ndarray,
    selectable: np.ndarray,
    batch: int = 32,
) -> np.ndarray:
    """Greedy maximum coverage on a CSR graph, evaluated lazily.

    ``covered`` (N,) bool: points already covered (updated in place); ``selectable`` (N,) bool: rows
    that may be picked. Picks until ``k`` rows are chosen or nothing uncovered can be reached; returns
    the picks (<= k,) int64 in order.
    """
    n = len(indptr) - 1
    src = np.repeat(np.arange(n), np.diff(indptr))
    # Initial gains: number of uncovered points in each ball (exact).
    gain = np.bincount(src[~covered[indices]], minlength=n).astype(np.int64)
    gain[~selectable] = -1
    picks: list[int] = []
    m = min(batch, n)
    while len(picks) < k:
        while True:
            front = np.argpartition(-gain, m - 1)[:m] if m < n else np.arange(n)
            front = front[gain[front] >= 0]
            if len(front) == 0:
                return np.asarray(picks, dtype=np.int64)
            fresh = np.array(
                [int((~covered[indices[indptr[i] : indptr[i + 1]]]).sum()) for i in front], dtype=np.int64
            )
            gain[front] = -2
            rest_best = int(gain.max())  # stale gains outside the front: upper bounds of their true gains
            gain[front] = fresh
            if fresh.max() >= rest_best:
                break
        best = int(fresh.max())
        if best <= 0:
            break
        choice = int(front[fresh == best].min())
        picks.append(choice)
        covered[indices[indptr[choice] : indptr[choice + 1]]] = True
        gain[choice] = -1
    return np.asarray(picks, dtype=np.int64)


def probcover(
    embeddings: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    delta: float | None = None,
    purity: float = 0.95,
    n_clusters: int = 10,
    max_degree: int | None = DEFAULT_MAX_DEGREE,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    nprobe: int = DEFAULT_NPROBE,
    max_edges: int = DEFAULT_MAX_EDGES,
) -> np.ndarray:
    """ProbCover selection (Yehuda et al., NeurIPS 2022). Works with zero labels.

    ``embeddings``: (N, D) self-supervised embeddings; ``labelled``: (N,) mask or indices. ``delta``: ball
    radius in embedding units (Euclidean); None estimates it with :func:`estimate_delta` at ``purity``
    with ``n_clusters`` pseudo-classes, capped so the median ball holds at most ``max_degree`` points.
    Returns (min(n, n_unlabelled),) int64 row indices; random once the pool is fully covered.
    """
    x = as_float32(embeddings)
    mask = as_mask(labelled, x.shape[0])
    k = budget(n, mask)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    generator = as_rng(rng)
    seed = int(generator.integers(2**31 - 1))
    cells = None if x.shape[0] <= exact_threshold else partition_cells(x, seed=seed)
    if delta is None:
        delta = estimate_delta(
            x,
            n_clusters=n_clusters,
            purity=purity,
            max_degree=max_degree,
            rng=generator,
            cells=cells,
            nprobe=nprobe,
        )
    indptr, indices = delta_ball_graph(
        x, delta, exact_threshold=exact_threshold, cells=cells, max_edges=max_edges, seed=seed
    )
    covered = np.zeros(x.shape[0], dtype=bool)
    covered[indices[np.repeat(mask, np.diff(indptr))]] = True  # everything a labelled ball reaches
    picks = max_coverage_greedy(indptr, indices, k, covered=covered, selectable=~mask)
    return fill_random(picks, k, mask, generator)
