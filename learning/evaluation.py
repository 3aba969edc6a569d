"""Evaluation: classification metrics, calibration, bootstrap intervals, per-source and attribute
scores, and learning-curve summaries for comparing query strategies. Every public function returns
plain Python floats, lists and dicts (JSON-able; ``None`` where a value is undefined).

Scoring over the classes a test set holds: an external cohort may contain only 5 of the 9 classes.
Macro averages are then taken over the labels present in ``y_true`` (``labels=`` of scikit-learn),
so absent classes do not add zeros; predictions of an absent class still count as errors (they lower
the recall of the true class), exactly as ``sklearn.metrics.f1_score(labels=...)`` does.

Calibration: top-label expected calibration error with 15 equal-width bins (Guo, Pleiss, Sun &
Weinberger, "On Calibration of Modern Neural Networks", ICML 2017; Naeini et al., AAAI 2015).

Bootstrap: percentile intervals over test-set resamples (Efron & Tibshirani 1993), vectorised by
computing one confusion matrix per resample with ``bincount``.

Learning curves: the low-budget AL protocol (area under the learning curve, labels needed to reach a
fraction of a reference score, speed-up over random) as in CDALBench (Li et al. 2024) and the
budget-dependent comparisons of Hacohen et al. (ICML 2022).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

MISSING = ""


def present_labels(y_true: np.ndarray | Sequence[Any]) -> list[str]:
    """Sorted distinct labels of ``y_true`` (N,): the classes a test set is scored over."""
    return sorted({str(v) for v in np.asarray(y_true).ravel()})


def _as_str(y: np.ndarray | Sequence[Any]) -> np.ndarray:
    return np.asarray(y).astype(str)


def macro_f1(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
) -> float:
    """Macro-averaged F1 over ``labels`` (default: the labels present in ``y_true``). (N,), (N,) -> float."""
    t, p = _as_str(y_true), _as_str(y_pred)
    labs = list(labels) if labels is not None else present_labels(t)
    return float(f1_score(t, p, labels=labs, average="macro", zero_division=0))


def per_class_f1(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
) -> dict[str, float]:
    """F1 per class over ``labels`` (default: present in ``y_true``): {label: f1}."""
    t, p = _as_str(y_true), _as_str(y_pred)
    labs = list(labels) if labels is not None else present_labels(t)
    scores = f1_score(t, p, labels=labs, average=None, zero_division=0)
    return {lab: float(s) for lab, s in zip(labs, scores, strict=True)}


def external_report(
    y_true: np.ndarray | Sequence[Any], y_pred: np.ndarray | Sequence[Any], *, min_cells: int = 20
) -> dict[str, Any]:
    """Scores on another lab's cells, over the classes that set holds: per-class recall and count,
    macro-F1 over every present class and over those with at least ``min_cells`` cells (a class of 3
    cells moves the plain average by a third of its F1), and the share of cells predicted as each class
    (a healthy cohort predicted as blasts shows here even where no blast is in the truth)."""
    t, p = _as_str(y_true), _as_str(y_pred)
    labs = present_labels(t)
    counts = {lab: int((t == lab).sum()) for lab in labs}
    recall = {lab: float((p[t == lab] == lab).mean()) for lab in labs}
    big = [lab for lab in labs if counts[lab] >= min_cells]
    predicted = {lab: float((p == lab).mean()) for lab in sorted(set(p.tolist()))}
    return {
        "cells": len(t),
        "classes": labs,
        "per_class_count": counts,
        "per_class_recall": recall,
        "macro_f1_all": macro_f1(t, p, labels=labs),
        f"macro_f1_min{min_cells}": macro_f1(t, p, labels=big) if big else None,
        f"classes_min{min_cells}": big,
        "predicted_share": predicted,
    }


def accuracy(y_true: np.ndarray | Sequence[Any], y_pred: np.ndarray | Sequence[Any]) -> float:
    """Fraction of exact matches. (N,), (N,) -> float."""
    return float(accuracy_score(_as_str(y_true), _as_str(y_pred)))


def confusion(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Confusion matrix as ``{"labels": [...], "matrix": [[...]]}``; rows are true labels, columns
    predicted. ``labels`` defaults to every label in ``y_true`` or ``y_pred``, so off-cohort
    predictions stay visible."""
    t, p = _as_str(y_true), _as_str(y_pred)
    labs = list(labels) if labels is not None else sorted(set(t) | set(p))
    matrix = confusion_matrix(t, p, labels=labs)
    return {"labels": labs, "matrix": matrix.astype(int).tolist()}


def expected_calibration_error(
    probs: np.ndarray,
    y_true: np.ndarray | Sequence[Any],
    *,
    classes: Sequence[str] | None = None,
    n_bins: int = 15,
) -> float:
    """Top-label ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)| over ``n_bins`` equal-width confidence
    bins (lo, hi] (Guo et al., ICML 2017). ``probs``: (N, C); ``y_true``: (N,) class indices, or labels
    with ``classes`` (C,) naming the columns."""
    p = np.asarray(probs, dtype=np.float64)
    if classes is not None:
        lookup = {c: i for i, c in enumerate(classes)}
        truth = np.array([lookup.get(str(v), -1) for v in np.asarray(y_true)], dtype=np.int64)
    else:
        truth = np.asarray(y_true, dtype=np.int64)
    if len(p) == 0:
        return 0.0
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == truth).astype(np.float64)
    # Bin b holds confidences in (b / n_bins, (b + 1) / n_bins]; confidence 0 goes to the first bin.
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    # (|B| / N) * |acc(B) - conf(B)| = |sum of correct - sum of confidence| / N per bin.
    return float(np.abs(acc_sum - conf_sum).sum() / len(p))


def _macro_f1_from_confusions(cm: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 over the first ``n_labels`` classes of confusion matrices (B, K, K) -> (B,), K >=
    n_labels (extra rows/columns: labels outside the scored set). zero_division=0 as in scikit-learn."""
    idx = np.arange(n_labels)
    tp = cm[:, idx, idx].astype(np.float64)
    support = cm[:, :n_labels, :].sum(axis=2)  # true counts, whatever was predicted
    predicted = cm[:, :, :n_labels].sum(axis=1)  # predicted counts, whatever was true
    denom = (support + predicted).astype(np.float64)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return np.asarray(f1.mean(axis=1))


def bootstrap_intervals(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 64,
) -> dict[str, Any]:
    """Percentile bootstrap intervals for macro-F1 (over ``labels``, default present in ``y_true``)
    and accuracy: ``{"macro_f1": [lo, hi], "accuracy": [lo, hi], "n_boot": B, "confidence": c}``.

    Each resample draws N rows with replacement; its confusion matrix comes from one ``bincount``
    over (resample, true, predicted) codes, with one extra row/column for labels outside ``labels``.
    """
    t, p = _as_str(y_true), _as_str(y_pred)
    labs = list(labels) if labels is not None else present_labels(t)
    n = len(t)
    if n == 0 or n_boot <= 0 or not labs:
        return {"macro_f1": None, "accuracy": None, "n_boot": n_boot, "confidence": confidence}
    lookup = {lab: i for i, lab in enumerate(labs)}
    k = len(labs) + 1  # last index: "outside labels"
    t_idx = np.array([lookup.get(v, k - 1) for v in t], dtype=np.int64)
    p_idx = np.array([lookup.get(v, k - 1) for v in p], dtype=np.int64)
    codes = t_idx * k + p_idx
    exact = (t == p).astype(np.float64)
    rng = np.random.default_rng(seed)
    f1s = np.empty(n_boot, dtype=np.float64)
    accs = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n, size=(b, n))  # (b, N) row indices
        flat = codes[draws] + (np.arange(b)[:, None] * k * k)
        cm = np.bincount(flat.ravel(), minlength=b * k * k).reshape(b, k, k)
        f1s[start : start + b] = _macro_f1_from_confusions(cm, k - 1)
        accs[start : start + b] = exact[draws].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return {
        "macro_f1": [float(np.quantile(f1s, alpha)), float(np.quantile(f1s, 1.0 - alpha))],
        "accuracy": [float(np.quantile(accs, alpha)), float(np.quantile(accs, 1.0 - alpha))],
        "n_boot": n_boot,
        "confidence": confidence,
    }


def evaluate(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    *,
    probs: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    sources: np.ndarray | Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Full report for one test set: macro-F1, per-class F1, accuracy, confusion matrix, bootstrap
    intervals, ECE (when ``probs`` (N, C) with column names ``classes`` are given) and a per-source
    breakdown (when ``sources`` (N,) is given). Scored over the labels present in ``y_true``."""
    t, p = _as_str(y_true), _as_str(y_pred)
    labs = present_labels(t)
    report: dict[str, Any] = {
        "n": len(t),
        "labels": labs,
        "macro_f1": macro_f1(t, p, labels=labs),
        "accuracy": accuracy(t, p),
        "per_class_f1": per_class_f1(t, p, labels=labs),
        "confusion": confusion(t, p),
        "bootstrap": bootstrap_intervals(t, p, labels=labs, n_boot=n_boot, seed=seed),
    }
    if probs is not None:
        if classes is None:
            raise ValueError("probs needs classes naming its columns")
        report["ece"] = expected_calibration_error(probs, t, classes=classes)
    if sources is not None:
        report["per_source"] = per_source(t, p, sources)
    return report


def per_source(
    y_true: np.ndarray | Sequence[Any],
    y_pred: np.ndarray | Sequence[Any],
    sources: np.ndarray | Sequence[Any],
) -> dict[str, dict[str, Any]]:
    """{source: {"n", "labels", "macro_f1", "accuracy"}}, each source scored over its own labels."""
    t, p, s = _as_str(y_true), _as_str(y_pred), _as_str(sources)
    if not (len(t) == len(p) == len(s)):
        raise ValueError("y_true, y_pred and sources must have the same length")
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(set(s)):
        rows = s == source
        out[source] = {
            "n": int(rows.sum()),
            "labels": present_labels(t[rows]),
            "macro_f1": macro_f1(t[rows], p[rows]),
            "accuracy": accuracy(t[rows], p[rows]),
        }
    return out


def attribute_scores(
    true_attributes: Mapping[str, np.ndarray | Sequence[Any]],
    pred_attributes: Mapping[str, np.ndarray | Sequence[Any]],
) -> dict[str, Any]:
    """Per-attribute macro-F1 and their mean (the WBCAtt model-selection score, Tsutsui et al. 2023).

    Both mappings: attribute -> (N,) str; cells whose true value is ``''`` are left out of that
    attribute. Returns ``{"mean_macro_f1": float | None, "per_attribute": {attr: {"n", "macro_f1"}}}``;
    an attribute with no labelled cell gets ``macro_f1: None`` and is left out of the mean.
    """
    per: dict[str, dict[str, Any]] = {}
    for attr, truth in true_attributes.items():
        if attr not in pred_attributes:
            raise ValueError(f"no predictions for attribute {attr!r}")
        t, p = _as_str(truth), _as_str(pred_attributes[attr])
        keep = t != MISSING
        per[attr] = {"n": int(keep.sum()), "macro_f1": macro_f1(t[keep], p[keep]) if keep.any() else None}
    values = [v["macro_f1"] for v in per.values() if v["macro_f1"] is not None]
    return {"mean_macro_f1": float(np.mean(values)) if values else None, "per_attribute": per}


# -- learning curves ----------------------------------------------------------------------------------


def _curve(
    labels_count: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct label counts and the mean score at each (averages repeated seeds)."""
    x = np.asarray(labels_count, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("labels_count and scores must be equal-length, non-empty 1-D sequences")
    ux, inverse = np.unique(x, return_inverse=True)
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return ux, uy


def area_under_learning_curve(
    labels_count: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    x_range: tuple[float, float] | None = None,
    log_x: bool = False,
) -> float:
    """Normalised area under the learning curve: the trapezoid area over ``x_range`` (default: the
    curve's own first..last label count) divided by the range's width, i.e. the mean score over the
    budget range (in [0, 1] for scores in [0, 1]). Repeated label counts (seeds) are averaged first;
    the curve is held flat outside its points. ``log_x`` integrates over log(labels), weighting the
    low-budget end as the cold-start literature does. A single point returns its score."""
    x, y = _curve(labels_count, scores)
    lo, hi = x_range if x_range is not None else (float(x[0]), float(x[-1]))
    if hi <= lo:
        return float(np.interp(lo, x, y))
    grid_x = np.unique(np.concatenate([[lo, hi], x[(x > lo) & (x < hi)]]))
    grid_y = np.interp(grid_x, x, y)
    if log_x:
        if lo <= 0:
            raise ValueError("log_x needs positive label counts")
        grid_x = np.log(grid_x)
        lo, hi = float(np.log(lo)), float(np.log(hi))
    area = float(np.sum((grid_x[1:] - grid_x[:-1]) * (grid_y[1:] + grid_y[:-1]) / 2.0))
    return area / (hi - lo)


def labels_to_reach(
    labels_count: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    target: float,
    *,
    interpolate: bool = True,
) -> float | None:
    """Fewest labels at which the (seed-averaged) curve reaches ``target``; None if it never does.
    With ``interpolate`` the crossing is located linearly between the two bracketing points,
    otherwise the first measured label count at or above the target is returned."""
    x, y = _curve(labels_count, scores)
    hits = np.flatnonzero(y >= target)
    if len(hits) == 0:
        return None
    i = int(hits[0])
    if i == 0 or not interpolate:
        return float(x[i])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def summarise_learning_curves(
    curves: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    *,
    reference_score: float | None = None,
    fractions: Sequence[float] = (0.95, 0.99),
    random_key: str = "random",
    log_x: bool = False,
    interpolate: bool = True,
) -> dict[str, Any]:
    """Compare strategies from their learning curves.

    ``curves``: strategy -> (labels_count (P,), macro_f1 (P,)); repeated counts (seeds) are averaged.
    ``reference_score``: the score to reach fractions of (e.g. the full-label macro-F1); default: the
    best seed-averaged score of any curve. All curves are integrated over the common label range.
    Returns ``{"reference_score", "x_range", "strategies": {name: {"aulc", "final", "labels_to_reach":
    {"0.95": n | None}, "speedup_vs_random": {"0.95": r | None}}}}``, where the speed-up is labels
    random needs / labels the strategy needs for the same target (None when either never gets there).
    """
    if not curves:
        raise ValueError("no curves given")
    parsed = {name: _curve(x, y) for name, (x, y) in curves.items()}
    ref = reference_score if reference_score is not None else max(float(y.max()) for _, y in parsed.values())
    lo = max(float(x[0]) for x, _ in parsed.values())
    hi = min(float(x[-1]) for x, _ in parsed.values())
    if hi < lo:  # disjoint label ranges: integrate each over its own
        x_range: tuple[float, float] | None = None
    else:
        x_range = (lo, hi)
    needed: dict[str, dict[str, float | None]] = {}
    out: dict[str, Any] = {
        "reference_score": ref,
        "x_range": list(x_range) if x_range else None,
        "strategies": {},
    }
    for name, (x, y) in parsed.items():
        needed[name] = {f"{f:g}": labels_to_reach(x, y, f * ref, interpolate=interpolate) for f in fractions}
        out["strategies"][name] = {
            "aulc": area_under_learning_curve(x, y, x_range=x_range, log_x=log_x),
            "final": float(y[-1]),
            "labels_to_reach": needed[name],
        }
    for name in parsed:
        speed: dict[str, float | None] = {}
        for key, n_strategy in needed[name].items():
            n_random = needed.get(random_key, {}).get(key)
            speed[key] = n_random / n_strategy if n_random is not None and n_strategy else None
        out["strategies"][name]["speedup_vs_random"] = speed
    return out


def knn_predict(
    train_x: np.ndarray, train_y: np.ndarray | Sequence[Any], test_x: np.ndarray, *, k: int = 20
) -> np.ndarray:
    """Majority vote of the ``k`` most cosine-similar training cells (ties: the most similar wins).

    The usual label-free measure of embedding quality (e.g. Wu et al. 2018, Caron et al. 2021 use a
    weighted k-NN); ``train_x`` (N, D), ``test_x`` (M, D); returns (M,) str predictions.
    """
    from learning.index import EmbeddingIndex  # FAISS only when needed

    labels = _as_str(train_y)
    classes, codes = np.unique(labels, return_inverse=True)
    index = EmbeddingIndex.build(train_x, ivf_threshold=10**12)
    _sims, neighbours = index.search(test_x, min(k, len(train_x)))
    votes = np.zeros((len(test_x), len(classes)), dtype=np.float64)
    rows = np.repeat(np.arange(len(test_x)), neighbours.shape[1])
    # A tiny rank-decaying weight breaks ties in favour of the closer neighbours.
    weights = np.tile(1.0 + 1e-6 * np.arange(neighbours.shape[1], 0, -1), len(test_x))
    np.add.at(votes, (rows, codes[neighbours.ravel()]), weights)
    return np.asarray(classes[votes.argmax(axis=1)])


def knn_macro_f1(
    train_x: np.ndarray,
    train_y: np.ndarray | Sequence[Any],
    test_x: np.ndarray,
    test_y: np.ndarray | Sequence[Any],
    *,
    k: int = 20,
) -> float:
    """Macro-F1 of :func:`knn_predict` on a labelled test set (over the labels present in ``test_y``)."""
    return macro_f1(test_y, knn_predict(train_x, train_y, test_x, k=k))
