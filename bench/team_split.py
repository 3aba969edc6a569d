"""Split work among annotators who are quick at different classes: the cost-aware strategy's picks dealt
round-robin against dealt by each annotator's own seconds (``learning.query.cost.deal_by_seconds``), on
the same simulated budget of team seconds.

    .venv/bin/python bench/team_split.py --seeds 5 --out bench/results/team_split.json

As in ``bench/cost_aware.py`` (same features, split, start and refit; read its docstring): frozen ImageNet
EfficientNet-Lite0 features at 64 px with the cell crop, the duplicate-free split, 90 stratified labels to
start, a class-balanced logistic regression refitted after every round. Each round the cost-aware strategy
chooses ``--batch`` cells per annotator for all of them at once (split work), with each class's seconds
estimated from every label bought so far, as the product does; then the cells are dealt:

- ``round_robin``: in the strategy's order, one to each in turn (the product's deal for other strategies);
- ``by_seconds``: each annotator's seconds per class estimated from their own labels so far
  (``learning.query.cost.annotator_seconds``, what ``loop.handlers.querying.TimedSeconds`` computes from
  the page's records), then the deal with the fewest expected seconds for the team.

**The annotators and their seconds are simulated**: this set has no recorded labelling times. Each
annotator's median seconds of a class are ``cost_aware.py``'s ``hard_classes_slower`` medians times the
annotator's factor for the class (``TEAM``: a haematopathologist quick on immature cells, a technologist
quick on the routine ones, a resident slower on all); each label is a log-normal draw (sigma 0.4) around
it. The draws are fixed per cell and annotator for a seed, so both deals pay the same for the same work.

Reported per deal (mean of the seeds): macro-F1 and blast recall when the budget is spent, labels bought,
team seconds per label; and for the by-seconds runs, what the same rounds' cells would have cost dealt
round-robin (``same_cells_round_robin_seconds``): the saving on identical work.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO / "bench"))

from cost_aware import PROFILES, SIGMA, frozen_features, write_result  # noqa: E402

from learning.benchmark import initial_stratified  # noqa: E402
from learning.classifiers import make_classifier  # noqa: E402
from learning.evaluation import macro_f1  # noqa: E402
from learning.query import select  # noqa: E402
from learning.query.cost import annotator_seconds, deal_by_seconds, median_seconds  # noqa: E402

MIN_TIMED = 5  # as loop.handlers.querying.MIN_TIMED
IMMATURE = ("blast", "ig", "erythroblast")
ROUTINE = ("neutrophil", "eosinophil", "lymphocyte", "platelet", "basophil")
# Each annotator's factor on the profile's median seconds of a class (1 for a class not named).
TEAM: dict[str, dict[str, float]] = {
    "haematopathologist": {**dict.fromkeys(IMMATURE, 0.5), **dict.fromkeys(ROUTINE, 1.3)},
    "technologist": {**dict.fromkeys(IMMATURE, 1.8), **dict.fromkeys(ROUTINE, 0.6)},
    "resident": dict.fromkeys((*IMMATURE, *ROUTINE, "monocyte"), 1.5),
}
DEALS = ("round_robin", "by_seconds")


def true_seconds(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, P) the seconds each annotator takes on each cell: their median of its class times noise."""
    profile = PROFILES["hard_classes_slower"]
    columns = []
    for factors in TEAM.values():
        medians = np.array([profile.get(str(c), 5.0) * factors.get(str(c), 1.0) for c in labels])
        columns.append(medians * np.exp(rng.normal(0.0, SIGMA, size=len(labels))))
    return np.stack(columns, axis=1)


def run(
    deal: str,
    *,
    pool_x: np.ndarray,
    pool_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: list[str],
    seconds: np.ndarray,
    budget: float,
    batch: int,
    seed: int,
) -> dict[str, Any]:
    people = len(TEAM)
    labelled = np.zeros(len(pool_y), dtype=bool)
    start = list(initial_stratified(pool_y, 90, np.random.default_rng(10_000 + seed)))
    # (cell, annotator, seconds) of every label bought; the start is labelled round-robin.
    bought: list[tuple[int, int, float]] = [
        (c, i % people, float(seconds[c, i % people])) for i, c in enumerate(start)
    ]
    labelled[start] = True
    rng = np.random.default_rng(seed)
    same_cells_round_robin = 0.0
    dealt_seconds = 0.0

    def spent() -> float:
        return sum(s for _, _, s in bought)

    def fit() -> Any:
        return make_classifier("logreg", classes, class_weight="balanced").fit(
            pool_x[labelled], pool_y[labelled]
        )

    while spent() < budget:
        model = fit()
        probs = model.predict_proba(pool_x)
        by_class: dict[str, list[float]] = {}
        by_person: dict[int, dict[str, list[float]]] = {}
        for cell, person, s in bought:
            by_class.setdefault(str(pool_y[cell]), []).append(s)
            by_person.setdefault(person, {}).setdefault(str(pool_y[cell]), []).append(s)
        picked = select(
            "cost_aware",
            n=batch * people,
            embeddings=pool_x,
            probs=probs,
            labelled_mask=labelled,
            rng=rng,
            class_seconds=median_seconds(by_class, classes, min_timed=MIN_TIMED),
        )
        robin = [picked[p::people] for p in range(people)]
        shares = robin
        if deal == "by_seconds":
            estimate = annotator_seconds(
                by_class, by_person, classes, list(range(people)), min_timed=MIN_TIMED
            )
            if estimate is not None:
                sizes = [len(s) for s in robin]
                shares = [picked[pos] for pos in deal_by_seconds(probs[picked], estimate, sizes)]
            same_cells_round_robin += sum(float(seconds[s, p].sum()) for p, s in enumerate(robin))
            dealt_seconds += sum(float(seconds[s, p].sum()) for p, s in enumerate(shares))
        # The annotators label side by side, each in their batch's order, until the team's budget is spent.
        queue = sorted(
            ((k, p, int(c)) for p, share in enumerate(shares) for k, c in enumerate(share)),
            key=lambda t: t[:2],
        )
        for _, person, cell in queue:
            if spent() >= budget:
                break
            bought.append((cell, person, float(seconds[cell, person])))
            labelled[cell] = True
    model = fit()
    predicted = model.predict(test_x)
    blasts = test_y == "blast"
    cells = np.array([c for c, _, _ in bought])
    owners = np.array([p for _, p, _ in bought])
    names = list(TEAM)
    return {
        "deal": deal,
        "seed": seed,
        "labels": len(bought),
        "seconds": round(spent(), 1),
        "seconds_per_label": round(spent() / len(bought), 3),
        "macro_f1": round(macro_f1(test_y, predicted), 4),
        "blast_recall": round(float((predicted[blasts] == "blast").mean()), 4),
        "labels_per_class": {c: int((pool_y[cells] == c).sum()) for c in classes},
        "labels_per_annotator_class": {
            names[p]: {c: int(((owners == p) & (pool_y[cells] == c)).sum()) for c in classes}
            for p in range(people)
        },
        "same_cells_round_robin_seconds": round(same_cells_round_robin, 1) if deal == "by_seconds" else None,
        "same_cells_dealt_seconds": round(dealt_seconds, 1) if deal == "by_seconds" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, default=REPO / "var/bench/split/pool.csv")
    parser.add_argument("--test", type=Path, default=REPO / "var/bench/split/test.csv")
    parser.add_argument("--budget", type=float, default=3 * 3600.0, help="team seconds per run (3 x 1 hour)")
    parser.add_argument("--batch", type=int, default=48, help="cells per annotator and round")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    pool_x, pool_y, test_x, test_y = frozen_features(args.pool, args.test, 64)
    classes = sorted(set(pool_y))
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        seconds = true_seconds(pool_y, np.random.default_rng(1_000 + seed))
        for deal in DEALS:
            result = run(
                deal,
                pool_x=pool_x,
                pool_y=pool_y,
                test_x=test_x,
                test_y=test_y,
                classes=classes,
                seconds=seconds,
                budget=args.budget,
                batch=args.batch,
                seed=seed,
            )
            runs.append(result)
            print(
                f"seed {seed} {deal}: {result['labels']} labels, {result['seconds_per_label']} s each, "
                f"macro-F1 {result['macro_f1']}, blast recall {result['blast_recall']}",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for deal in DEALS:
        mine = [r for r in runs if r["deal"] == deal]

        def mean(key: str, rows: list[dict[str, Any]] = mine) -> float:
            return round(float(np.mean([r[key] for r in rows])), 4)

        summary[deal] = {
            "macro_f1": mean("macro_f1"),
            "macro_f1_range": [min(r["macro_f1"] for r in mine), max(r["macro_f1"] for r in mine)],
            "blast_recall": mean("blast_recall"),
            "labels": mean("labels"),
            "seconds_per_label": mean("seconds_per_label"),
            "labels_per_annotator_class": {
                name: {
                    c: round(float(np.mean([r["labels_per_annotator_class"][name][c] for r in mine])), 1)
                    for c in classes
                }
                for name in TEAM
            },
        }
        if deal == "by_seconds":
            robin = sum(r["same_cells_round_robin_seconds"] for r in mine)
            dealt = sum(r["same_cells_dealt_seconds"] for r in mine)
            summary[deal]["same_cells_saving"] = round(1.0 - dealt / robin, 4)
    out = {
        "command": "python bench/team_split.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "team": TEAM,
        "profile": {"median_seconds": PROFILES["hard_classes_slower"], "sigma": SIGMA},
        "budget_seconds": args.budget,
        "batch_per_annotator": args.batch,
        "seeds": args.seeds,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
