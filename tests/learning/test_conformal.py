"""Per-class confidence floors: the finite-sample rank on a known set, floors over right calls only,
classes too small for alpha left without a floor, the floor's promise on fresh draws of the same class,
and the withholding mask."""

from __future__ import annotations

import numpy as np
import pytest

from learning.conformal import below_floor, class_confidence_floors

CLASSES = ["blast", "lymphocyte"]


def test_floor_is_the_conformal_rank_of_each_class_own_probabilities() -> None:
    # 19 blasts with blast probabilities 0.05, 0.10, ..., 0.95: at alpha 0.1 the rank is
    # floor(0.1 * 20) = 2, so the floor is the second smallest, 0.10.
    blast_p = np.arange(1, 20) / 20
    probs = np.column_stack([blast_p, 1 - blast_p])
    floors = class_confidence_floors(probs, ["blast"] * 19, CLASSES, alpha=0.1)
    assert floors == {"blast": pytest.approx(0.10)}
    # alpha 0.05: rank floor(0.05 * 20) = 1, the smallest.
    floors = class_confidence_floors(probs, ["blast"] * 19, CLASSES, alpha=0.05)
    assert floors == {"blast": pytest.approx(0.05)}


def test_floors_over_right_calls_leave_out_the_cells_the_model_got_wrong() -> None:
    # 20 blasts: 19 called blast with 0.80-0.98, one called lymphocyte (blast 0.1). Over every blast
    # the floor at alpha 0.05 (rank 1) is that wrong one's 0.1; over the right calls it is 0.80.
    right = np.linspace(0.80, 0.98, 19)
    blast_p = np.concatenate([right, [0.1]])
    probs = np.column_stack([blast_p, 1 - blast_p])
    labels = ["blast"] * 20
    assert class_confidence_floors(probs, labels, CLASSES, alpha=0.05)["blast"] == pytest.approx(0.1)
    correct = class_confidence_floors(probs, labels, CLASSES, alpha=0.05, among="correct")
    assert correct == {"blast": pytest.approx(0.80)}


def test_a_class_too_small_for_alpha_gets_no_floor() -> None:
    # 18 lymphocytes: floor(0.05 * 19) = 0, nothing can be promised; 19 blasts: rank 1.
    probs = np.full((37, 2), 0.5)
    labels = ["blast"] * 19 + ["lymphocyte"] * 18
    assert set(class_confidence_floors(probs, labels, CLASSES, alpha=0.05)) == {"blast"}


def test_fresh_cells_of_a_class_fall_below_its_floor_about_alpha_of_the_time() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> np.ndarray:
        # Blasts the model is mostly sure of, with a tail: Beta(8, 1.5) probabilities for "blast".
        p = rng.beta(8, 1.5, size=n)
        return np.column_stack([p, 1 - p])

    misses = []
    for _ in range(200):
        floors = class_confidence_floors(draw(60), ["blast"] * 60, CLASSES, alpha=0.1)
        fresh = draw(500)
        misses.append(below_floor(fresh, CLASSES, floors)[fresh.argmax(axis=1) == 0].mean())
    # Conformal promise: at most alpha on average (exactly floor(alpha(n+1))/(n+1) = 0.098 here).
    assert 0.07 < float(np.mean(misses)) <= 0.1 + 0.01


def test_below_floor_withholds_only_the_floored_class_under_its_floor() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    withheld = below_floor(probs, CLASSES, {"blast": 0.8})
    # 0.6 "blast" is under 0.8; lymphocytes have no floor whatever their confidence.
    assert withheld.tolist() == [False, True, False, False]
    assert below_floor(np.zeros((0, 2)), CLASSES, {"blast": 0.8}).shape == (0,)


def test_shapes_and_alpha_are_checked() -> None:
    with pytest.raises(ValueError, match="alpha"):
        class_confidence_floors(np.ones((2, 2)) / 2, ["blast", "blast"], CLASSES, alpha=1.0)
    with pytest.raises(ValueError, match="shape"):
        class_confidence_floors(np.ones((3, 2)) / 2, ["blast", "blast"], CLASSES)
    with pytest.raises(ValueError, match="among"):
        class_confidence_floors(np.ones((2, 2)) / 2, ["blast", "blast"], CLASSES, among="all")  # type: ignore[arg-type]
