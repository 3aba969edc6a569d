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
    """(P, C) each annotator's seconds per label of each class, for dealing cells among ``people``: for a
    class every one of them has labelled ``min_timed`` times, their own medians; for any other class, the
    class's :func:`median_seconds` over everyone, the same for all of them. None when nothing is known
    (fewer than ``min_timed`` timed labels in all).

    Why not guess a person's seconds on a class from their few labels of it, or from how quick they are
    overall: annotators are quick at different classes (an expert at blasts, a technologist at the
    routine ones), and a deal on such guesses cost more than round-robin (``bench/team_split.py``). It
    also stops: a person dealt none of a class is never timed on it again. With one value for everyone,
    :func:`deal_by_seconds` keeps round-robin's deal on that class until each has been timed on it."""
    team = median_seconds(by_class, classes, min_timed=min_timed)
    if team is None:
        return None
    rows = np.tile(team, (len(people), 1))
    for column, name in enumerate(classes):
        own = [by_annotator.get(person, {}).get(name, ()) for person in people]
        if all(len(times) >= min_timed for times in own):
            rows[:, column] = [float(np.median(times)) for times in own]
    return rows


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
    # Ties go to round-robin's deal (cell k to annotator k mod P when the sizes are round-robin's): a
    # cell costs a hair more with anyone else, so only a real saving moves it.
    robin_owner = np.arange(len(p)) % len(per_class)
    hair = 1e-9 * max(float(expected.mean()), 1.0)
    cost = expected[:, slot_owner] + hair * (slot_owner[None, :] != robin_owner[:, None])
    cells, slots = linear_sum_assignment(cost)
    owner = slot_owner[slots]
    return [np.sort(cells[owner == person]) for person in range(len(per_class))]
