"""Heads on frozen embeddings: aligned class columns, tiny label sets, multi-task masking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from learning.classifiers import (
    CELL_TYPE_TASK,
    CLASSIFIER_KINDS,
    AlignedClassifier,
    LinearKernelSVC,
    MultiTaskClassifier,
    make_classifier,
)

CLASSES = ["basophil", "blast", "eosinophil", "lymphocyte", "neutrophil"]


def make_data(
    labels: list[str], per_class: list[int], dim: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for lab, count in zip(labels, per_class, strict=True):
        centre = rng.standard_normal(dim) * 4
        xs.append(centre + rng.standard_normal((count, dim)))
        ys += [lab] * count
    return np.concatenate(xs).astype(np.float32), np.array(ys)


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_unseen_classes_get_zero_columns_and_rows_sum_to_one(kind: str) -> None:
    X, y = make_data(["blast", "lymphocyte", "neutrophil"], [10, 10, 10])
    clf = make_classifier(kind, CLASSES).fit(X, y)  # type: ignore[arg-type]
    probs = clf.predict_proba(X)
    assert probs.shape == (30, 5)
    assert np.all(probs[:, [0, 2]] == 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (clf.predict(X) == y).mean() > 0.9
    assert set(clf.predict(X)) <= {"blast", "lymphocyte", "neutrophil"}


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_tiny_label_sets_with_one_or_two_examples_per_class(kind: str) -> None:
    X, y = make_data(["basophil", "blast", "neutrophil"], [1, 2, 5], seed=1)
    clf = AlignedClassifier(CLASSES, kind).fit(X, y)  # type: ignore[arg-type]
    probs = clf.predict_proba(X)
    assert probs.shape == (8, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probs[:, [2, 3]] == 0)
    if kind == "svm":
        assert not clf.calibrated_  # one basophil: nothing held out to calibrate on


def test_svm_calibrates_when_every_class_has_two_examples() -> None:
    X, y = make_data(["blast", "neutrophil", "lymphocyte"], [2, 3, 6], seed=2)
    clf = AlignedClassifier(CLASSES, "svm").fit(X, y)
    assert clf.calibrated_
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_linear_kernel_svc_matches_libsvm_decisions(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    X = rng.standard_normal((120, 10))
    y = rng.integers(0, n_classes, 120)
    Xt = rng.standard_normal((40, 10))
    for shape in ["ovr", "ovo"]:
        ref = SVC(kernel="linear", decision_function_shape=shape).fit(X, y)
        fast = LinearKernelSVC(kernel="linear", decision_function_shape=shape).fit(X, y)
        np.testing.assert_allclose(fast.decision_function(Xt), ref.decision_function(Xt), atol=1e-8)


def test_single_class_predicts_it_with_certainty() -> None:
    X, y = make_data(["blast"], [4])
    probs = AlignedClassifier(CLASSES).fit(X, y).predict_proba(X)
    assert probs[:, 1].tolist() == [1.0] * 4 and probs.sum() == 4


def test_rejects_labels_outside_the_class_list_and_empty_sets() -> None:
    X, y = make_data(["blast", "monocyte"], [3, 3])
    with pytest.raises(ValueError):
        AlignedClassifier(CLASSES).fit(X, y)
    with pytest.raises(ValueError):
        AlignedClassifier(CLASSES).fit(X[:0], y[:0])
    with pytest.raises(ValueError):
        AlignedClassifier(CLASSES, "knn").fit(X[:3], np.array(["blast"] * 2 + ["basophil"]))  # type: ignore[arg-type]


def test_multitask_masks_missing_attribute_labels() -> None:
    X, y = make_data(["blast", "lymphocyte", "neutrophil"], [8, 8, 8], seed=3)
    size = np.array(["big"] * 8 + ["small"] * 8 + [""] * 8)  # neutrophils unlabelled for size
    granules = np.array([""] * 24)  # nobody labelled yet
    schema = {"cell_size": ["small", "big"], "granule_type": ["small", "round", "coarse", "nil"]}
    model = MultiTaskClassifier(CLASSES, schema, kind="logreg").fit(
        X, y, {"cell_size": size, "granule_type": granules}
    )
    assert model.untrained_ == ["granule_type"]
    probs = model.predict_proba(X)
    assert list(probs) == [CELL_TYPE_TASK, "cell_size", "granule_type"]
    assert probs[CELL_TYPE_TASK].shape == (24, 5) and probs["cell_size"].shape == (24, 2)
    np.testing.assert_allclose(probs["granule_type"], 0.25)
    preds = model.predict(X)
    assert (preds["cell_size"][:16] == size[:16]).all()
    assert (preds[CELL_TYPE_TASK] == y).all()


def test_multitask_cell_type_may_be_partly_missing() -> None:
    X, y = make_data(["blast", "lymphocyte"], [6, 6], seed=4)
    y = y.astype(object)
    y[:3] = ""
    model = MultiTaskClassifier(CLASSES, {"cell_size": ["small", "big"]}).fit(X, y, None)
    assert model.untrained_ == ["cell_size"]
    assert model.predict_proba(X)[CELL_TYPE_TASK].shape == (12, 5)


def test_multitask_rejects_unknown_attributes_and_reserved_names() -> None:
    X, y = make_data(["blast"], [3])
    with pytest.raises(ValueError):
        MultiTaskClassifier(CLASSES, {"cell_size": ["small", "big"]}).fit(
            X, y, {"colour": np.array(["a"] * 3)}
        )
    with pytest.raises(ValueError):
        MultiTaskClassifier(CLASSES, {CELL_TYPE_TASK: ["a"]})
