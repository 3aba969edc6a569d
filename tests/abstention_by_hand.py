"""The abstention ratio of learning.shift.LabelledNeighbourhood worked out with numpy alone (no FAISS),
for the tests that check what the loop, the API and the exports record against it."""

from __future__ import annotations

import numpy as np

from learning.shift import ABSTAIN_QUANTILE, ABSTAIN_RATIO, CLASS_NEIGHBOURS


def _kth_other(points: np.ndarray, query: np.ndarray, k: int, skip: np.ndarray) -> float:
    """Cosine distance from ``query`` to its k-th nearest of ``points`` (unit vectors), ``skip`` left out."""
    distances = np.sort(1.0 - points[~skip] @ query)
    return float(distances[k - 1])


def _unit(points: np.ndarray, k: int) -> float:
    """The points' own k-th-nearest-other distances: their ABSTAIN_QUANTILE over ABSTAIN_RATIO."""
    own = [_kth_other(points, p, k, np.arange(len(points)) == i) for i, p in enumerate(points)]
    return float(np.quantile(own, ABSTAIN_QUANTILE)) / ABSTAIN_RATIO


def distance_ratio_by_hand(
    labelled: np.ndarray,
    labels: np.ndarray,
    cell: np.ndarray,
    predicted: str,
    own: np.ndarray | None = None,
) -> float:
    """The ratio for one ``cell`` the model calls ``predicted``: its distance to the nearest labelled
    cell over the labelled cells' unit, or, when larger, its distance to the CLASS_NEIGHBOURS-th nearest
    labelled cell of the predicted class over that class's unit (only for a class with more than
    CLASS_NEIGHBOURS labelled cells). ``own``: which labelled cell is this cell (measured to the others)."""
    labels = np.asarray(labels).astype(str)
    skip = np.zeros(len(labelled), dtype=bool) if own is None else np.asarray(own, dtype=bool)
    ratio = _kth_other(labelled, cell, 1, skip) / _unit(labelled, 1)
    members = labels == predicted
    if members.sum() > CLASS_NEIGHBOURS:
        points = labelled[members]
        class_ratio = _kth_other(points, cell, CLASS_NEIGHBOURS, skip[members]) / _unit(
            points, CLASS_NEIGHBOURS
        )
        ratio = max(ratio, class_ratio)
    return ratio
