"""Abstention rules scored offline on the arrays a loop-benchmark run saved at its last round
(``python -m learning benchmark ... --external M --save-final-arrays DIR``): the labelled cells', test
cells' and another lab's embeddings on the round's encoder and on the initial (frozen) one, and the
round's class probabilities.

For each rule: the share of held-out test cells abstained on, the macro-F1 over the test cells answered,
the share of test blasts abstained on, the share of the other lab's cells abstained on, and the share of
them answered "blast" (healthy cells called blasts: the false alarm issue 13 counts, target <= 2%).

Rules (the distance rule is :class:`learning.shift.LabelledNeighbourhood`: the nearest labelled cell,
and the 3rd-nearest labelled cell of the predicted class, each in its own 0.98-quantile unit, against
ABSTAIN_RATIO; the temperature is fitted on one half of the test cells, the rules scored on the other):

- ``product_confident``: what the platform answers (the labelling page's suggestion, the exports'
  ``abstained``): the distance rule and a calibrated top probability of at least the default
  ``suggestion_min_confidence`` (0.6); ``product_confident<c>``: the same at a stricter c;
- ``product_distance_only``: the distance rule alone (the loop benchmark's ``product`` row);
- ``product_and_initial``: the distance rule on this round's and on the initial (frozen) features;
  ``product_confident_and_initial``: that and the confidence;
- ``product_knn10``: the distance rule and at least half of the cell's 10 nearest labelled cells of its
  predicted class;
- ``product_trust``: the distance rule and a trust score (Jiang et al. 2018: distance to the nearest
  labelled cell of another class over that to the nearest of the predicted class) of at least 1;
- ``product_class_floor<alpha>``: the product and a per-class floor (:mod:`learning.conformal`: the
  calibrated probability of the predicted class reaches what all but ``alpha`` of the calibrating half's
  cells of that class reach for it); ``product_correct_floor<alpha>``: floors over the cells the model
  also called that class (``among="correct"``); ``product_blast_floor<alpha>`` and
  ``product_blast_correct_floor<alpha>``: the same floors for blast only.

    .venv/bin/python bench/loop_abstention_rules.py var/bench/loop_arrays/seed*.npz \
        --out bench/results/loop_abstention_rules.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.calibration import apply_temperature
from learning.conformal import below_floor, class_confidence_floors
from learning.finetune_benchmark import held_out_confident
from learning.index import EmbeddingIndex
from learning.shift import ABSTAIN_RATIO, SUGGESTION_MIN_CONFIDENCE, LabelledNeighbourhood, abstention_row

# The product's default suggestion_min_confidence first, then stricter ones for the trade-off.
MIN_CONFIDENCES = (SUGGESTION_MIN_CONFIDENCE, 0.7, 0.8, 0.9)
# The share of a class's own held-out cells a per-class floor may withhold (learning.conformal).
FLOOR_ALPHAS = (0.02, 0.05, 0.1)


def product_kept(
    labelled: np.ndarray, labels: np.ndarray, cells: np.ndarray, predicted: np.ndarray
) -> np.ndarray:
    hood = LabelledNeighbourhood.build(labelled, labels=labels)
    assert hood is not None
    return hood.ratios(cells, predicted=predicted) <= ABSTAIN_RATIO


def knn_agrees(
    labelled: np.ndarray, labels: np.ndarray, cells: np.ndarray, predicted: np.ndarray, k: int
) -> np.ndarray:
    """At least half of the cell's k nearest labelled cells carry its predicted class."""
    index = EmbeddingIndex.build(np.ascontiguousarray(labelled, dtype=np.float32), np.arange(len(labelled)))
    _, rows = index.search(np.ascontiguousarray(cells, dtype=np.float32), k=k)
    votes = (labels[rows] == predicted[:, None]).mean(axis=1)
    return votes >= 0.5


def trust(labelled: np.ndarray, labels: np.ndarray, cells: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Distance to the nearest labelled cell of another class over that to the nearest of the predicted
    class (cosine distances; > 1: the predicted class's labelled cells are the nearer)."""
    distance = 1.0 - cells @ labelled.T  # (N, L): a few thousand by 811, small
    same = labels[None, :] == predicted[:, None]
    to_same = np.where(same, distance, np.inf).min(axis=1)
    to_other = np.where(~same, distance, np.inf).min(axis=1)
    return to_other / np.maximum(to_same, 1e-6)


def median_where(probs: np.ndarray, rows: np.ndarray) -> float | None:
    """Median top probability over ``rows``; None where there are none."""
    return round(float(np.median(probs[rows].max(axis=1))), 4) if rows.any() else None


def score_seed(path: Path) -> dict[str, Any]:
    a = np.load(path)
    classes = [str(c) for c in a["classes"]]
    labels, test_y = a["labels"], a["test_y"]
    test_probs, external_probs = a["test_probs"], a["external_probs"]
    pred_test = np.asarray(classes)[test_probs.argmax(axis=1)]
    pred_external = np.asarray(classes)[external_probs.argmax(axis=1)]
    # Temperature from one half of the test cells (the project's validation cells play this part),
    # rules scored on the other half and on the other lab.
    half = np.random.default_rng(0).permutation(len(test_y)) < len(test_y) // 2
    sure: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    temperature = 1.0
    for level in MIN_CONFIDENCES:
        test_sure, external_sure, temperature = held_out_confident(
            test_probs, external_probs, test_y, classes, half, level
        )
        sure[level] = (test_sure, external_sure)
    near = {
        space: (
            product_kept(a["labelled_x" + space], labels, a["test_x" + space], pred_test),
            product_kept(a["labelled_x" + space], labels, a["external_x" + space], pred_external),
        )
        for space in ("", "0")  # this round's encoder, the initial one
    }

    def both(*masks: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.logical_and.reduce([m[0] for m in masks]), np.logical_and.reduce([m[1] for m in masks])

    # Per-class floors (learning.conformal) from the calibrating half's calibrated probabilities, over
    # every cell of the class ("class") or over the model's right calls of it ("correct"); each for
    # every class and for blast alone, on top of what the product answers.
    calibrated_test = apply_temperature(test_probs, temperature)
    calibrated_external = apply_temperature(external_probs, temperature)

    def over(class_floors: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        return (
            ~below_floor(calibrated_test, classes, class_floors),
            ~below_floor(calibrated_external, classes, class_floors),
        )

    floors: dict[str, dict[str, float]] = {}
    floor_rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows_of: dict[Literal["class", "correct"], tuple[str, str]] = {
        "class": ("product_class_floor", "product_blast_floor"),
        "correct": ("product_correct_floor", "product_blast_correct_floor"),
    }
    for among, (every_class, blast_alone) in rows_of.items():
        for alpha in FLOOR_ALPHAS:
            f = class_confidence_floors(
                calibrated_test[half], test_y[half], classes, alpha=alpha, among=among
            )
            floors[f"{among}{alpha:g}"] = f
            blast = {"blast": f["blast"]} if "blast" in f else {}
            floor_rows[f"{every_class}{alpha:g}"] = both(near[""], sure[0.6], over(f))
            floor_rows[f"{blast_alone}{alpha:g}"] = both(near[""], sure[0.6], over(blast))
    votes = (
        knn_agrees(a["labelled_x"], labels, a["test_x"], pred_test, 10),
        knn_agrees(a["labelled_x"], labels, a["external_x"], pred_external, 10),
    )
    trusted = (
        trust(a["labelled_x"], labels, a["test_x"], pred_test) >= 1.0,
        trust(a["labelled_x"], labels, a["external_x"], pred_external) >= 1.0,
    )
    kept = {
        "none": (np.ones(len(test_y), dtype=bool), np.ones(len(pred_external), dtype=bool)),
        "product_distance_only": near[""],
        "product_confident": both(near[""], sure[0.6]),  # what the platform answers now
        "product_and_initial": both(near[""], near["0"]),
        "product_confident_and_initial": both(near[""], sure[0.6], near["0"]),
        "product_knn10": both(near[""], votes),
        "product_trust": both(near[""], trusted),
        **{f"product_confident{level:g}": both(near[""], sure[level]) for level in MIN_CONFIDENCES[1:]},
        **floor_rows,
    }
    return {
        "arrays": str(path),
        "temperature": round(float(temperature), 4),
        "class_floors": {str(key): {c: round(v, 4) for c, v in f.items()} for key, f in floors.items()},
        # How sure the model is where it says "blast": the other lab's cells against our test blasts.
        "median_confidence_called_blast": {
            "external": median_where(
                apply_temperature(external_probs, temperature), pred_external == "blast"
            ),
            "test_blasts": median_where(apply_temperature(test_probs, temperature), test_y == "blast"),
        },
        "rules": {
            name: abstention_row(t, e, test_y, pred_test, pred_external, scored=~half)
            for name, (t, e) in kept.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("arrays", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    seeds = [score_seed(p) for p in args.arrays]
    names = list(seeds[0]["rules"])
    mean = {
        rule: {
            k: round(float(np.mean([s["rules"][rule][k] for s in seeds])), 4) for k in seeds[0]["rules"][rule]
        }
        for rule in names
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"command": " ".join(sys.argv), "seeds": seeds, "mean": mean}, indent=2) + "\n"
    )
    print(f"{'rule':<30} test_abst f1_ans blast_abst ext_abst ext_blast   per seed ext_blast")
    for rule in names:
        row = mean[rule]
        each = " ".join(f"{s['rules'][rule]['external_answered_blast']:.3f}" for s in seeds)
        print(
            f"{rule:<30} {row['test_abstain']:9.3f} {row['test_macro_f1_answered']:6.3f} "
            f"{row['test_blasts_abstained']:10.3f} {row['external_abstain']:8.3f} "
            f"{row['external_answered_blast']:9.3f}   {each}"
        )
    for s in seeds:
        median = s["median_confidence_called_blast"]
        print(f"{s['arrays']}: median calibrated confidence where it says blast {median}")


if __name__ == "__main__":
    main()
