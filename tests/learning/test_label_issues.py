"""Label-mistake finding (learning.label_issues): flipped labels of real cells come first in the ranking,
the probabilities are out-of-fold (an in-sample model would hide the mistakes), the flips are what they
say, and too few labels are refused with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from learning.data import CellImageDataset, CellRecord, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings
from learning.label_issues import (
    flip_labels,
    out_of_fold_probabilities,
    rank_label_issues,
    share_found,
)
from models_zoo import create_model


@pytest.fixture(scope="module")
def real_cells(data_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """270 real cells (30 per class) embedded with the ImageNet EfficientNet-Lite0 the loop starts on."""
    cells: list[CellRecord] = sample_per_class(read_manifest(data_dir / "manifest.csv"), 30, seed=5)
    torch.manual_seed(0)
    dataset = CellImageDataset(cells, 64)
    dataset.preload()
    emb = extract_embeddings(
        create_model("efficientnet_lite0", pretrained=True).eval(), dataset, batch_size=90
    )
    classes = sorted({str(c.label) for c in cells})
    labels = np.array([classes.index(str(c.label)) for c in cells])
    return emb, labels, len(classes)


def test_flip_labels_moves_exactly_the_fraction_to_other_classes() -> None:
    labels = np.repeat(np.arange(9), 20)
    noisy, flipped = flip_labels(labels, 0.05, n_classes=9, seed=3)
    assert len(flipped) == 9 and len(set(flipped.tolist())) == 9
    assert (noisy[flipped] != labels[flipped]).all()
    unchanged = np.setdiff1d(np.arange(len(labels)), flipped)
    assert (noisy[unchanged] == labels[unchanged]).all()
    assert noisy.min() >= 0 and noisy.max() < 9


@pytest.mark.realdata
def test_flipped_real_labels_come_first(real_cells: tuple[np.ndarray, np.ndarray, int]) -> None:
    emb, labels, n_classes = real_cells
    noisy, flipped = flip_labels(labels, 0.05, n_classes=n_classes, seed=0)
    ranking = rank_label_issues(emb, noisy, n_classes=n_classes, seed=0)
    # A random order holds 10% of them in its first 10%; confident learning far more.
    found = share_found(ranking.order, flipped, 0.10)
    assert found >= 0.6, found
    # The confident-learning filter flags most flipped cells, and flipped cells are over twice as common
    # among the flagged as among all (ImageNet features of 270 cells are weak: it flags honest
    # confusions too), and the suggestion for a caught flipped cell is its true class far more often
    # than the 1 in 8 of a guess among the other classes (3 of 7 here, on these weak features).
    flagged = np.flatnonzero(ranking.flagged)
    assert np.isin(flipped, flagged).mean() >= 0.6
    assert np.isin(flagged, flipped).mean() >= 2 * len(flipped) / len(labels)
    top = ranking.order[: len(flipped)]
    caught = top[np.isin(top, flipped)]
    assert (ranking.suggested[caught] == labels[caught]).mean() >= 0.3
    assert sorted(ranking.order.tolist()) == list(range(len(labels)))
    assert np.all(np.diff(ranking.quality[ranking.order]) >= 0)


@pytest.mark.realdata
def test_probabilities_are_out_of_fold(real_cells: tuple[np.ndarray, np.ndarray, int]) -> None:
    """A model that saw the flipped labels gives them more weight than the out-of-fold ones do."""
    from sklearn.linear_model import LogisticRegression

    emb, labels, n_classes = real_cells
    noisy, flipped = flip_labels(labels, 0.05, n_classes=n_classes, seed=1)
    oof, folds = out_of_fold_probabilities(emb, noisy, n_classes=n_classes)
    assert folds == 5 and oof.shape == (len(labels), n_classes)
    assert np.allclose(oof.sum(axis=1), 1.0)
    in_sample = LogisticRegression(max_iter=2000, class_weight="balanced").fit(emb, noisy).predict_proba(emb)
    given_oof = oof[flipped, noisy[flipped]]
    given_in = in_sample[flipped, noisy[flipped]]
    assert given_in.mean() > given_oof.mean()


def test_too_few_labels_of_a_class_are_refused() -> None:
    emb = np.random.default_rng(0).normal(size=(7, 4))
    with pytest.raises(ValueError, match="fewer than 2"):
        rank_label_issues(emb, np.array([0, 0, 0, 1, 1, 1, 2]), n_classes=3)
    with pytest.raises(ValueError, match="two classes"):
        rank_label_issues(emb, np.zeros(7, dtype=int), n_classes=3)
    with pytest.raises(ValueError, match="7 embeddings for 6 labels"):
        rank_label_issues(emb, np.zeros(6, dtype=int), n_classes=3)


def test_the_folds_shrink_to_the_smallest_class() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 10 + [1] * 3)
    emb = rng.normal(size=(13, 4)) + labels[:, None] * 3
    ranking = rank_label_issues(emb, labels, n_classes=4)
    assert ranking.folds == 3
    # Classes 2 and 3 were never given: never suggested.
    assert set(ranking.suggested.tolist()) <= {0, 1}


FORKS: list[int] = []
COUNTING = [False]
# Counts every fork of this process while COUNTING is on (a fork hook cannot be removed once registered).
os.register_at_fork(before=lambda: FORKS.append(1) if COUNTING[0] else None)


def test_the_ranking_forks_no_process(real_cells: tuple[np.ndarray, np.ndarray, int]) -> None:
    """It runs inside a worker that may hold gigabytes and threads: a forked pool there hung for good
    (bench/million.py), so the ranking stays in this process."""
    emb, labels, n_classes = real_cells
    FORKS.clear()
    COUNTING[0] = True
    try:
        ranking = rank_label_issues(emb, labels, n_classes=n_classes, seed=0)
    finally:
        COUNTING[0] = False
    assert len(ranking.order) == len(labels)
    assert FORKS == []
