"""Metrics against scikit-learn and slow references; learning-curve summaries."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from learning.evaluation import (
    accuracy,
    area_under_learning_curve,
    attribute_scores,
    bootstrap_intervals,
    confusion,
    evaluate,
    expected_calibration_error,
    labels_to_reach,
    macro_f1,
    per_class_f1,
    per_source,
    present_labels,
    summarise_learning_curves,
)

NINE = [
    "basophil",
    "blast",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
]


def noisy_predictions(
    n: int, labels: list[str], pred_labels: list[str], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.choice(labels, size=n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.choice(pred_labels, size=n))
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_core_metrics_match_sklearn(seed: int) -> None:
    t, p = noisy_predictions(500, NINE, NINE, seed)
    labs = sorted(NINE)
    assert macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro", labels=labs))
    per = per_class_f1(t, p)
    np.testing.assert_allclose([per[c] for c in labs], f1_score(t, p, average=None, labels=labs))
    assert accuracy(t, p) == pytest.approx(accuracy_score(t, p))
    cm = confusion(t, p)
    assert cm["labels"] == labs
    np.testing.assert_array_equal(cm["matrix"], confusion_matrix(t, p, labels=labs))


def test_external_cohort_is_scored_over_its_own_classes() -> None:
    five = ["eosinophil", "lymphocyte", "monocyte", "neutrophil", "basophil"]
    t, p = noisy_predictions(400, five, NINE, seed=3)  # the model also predicts absent classes
    assert present_labels(t) == sorted(five)
    expected = f1_score(t, p, labels=sorted(five), average="macro", zero_division=0)
    assert macro_f1(t, p) == pytest.approx(expected)
    assert macro_f1(t, p) > macro_f1(t, p, labels=NINE)  # absent classes would add zeros
    assert set(per_class_f1(t, p)) == set(five)
    report = evaluate(t, p, n_boot=50)
    assert report["labels"] == sorted(five) and report["macro_f1"] == pytest.approx(expected)
    assert len(report["confusion"]["labels"]) > 5  # off-cohort predictions stay visible


def slow_ece(probs: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if lo == 0:
            inside |= conf == 0
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


@pytest.mark.parametrize(("seed", "n_bins"), [(0, 15), (1, 15), (2, 10), (3, 1)])
def test_ece_matches_slow_reference(seed: int, n_bins: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(9) * 0.3, size=2000)
    y = rng.integers(0, 9, 2000)
    assert expected_calibration_error(probs, y, n_bins=n_bins) == pytest.approx(slow_ece(probs, y, n_bins))


def test_ece_of_a_perfectly_calibrated_confident_model_is_zero_and_labels_work() -> None:
    probs = np.eye(3)[[0, 1, 2, 1]]
    names = np.array(["a", "b", "c", "b"])
    assert expected_calibration_error(probs, names, classes=["a", "b", "c"]) == 0.0
    assert expected_calibration_error(probs, names, classes=["b", "a", "c"]) == pytest.approx(0.75)


def test_bootstrap_resamples_match_sklearn_per_draw() -> None:
    five = ["eosinophil", "lymphocyte", "monocyte", "neutrophil", "basophil"]
    t, p = noisy_predictions(150, five, NINE, seed=4)
    out = bootstrap_intervals(t, p, n_boot=40, seed=7, chunk=64)
    draws = np.random.default_rng(7).integers(0, 150, size=(40, 150))
    f1s = [f1_score(t[d], p[d], labels=sorted(five), average="macro", zero_division=0) for d in draws]
    accs = [accuracy_score(t[d], p[d]) for d in draws]
    assert out["macro_f1"] == pytest.approx([np.quantile(f1s, 0.025), np.quantile(f1s, 0.975)])
    assert out["accuracy"] == pytest.approx([np.quantile(accs, 0.025), np.quantile(accs, 0.975)])
    assert out["macro_f1"][0] <= macro_f1(t, p) <= out["macro_f1"][1]


def test_per_source_and_attribute_scores() -> None:
    t = np.array(["a", "b", "a", "b", "c", "c"])
    p = np.array(["a", "b", "b", "b", "c", "a"])
    src = np.array(["pbc", "pbc", "pbc", "pbc", "mda", "mda"])
    out = per_source(t, p, src)
    assert out["pbc"]["n"] == 4 and out["pbc"]["labels"] == ["a", "b"]
    assert out["pbc"]["macro_f1"] == pytest.approx(f1_score(t[:4], p[:4], average="macro"))
    assert out["mda"]["accuracy"] == 0.5
    attrs = attribute_scores(
        {"cell_size": np.array(["big", "small", "", "big"]), "granularity": np.array(["", "", "", ""])},
        {"cell_size": np.array(["big", "big", "small", "big"]), "granularity": np.array(["yes"] * 4)},
    )
    expected = f1_score(["big", "small", "big"], ["big", "big", "big"], average="macro", zero_division=0)
    assert attrs["per_attribute"]["cell_size"] == {"n": 3, "macro_f1": pytest.approx(expected)}
    assert attrs["per_attribute"]["granularity"]["macro_f1"] is None
    assert attrs["mean_macro_f1"] == pytest.approx(expected)


def test_evaluate_is_json_serialisable() -> None:
    t, p = noisy_predictions(200, NINE, NINE, seed=5)
    probs = np.random.default_rng(5).dirichlet(np.ones(9), size=200)
    report = evaluate(t, p, probs=probs, classes=NINE, sources=np.array(["x", "y"] * 100), n_boot=20)
    json.dumps(report)
    assert set(report) >= {
        "macro_f1",
        "accuracy",
        "per_class_f1",
        "confusion",
        "bootstrap",
        "ece",
        "per_source",
    }


# -- learning curves ------------------------------------------------------------------------------------


def test_aulc_is_the_mean_score_over_the_range() -> None:
    assert area_under_learning_curve([0, 100], [0.2, 0.8]) == pytest.approx(0.5)
    assert area_under_learning_curve([10, 20, 30], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # Seeds at the same label count are averaged first.
    assert area_under_learning_curve([0, 0, 100, 100], [0.1, 0.3, 0.7, 0.9]) == pytest.approx(0.5)
    # Held flat beyond the last point; log-x weights the low budget end.
    assert area_under_learning_curve([0, 50], [0.0, 1.0], x_range=(0, 100)) == pytest.approx(0.75)
    assert area_under_learning_curve([10, 1000], [0.0, 1.0], log_x=True) == pytest.approx(0.5)


def test_labels_to_reach_interpolates_and_returns_none_when_unreached() -> None:
    x, y = [18, 90, 180, 360], [0.5, 0.7, 0.9, 0.95]
    assert labels_to_reach(x, y, 0.8) == pytest.approx(135.0)
    assert labels_to_reach(x, y, 0.8, interpolate=False) == 180.0
    assert labels_to_reach(x, y, 0.4) == 18.0
    assert labels_to_reach(x, y, 0.99) is None


def test_summary_reports_speedup_over_random() -> None:
    curves = {
        "random": ([100, 200, 400, 800], [0.50, 0.70, 0.85, 0.95]),
        "typiclust": ([100, 200, 400, 800], [0.70, 0.85, 0.95, 0.96]),
        "bad": ([100, 200, 400, 800], [0.30, 0.40, 0.50, 0.60]),
    }
    out = summarise_learning_curves(curves, reference_score=1.0)
    json.dumps(out)
    typ = out["strategies"]["typiclust"]
    assert typ["labels_to_reach"]["0.95"] == pytest.approx(400.0)
    assert out["strategies"]["random"]["labels_to_reach"]["0.95"] == pytest.approx(800.0)
    assert typ["speedup_vs_random"]["0.95"] == pytest.approx(2.0)
    assert typ["speedup_vs_random"]["0.99"] is None
    assert out["strategies"]["bad"]["speedup_vs_random"]["0.95"] is None
    assert out["strategies"]["random"]["speedup_vs_random"]["0.95"] == pytest.approx(1.0)
    assert typ["aulc"] > out["strategies"]["random"]["aulc"] > out["strategies"]["bad"]["aulc"]
    default_ref = summarise_learning_curves(curves)
    assert default_ref["reference_score"] == pytest.approx(0.96)


def test_knn_predict_votes_by_nearest_neighbours() -> None:
    from learning.evaluation import knn_macro_f1, knn_predict

    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    labels = np.array(["a", "a", "a", "b", "b"])
    test = np.array([[1.0, 0.05], [0.05, 1.0]], dtype=np.float32)
    assert knn_predict(train, labels, test, k=3).tolist() == ["a", "b"]
    # k=5 everywhere: "a" holds the majority for both queries
    assert knn_predict(train, labels, test, k=5).tolist() == ["a", "a"]
    assert knn_macro_f1(train, labels, test, np.array(["a", "b"]), k=3) == 1.0


def test_external_report_by_hand() -> None:
    from learning.evaluation import external_report

    # 20 neutrophils (15 right, 5 called blast), 3 basophils (1 right, 2 called eosinophil).
    truth = ["neutrophil"] * 20 + ["basophil"] * 3
    pred = ["neutrophil"] * 15 + ["blast"] * 5 + ["basophil", "eosinophil", "eosinophil"]
    report = external_report(truth, pred)
    assert report["cells"] == 23 and report["classes"] == ["basophil", "neutrophil"]
    assert report["per_class_count"] == {"basophil": 3, "neutrophil": 20}
    assert report["per_class_recall"] == pytest.approx({"basophil": 1 / 3, "neutrophil": 0.75})
    # Over classes with >= 20 cells only neutrophil: F1 = 2 * 1 * 0.75 / 1.75.
    assert report["classes_min20"] == ["neutrophil"]
    assert report["macro_f1_min20"] == pytest.approx(2 * 0.75 / 1.75)
    # Over both: basophil F1 = 2 * 1 * (1/3) / (4/3) = 0.5.
    assert report["macro_f1_all"] == pytest.approx((0.5 + 2 * 0.75 / 1.75) / 2)
    assert report["predicted_share"]["blast"] == pytest.approx(5 / 23)
    assert external_report(["a"] * 3, ["a"] * 3)["macro_f1_min20"] is None
