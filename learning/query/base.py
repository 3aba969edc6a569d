"""Shared helpers for query strategies: input checks, masks, top-k, class balance, blocked distances.

Conventions used by every strategy in this package:

- The pool has N rows. ``labelled`` is a boolean mask (N,) (or an int array of labelled row indices);
  strategies return int64 row indices (n,) into the same N rows, never a labelled row, never twice.
- When fewer than ``n`` unlabelled rows remain, all of them are returned (so ``len(result) ==
  min(n, n_unlabelled)``).
- ``rng`` is a ``numpy.random.Generator`` (an int seed or None is accepted and converted).
"""

from __future__ import annotations

from typing import TypeAlias

import faiss
import numpy as np

RngLike: TypeAlias = np.random.Generator | int | None


def as_rng(rng: RngLike) -> np.random.Generator:
    """``numpy.random.Generator`` from a Generator, an int seed or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def as_mask(labelled: np.ndarray | None, n_pool: int) -> np.ndarray:
    """Boolean labelled mask (N,) from a mask, an index array or None (nothing labelled)."""
    if labelled is None:
        return np.zeros(n_pool, dtype=bool)
    arr = np.asarray(labelled)
    if arr.dtype == bool:
        if arr.shape != (n_pool,):
            raise ValueError(f"labelled mask must have shape ({n_pool},), got {arr.shape}")
        return arr
    mask = np.zeros(n_pool, dtype=bool)
    if arr.size:
        idx = arr.astype(np.int64).ravel()
        if idx.min() < 0 or idx.max() >= n_pool:
            raise ValueError("labelled indices out of range")
        mask[idx] = True
    return mask


def as_float32(x: np.ndarray | PoolRows) -> np.ndarray:
    """C-contiguous float32 view or copy of ``x`` (what FAISS and BLAS want); a :class:`PoolRows` is
    gathered whole here, so strategies that read only some rows should index it instead."""
    if isinstance(x, PoolRows):
        return x.gather()
    return np.ascontiguousarray(x, dtype=np.float32)


class PoolRows:
    """The pool's rows of a larger matrix (an index version's memory-mapped embeddings), read only where
    indexed.

    Why: at a million cells the embeddings are 5 GB (1,280 float32 dimensions), and copying the pool's
    rows out of them for a strategy that reads only its few hundred candidates (the hybrid, cost-aware,
    the uncertainty strategies) doubles a worker's memory and costs seconds. Indexing with an int array
    or a boolean mask over the pool's rows gathers just those rows; strategies that need every row call
    :func:`as_float32`, which gathers the whole pool once."""

    def __init__(self, base: np.ndarray, rows: np.ndarray) -> None:
        if base.ndim != 2:
            raise ValueError(f"base must be 2-D (N, D), got shape {base.shape}")
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), int(self.base.shape[1])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        # Gathered in ascending row order (a memory map reads its pages sequentially), then put back.
        rows = self.rows[index]
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.base.shape[1]), dtype=np.float32)
        out[order] = self.base[rows[order]]
        return out

    def gather(self) -> np.ndarray:
        return self[np.arange(len(self.rows))]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        gathered = self.gather()
        return gathered if dtype is None else gathered.astype(dtype)


def check_probs(probs: np.ndarray) -> np.ndarray:
    """Validate class probabilities (N, C), C >= 1; returns float32."""
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probs must be 2-D (N, C), got shape {p.shape}")
    return p


def budget(n: int, mask: np.ndarray) -> int:
    """Number of rows a strategy returns: ``min(n, number of unlabelled rows)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return int(min(n, int((~mask).sum())))


def top_k(scores: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
    """Indices (k,) of the ``k`` highest ``scores`` among ``candidates`` (int indices), best first.

    Ties are broken by the lower index, so results are deterministic. O(M + k log k) via argpartition.
    """
    if k <= 0 or len(candidates) == 0:
        return np.empty(0, dtype=np.int64)
    s = scores[candidates]
    k = min(k, len(candidates))
    if k < len(candidates):
        part = np.argpartition(-s, k - 1)[:k]
        # argpartition does not respect index order on ties at the boundary: widen to all ties.
        kth = s[part].min()
        part = np.flatnonzero(s >= kth)
    else:
        part = np.arange(len(candidates))
    order = np.lexsort((candidates[part], -s[part]))[:k]
    return candidates[part[order]].astype(np.int64)


def balanced_top_k(scores: np.ndarray, k: int, candidates: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Round-robin over ``groups`` (e.g. predicted classes): best-scored candidate of each group in turn.

    ``scores``, ``groups``: (N,); ``candidates``: int indices. The first round takes the best candidate
    of every group (the groups ordered by that candidate's score), the second round the second best,
    and so on, so a batch spreads over the predicted classes while staying uncertainty-ranked inside
    each. Returns (min(k, M),) int64 indices in pick order.
    """
    if k <= 0 or len(candidates) == 0:
        return np.empty(0, dtype=np.int64)
    s = scores[candidates]
    g = groups[candidates]
    order = np.lexsort((candidates, -s, g))  # by group, then best score first
    g_sorted = g[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    picked = order[np.lexsort((candidates[order], -s[order], rank))[: min(k, len(order))]]
    return candidates[picked].astype(np.int64)


def fill_random(picked: np.ndarray, k: int, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Top up ``picked`` to ``k`` indices with random unlabelled rows not already picked."""
    picked = np.asarray(picked, dtype=np.int64)
    missing = k - len(picked)
    if missing <= 0:
        return picked[:k]
    free = ~mask.copy()
    free[picked] = False
    pool = np.flatnonzero(free)
    extra = rng.choice(pool, size=min(missing, len(pool)), replace=False)
    return np.concatenate([picked, extra.astype(np.int64)])


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared row norms (N,) of ``x`` (N, D), float32."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float32)


def min_sq_distances(
    x: np.ndarray, centres: np.ndarray, *, block_size: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Squared Euclidean distance (N,) from each row of ``x`` (N, D) to its nearest row of ``centres``
    (M, D), and that centre's index (N,). Uses FAISS exact search over ``x`` in row blocks, so memory
    is O(block_size * M) at worst and no N x M matrix is kept."""
    x = as_float32(x)
    centres = as_float32(centres)
    n = x.shape[0]
    dist = np.full(n, np.inf, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    if len(centres) == 0 or n == 0:
        return dist, nearest
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(centres)
    for start in range(0, n, block_size):
        d, i = index.search(x[start : start + block_size], 1)
        dist[start : start + block_size] = np.maximum(d[:, 0], 0.0)
        nearest[start : start + block_size] = i[:, 0]
    return dist, nearest


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007) on the rows of ``x`` (M, D): the first
    centre uniformly, then each next one with probability proportional to its squared distance to the
    nearest chosen centre. Returns the (k,) row indices; O(k * M * D) time, O(M) memory."""
    m = x.shape[0]
    norms = sq_norms(x)
    picks = [int(rng.integers(m))]
    d2 = np.maximum(norms + norms[picks[0]] - 2.0 * (x @ x[picks[0]]), 0.0)
    for _ in range(1, k):
        cdf = np.cumsum(d2, dtype=np.float64)
        if cdf[-1] <= 0:  # fewer distinct points than k: repeat-free uniform fill
            rest = np.setdiff1d(np.arange(m), picks)
            picks.extend(rng.choice(rest, size=k - len(picks), replace=False).tolist())
            break
        c = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), m - 1)
        picks.append(c)
        np.minimum(d2, np.maximum(norms + norms[c] - 2.0 * (x @ x[c]), 0.0), out=d2)
    return np.asarray(picks, dtype=np.int64)


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int,
    niter: int = 20,
    weights: np.ndarray | None = None,
    max_points_per_centroid: int = 256,
    seeding_points_per_centroid: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-means (Lloyd) with k-means++ seeding. ``x``: (N, D), ``k`` <= N (clipped).

    The seeds come from k-means++ on ``seeding_points_per_centroid * k`` random rows (FAISS's own
    initialisation is uniform random, which can leave two seeds in one well separated cluster for
    good); Lloyd iterations then run on at most ``max_points_per_centroid * k`` rows (FAISS subsamples)
    and all rows are assigned at the end. Returns ``(centroids (k, D) float32, assignment (N,) int64)``.
    """
    x = as_float32(x)
    n, dim = x.shape
    k = max(1, min(k, n))
    if k == n:
        return x.copy(), np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pool = rng.choice(n, size=min(n, seeding_points_per_centroid * k), replace=False)
    init = x[pool[kmeans_plus_plus(x[pool], k, rng)]]
    km = faiss.Kmeans(
        dim,
        k,
        niter=niter,
        seed=seed,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(x, weights=None if weights is None else as_float32(weights), init_centroids=init)
    _, assign = km.index.search(x, 1)
    return np.asarray(km.centroids, dtype=np.float32), assign[:, 0].astype(np.int64)


def members_by_cluster(assign: np.ndarray, n_clusters: int) -> list[np.ndarray]:
    """Row indices of each cluster: a list of n_clusters int64 arrays (ascending)."""
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(n_clusters + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(n_clusters)]
