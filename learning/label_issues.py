"""Label-mistake finding: rank labelled cells by how likely their label is wrong (confident learning,
Northcutt et al., "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021).

Every labelled cell gets a probability for each class from a model that did not see that cell's label
(out-of-fold: a class-balanced logistic regression on the cells' embeddings, K stratified folds). A label
the other labels disagree with gets a low probability for its own class. cleanlab (the maintained
implementation of the paper) turns those probabilities into

- a label-quality score per cell (``self_confidence``: the out-of-fold probability of the given label;
  lowest first is the review order), and
- the set of likely issues (``find_label_issues``: cells whose given class falls outside the per-class
  confident joint), the number a reviewer should look at before the score stops meaning much.

Why out-of-fold rather than the loop's own classifier: the classifier was trained on these very labels,
so it has partly learned the mistakes and scores them as fine (in-sample probabilities hide exactly the
cells this is for).

Never imports Django.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

# Fewer labelled cells of a class than this and the class cannot be split over the folds (each fold's
# held-out part needs one): the ranking is refused with the reason rather than computed on a guess.
MIN_PER_CLASS = 2


@dataclass(frozen=True)
class LabelIssueRanking:
    """Labelled cells ranked by how likely their label is wrong.

    Attributes:
        order: positions into the input, most suspect first (ascending ``quality``).
        quality: per input cell, the out-of-fold probability of its given label (0 to 1; lower is worse).
        suggested: per input cell, the class index the out-of-fold model prefers.
        suggested_confidence: that class's out-of-fold probability.
        flagged: per input cell, whether cleanlab's confident-learning filter calls the label an issue.
        folds: the number of folds the probabilities came from.
    """

    order: np.ndarray
    quality: np.ndarray
    suggested: np.ndarray
    suggested_confidence: np.ndarray
    flagged: np.ndarray
    folds: int

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, *, n_classes: int, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, int]:
    """(N, n_classes) probabilities, each row from a model fitted without that row, and the folds used.

    The folds shrink to the smallest class's count (at least 2); a class absent from a fold's training
    part gets probability 0 there.
    """
    counts = np.bincount(labels, minlength=n_classes)
    present = counts[counts > 0]
    if present.size < 2:
        raise ValueError("label-mistake finding needs labelled cells of at least two classes")
    if present.min() < MIN_PER_CLASS:
        rare = [int(c) for c in np.flatnonzero((counts > 0) & (counts < MIN_PER_CLASS))]
        raise ValueError(f"classes {rare} have fewer than {MIN_PER_CLASS} labelled cells")
    k = int(min(folds, present.min()))
    probabilities = np.zeros((len(labels), n_classes), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, held_out in splitter.split(features, labels):
        model = LogisticRegression(max_iter=2000, class_weight="balanced", C=1.0)
        model.fit(features[train], labels[train])
        probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
    return probabilities, k


def rank_label_issues(
    features: np.ndarray, labels: np.ndarray, *, n_classes: int, folds: int = 5, seed: int = 0
) -> LabelIssueRanking:
    """Rank labelled cells (embeddings ``features``, class indices ``labels``) by how likely each label
    is wrong; see the module docstring."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} embeddings for {len(labels)} labels")
    probabilities, k = out_of_fold_probabilities(
        features, labels, n_classes=n_classes, folds=folds, seed=seed
    )
    # cleanlab expects every column to be a class that occurs among the labels: score on those only.
    classes = np.flatnonzero(np.bincount(labels, minlength=n_classes) > 0)
    column = {int(c): i for i, c in enumerate(classes)}
    local_labels = np.array([column[int(c)] for c in labels], dtype=np.int64)
    local = probabilities[:, classes]
    local = local / np.clip(local.sum(axis=1, keepdims=True), 1e-12, None)
    quality = get_label_quality_scores(local_labels, local, method="self_confidence")
    # n_jobs=1: by default cleanlab forks a multiprocessing pool per call. In a Celery worker that holds
    # gigabytes (a million-cell project's memory map) and threads, a forked pool worker hung on the pool's
    # queue lock at teardown and the label check never ended, holding up the retrain queued behind it
    # (bench/million.py). The work is a few thousand rows: one process is as fast.
    flagged = find_label_issues(local_labels, local, filter_by="prune_by_noise_rate", n_jobs=1)
    best = local.argmax(axis=1)
    return LabelIssueRanking(
        order=np.argsort(quality, kind="stable"),
        quality=quality,
        suggested=classes[best],
        suggested_confidence=local[np.arange(len(best)), best],
        flagged=np.asarray(flagged, dtype=bool),
        folds=k,
    )


def flip_labels(
    labels: np.ndarray, fraction: float, *, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``labels`` with ``fraction`` of them moved to another class chosen uniformly, and the
    positions flipped: the known answer the benchmark and tests measure the ranking against."""
    rng = np.random.default_rng(seed)
    n_flip = round(fraction * len(labels))
    flipped = np.sort(rng.choice(len(labels), size=n_flip, replace=False))
    noisy = labels.copy()
    offsets = rng.integers(1, n_classes, size=n_flip)  # never 0: always a different class
    noisy[flipped] = (labels[flipped] + offsets) % n_classes
    return noisy, flipped


def share_found(order: np.ndarray, flipped: np.ndarray, top_fraction: float) -> float:
    """Of the flipped labels, the share in the first ``top_fraction`` of the ranking (recall at k)."""
    k = round(top_fraction * len(order))
    return float(np.isin(order[:k], flipped).sum() / max(len(flipped), 1))
