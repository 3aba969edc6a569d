"""Typicality-based and cluster-medoid selection for low budgets and cold start (no model needed).

- TypiClust: Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High
  and Low Budgets", ICML 2022. Cluster the embedding with k-means into |L| + B clusters (capped), then
  repeatedly take the cluster holding the fewest labelled points (largest first on ties, clusters
  smaller than ``min_cluster_size`` skipped) and pick its most *typical* unlabelled point, where
  typicality(x) = 1 / mean Euclidean distance from x to its k = 20 nearest neighbours in the cluster
  (FAISS exact search, as in the authors' code; subsampled for clusters beyond 2,000 rows).
- k-means medoids: Nguyen & Smeulders, "Active Learning Using Pre-clustering", ICML 2004; used as a
  cold-start baseline by Chen et al., "Making Your First Choice: To Address Cold Start Problem in
  Vision Active Learning", arXiv 2210.02442 (2022). k-means with B clusters on the pool, the
  unlabelled point nearest each centroid.
"""

from __future__ import annotations

import faiss
import numpy as np

from learning.query.base import (
    PoolRows,
    RngLike,
    as_float32,
    as_mask,
    as_rng,
    budget,
    fill_random,
    kmeans,
    members_by_cluster,
)

MAX_CLUSTERS = 500  # the authors' cap on |L| + B for k-means
MIN_CLUSTER_SIZE = 5
# Larger pools are clustered on a random sample of this many rows. Why: the whole pool is gathered for
# k-means, and k-means copies it again; at a million cells (1,280 float32 dimensions) a cold-start query
# peaked at 14.7 GiB of a worker, 9.6 GiB of it its own copies (bench/million.py). 200k rows are 1 GB,
# and with at most 500 clusters a cluster still holds 400 rows on average, plenty for the 20-neighbour
# typicality (which reads at most 2,000 rows of a cluster anyway).
MAX_ROWS = 200_000


def _sq_dist_to_assigned(
    x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, block_size: int = 65536
) -> np.ndarray:
    """Squared distance (N,) of each row of ``x`` (N, D) to its own centroid, in row blocks."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], block_size):
        diff = x[start : start + block_size] - centroids[assign[start : start + block_size]]
        out[start : start + block_size] = np.einsum("ij,ij->i", diff, diff)
    return out


def typicality(
    x: np.ndarray,
    k: int = 20,
    *,
    max_points: int = 2000,
    eligible: np.ndarray | None = None,
    rng: RngLike = None,
) -> np.ndarray:
    """Typicality (M,) of the rows of ``x`` (M, D): ``1 / (mean L2 distance to the k nearest other rows
    + 1e-5)`` (Hacohen et al. 2022, eq. 4), by exact FAISS search. ``k`` is lowered to ``M - 1`` for
    tiny sets. Rows outside ``eligible`` (M,) bool are not scored (``-inf``).

    Sets larger than ``max_points`` are estimated on random subsamples: ``max_points`` reference rows
    (with ``k`` scaled by the sampling ratio, at least 1) and at most ``max_points`` scored eligible
    rows (half nearest the mean, half random; the others get ``-inf``). That keeps a 10k-row cluster
    of a 1M pool at O(max_points^2 * D); the density ranking is preserved up to sampling noise.
    """
    x = as_float32(x)
    m = x.shape[0]
    ok = np.ones(m, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    out = np.full(m, -np.inf, dtype=np.float32)
    if m <= 1:
        out[ok] = 1.0
        return out
    queries = np.flatnonzero(ok)
    if m > max_points:
        generator = as_rng(rng)
        ref_idx = np.sort(generator.choice(m, size=max_points, replace=False))
        if len(queries) > max_points:
            # Half the scored rows are those nearest the mean (where a unimodal cluster is densest),
            # half are random, so the most typical row is rarely left out.
            centre = x.mean(axis=0)
            near = queries[np.argsort(((x[queries] - centre) ** 2).sum(axis=1), kind="stable")]
            head = near[: max_points // 2]
            tail = generator.choice(near[max_points // 2 :], size=max_points - len(head), replace=False)
            queries = np.sort(np.concatenate([head, tail]))
        kk = max(1, round(k * max_points / m))
    else:
        ref_idx = np.arange(m)
        kk = min(k, m - 1)
    if len(queries) == 0:
        return out
    in_ref = np.zeros(m, dtype=bool)
    in_ref[ref_idx] = True
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x[ref_idx])
    d2, _ = index.search(x[queries], kk + 1)
    d = np.sqrt(np.maximum(d2, 0.0))
    # Drop the row itself (distance 0, first column) where it lies in the reference set.
    d_nbrs = np.where(in_ref[queries][:, None], d[:, 1:], d[:, :-1])
    out[queries] = 1.0 / (d_nbrs.mean(axis=1) + 1e-5)
    return out


def typiclust(
    embeddings: np.ndarray | PoolRows,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    n_clusters: int | None = None,
    k_neighbors: int = 20,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    max_clusters: int = MAX_CLUSTERS,
    kmeans_iter: int = 20,
    max_cluster_points: int = 2000,
    max_rows: int | None = MAX_ROWS,
) -> np.ndarray:
    """TypiClust selection (Hacohen et al., ICML 2022). Works with zero labels.

    ``embeddings``: (N, D) self-supervised embeddings (an array or a :class:`PoolRows`); ``labelled``:
    (N,) mask or indices. ``n_clusters`` defaults to ``min(|L| + n, max_clusters)``. Typicality is exact
    for clusters of up to ``max_cluster_points`` rows and subsampled beyond (see :func:`typicality`).
    A pool of more than ``max_rows`` rows is clustered on a random sample of them (every labelled row,
    the rest unlabelled ones), and only the sample's rows are read (:data:`MAX_ROWS` says why).
    Returns (min(n, n_unlabelled),) int64.
    """
    n_rows = int(embeddings.shape[0])
    if max_rows is not None and n_rows > max_rows:
        generator = as_rng(rng)
        mask = as_mask(labelled, n_rows)
        known, free_rows = np.flatnonzero(mask), np.flatnonzero(~mask)
        take = min(len(free_rows), max(max_rows - len(known), n))
        sample = np.sort(np.concatenate([known, generator.choice(free_rows, size=take, replace=False)]))
        picked = typiclust(
            embeddings[sample],
            n,
            labelled=mask[sample],
            rng=generator,
            n_clusters=n_clusters,
            k_neighbors=k_neighbors,
            min_cluster_size=min_cluster_size,
            max_clusters=max_clusters,
            kmeans_iter=kmeans_iter,
            max_cluster_points=max_cluster_points,
            max_rows=None,
        )
        return sample[picked]
    x = as_float32(embeddings)
    mask = as_mask(labelled, x.shape[0])
    k = budget(n, mask)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    generator = as_rng(rng)
    n_clust = n_clusters if n_clusters is not None else min(int(mask.sum()) + k, max_clusters)
    n_clust = max(1, min(n_clust, x.shape[0]))
    _, assign = kmeans(x, n_clust, seed=int(generator.integers(2**31 - 1)), niter=kmeans_iter)
    sizes = np.bincount(assign, minlength=n_clust)
    labelled_counts = np.bincount(assign[mask], minlength=n_clust).astype(np.int64)
    free = ~mask
    free_counts = np.bincount(assign[free], minlength=n_clust).astype(np.int64)
    eligible = sizes >= min_cluster_size
    members = members_by_cluster(assign, n_clust)
    typ_cache: dict[int, np.ndarray] = {}
    picks: list[int] = []
    while len(picks) < k:
        ok = eligible & (free_counts > 0)
        if not ok.any():
            ok = free_counts > 0  # only small clusters left: allow them rather than stop early
            if not ok.any():
                break
        # Fewest labelled first; among those, the largest cluster.
        cand = np.flatnonzero(ok)
        c = int(cand[np.lexsort((-sizes[cand], labelled_counts[cand]))[0]])
        rows = members[c]
        if c not in typ_cache:
            typ_cache[c] = typicality(
                x[rows], k_neighbors, max_points=max_cluster_points, eligible=free[rows], rng=generator
            )
        t = np.where(free[rows], typ_cache[c], -np.inf)
        if not np.isfinite(t).any():  # the scored subsample is used up: score the rest
            typ_cache[c] = typicality(
                x[rows], k_neighbors, max_points=max_cluster_points, eligible=free[rows], rng=generator
            )
            t = np.where(free[rows], typ_cache[c], -np.inf)
        best = int(rows[int(np.argmax(t))])
        picks.append(best)
        free[best] = False
        free_counts[c] -= 1
        labelled_counts[c] += 1
    return fill_random(np.asarray(picks, dtype=np.int64), k, mask | ~free, generator)


def kmeans_medoids(
    embeddings: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    kmeans_iter: int = 20,
) -> np.ndarray:
    """Cluster-representative selection (Nguyen & Smeulders, ICML 2004; cold-start baseline in Chen et
    al. 2022): k-means with ``n`` clusters on the pool ``embeddings`` (N, D) (no copy of the unlabelled
    rows is made), then for each centroid the nearest unlabelled row of its cluster; clusters holding
    only labelled rows are topped up at random. Returns (min(n, n_unlabelled),) int64 row indices."""
    x = as_float32(embeddings)
    mask = as_mask(labelled, x.shape[0])
    k = budget(n, mask)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    generator = as_rng(rng)
    centroids, assign = kmeans(x, k, seed=int(generator.integers(2**31 - 1)), niter=kmeans_iter)
    d2 = _sq_dist_to_assigned(x, centroids, assign)
    free = np.flatnonzero(~mask)
    # For each cluster, its unlabelled member with the smallest distance to the centroid.
    order = free[np.lexsort((d2[free], assign[free]))]
    first = np.flatnonzero(np.r_[True, assign[order][1:] != assign[order][:-1]])
    picks = order[first]
    return fill_random(picks.astype(np.int64), k, mask, generator)
