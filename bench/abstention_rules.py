"""Which abstention rule keeps another lab's healthy cells from being answered "blast"?

Reads the fine-tuned embeddings ``bench/finetune_recipe.py --save-features`` wrote (labelled pool rows,
held-out test cells, external cells), fits the product's classifier on the labelled cells (class-balanced
logistic regression), and scores rules for when the model should abstain:

* ``global``: the cell's nearest labelled cell lies farther than the labelled cells' own 0.98-quantile
  distance to their nearest labelled neighbour (the product's rule until 2026-12-05);
* ``product``: :class:`learning.shift.LabelledNeighbourhood` with the labelled cells' classes, as the
  platform now abstains: the global rule and the per-class one (k = 3, q = 0.98);
* ``class_k<k>_q<q>``: the global rule, and abstain too where the cell's k-th nearest labelled cell *of
  the class it is predicted* lies farther than the q-quantile of that class's labelled cells' distances
  to their k-th nearest labelled cell of the same class (a cell called blast must lie among labelled
  blasts, not merely near some labelled cell);
* ``confidence_<p>``: the classifier's top probability below p (for comparison: confident mistakes pass).

Per rule: share of held-out test cells abstained on, their macro-F1 where answered, the share of the
held-out blasts abstained on (a blast the model abstains on goes to a person; one answered otherwise is
missed), the share of external cells abstained on and the share of all external cells answered "blast".

    .venv/bin/python bench/abstention_rules.py --pool var/bench/split/pool.csv \\
        --test var/bench/split/test.csv --external ../shared/data/external_bccd/manifest.csv \\
        --features var/bench/ft_ext/supervised_seed{0,1,2}.npz --out bench/results/abstention_rules.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learning.classifiers import AlignedClassifier  # noqa: E402
from learning.data import read_manifest  # noqa: E402
from learning.evaluation import macro_f1  # noqa: E402
from learning.finetune_benchmark import normalise  # noqa: E402
from learning.shift import ABSTAIN_RATIO, LabelledNeighbourhood  # noqa: E402

QUANTILES = (0.95, 0.98)
NEIGHBOURS = (1, 3, 5)
CONFIDENCES = (0.5, 0.7, 0.9)


def kth_smallest(distances: np.ndarray, k: int) -> np.ndarray:
    return np.partition(distances, k - 1, axis=1)[:, k - 1]


def rule_rows(
    labelled: np.ndarray,
    labels: np.ndarray,
    cells: np.ndarray,
    predicted: np.ndarray,
    probs: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per rule, (N,) True where the model answers ``cells`` (L2-normalised, outside the labelled set)."""
    global_hood = LabelledNeighbourhood.build(labelled)
    hood = LabelledNeighbourhood.build(labelled, labels=labels)
    assert hood is not None and global_hood is not None
    out = {
        "none": np.ones(len(cells), dtype=bool),
        "global": global_hood.ratios(cells) <= ABSTAIN_RATIO,
        "product": hood.ratios(cells, predicted=predicted) <= ABSTAIN_RATIO,
    }
    # The per-class rule at other quantiles and neighbours, by hand, each with the global rule (the
    # product's is ABSTAIN_QUANTILE and CLASS_NEIGHBOURS, above).
    for k in NEIGHBOURS:
        for q in QUANTILES:
            answered = out["global"].copy()
            for name in np.unique(predicted):
                own = labelled[labels == name]
                asked = predicted == name
                if len(own) <= k:
                    continue
                # Cosine distances, as the product's index measures them: the embeddings are unit vectors.
                within = 1.0 - own @ own.T
                np.fill_diagonal(within, np.inf)
                limit = float(np.quantile(kth_smallest(within, k), q))
                answered[asked] &= kth_smallest(1.0 - cells[asked] @ own.T, k) <= limit
            out[f"class_k{k}_q{q:g}"] = answered
    for p in CONFIDENCES:
        out[f"confidence_{p:g}"] = probs.max(axis=1) >= p
    return out


def score_seed(
    path: Path, pool_y: np.ndarray, test_y: np.ndarray, external_y: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    saved = np.load(path)
    rows = saved["rows"]
    labelled, test, external = (normalise(saved[k]) for k in ("labelled", "test", "external"))
    labels = pool_y[rows]
    with threadpool_limits(limits=1):
        model = AlignedClassifier(classes, "logreg", class_weight="balanced", seed=0).fit(labelled, labels)
    test_probs, external_probs = model.predict_proba(test), model.predict_proba(external)
    test_pred = np.asarray(classes)[test_probs.argmax(axis=1)]
    external_pred = np.asarray(classes)[external_probs.argmax(axis=1)]
    test_rules = rule_rows(labelled, labels, test, test_pred, test_probs)
    external_rules = rule_rows(labelled, labels, external, external_pred, external_probs)
    blasts = test_y == "blast"
    report: dict[str, Any] = {}
    for name, kept in test_rules.items():
        ext_kept = external_rules[name]
        report[name] = {
            "test_abstain": round(float(1 - kept.mean()), 4),
            "test_macro_f1_answered": round(macro_f1(test_y[kept], test_pred[kept]), 4),
            "test_blasts_abstained": round(float(1 - kept[blasts].mean()), 4),
            "test_blasts_answered_blast": round(float((kept & (test_pred == "blast"))[blasts].mean()), 4),
            "test_false_blasts_answered": int((kept & (test_pred == "blast") & ~blasts).sum()),
            "external_abstain": round(float(1 - ext_kept.mean()), 4),
            "external_answered_blast": round(float((ext_kept & (external_pred == "blast")).mean()), 4),
        }
    few = few_labels(labelled, labels, test, external, model, classes)
    return {"features": str(path), "rules": report, "few_labels": few}


# Labelled cells per class for the few-labels check: the loop's first batches have a handful per class.
FEW = (2, 5, 10, 20, 30, 45, 90)


def few_labels(
    labelled: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    external: np.ndarray,
    model: AlignedClassifier,
    classes: list[str],
) -> dict[str, dict[str, float]]:
    """The share of held-out test cells each rule abstains on, and of external cells answered "blast",
    when only the first n labelled cells of each class are kept (the classifier stays the one fitted on
    all: only the neighbourhood shrinks), as in the loop's first batches."""
    predicted = np.asarray(classes)[model.predict_proba(test).argmax(axis=1)]
    external_predicted = np.asarray(classes)[model.predict_proba(external).argmax(axis=1)]
    called_blast = external_predicted == "blast"
    out: dict[str, dict[str, float]] = {}
    for n in FEW:
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in classes])
        hood = LabelledNeighbourhood.build(labelled[keep], labels=labels[keep])
        assert hood is not None
        out[str(n)] = {
            "global": round(float((hood.ratios(test) > ABSTAIN_RATIO).mean()), 4),
            "product": round(float((hood.ratios(test, predicted=predicted) > ABSTAIN_RATIO).mean()), 4),
            "external_blast_global": round(
                float((called_blast & (hood.ratios(external) <= ABSTAIN_RATIO)).mean()), 4
            ),
            "external_blast_product": round(
                float(
                    (
                        called_blast & (hood.ratios(external, predicted=external_predicted) <= ABSTAIN_RATIO)
                    ).mean()
                ),
                4,
            ),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--external", type=Path, required=True)
    parser.add_argument("--features", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pool, test, external = (read_manifest(p) for p in (args.pool, args.test, args.external))
    pool_y = np.array([r.label for r in pool])
    classes = sorted({str(r.label) for r in pool if r.label})
    test_y = np.array([r.label for r in test])
    external_y = np.array([r.label for r in external])
    seeds = [score_seed(p, pool_y, test_y, external_y, classes) for p in args.features]
    mean = {
        rule: {
            k: round(float(np.mean([s["rules"][rule][k] for s in seeds])), 4) for k in seeds[0]["rules"][rule]
        }
        for rule in seeds[0]["rules"]
    }
    out = {"command": " ".join(sys.argv), "seeds": seeds, "mean": mean}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for n in FEW:
        rows = [s["few_labels"][str(n)] for s in seeds]
        print(
            f"{n} labelled per class: test abstained on, global {np.mean([r['global'] for r in rows]):.3f}, "
            f"product {np.mean([r['product'] for r in rows]):.3f}; external answered blast, global "
            f"{np.mean([r['external_blast_global'] for r in rows]):.3f}, "
            f"product {np.mean([r['external_blast_product'] for r in rows]):.3f}"
        )
    print(f"{'rule':<16} test_abst f1_ans blast_abst blast_ok ext_abst ext_blast")
    for rule, row in mean.items():
        print(
            f"{rule:<16} {row['test_abstain']:9.3f} {row['test_macro_f1_answered']:6.3f} "
            f"{row['test_blasts_abstained']:10.3f} {row['test_blasts_answered_blast']:8.3f} "
            f"{row['external_abstain']:8.3f} {row['external_answered_blast']:9.3f}"
        )


if __name__ == "__main__":
    main()
