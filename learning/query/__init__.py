"""Active-learning query strategies: pure functions over arrays that return pool row indices.

Every strategy has the form ``strategy(scores-or-embeddings, n, *, labelled, rng, **options)`` and
returns (min(n, n_unlabelled),) int64 indices into the pool's N rows, never a labelled row and never
the same row twice. :func:`select` dispatches by name through :data:`STRATEGIES` and handles the cold
start: with no labels (or no model probabilities) a strategy that needs a model falls back to a
model-free one (TypiClust by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from learning.query.badge import badge, gradient_embedding, gradient_factors
from learning.query.base import PoolRows, RngLike, as_mask, as_rng
from learning.query.coreset import farthest_first, k_center_greedy
from learning.query.cost import cost_aware, value_per_second
from learning.query.hybrid import uncertain_diverse
from learning.query.probcover import delta_ball_graph, estimate_delta, max_coverage_greedy, probcover
from learning.query.typiclust import kmeans_medoids, typicality, typiclust
from learning.query.uncertainty import (
    MEASURES,
    entropy,
    entropy_sampling,
    informativeness,
    least_confidence,
    least_confidence_sampling,
    margin,
    margin_sampling,
    random_sampling,
    rank_by_scores,
)


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its function, which arrays it reads, and the paper it implements.

    ``inputs`` lists the leading positional arrays the function takes, in order: ``("probs",)``,
    ``("embeddings",)`` or ``("probs", "embeddings")``.
    """

    name: str
    fn: Callable[..., np.ndarray]
    inputs: tuple[str, ...]
    paper: str

    @property
    def needs_model(self) -> bool:
        return "probs" in self.inputs


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy("random", random_sampling, ("embeddings",), "baseline"),
        Strategy("least_confidence", least_confidence_sampling, ("probs",), "Lewis & Gale, SIGIR 1994"),
        Strategy("margin", margin_sampling, ("probs",), "Scheffer et al., IDA 2001"),
        Strategy("entropy", entropy_sampling, ("probs",), "Settles, AL survey 2009"),
        Strategy("coreset", k_center_greedy, ("embeddings",), "Sener & Savarese, ICLR 2018"),
        Strategy("typiclust", typiclust, ("embeddings",), "Hacohen et al., ICML 2022"),
        Strategy("probcover", probcover, ("embeddings",), "Yehuda et al., NeurIPS 2022"),
        Strategy("kmeans_medoids", kmeans_medoids, ("embeddings",), "Nguyen & Smeulders, ICML 2004"),
        Strategy("badge", badge, ("probs", "embeddings"), "Ash et al., ICLR 2020"),
        Strategy("hybrid", uncertain_diverse, ("probs", "embeddings"), "Zhdanov 2019; Sener & Savarese 2018"),
        Strategy("cost_aware", cost_aware, ("probs", "embeddings"), "Settles et al. 2008 (ROI); hybrid"),
    ]
}

DEFAULT_COLD_START = "typiclust"


def resolve_strategy(
    strategy_name: str,
    *,
    probs: np.ndarray | None,
    labelled_mask: np.ndarray | None,
    n_pool: int,
    cold_start: str = DEFAULT_COLD_START,
) -> str:
    """Name of the strategy :func:`select` will actually run (record it in the query's provenance).

    A strategy that needs model probabilities runs as ``cold_start`` when ``probs`` is None or nothing
    is labelled yet (a model trained on zero labels has nothing to be uncertain about).
    """
    if strategy_name not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy_name!r}; choose from {sorted(STRATEGIES)}")
    if cold_start not in STRATEGIES or STRATEGIES[cold_start].needs_model:
        raise ValueError(f"cold_start must be a model-free strategy, got {cold_start!r}")
    if STRATEGIES[strategy_name].needs_model and (probs is None or not as_mask(labelled_mask, n_pool).any()):
        return cold_start
    return strategy_name


def select(
    strategy_name: str,
    *,
    n: int,
    embeddings: np.ndarray | PoolRows,
    probs: np.ndarray | None = None,
    labelled_mask: np.ndarray | None,
    rng: RngLike,
    cold_start: str = DEFAULT_COLD_START,
    **kw: Any,
) -> np.ndarray:
    """Run the strategy ``strategy_name`` on the pool and return (min(n, n_unlabelled),) row indices.

    ``embeddings``: (N, D), or a :class:`PoolRows` view that only the strategies reading every row
    gather whole; ``probs``: (N, C) or None; ``labelled_mask``: (N,) bool (or indices).
    Extra keyword options go to the strategy (e.g. ``class_balanced=True`` for the uncertainty
    strategies and the hybrid, ``delta=`` for ProbCover); options meant for a model-based strategy
    are dropped when the cold start replaces it.
    """
    n_pool = len(embeddings)
    if probs is not None and len(probs) != n_pool:
        raise ValueError(f"probs has {len(probs)} rows but embeddings has {n_pool}")
    name = resolve_strategy(
        strategy_name, probs=probs, labelled_mask=labelled_mask, n_pool=n_pool, cold_start=cold_start
    )
    strategy = STRATEGIES[name]
    if name != strategy_name:
        kw = {}
    arrays = {"probs": probs, "embeddings": embeddings}
    args = [arrays[key] for key in strategy.inputs]
    return strategy.fn(*args, n, labelled=as_mask(labelled_mask, n_pool), rng=as_rng(rng), **kw)


__all__ = [
    "DEFAULT_COLD_START",
    "MEASURES",
    "STRATEGIES",
    "PoolRows",
    "Strategy",
    "badge",
    "cost_aware",
    "delta_ball_graph",
    "entropy",
    "entropy_sampling",
    "estimate_delta",
    "farthest_first",
    "gradient_embedding",
    "gradient_factors",
    "informativeness",
    "k_center_greedy",
    "kmeans_medoids",
    "least_confidence",
    "least_confidence_sampling",
    "margin",
    "margin_sampling",
    "max_coverage_greedy",
    "probcover",
    "random_sampling",
    "rank_by_scores",
    "resolve_strategy",
    "select",
    "typicality",
    "typiclust",
    "uncertain_diverse",
    "value_per_second",
]
