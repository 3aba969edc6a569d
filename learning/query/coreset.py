"""Core-set selection by k-center greedy (Sener & Savarese, "Active Learning for Convolutional Neural
Networks: A Core-Set Approach", ICLR 2018, Algorithm 1).

The greedy 2-approximation of k-center repeatedly picks the pool point farthest from every current
centre (labelled rows and earlier picks). It is implemented incrementally: a (N,) vector holds each
row's squared distance to its nearest centre, initialised with blocked FAISS search against the
labelled rows, then lowered by one (N, D) @ (D,) product per pick. No N x N matrix is formed, so a
batch of b costs O(N * D * (b + L / block)) time and O(N) extra memory.
"""

from __future__ import annotations

import numpy as np

from learning.query.base import (
    RngLike,
    as_float32,
    as_mask,
    as_rng,
    budget,
    min_sq_distances,
    sq_norms,
)


def farthest_first(
    x: np.ndarray,
    k: int,
    *,
    min_dist: np.ndarray | None = None,
    first: int | None = None,
    rng: RngLike = None,
    lazy: bool = True,
    front_size: int = 256,
    block_size: int = 65536,
) -> np.ndarray:
    """Greedy k-center (farthest-first traversal) over the rows of ``x`` (M, D).

    ``min_dist`` (M,): squared distance of each row to the nearest existing centre (``inf`` where there
    is none; ``-inf`` excludes a row). The first pick is ``first`` when given, else the farthest row,
    or a random row when there is no centre yet. Returns (min(k, selectable),) int64 row indices of
    ``x`` in pick order.

    ``lazy=True`` gives the same picks as the eager update (up to float ties) with less work: a row's
    distance only shrinks as centres are added, so a stale value is an upper bound. Each step refreshes
    only the ``front_size`` rows with the largest bounds against the centres they have not seen yet
    (a small GEMM); if the best refreshed value still beats every other bound it is the true argmax,
    otherwise the front grows 4x, and past M / 4 rows every row is refreshed in ``block_size`` row
    blocks with one GEMM against all pending centres. ``lazy=False`` is the textbook eager loop: one
    (M, D) @ (D,) product per pick.
    """
    x = as_float32(x)
    m = x.shape[0]
    dist = np.full(m, np.inf, dtype=np.float32) if min_dist is None else np.array(min_dist, dtype=np.float32)
    k = int(min(k, int((~np.isneginf(dist)).sum())))
    norms = sq_norms(x)
    picks = np.empty(k, dtype=np.int64)
    generator = as_rng(rng)
    seen = np.zeros(m, dtype=np.int64)  # lazy: number of picks already folded into dist[i]
    for t in range(k):
        if t == 0 and first is not None:
            c = int(first)
        elif t == 0 and not np.isfinite(dist).any():  # no centre yet: a random selectable row
            c = int(generator.choice(np.flatnonzero(np.isposinf(dist))))
        elif lazy:
            c = _lazy_argmax(x, norms, dist, seen, picks[:t], front_size, block_size)
        else:
            c = int(np.argmax(dist))
        picks[t] = c
        if not lazy:
            # ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c  for every row at once: one (M, D) @ (D,) product.
            d = norms + norms[c] - 2.0 * (x @ x[c])
            np.minimum(dist, np.maximum(d, 0.0), out=dist)
        dist[c] = -np.inf
    return picks


def _refresh(
    x: np.ndarray,
    norms: np.ndarray,
    dist: np.ndarray,
    seen: np.ndarray,
    centres: np.ndarray,
    rows: np.ndarray,
) -> None:
    """Fold the centres ``centres[seen[i]:]`` that row i has not seen into ``dist[i]``, for i in ``rows``."""
    t = len(centres)
    lo = int(seen[rows].min()) if len(rows) else t
    if lo >= t:
        return
    c = centres[lo:]
    d = norms[rows, None] + norms[c][None, :] - 2.0 * (x[rows] @ x[c].T)  # (R, t - lo)
    d[(np.arange(lo, t)[None, :] < seen[rows, None])] = np.inf  # centres a row has already seen
    dist[rows] = np.minimum(dist[rows], np.maximum(d.min(axis=1), 0.0))
    seen[rows] = t


def _lazy_argmax(
    x: np.ndarray,
    norms: np.ndarray,
    dist: np.ndarray,
    seen: np.ndarray,
    centres: np.ndarray,
    front_size: int,
    block_size: int,
) -> int:
    """Row with the largest true min-distance given ``centres`` (see :func:`farthest_first`)."""
    m = len(dist)
    size = front_size
    while size < m // 4:
        front = np.argpartition(-dist, size - 1)[:size]
        _refresh(x, norms, dist, seen, centres, front)
        vals = dist[front]
        dist[front] = -np.inf
        rest = dist.max()
        dist[front] = vals
        if vals.max() >= rest:
            return int(front[int(np.argmax(vals))])
        size *= 4
    for start in range(0, m, block_size):
        _refresh(x, norms, dist, seen, centres, np.arange(start, min(start + block_size, m)))
    return int(np.argmax(dist))


def k_center_greedy(
    embeddings: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    block_size: int = 65536,
) -> np.ndarray:
    """Core-set / k-center greedy selection (Sener & Savarese, ICLR 2018).

    ``embeddings``: (N, D) pool embeddings (any scale; Euclidean distance). ``labelled``: (N,) mask or
    indices of rows already labelled; they act as the initial centres. With none, the first centre is a
    random unlabelled row drawn from ``rng``. Returns (min(n, n_unlabelled),) int64 row indices.
    """
    x = as_float32(embeddings)
    mask = as_mask(labelled, x.shape[0])
    k = budget(n, mask)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    # Work on all N rows (no copy of the pool); labelled rows are centres, excluded with -inf.
    if mask.any():
        dist, _ = min_sq_distances(x, x[mask], block_size=block_size)
        dist[mask] = -np.inf
    else:
        dist = np.full(len(x), np.inf, dtype=np.float32)
    return farthest_first(x, k, min_dist=dist, rng=rng, block_size=block_size)
