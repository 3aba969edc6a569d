"""Simulated active learning: an oracle answers with the pool's labels, the classifier is retrained after
every batch, and each strategy's learning curve (macro-F1 on a held-out test set vs labels spent) is
recorded over several seeds.

Protocol (CDALBench-style, see ../shared/docs/ANCHORS.md): the same initial labelled set per seed for
every strategy (``stratified``: one batch spread over the classes; ``cold``: each strategy picks its own
first batch with no labels), ``rounds`` queries of ``batch`` cells, a frozen-embedding classifier
refit from scratch after each, the test set never touched by the loop. The full-label reference is the
same classifier fitted on every pool label. Pure numpy over arrays: no Django, no images.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learning.adaptation import adapt_to_site
from learning.attribute_heads import PRODUCT_MEASUREMENT_KIND, PRODUCT_WEIGHTS_KIND, FusedAttributeHeads
from learning.classifiers import MISSING, ClassifierKind, make_classifier
from learning.evaluation import (
    attribute_scores,
    evaluate,
    external_report,
    knn_macro_f1,
    macro_f1,
    summarise_learning_curves,
)
from learning.query import STRATEGIES, resolve_strategy, select

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ALProblem:
    """Arrays of one benchmark: pool (labelled by the oracle on request) and test embeddings.

    ``pool_x`` (N, D) and ``test_x`` (M, D) float32; ``pool_y`` (N,) / ``test_y`` (M,) str labels;
    ``classes``: the label list, in column order; ``*_sources``: (N,)/(M,) str or None;
    ``*_attributes``: attribute -> (N,)/(M,) str with ``''`` where a cell has no annotation.
    """

    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    test_sources: np.ndarray | None = None
    pool_attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    test_attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    attribute_classes: Mapping[str, list[str]] = field(default_factory=dict)
    # The cells' measurements (learning.morphometry), heard by the attribute heads beside the embedding;
    # None: the embedding's heads alone.
    pool_measurements: np.ndarray | None = None
    test_measurements: np.ndarray | None = None
    # Another lab's cells (never trained on), scored over the classes they hold (``--external``).
    external_x: np.ndarray | None = None
    external_y: np.ndarray | None = None
    # Labels of the external lab to adapt each final model with (``--adapt-labels``; 0: none).
    adapt_labels: int = 0


@dataclass
class RoundRecord:
    strategy: str
    seed: int
    round: int
    labels: int
    macro_f1: float
    accuracy: float
    retrain_seconds: float
    query_seconds: float
    ran_as: str


def initial_stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices spread as evenly as possible over the classes (round-robin, random within)."""
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(members) for members in by_class):
        for members in by_class:
            if depth < len(members) and len(picked) < n:
                picked.append(int(members[depth]))
        depth += 1
    return np.asarray(picked, dtype=np.int64)


def run_strategy(
    problem: ALProblem,
    strategy: str,
    *,
    seed: int,
    start: str,
    batch: int,
    rounds: int,
    classifier: ClassifierKind = "logreg",
    class_balanced: bool = False,
) -> tuple[list[RoundRecord], np.ndarray]:
    """One learning curve. Returns the per-round records and the final labelled mask (N,) bool."""
    rng = np.random.default_rng(seed)
    n_pool = len(problem.pool_x)
    labelled = np.zeros(n_pool, dtype=bool)
    if start == "stratified":
        # Same start for every strategy of a seed: its own generator, independent of the strategy.
        labelled[initial_stratified(problem.pool_y, batch, np.random.default_rng(10_000 + seed))] = True
        first_query_s, first_ran_as = 0.0, "stratified"
    elif start == "cold":
        t0 = time.perf_counter()
        first_ran_as = resolve_strategy(strategy, probs=None, labelled_mask=labelled, n_pool=n_pool)
        labelled[select(strategy, n=batch, embeddings=problem.pool_x, labelled_mask=labelled, rng=rng)] = True
        first_query_s = time.perf_counter() - t0
    else:
        raise ValueError(f"start must be 'stratified' or 'cold', got {start!r}")

    records: list[RoundRecord] = []
    query_s, ran_as = first_query_s, first_ran_as
    options: dict[str, Any] = (
        {"class_balanced": True}
        if class_balanced and strategy in {"margin", "entropy", "least_confidence", "hybrid"}
        else {}
    )
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        model = make_classifier(classifier, problem.classes, seed=seed).fit(
            problem.pool_x[labelled], problem.pool_y[labelled]
        )
        pool_probs = model.predict_proba(problem.pool_x) if r < rounds else None
        retrain_s = time.perf_counter() - t0
        predicted = model.predict(problem.test_x)
        records.append(
            RoundRecord(
                strategy=strategy,
                seed=seed,
                round=r,
                labels=int(labelled.sum()),
                macro_f1=macro_f1(problem.test_y, predicted),
                accuracy=float(np.mean(predicted == problem.test_y)),
                retrain_seconds=retrain_s,
                query_seconds=query_s,
                ran_as=ran_as,
            )
        )
        if r == rounds:
            break
        t0 = time.perf_counter()
        ran_as = resolve_strategy(strategy, probs=pool_probs, labelled_mask=labelled, n_pool=n_pool)
        picked = select(
            strategy,
            n=batch,
            embeddings=problem.pool_x,
            probs=pool_probs,
            labelled_mask=labelled,
            rng=rng,
            **options,
        )
        query_s = time.perf_counter() - t0
        labelled[picked] = True
    return records, labelled


def attribute_report(
    problem: ALProblem, pool_x: np.ndarray, test_x: np.ndarray, labelled: np.ndarray, *, seed: int
) -> dict[str, Any]:
    """The attribute heads (:class:`learning.attribute_heads.FusedAttributeHeads`) trained on the
    labelled pool cells' embedding (and measurements, when the problem has them), scored on the test
    cells. Each attribute's measurement weight is chosen on the labelled cells, as the product's
    embed job chooses it for the retrains that follow, and the measurement heads are the product's
    (boosted trees, with weights chosen with logistic heads: ``learning.attribute_heads``)."""
    pool_m, test_m = problem.pool_measurements, problem.test_measurements
    with_measurements = pool_m is not None and test_m is not None
    heads = FusedAttributeHeads(
        problem.attribute_classes,
        measurement_weight="cross-validated",
        measurement_kind=PRODUCT_MEASUREMENT_KIND,
        weights_kind=PRODUCT_WEIGHTS_KIND,
        seed=seed,
    )
    heads.fit(
        pool_x[labelled],
        pool_m[labelled] if with_measurements and pool_m is not None else None,
        {a: v[labelled] for a, v in problem.pool_attributes.items()},
    )
    missing = np.full(len(test_x), MISSING, dtype=object)

    def scored(predicted: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return attribute_scores(
            dict(problem.test_attributes), {a: predicted.get(a, missing) for a in problem.test_attributes}
        )

    report = scored(heads.predict(test_x, test_m if with_measurements else None))
    report["heads"] = "embedding + measurements" if with_measurements else "embedding"
    report["measurement_weights"] = heads.weights_
    if with_measurements:
        # The same heads without the measurements, on the same labels: what the measurements add.
        report["embedding_only"] = scored(heads.predict(test_x, None))
    return report


def final_metrics(
    problem: ALProblem, labelled: np.ndarray, *, classifier: ClassifierKind, seed: int
) -> dict[str, Any]:
    """Test-set report of the model trained on ``labelled``: cell type and, if present, attributes."""
    model = make_classifier(classifier, problem.classes, seed=seed).fit(
        problem.pool_x[labelled], problem.pool_y[labelled]
    )
    probs = model.predict_proba(problem.test_x)
    report = evaluate(
        problem.test_y,
        model.predict(problem.test_x),
        probs=probs,
        classes=problem.classes,
        sources=problem.test_sources,
        n_boot=200,
        seed=seed,
    )
    if problem.external_x is not None and problem.external_y is not None:
        report["external"] = external_report(problem.external_y, model.predict(problem.external_x))
        if problem.adapt_labels:
            report["adapted"] = adapt_to_site(
                lambda: make_classifier(classifier, problem.classes, seed=seed),
                labelled_x=problem.pool_x[labelled],
                labelled_y=problem.pool_y[labelled],
                site_x=problem.external_x,
                site_y=problem.external_y,
                test_x=problem.test_x,
                test_y=problem.test_y,
                n=problem.adapt_labels,
                seed=seed,
            )
    if problem.pool_attributes:
        report["attributes"] = attribute_report(problem, problem.pool_x, problem.test_x, labelled, seed=seed)
        has_any = np.any([v[labelled] != "" for v in problem.pool_attributes.values()], axis=0)
        report["attributes"]["labelled_cells_with_attributes"] = int(has_any.sum())
    return report


def run_benchmark(
    problem: ALProblem,
    *,
    strategies: Sequence[str],
    seeds: Sequence[int],
    start: str = "stratified",
    batch: int = 90,
    rounds: int = 10,
    classifier: ClassifierKind = "logreg",
    class_balanced: bool = False,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[RoundRecord]]:
    """Every strategy over every seed; returns (summary, all round records)."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    full = make_classifier(classifier, problem.classes, seed=0).fit(problem.pool_x, problem.pool_y)
    full_f1 = macro_f1(problem.test_y, full.predict(problem.test_x))
    full_fit_s = time.perf_counter() - t0
    say(f"full-label macro-F1 {full_f1:.4f} ({len(problem.pool_x)} labels, {full_fit_s:.1f} s)")
    # Quality of the embedding itself, before any classifier: the usual 20-NN probe.
    knn20 = knn_macro_f1(problem.pool_x, problem.pool_y, problem.test_x, problem.test_y, k=20)
    say(f"20-NN macro-F1 of the embedding {knn20:.4f}")

    records: list[RoundRecord] = []
    finals: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    for seed in seeds:
        for strategy in strategies:
            run, labelled = run_strategy(
                problem,
                strategy,
                seed=seed,
                start=start,
                batch=batch,
                rounds=rounds,
                classifier=classifier,
                class_balanced=class_balanced,
            )
            records.extend(run)
            finals[strategy].append(final_metrics(problem, labelled, classifier=classifier, seed=seed))
            say(f"seed {seed} {strategy}: {run[-1].labels} labels -> macro-F1 {run[-1].macro_f1:.4f}")

    curves = {
        s: ([r.labels for r in records if r.strategy == s], [r.macro_f1 for r in records if r.strategy == s])
        for s in strategies
    }
    summary = summarise_learning_curves(
        curves, reference_score=full_f1, random_key="random" if "random" in strategies else "__none__"
    )
    for s in strategies:
        mine = [r for r in records if r.strategy == s]
        entry = summary["strategies"][s]
        entry["seconds"] = {
            "retrain_mean": float(np.mean([r.retrain_seconds for r in mine])),
            "retrain_max": float(np.max([r.retrain_seconds for r in mine])),
            "query_mean": float(np.mean([r.query_seconds for r in mine if r.round > 0] or [0.0])),
            "query_max": float(np.max([r.query_seconds for r in mine])),
        }
        entry["final_test"] = _mean_report(finals[s])
        entry["final_test_per_seed"] = finals[s]
    summary.update(
        {
            "full_label_macro_f1": full_f1,
            "full_label_fit_seconds": full_fit_s,
            "knn20_macro_f1": knn20,
            "pool_size": len(problem.pool_x),
            "test_size": len(problem.test_x),
            "protocol": {
                "start": start,
                "batch": batch,
                "rounds": rounds,
                "seeds": list(seeds),
                "classifier": classifier,
                "class_balanced": class_balanced,
            },
        }
    )
    return summary, records


def _mean_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if len(present) == len(values) else None


def _mean_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed-mean of the headline numbers of several ``evaluate`` reports."""
    out: dict[str, Any] = {
        "macro_f1": float(np.mean([r["macro_f1"] for r in reports])),
        "accuracy": float(np.mean([r["accuracy"] for r in reports])),
    }
    if all("ece" in r for r in reports):
        out["ece"] = float(np.mean([r["ece"] for r in reports]))
    if all("attributes" in r and r["attributes"]["mean_macro_f1"] is not None for r in reports):
        out["attribute_mean_macro_f1"] = float(np.mean([r["attributes"]["mean_macro_f1"] for r in reports]))
    if all("external" in r for r in reports):
        ext = [r["external"] for r in reports]
        out["external"] = {
            key: float(np.mean([e[key] for e in ext])) if all(e[key] is not None for e in ext) else None
            for key in ext[0]
            if key.startswith("macro_f1")
        }
        out["external"]["per_class_recall"] = {
            c: float(np.mean([e["per_class_recall"][c] for e in ext])) for c in ext[0]["per_class_recall"]
        }
        out["external"]["predicted_share"] = {
            c: float(np.mean([e["predicted_share"].get(c, 0.0) for e in ext]))
            for c in sorted({c for e in ext for c in e["predicted_share"]})
        }
    if all("adapted" in r for r in reports):
        adapted = [r["adapted"] for r in reports]
        out["adapted"] = {
            "labels": adapted[0]["labels"],
            "site_before_macro_f1_min20": _mean_of([a["site_before"]["macro_f1_min20"] for a in adapted]),
            "site_after_macro_f1_min20": _mean_of([a["site_after"]["macro_f1_min20"] for a in adapted]),
            "site_after_macro_f1_all": _mean_of([a["site_after"]["macro_f1_all"] for a in adapted]),
            "test_before": _mean_of([a["test_before"] for a in adapted]),
            "test_after": _mean_of([a["test_after"] for a in adapted]),
            "forgetting": _mean_of([a["forgetting"] for a in adapted]),
        }
    if all("per_source" in r for r in reports):
        sources = reports[0]["per_source"].keys()
        out["per_source_macro_f1"] = {
            s: float(np.mean([r["per_source"][s]["macro_f1"] for r in reports])) for s in sources
        }
    return out


def write_outputs(out_dir: Path, summary: Mapping[str, Any], records: Sequence[RoundRecord]) -> None:
    """``summary.json``, ``curves.csv`` and ``learning_curves.png`` (mean and min-max band over seeds)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    with (out_dir / "curves.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "strategy",
                "seed",
                "round",
                "labels",
                "macro_f1",
                "accuracy",
                "retrain_seconds",
                "query_seconds",
                "ran_as",
            ]
        )
        for r in records:
            writer.writerow(
                [
                    r.strategy,
                    r.seed,
                    r.round,
                    r.labels,
                    f"{r.macro_f1:.5f}",
                    f"{r.accuracy:.5f}",
                    f"{r.retrain_seconds:.4f}",
                    f"{r.query_seconds:.4f}",
                    r.ran_as,
                ]
            )
    plot_learning_curves(out_dir / "learning_curves.png", summary, records)


def plot_learning_curves(path: Path, summary: Mapping[str, Any], records: Sequence[RoundRecord]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    strategies = list(dict.fromkeys(r.strategy for r in records))
    for s in strategies:
        mine = [r for r in records if r.strategy == s]
        rounds = sorted({r.round for r in mine})
        x = np.array([np.mean([r.labels for r in mine if r.round == k]) for k in rounds])
        ys = [np.array([r.macro_f1 for r in mine if r.round == k]) for k in rounds]
        mean = np.array([y.mean() for y in ys])
        ax.plot(x, mean, marker="o", markersize=3, label=s)
        ax.fill_between(x, [y.min() for y in ys], [y.max() for y in ys], alpha=0.15)
    full = summary.get("full_label_macro_f1")
    if full is not None:
        ax.axhline(
            full, color="black", linestyle="--", linewidth=1, label=f"all {summary['pool_size']} labels"
        )
        ax.axhline(0.99 * full, color="gray", linestyle=":", linewidth=1, label="99% of full-label")
    ax.set_xlabel("labelled cells")
    ax.set_ylabel("macro-F1 on the test set")
    protocol = summary.get("protocol", {})
    ax.set_title(f"Active learning, {protocol.get('start')} start, {len(protocol.get('seeds', []))} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
