"""Cost- and risk-aware acquisition: expected model gain per second of the expert's time, weighted by what a
miss costs clinically.

Settles, Craven & Friedland, "Active learning with real annotation costs" (NIPS workshop on cost-sensitive
learning, 2008) showed that annotation time varies by an order of magnitude across instances and that
dividing a query's benefit by its predicted cost (return on investment) buys more accuracy per hour when
the cost is predicted well. Here the cost of a cell is predicted from its class: the labelling page records
the seconds each label took, and a cell's expected seconds are the model's class probabilities times each
class's median seconds. The benefit is the hybrid's margin uncertainty, multiplied by the cell's expected
clinical weight (the probabilities times the lead's per-class weights: a blast missed costs more than a
neutrophil), so the most valuable seconds are spent first. Diversity is kept as in the hybrid: candidates by
value, then one per uncertainty-weighted k-means cluster (``learning.query.hybrid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from learning.query.base import PoolRows, RngLike, check_probs
from learning.query.hybrid import uncertain_diverse


def class_vector(values: Mapping[str, float] | None, classes: Sequence[str], default: float) -> np.ndarray:
    """(C,) float64 of ``values`` in the order of ``classes``; a class without a value gets ``default``."""
    values = values or {}
    return np.array([float(values.get(name, default)) for name in classes], dtype=np.float64)


def value_per_second(
    probs: np.ndarray, class_seconds: np.ndarray | None, class_weights: np.ndarray | None
) -> np.ndarray:
    """(N,) multiplier of each cell's informativeness: expected clinical weight over expected seconds.

    ``class_seconds`` / ``class_weights``: (C,) positive, or None for all equal (then that factor is 1)."""
    p = check_probs(probs)
    value = np.ones(len(p), dtype=np.float64)
    if class_weights is not None:
        weights = np.asarray(class_weights, dtype=np.float64)
        if weights.shape != (p.shape[1],) or (weights < 0).any():
            raise ValueError(f"class_weights must be {p.shape[1]} values >= 0")
        value *= p @ weights
    if class_seconds is not None:
        seconds = np.asarray(class_seconds, dtype=np.float64)
        if seconds.shape != (p.shape[1],) or (seconds <= 0).any():
            raise ValueError(f"class_seconds must be {p.shape[1]} values > 0")
        value /= p @ seconds
    return value


def cost_aware(
    probs: np.ndarray,
    embeddings: np.ndarray | PoolRows,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
    class_seconds: np.ndarray | None = None,
    class_weights: np.ndarray | None = None,
    **options: object,
) -> np.ndarray:
    """The hybrid with each cell's margin uncertainty scaled by :func:`value_per_second`. Without seconds
    or weights it is the hybrid itself."""
    value = value_per_second(probs, class_seconds, class_weights)
    return uncertain_diverse(probs, embeddings, n, labelled=labelled, rng=rng, value=value, **options)  # type: ignore[arg-type]
