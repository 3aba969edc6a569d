"""Temperature scaling: T > 1 for an over-confident model (and ECE drops), T < 1 for an under-confident
one, the predicted class and impossible classes kept, the skip rule, the wrapper and the folded head, and
on real cells ECE after <= before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learning.calibration import (
    TemperatureScaled,
    apply_temperature,
    calibrate,
    fit_temperature,
    negative_log_likelihood,
)
from learning.classifiers import AlignedClassifier
from learning.data import CellImageDataset, CellRecord, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings
from learning.evaluation import expected_calibration_error
from learning.saliency import linear_head_from_classifier
from models_zoo import create_model

CLASSES = ["a", "b", "c", "d"]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def synthetic(sharpness: float, n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (a calibrated model), probabilities reported as softmax(z * sharpness):
    over-confident for sharpness > 1, under-confident below 1. The true T is ``sharpness``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * 1.5
    calibrated = softmax(z)
    truth = np.array([rng.choice(4, p=p) for p in calibrated])
    return softmax(z * sharpness).astype(np.float32), truth


def test_an_over_confident_model_gets_t_above_one_and_its_ece_drops() -> None:
    probs, truth = synthetic(sharpness=3.0)
    t = fit_temperature(probs, truth)
    assert 2.5 < t < 3.6  # recovers the sharpening it undoes
    after = apply_temperature(probs, t)
    assert expected_calibration_error(after, truth) < 0.5 * expected_calibration_error(probs, truth)
    assert negative_log_likelihood(probs, truth, t) < negative_log_likelihood(probs, truth)
    assert after.dtype == np.float32
    np.testing.assert_array_equal(after.argmax(axis=1), probs.argmax(axis=1))  # predictions unchanged
    np.testing.assert_allclose(after.sum(axis=1), 1.0, atol=1e-5)


def test_an_under_confident_model_gets_t_below_one() -> None:
    probs, truth = synthetic(sharpness=0.4, seed=1)
    t = fit_temperature(probs, truth)
    assert 0.3 < t < 0.55


def test_a_calibrated_model_keeps_t_near_one() -> None:
    probs, truth = synthetic(sharpness=1.0, seed=2)
    assert 0.85 < fit_temperature(probs, truth) < 1.15


def test_zero_columns_stay_zero_and_t_one_is_the_identity() -> None:
    probs = np.array([[0.7, 0.3, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0]], dtype=np.float32)
    assert apply_temperature(probs, 1.0) is probs
    hot = apply_temperature(probs, 0.5)
    assert np.all(hot[:, 2:] == 0) and hot[0, 0] > 0.7 and hot[1, 1] > 0.8
    with pytest.raises(ValueError):
        apply_temperature(probs, 0.0)


def test_cells_of_classes_the_model_never_saw_do_not_move_t() -> None:
    probs, truth = synthetic(sharpness=3.0, n=500, seed=3)
    probs = np.concatenate([probs, np.zeros((len(probs), 1), dtype=np.float32)], axis=1)
    base = fit_temperature(probs, truth)
    # 100 cells of the unseen fifth class: probability 0 at every T, so they carry no information on T.
    with_unseen = fit_temperature(
        np.concatenate([probs, probs[:100]]), np.concatenate([truth, np.full(100, 4)])
    )
    assert with_unseen == pytest.approx(base, rel=1e-3)


def test_calibrate_fits_with_enough_cells_and_reports_ece_before_and_after() -> None:
    probs, truth = synthetic(sharpness=3.0, n=300, seed=4)
    labels = np.asarray(CLASSES)[truth]
    result = calibrate(probs, labels, CLASSES)
    assert result.status == "fitted" and result.temperature > 1.5 and result.n == 300
    assert result.ece_after is not None and result.ece_before is not None
    assert result.ece_after < result.ece_before
    record = result.to_dict()
    assert record["status"] == "fitted" and record["reason"] == "" and record["temperature"] > 1.5


def confidently_wrong_on_some(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """About 60% right at a confidence of 0.55-0.75, and about 12% of cells wrong with their true class at
    1e-9: what a logistic regression on 1,280 features does with a few hundred labels (the demo)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n)
    probs = np.zeros((n, 4))
    for i in range(n):
        right = rng.random() < 0.6
        top = truth[i] if right else (truth[i] + 1) % 4
        confidence = rng.uniform(0.55, 0.75)
        row = np.full(4, (1 - confidence) / 3)
        row[top] = confidence
        if not right and rng.random() < 0.3:
            row[truth[i]] = 1e-9
        probs[i] = row / row.sum()
    return probs, truth


def test_a_temperature_that_would_raise_the_ece_is_replaced_by_the_least_ece_one() -> None:
    probs, truth = confidently_wrong_on_some()
    nll_t = fit_temperature(probs, truth)
    assert nll_t > 15  # the NLL flattens every row to pay for the confidently wrong cells
    before = expected_calibration_error(probs, truth)
    flattened = expected_calibration_error(apply_temperature(probs, nll_t), truth)
    assert flattened > before  # ... and the confidences no longer match how often it is right
    result = calibrate(probs, np.asarray(CLASSES)[truth], CLASSES)
    assert result.criterion == "ece" and result.temperature < 3
    assert result.ece_after is not None and result.ece_after <= before < flattened
    assert result.ece_after == pytest.approx(
        expected_calibration_error(apply_temperature(probs, result.temperature), truth)
    )
    assert result.to_dict()["criterion"] == "ece"
    # A plainly over-confident model keeps the NLL's T (the usual case).
    sharp, sharp_truth = synthetic(sharpness=3.0, n=300, seed=4)
    assert calibrate(sharp, np.asarray(CLASSES)[sharp_truth], CLASSES).criterion == "nll"


@pytest.mark.parametrize(
    ("n", "drop_to_one", "why"),
    [(19, False, "19 validation cells, fewer than 20"), (60, True, "fewer than 2 validation cells of d")],
)
def test_too_few_validation_cells_skip_calibration(n: int, drop_to_one: bool, why: str) -> None:
    probs, truth = synthetic(sharpness=3.0, n=n, seed=5)
    truth = np.arange(n) % 3  # classes a, b, c ...
    if drop_to_one:
        truth[0] = 3  # ... and a single d
    result = calibrate(probs, np.asarray(CLASSES)[truth], CLASSES)
    assert result.status == "skipped" and result.temperature == 1.0 and result.reason == why
    assert result.ece_after == result.ece_before


def test_temperature_scaled_wraps_a_classifier_and_folds_into_its_head() -> None:
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(3, 16)) * 3
    y = np.repeat([0, 1, 2], 30)
    x = centres[y] + rng.normal(size=(90, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    clf = AlignedClassifier(CLASSES, "logreg").fit(x, np.asarray(CLASSES)[y])
    scaled = TemperatureScaled(clf, 2.0)
    assert scaled.classes == CLASSES and scaled.kind == "logreg" and scaled.estimator_ is clf.estimator_
    expected = apply_temperature(clf.predict_proba(x), 2.0)
    np.testing.assert_allclose(scaled.predict_proba(x), expected, atol=1e-6)
    np.testing.assert_array_equal(scaled.predict(x), clf.predict(x))
    head = linear_head_from_classifier(scaled, 16)
    assert head is not None
    with torch.no_grad():
        folded = torch.softmax(head(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(folded, expected, atol=1e-4)


@pytest.mark.realdata
def test_on_real_embeddings_ece_after_calibration_is_not_worse(data_dir: Path) -> None:
    """180 real cells (20 per class): lightcnn embeddings, a logistic regression on 90 of them (over-confident
    on so few labels), T fitted on the other 90."""
    cells: list[CellRecord] = sample_per_class(read_manifest(data_dir / "manifest.csv"), 20, seed=11)
    torch.manual_seed(0)
    dataset = CellImageDataset(cells, 32)
    dataset.preload()
    emb = extract_embeddings(create_model("lightcnn", width=8).eval(), dataset, batch_size=64)
    labels = np.array([str(c.label) for c in cells])
    classes = sorted(set(labels))
    train = np.arange(len(cells)) % 2 == 0
    clf = AlignedClassifier(classes, "logreg").fit(emb[train], labels[train])
    probs = clf.predict_proba(emb[~train])
    result = calibrate(probs, labels[~train], classes)
    assert result.status == "fitted", result.reason
    assert result.ece_after is not None and result.ece_before is not None
    assert result.ece_after <= result.ece_before
    assert result.temperature > 1.0  # a logistic regression on 10 cells per class is over-confident
