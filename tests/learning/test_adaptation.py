"""Adapting to a new site (learning.adaptation): on made-up embeddings where the new site's classes sit
apart from the old sites', its labels are what lets the model call them, the scores are over the cells
not picked, and the old sites lose nothing."""

from __future__ import annotations

import numpy as np
import pytest

from learning.adaptation import adapt_to_site
from learning.classifiers import AlignedClassifier

CLASSES = ["a", "b"]


def cluster(centre: tuple[float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """Tight across x (what tells the classes apart), spread along y (what differs between sites)."""
    return np.asarray(centre) + rng.standard_normal((n, 2)) * np.array([0.1, 1.0])


def test_the_new_sites_labels_teach_its_classes_without_forgetting_the_old_ones() -> None:
    rng = np.random.default_rng(0)
    old_x = np.concatenate([cluster((0, 0), 40, rng), cluster((1, 0), 40, rng)])
    old_y = np.array(["a"] * 40 + ["b"] * 40)
    test_x = np.concatenate([cluster((0, 0), 20, rng), cluster((1, 0), 20, rng)])
    test_y = np.array(["a"] * 20 + ["b"] * 20)
    # The new site: both classes moved up and right (a stain or camera shift): the old sites' boundary at
    # x = 0.5 calls its "a" cells "b"; a boundary tilted by its own labels fits both sites.
    site_x = np.concatenate([cluster((0.7, 3), 30, rng), cluster((1.7, 3), 30, rng)])
    site_y = np.array(["a"] * 30 + ["b"] * 30)

    report = adapt_to_site(
        lambda: AlignedClassifier(CLASSES, "logreg"),
        labelled_x=old_x,
        labelled_y=old_y,
        site_x=site_x,
        site_y=site_y,
        test_x=test_x,
        test_y=test_y,
        n=10,
        strategy="random",
        seed=0,
    )
    assert report["labels"] == 10 and sum(report["picked_per_class"].values()) == 10
    assert report["site_before"]["cells"] == report["site_after"]["cells"] == 50
    assert report["site_before"]["macro_f1_all"] < 0.5
    assert report["site_after"]["macro_f1_all"] > 0.9
    assert report["test_before"] == pytest.approx(1.0)
    assert report["forgetting"] == pytest.approx(report["test_before"] - report["test_after"])
    assert report["forgetting"] < 0.05


def test_asking_for_every_cell_of_the_site_is_refused() -> None:
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="between 1 and 3"):
        adapt_to_site(
            lambda: AlignedClassifier(CLASSES, "logreg"),
            labelled_x=x,
            labelled_y=np.array(["a", "b", "a", "b"]),
            site_x=x,
            site_y=np.array(["a", "b", "a", "b"]),
            test_x=x,
            test_y=np.array(["a", "b", "a", "b"]),
            n=4,
        )
