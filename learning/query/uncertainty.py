"""Uncertainty measures and the strategies that rank by them (Lewis & Gale 1994; Scheffer et al. 2001;
Shannon entropy as in Settles, "Active Learning Literature Survey", 2009), plus random sampling.

As in modAL, a *measure* maps class probabilities (N, C) to one score per row (N,), and a *strategy*
turns scores into row indices. All strategies here rank by "higher is more informative".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from learning.query.base import (
    RngLike,
    as_mask,
    as_rng,
    balanced_top_k,
    budget,
    check_probs,
    top_k,
)

# -- measures: (N, C) probabilities -> (N,) scores ---------------------------------------------------


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """Least-confidence uncertainty ``1 - max_c p(c | x)`` (Lewis & Gale 1994). (N, C) -> (N,)."""
    p = check_probs(probs)
    return (1.0 - p.max(axis=1)).astype(np.float32)


def margin(probs: np.ndarray) -> np.ndarray:
    """Classification margin ``p(top1) - p(top2)`` (Scheffer et al. 2001); *small* means uncertain.

    (N, C) -> (N,). With a single class the margin is the top probability itself.
    """
    p = check_probs(probs)
    if p.shape[1] == 1:
        return p[:, 0].copy()
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]  # (N, 2), [second, first]
    return (top2[:, 1] - top2[:, 0]).astype(np.float32)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy ``-sum_c p log p`` in nats (Shannon 1948; Settles 2009). (N, C) -> (N,)."""
    p = check_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return (-terms.sum(axis=1)).astype(np.float32)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """``1 - margin``: the margin turned into "higher is more uncertain". (N, C) -> (N,)."""
    return (1.0 - margin(probs)).astype(np.float32)


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin_uncertainty,
    "entropy": entropy,
}


def informativeness(measure: str, probs: np.ndarray) -> np.ndarray:
    """Scores (N,) where higher means more uncertain, for ``measure`` in :data:`MEASURES`."""
    try:
        fn = MEASURES[measure]
    except KeyError:
        raise ValueError(f"unknown uncertainty measure {measure!r}; choose from {sorted(MEASURES)}") from None
    return np.asarray(fn(probs), dtype=np.float32)


# -- strategies: scores -> indices ----------------------------------------------------------------------


def rank_by_scores(
    scores: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The ``n`` unlabelled rows with the highest ``scores`` (N,), best first.

    With ``groups`` (N,) (e.g. predicted classes) the picks are spread round-robin over the groups
    (see :func:`learning.query.base.balanced_top_k`).
    """
    mask = as_mask(labelled, len(scores))
    k = budget(n, mask)
    candidates = np.flatnonzero(~mask)
    if groups is not None:
        return balanced_top_k(scores, k, candidates, np.asarray(groups))
    return top_k(scores, k, candidates)


def _uncertainty_sampling(
    measure: str, probs: np.ndarray, n: int, labelled: np.ndarray | None, class_balanced: bool
) -> np.ndarray:
    p = check_probs(probs)
    groups = p.argmax(axis=1) if class_balanced else None
    return rank_by_scores(informativeness(measure, p), n, labelled=labelled, groups=groups)


def random_sampling(
    embeddings: np.ndarray | None,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    n_pool: int | None = None,
) -> np.ndarray:
    """Uniform random sampling without replacement among unlabelled rows (the baseline every active
    learning paper compares with). ``embeddings`` (N, D) is used only for N; pass ``n_pool`` instead."""
    size = n_pool if n_pool is not None else (0 if embeddings is None else len(embeddings))
    mask = as_mask(labelled, size)
    k = budget(n, mask)
    pool = np.flatnonzero(~mask)
    return as_rng(rng).choice(pool, size=k, replace=False).astype(np.int64)


def least_confidence_sampling(
    probs: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike = None,
    class_balanced: bool = False,
) -> np.ndarray:
    """Least-confidence sampling (Lewis & Gale, "A sequential algorithm for training text classifiers",
    SIGIR 1994): the ``n`` rows whose top class probability is lowest. ``probs``: (N, C) -> (n,)."""
    return _uncertainty_sampling("least_confidence", probs, n, labelled, class_balanced)


def margin_sampling(
    probs: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike = None,
    class_balanced: bool = False,
) -> np.ndarray:
    """Margin sampling (Scheffer, Decomain & Wrobel, "Active hidden Markov models for information
    extraction", IDA 2001): the ``n`` rows with the smallest top-1 minus top-2 probability.
    ``probs``: (N, C) -> (n,)."""
    return _uncertainty_sampling("margin", probs, n, labelled, class_balanced)


def entropy_sampling(
    probs: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike = None,
    class_balanced: bool = False,
) -> np.ndarray:
    """Maximum-entropy sampling (Settles, "Active Learning Literature Survey", 2009, sec. 3.1): the
    ``n`` rows with the highest predictive entropy. ``probs``: (N, C) -> (n,)."""
    return _uncertainty_sampling("entropy", probs, n, labelled, class_balanced)
