"""The dashboard's pure rules on constructed numbers: stopping signal, annotator speed, Cohen's kappa."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sklearn.metrics import cohen_kappa_score

from dashboard.stats import (
    MIN_SESSION_SECONDS,
    CurvePoint,
    LabelEvent,
    active_seconds,
    annotator_speed,
    mean_kappa_per_annotator,
    pairwise_kappa,
    stopping_signal,
)


def curve(*pairs: tuple[int, float | None]) -> list[CurvePoint]:
    return [CurvePoint(version=i + 1, labels=n, macro_f1=f1) for i, (n, f1) in enumerate(pairs)]


def test_fewer_than_three_scored_versions_is_too_early() -> None:
    signal = stopping_signal(curve((12, 0.4), (24, 0.5)), batch_size=12)
    assert signal["state"] == "too-early" and "needs 3" in signal["reason"]
    # A version without validation score does not count.
    assert stopping_signal(curve((12, 0.4), (24, None), (36, 0.5)), batch_size=12)["state"] == "too-early"


def test_a_flat_curve_over_two_batches_says_stop() -> None:
    signal = stopping_signal(curve((12, 0.30), (24, 0.70), (36, 0.705), (48, 0.709)), batch_size=12)
    assert signal["state"] == "stop"
    assert signal["window"] == [2, 3, 4] and signal["labels_added"] == 24
    assert signal["gain"] == pytest.approx(0.009)
    assert "flattened" in signal["reason"] and "0.01" in signal["rule"]


def test_a_drop_counts_as_no_gain() -> None:
    assert stopping_signal(curve((12, 0.6), (24, 0.7), (36, 0.595)), batch_size=12)["state"] == "stop"


def test_a_rising_curve_says_continue() -> None:
    signal = stopping_signal(curve((12, 0.30), (24, 0.40), (36, 0.55)), batch_size=12)
    assert signal["state"] == "continue" and signal["gain"] == pytest.approx(0.25)
    assert "still learning" in signal["reason"]


def test_a_plateau_over_too_few_labels_is_not_yet_a_stop() -> None:
    # A new encoder retrains on the same labels: three versions, but no labels added between them.
    signal = stopping_signal(curve((12, 0.5), (24, 0.6), (24, 0.6), (30, 0.6)), batch_size=12)
    assert signal["state"] == "continue" and signal["labels_added"] == 6
    assert "needs 24" in signal["reason"]


def test_the_order_of_points_does_not_matter() -> None:
    points = curve((12, 0.30), (24, 0.70), (36, 0.705), (48, 0.709))
    assert stopping_signal(points[::-1], batch_size=12) == stopping_signal(points, batch_size=12)


def test_a_spent_budget_stops_whatever_the_curve() -> None:
    signal = stopping_signal(curve((12, 0.3), (24, 0.5)), batch_size=12, budget_left=0)
    assert signal["state"] == "stop" and "budget" in signal["reason"]


def test_custom_thresholds() -> None:
    points = curve((10, 0.5), (20, 0.52), (30, 0.54))
    assert stopping_signal(points, batch_size=10, min_gain=0.05)["state"] == "stop"
    assert stopping_signal(points, batch_size=10, min_gain=0.01)["state"] == "continue"
    assert stopping_signal(points, batch_size=10, window=2, min_batches=1, min_gain=0.03)["state"] == "stop"


T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def at(seconds: float, person: str = "ann", spent: float | None = None) -> LabelEvent:
    return LabelEvent(person, T0 + timedelta(seconds=seconds), spent)


def test_active_time_splits_sessions_at_long_pauses() -> None:
    # Session 1: 0 s..300 s, first label took 10 s -> 310 s. Session 2 (after a 1-hour pause): one label,
    # 5 s -> counted as the 60 s minimum.
    events = [at(0, spent=10), at(100, spent=4), at(300, spent=6), at(3900, spent=5)]
    assert active_seconds(events) == pytest.approx(310 + MIN_SESSION_SECONDS)
    speed = annotator_speed(events)["ann"]
    assert speed["labels"] == 4
    assert speed["labels_per_hour"] == pytest.approx(round(4 / ((310 + 60) / 3600), 2))
    assert speed["median_seconds"] == pytest.approx(5.5)


def test_speed_without_timings_has_no_median() -> None:
    speed = annotator_speed([at(0), at(30), at(60, person="other")])
    assert speed["ann"]["median_seconds"] is None and speed["ann"]["labels"] == 2
    assert set(speed) == {"ann", "other"}


def test_pairwise_kappa_matches_sklearn() -> None:
    a = ["neutrophil", "neutrophil", "lymphocyte", "monocyte", "lymphocyte", "neutrophil", "eosinophil"]
    b = ["neutrophil", "lymphocyte", "lymphocyte", "monocyte", "lymphocyte", "neutrophil", "monocyte"]
    c = ["neutrophil", "neutrophil", "lymphocyte"]
    labels: dict[int, dict[str, str]] = {i: {"ann": a[i], "bob": b[i]} for i in range(len(a))}
    for i, value in enumerate(c):
        labels[i]["cat"] = value
    labels[99] = {"ann": "basophil"}  # one person only: no pair uses it
    pairs = {(p["a"], p["b"]): p for p in pairwise_kappa(labels)}
    assert set(pairs) == {("ann", "bob"), ("ann", "cat"), ("bob", "cat")}
    assert pairs["ann", "bob"]["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)
    assert pairs["ann", "bob"]["shared"] == 7 and pairs["ann", "bob"]["agreement"] == pytest.approx(5 / 7)
    assert pairs["ann", "cat"]["kappa"] == pytest.approx(1.0)
    assert pairs["bob", "cat"]["kappa"] == pytest.approx(cohen_kappa_score(b[:3], c), abs=1e-6)
    means = mean_kappa_per_annotator(list(pairs.values()))
    expected_ann = (pairs["ann", "bob"]["kappa"] * 7 + 1.0 * 3) / 10
    assert means["ann"] == pytest.approx(expected_ann, abs=1e-6)


def test_kappa_is_undefined_when_everyone_gives_one_class() -> None:
    labels = {i: {"ann": "neutrophil", "bob": "neutrophil"} for i in range(4)}
    (pair,) = pairwise_kappa(labels)
    assert pair["kappa"] is None and pair["agreement"] == 1.0
    assert mean_kappa_per_annotator([pair]) == {"ann": None, "bob": None}


def test_pairs_sharing_one_cell_are_left_out() -> None:
    assert pairwise_kappa({1: {"ann": "a", "bob": "b"}}) == []


def test_a_flat_curve_with_a_wide_interval_is_too_noisy_to_stop() -> None:
    points = [
        CurvePoint(1, 12, 0.30, (0.1, 0.5)),
        CurvePoint(2, 24, 0.31, (0.1, 0.5)),
        CurvePoint(3, 36, 0.305, (0.05, 0.45)),  # 0.40 wide
    ]
    signal = stopping_signal(points, batch_size=12)
    assert signal["state"] == "too-noisy" and "0.40 wide" in signal["reason"]
    assert "interval" in signal["rule"]
    narrow = [*points[:2], CurvePoint(3, 36, 0.305, (0.25, 0.40))]
    assert stopping_signal(narrow, batch_size=12)["state"] == "stop"
    assert stopping_signal(points, batch_size=12, max_width=0.5)["state"] == "stop"
    # A rising curve keeps going whatever the interval.
    rising = [*points[:2], CurvePoint(3, 36, 0.5, (0.1, 0.9))]
    assert stopping_signal(rising, batch_size=12)["state"] == "continue"
