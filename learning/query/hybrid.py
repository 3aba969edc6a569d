"""Uncertainty pre-filter + diversity: the fast hybrid for large pools.

Rank the pool by an uncertainty measure (margin by default), keep the top ``candidate_factor * n``
candidates, then thin them to ``n`` diverse rows in embedding space:

- ``diversify="kmeans"`` (default): Zhdanov, "Diverse mini-batch Active Learning", arXiv 1901.05954
  (2019): uncertainty-weighted k-means with ``n`` clusters over the candidates, the candidate nearest
  each centroid. Also the recipe of Cluster-Margin (Citovsky et al., NeurIPS 2021) in spirit: margin
  candidates, diversity by clustering.
- ``diversify="kcenter"``: k-center greedy (Sener & Savarese, ICLR 2018) over the candidates, seeded
  with the most uncertain candidate and, with ``against_labelled=True``, with the labelled rows as
  existing centres (FAISS search against them).

Cost: one O(N * C) pass for the measure, O(N) top-k, then work on only ``candidate_factor * n`` rows,
so it is nearly independent of the embedding dimension and of N beyond the first pass.
"""

from __future__ import annotations

import numpy as np

from learning.query.base import (
    PoolRows,
    RngLike,
    as_float32,
    as_mask,
    as_rng,
    balanced_top_k,
    budget,
    check_probs,
    kmeans,
    min_sq_distances,
    top_k,
)
from learning.query.coreset import farthest_first
from learning.query.uncertainty import informativeness


def uncertain_diverse(
    probs: np.ndarray,
    embeddings: np.ndarray | PoolRows,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    measure: str = "margin",
    candidate_factor: int = 10,
    diversify: str = "kmeans",
    class_balanced: bool = False,
    against_labelled: bool = False,
    kmeans_iter: int = 20,
    value: np.ndarray | None = None,
) -> np.ndarray:
    """Margin-ranked candidates thinned for diversity (Zhdanov 2019 / Sener & Savarese 2018).

    ``probs``: (N, C); ``embeddings``: (N, D); ``labelled``: (N,) mask or indices. ``class_balanced``
    draws the candidates round-robin over predicted classes. ``embeddings`` may be a
    :class:`~learning.query.base.PoolRows` view (only the rows used are read). ``value``: (N,) >= 0
    multiplier of each
    row's uncertainty (``learning.query.cost``: clinical weight per expected second). Returns
    (min(n, n_unlabelled),) int64 row indices, most informative first where the method gives an order.
    """
    p = check_probs(probs)
    # Only the candidates' (and with ``against_labelled`` the labelled) rows are read: a ``PoolRows``
    # view over a memory-mapped index stays unread elsewhere.
    x = embeddings if isinstance(embeddings, PoolRows) else as_float32(embeddings)
    if len(p) != len(x):
        raise ValueError(f"probs has {len(p)} rows but embeddings has {len(x)}")
    mask = as_mask(labelled, len(x))
    k = budget(n, mask)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    generator = as_rng(rng)
    scores = informativeness(measure, p)
    if value is not None:
        if value.shape != (len(p),):
            raise ValueError(f"value must have one entry per row ({len(p)}), got {value.shape}")
        scores = scores * value
    pool = np.flatnonzero(~mask)
    n_cand = min(len(pool), max(k, candidate_factor * k))
    if class_balanced:
        cand = balanced_top_k(scores, n_cand, pool, p.argmax(axis=1))
    else:
        cand = top_k(scores, n_cand, pool)
    if len(cand) <= k:
        return cand[:k]
    xc = as_float32(x[cand])
    if diversify == "kcenter":
        dist = None
        if against_labelled and mask.any():
            dist, _ = min_sq_distances(xc, as_float32(x[mask]))
        first = None if dist is not None else int(np.argmax(scores[cand]))
        picks = farthest_first(xc, k, min_dist=dist, first=first, rng=generator)
        return cand[picks]
    if diversify != "kmeans":
        raise ValueError(f"diversify must be 'kmeans' or 'kcenter', got {diversify!r}")
    weights = np.maximum(scores[cand], 1e-6)
    centroids, assign = kmeans(
        xc, k, seed=int(generator.integers(2**31 - 1)), niter=kmeans_iter, weights=weights
    )
    diff = xc - centroids[assign]
    d2 = np.einsum("ij,ij->i", diff, diff)
    order = np.lexsort((d2, assign))
    heads = order[np.flatnonzero(np.r_[True, assign[order][1:] != assign[order][:-1]])]
    # One representative per non-empty cluster, most uncertain first; top up with the next candidates
    # by uncertainty if some clusters came out empty.
    heads = heads[np.argsort(-scores[cand[heads]], kind="stable")]
    chosen = list(cand[heads])
    if len(chosen) < k:
        taken = np.zeros(len(cand), dtype=bool)
        taken[heads] = True
        chosen.extend(cand[~taken][: k - len(chosen)])  # ``cand`` is already in ranking order
    return np.asarray(chosen[:k], dtype=np.int64)
