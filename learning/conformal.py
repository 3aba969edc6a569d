"""Per-class confidence floors from held-out cells: label-conditional (Mondrian) conformal prediction.

A suggestion of class k is kept only where the calibrated probability of k reaches ``floor[k]``: the level
that all but a share ``alpha`` of the held-out cells *of class k* reach for their own class (Vovk,
Gammerman & Shafer 2005, ch. 4, "Mondrian" conformal predictors; Sadinle, Lei & Wasserman 2019 use the
same class-specific thresholds). For exchangeable cells of class k, a new one falls below ``floor[k]``
with probability at most ``alpha``, whatever the other classes do. ``among="correct"`` takes the floor
over the held-out cells of class k that the model also *called* k: all but ``alpha`` of its right calls
of k reach it (the class's weak tail of misclassified cells no longer drags the floor down).

With n held-out cells of class k, the floor is the ``floor(alpha * (n + 1))``-th smallest of their
probabilities for k (the finite-sample conformal quantile); below ``1 / alpha - 1`` cells that rank is 0,
no floor can be promised, and the class gets none (:data:`NO_FLOOR`).

Measured, not in the product (bench/README.md, "Per-class confidence floors"): on the loop's last round
at 811 labels, floors from half the test cells were meant to withhold "blast" said with 0.5-0.7 (where
another lab's healthy cells were called blast) while keeping the model's sure blasts. Label-conditional
floors at alpha 0.02-0.05 sit low (0.2-0.4 for blast: the blasts the model gets wrong are in the tail)
and change nothing; floors over right calls withhold the weakest of them, and reach the other lab's
false blasts only at alpha 0.1, which is a blast threshold of about 0.85 chosen by its effect there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import numpy as np

# The share of a class's own cells whose suggestion a floor may withhold.
ALPHA: Final = 0.05
# A class without a floor: any confidence passes it.
NO_FLOOR: Final = 0.0


def class_confidence_floors(
    probs: np.ndarray,
    y_true: np.ndarray | Sequence[str],
    classes: Sequence[str],
    *,
    alpha: float = ALPHA,
    among: Literal["class", "correct"] = "class",
) -> dict[str, float]:
    """Class -> floor, from held-out cells' calibrated ``probs`` (N, C; columns ``classes``) and their
    true labels ``y_true``; ``among``: ``"class"`` (every held-out cell of the class) or ``"correct"``
    (those the model also called that class). Classes with too few such cells for ``alpha`` are left
    out (no floor)."""
    if among not in ("class", "correct"):
        raise ValueError(f'among must be "class" or "correct", got {among!r}')
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    p = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(y_true, dtype=object).astype(str)
    if p.shape != (len(truth), len(classes)):
        raise ValueError(
            f"probabilities of shape {p.shape} for {len(truth)} cells and {len(classes)} classes"
        )
    floors: dict[str, float] = {}
    top = p.argmax(axis=1)
    for column, name in enumerate(classes):
        mine = truth == name
        if among == "correct":
            mine &= top == column
        own = np.sort(p[mine, column])
        rank = math.floor(alpha * (len(own) + 1))
        if rank >= 1:
            floors[str(name)] = float(own[rank - 1])
    return floors


def below_floor(probs: np.ndarray, classes: Sequence[str], floors: Mapping[str, float]) -> np.ndarray:
    """(N,) bool: the top class's probability is below that class's floor (the suggestion is withheld)."""
    p = np.asarray(probs)
    if p.size == 0:
        return np.zeros(len(p), dtype=bool)
    top = p.argmax(axis=1)
    floor_of = np.array([floors.get(str(c), NO_FLOOR) for c in classes])
    return np.asarray(p[np.arange(len(p)), top] < floor_of[top])


__all__ = ["ALPHA", "NO_FLOOR", "below_floor", "class_confidence_floors"]
