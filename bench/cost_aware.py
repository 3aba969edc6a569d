"""Cost- and risk-aware acquisition against the hybrid on the same simulated budget of expert seconds.

    .venv/bin/python bench/cost_aware.py --seeds 5 --out bench/results/cost_aware.json

The loop is simulated on frozen features (ImageNet EfficientNet-Lite0, 64 px, cell crop: what a new
project starts on), on the duplicate-free split (``python -m learning split ... --out-dir var/bench/split``).
Every run starts from the same stratified 90 labels (10 per class, seeded), then buys batches of 48 chosen
by the strategy until the budget of seconds is spent; a class-balanced logistic regression is refitted
after every batch, as the loop does.

**Seconds per label are simulated, not measured**: this dataset has no recorded labelling times. Each
label costs a draw from a log-normal around its class's median (``--profile``; sigma 0.4). The default
profile assumes what hematologists report: the immature and rare classes (blast, immature granulocyte,
erythroblast) and the monocyte/lymphocyte pair take longer than a plain neutrophil, eosinophil or
platelet. ``flat`` (every class alike) is the control: there cost-awareness has nothing to exploit.
The cost-aware strategy does not see the profile: like the product (``loop.handlers.querying.
class_seconds``), it estimates each class's median from the seconds of the labels it bought so far.

Strategies: ``hybrid`` (the default), ``cost_aware`` (hybrid's margin per expected second), and
``cost_aware`` with ``--risk-class blast --risk-weight 3`` (a missed blast counts three times).
Reported: macro-F1 and blast recall on the 2,436 test cells at every ``--checkpoint`` seconds, labels
bought per class and seconds per label.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from learning.__main__ import embed_records  # noqa: E402
from learning.benchmark import initial_stratified  # noqa: E402
from learning.classifiers import make_classifier  # noqa: E402
from learning.data import read_manifest  # noqa: E402
from learning.evaluation import macro_f1  # noqa: E402
from learning.query import select  # noqa: E402
from learning.query.cost import median_seconds  # noqa: E402

PROFILES: dict[str, dict[str, float]] = {
    # Median seconds per label (assumed; see the module's docstring).
    "hard_classes_slower": {
        "basophil": 5.0,
        "blast": 12.0,
        "eosinophil": 3.0,
        "erythroblast": 8.0,
        "ig": 10.0,
        "lymphocyte": 5.0,
        "monocyte": 7.0,
        "neutrophil": 3.0,
        "platelet": 2.0,
    },
    "flat": {},
}
SIGMA = 0.4
MIN_TIMED = 5  # as loop.handlers.querying.MIN_TIMED


def label_seconds(labels: np.ndarray, profile: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """One simulated time per label: log-normal around its class's median (5 s for a class not named)."""
    medians = np.array([profile.get(str(c), 5.0) for c in labels])
    return medians * np.exp(rng.normal(0.0, SIGMA, size=len(labels)))


def estimated_seconds(classes: list[str], bought: np.ndarray, spent: np.ndarray) -> np.ndarray | None:
    """Per-class median of the seconds spent so far; the overall median for a class with too few (the
    product's rule, ``learning.query.cost.median_seconds``)."""
    by_class: dict[str, list[float]] = {}
    for label, seconds in zip(bought, spent, strict=True):
        by_class.setdefault(str(label), []).append(float(seconds))
    return median_seconds(by_class, classes, min_timed=MIN_TIMED)


def frozen_features(
    pool_path: Path, test_path: Path, image_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool features, pool labels, test features, test labels): frozen ImageNet EfficientNet-Lite0 with
    the cell crop, what a new project starts on (cached under var/embeddings)."""
    encoder = argparse.Namespace(
        encoder=None,
        backbone="efficientnet_lite0",
        pretrained=True,
        image_size=image_size,
        crop="cell",
        batch_size=256,
        workers=0,
    )
    pool, test = read_manifest(pool_path), read_manifest(test_path)
    pool_x, _ = embed_records(pool, encoder, REPO / "var/embeddings")
    test_x, _ = embed_records(test, encoder, REPO / "var/embeddings")
    return pool_x, np.array([r.label for r in pool]), test_x, np.array([r.label for r in test])


def write_result(path: Path, result: dict[str, Any]) -> None:
    """The run's JSON at ``path``; its summary printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result["summary"], indent=2))


def run(
    strategy: str,
    *,
    pool_x: np.ndarray,
    pool_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: list[str],
    true_seconds: np.ndarray,
    budget: float,
    checkpoints: list[float],
    batch: int,
    seed: int,
    weights: np.ndarray | None,
) -> dict[str, Any]:
    labelled = np.zeros(len(pool_y), dtype=bool)
    order: list[int] = list(initial_stratified(pool_y, 90, np.random.default_rng(10_000 + seed)))
    labelled[order] = True
    rng = np.random.default_rng(seed)
    curve: list[dict[str, Any]] = []

    def spent_now() -> float:
        return float(true_seconds[order].sum())

    def score() -> dict[str, Any]:
        model = make_classifier("logreg", classes, class_weight="balanced").fit(
            pool_x[labelled], pool_y[labelled]
        )
        predicted = model.predict(test_x)
        blasts = test_y == "blast"
        return {
            "seconds": round(spent_now(), 1),
            "labels": int(labelled.sum()),
            "macro_f1": round(macro_f1(test_y, predicted), 4),
            "blast_recall": round(float((predicted[blasts] == "blast").mean()), 4),
            "model": model,
        }

    pending = sorted(checkpoints)
    while True:
        state = score()
        model = state.pop("model")
        while pending and state["seconds"] >= pending[0]:
            curve.append({**state, "checkpoint": pending.pop(0)})
        if state["seconds"] >= budget:
            break
        probs = model.predict_proba(pool_x)
        options: dict[str, Any] = {}
        if strategy == "cost_aware":
            bought = pool_y[order]
            options = {
                "class_seconds": estimated_seconds(classes, bought, true_seconds[order]),
                "class_weights": weights,
            }
        picked = select(
            strategy, n=batch, embeddings=pool_x, probs=probs, labelled_mask=labelled, rng=rng, **options
        )
        # Label in the strategy's order until the budget is spent: the last batch may stop part-way.
        for row in picked:
            if spent_now() >= budget:
                break
            order.append(int(row))
            labelled[row] = True
    bought = pool_y[order]
    return {
        "strategy": strategy,
        "seed": seed,
        "final": curve[-1] if curve else state,
        "curve": curve,
        "labels_per_class": {c: int((bought == c).sum()) for c in classes},
        "seconds_per_label": round(spent_now() / len(order), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, default=REPO / "var/bench/split/pool.csv")
    parser.add_argument("--test", type=Path, default=REPO / "var/bench/split/test.csv")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="hard_classes_slower")
    parser.add_argument("--budget", type=float, default=3600.0, help="expert seconds per run")
    parser.add_argument("--checkpoint", type=float, default=600.0)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--risk-class", default="blast")
    parser.add_argument("--risk-weight", type=float, default=3.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    pool_x, pool_y, test_x, test_y = frozen_features(args.pool, args.test, args.image_size)
    classes = sorted(set(pool_y))
    weights = np.array([args.risk_weight if c == args.risk_class else 1.0 for c in classes])
    checkpoints = list(np.arange(args.checkpoint, args.budget + 1e-9, args.checkpoint))
    variants = [
        ("hybrid", None, "hybrid"),
        ("cost_aware", None, "cost_aware"),
        ("cost_aware", weights, "cost_aware+risk"),
    ]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        true_seconds = label_seconds(pool_y, PROFILES[args.profile], np.random.default_rng(1_000 + seed))
        for strategy, w, name in variants:
            result = run(
                strategy,
                pool_x=pool_x,
                pool_y=pool_y,
                test_x=test_x,
                test_y=test_y,
                classes=classes,
                true_seconds=true_seconds,
                budget=args.budget,
                checkpoints=checkpoints,
                batch=args.batch,
                seed=seed,
                weights=w,
            )
            result["variant"] = name
            runs.append(result)
            final = result["final"]
            print(
                f"seed {seed} {name}: {final['labels']} labels in {final['seconds']} s, macro-F1 "
                f"{final['macro_f1']}, blast recall {final['blast_recall']}",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for _, _, name in variants:
        mine = [r for r in runs if r["variant"] == name]
        summary[name] = {
            "macro_f1": round(float(np.mean([r["final"]["macro_f1"] for r in mine])), 4),
            "macro_f1_range": [
                min(r["final"]["macro_f1"] for r in mine),
                max(r["final"]["macro_f1"] for r in mine),
            ],
            "blast_recall": round(float(np.mean([r["final"]["blast_recall"] for r in mine])), 4),
            "labels": round(float(np.mean([r["final"]["labels"] for r in mine])), 1),
            "seconds_per_label": round(float(np.mean([r["seconds_per_label"] for r in mine])), 3),
            "labels_per_class": {
                c: round(float(np.mean([r["labels_per_class"][c] for r in mine])), 1) for c in classes
            },
            "curve": [
                {
                    "checkpoint": cp,
                    "macro_f1": round(float(np.mean([r["curve"][k]["macro_f1"] for r in mine])), 4),
                    "blast_recall": round(float(np.mean([r["curve"][k]["blast_recall"] for r in mine])), 4),
                    "labels": round(float(np.mean([r["curve"][k]["labels"] for r in mine])), 1),
                }
                for k, cp in enumerate(checkpoints)
                if all(len(r["curve"]) > k for r in mine)
            ],
        }
    out = {
        "command": "python bench/cost_aware.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "profile": {"name": args.profile, "median_seconds": PROFILES[args.profile], "sigma": SIGMA},
        "budget_seconds": args.budget,
        "batch": args.batch,
        "risk": {"class": args.risk_class, "weight": args.risk_weight},
        "seeds": args.seeds,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
