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

With several annotators on one project (split work), the cells chosen for all of them are then dealt by
each annotator's own seconds per class (:func:`deal_by_seconds`): the same cells, so the same expected
gain, for the fewest expected seconds of the team, each annotator getting the cells they are quickest at
relative to the others.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from learning.query.base import PoolRows, RngLike, check_probs
from learning.query.hybrid import uncertain_diverse

Person = TypeVar("Person", bound=Hashable)


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


def median_seconds(
    by_class: Mapping[str, Sequence[float]], classes: Sequence[str], *, min_timed: int
) -> np.ndarray | None:
    """(C,) each class's median of the seconds timed for it, or, with fewer than ``min_timed`` of them,
    the median over every class; None with fewer than ``min_timed`` timed labels in all."""
    every = [s for values in by_class.values() for s in values]
    if len(every) < min_timed:
        return None
    overall = float(np.median(every))
    return np.array(
        [float(np.median(by_class[c])) if len(by_class.get(c, ())) >= min_timed else overall for c in classes]
    )


def annotator_seconds(
    by_class: Mapping[str, Sequence[float]],
    by_annotator: Mapping[Person, Mapping[str, Sequence[float]]],
    classes: Sequence[str],
    people: Sequence[Person],
    *,
    min_timed: int,
) -> np.ndarray | None:
    """(P, C) each annotator's seconds per label of each class: their own median of a class they labelled
    ``min_timed`` times; else the class's :func:`median_seconds` over everyone, scaled by how quick they
    are over every class (their median over everyone's, once they have ``min_timed`` timed labels); else
    the class's. None when nothing is known (fewer than ``min_timed`` timed labels in all).

    Why scale: an annotator twice as quick as the team on the classes they have labelled is likely quicker
    on the others too, and their few labels of a class say less than the team's many."""
    team = median_seconds(by_class, classes, min_timed=min_timed)
    if team is None:
        return None
    overall = float(np.median([s for values in by_class.values() for s in values]))
    rows = []
    for person in people:
        own = by_annotator.get(person, {})
        theirs = [s for values in own.values() for s in values]
        speed = float(np.median(theirs)) / overall if len(theirs) >= min_timed else 1.0
        rows.append(
            [
                float(np.median(own[c])) if len(own.get(c, ())) >= min_timed else float(base) * speed
                for c, base in zip(classes, team, strict=True)
            ]
        )
    return np.array(rows)


def deal_by_seconds(probs: np.ndarray, seconds: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Deal N chosen cells among P annotators so that their expected seconds sum to the least.

    ``probs``: (N, C) the model's class probabilities of the cells; ``seconds``: (P, C) each annotator's
    seconds per label of each class (> 0); ``sizes``: how many cells each annotator gets (they sum to N).
    A cell's expected seconds for an annotator are its probabilities times that annotator's seconds, and
    the deal is the optimal assignment of cells to the annotators' slots (Hungarian method, scipy; N is a
    few hundred at most). Returns each annotator's positions among the N cells, ascending, so every batch
    keeps the strategy's order."""
    p = check_probs(probs)
    per_class = np.asarray(seconds, dtype=np.float64)
    if per_class.ndim != 2 or per_class.shape[1] != p.shape[1] or (per_class <= 0).any():
        raise ValueError(f"seconds must be (annotators, {p.shape[1]}) values > 0")
    counts = np.asarray(sizes, dtype=np.int64)
    if counts.shape != (len(per_class),) or (counts < 0).any() or int(counts.sum()) != len(p):
        raise ValueError(f"sizes must be {len(per_class)} counts >= 0 that sum to {len(p)}")
    slot_owner = np.repeat(np.arange(len(per_class)), counts)
    expected = p @ per_class.T  # (N, P)
    cells, slots = linear_sum_assignment(expected[:, slot_owner])
    owner = slot_owner[slots]
    return [np.sort(cells[owner == person]) for person in range(len(per_class))]
