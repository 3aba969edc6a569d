"""The attribute heads scored offline on the loop's last round: logistic or boosted measurement heads.

Takes the arrays a loop-benchmark run saved at its last round (``python -m learning benchmark ...
--save-final-arrays DIR``: the labelled pool rows and their embeddings on that round's encoder, the test
cells' embeddings), measures those cells (:mod:`learning.morphometry`, cached), and fits the product's
attribute heads (:class:`learning.attribute_heads.FusedAttributeHeads`, each attribute's measurement
weight chosen on the labelled cells) with each measurement head of ``--measurement-kinds``: the
class-balanced logistic regression the product ships, or gradient-boosted trees (``"boosted"``). Scored
on every test cell with attributes, as the loop benchmark's ``attribute_mean_macro_f1``; timed twice,
one thread: choosing the weights and fitting (the product's embed job), and refitting with the chosen
weights (what every retrain does before its batch is written).

Example::

    .venv/bin/python bench/loop_attribute_heads.py --pool var/bench/split/pool.csv \\
        --test var/bench/split/test.csv var/bench/loop_arrays/hybrid_seed{0,1,2,3,4}.npz \\
        --out bench/results/loop_attribute_heads.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learning.attribute_heads import FusedAttributeHeads  # noqa: E402
from learning.classifiers import MISSING, ClassifierKind  # noqa: E402
from learning.data import read_manifest  # noqa: E402
from learning.evaluation import attribute_scores  # noqa: E402
from learning.morphometry import measure_cached  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("arrays", type=Path, nargs="+", help="--save-final-arrays .npz files")
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--measurement-kinds", default="logreg,boosted")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/embeddings"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    kinds = [cast(ClassifierKind, k) for k in args.measurement_kinds.split(",")]
    pool, test = read_manifest(args.pool), read_manifest(args.test)
    attributes = sorted({a for r in pool for a in r.attributes})
    schema = {a: sorted({r.attributes[a] for r in [*pool, *test] if a in r.attributes}) for a in attributes}
    test_attributes = {
        a: np.array([r.attributes.get(a, MISSING) for r in test], dtype=object) for a in attributes
    }
    missing = np.full(len(test), MISSING, dtype=object)  # for an attribute no labelled cell carries
    test_m = measure_cached([str(r.path) for r in test], args.cache_dir, workers=args.workers)
    runs: list[dict[str, Any]] = []
    for path in args.arrays:
        saved = np.load(path)
        rows = saved["labelled"]
        labelled = [pool[i] for i in rows]
        # The arrays' rows index the pool manifest in its order: their classes must be the manifest's.
        if [str(r.label) for r in labelled] != [str(v) for v in saved["labels"]]:
            raise SystemExit(f"{path}: the labelled rows do not match {args.pool}'s order")
        lab_m = measure_cached([str(r.path) for r in labelled], args.cache_dir, workers=args.workers)
        lab_attributes = {a: np.array([r.attributes.get(a, MISSING) for r in labelled]) for a in attributes}
        attribute_cells = int(sum(bool(r.attributes) for r in labelled))
        results: dict[str, Any] = {}
        with threadpool_limits(limits=1):
            for kind in kinds:
                t0 = time.perf_counter()
                heads = FusedAttributeHeads(
                    schema, measurement_weight="cross-validated", measurement_kind=kind
                )
                heads.fit(saved["labelled_x"], lab_m, lab_attributes)
                fit_s = time.perf_counter() - t0
                # What a retrain after each batch does: the heads refitted with the weights chosen above
                # (the product chooses them in the embed job, off the batch's path).
                t0 = time.perf_counter()
                FusedAttributeHeads(schema, measurement_weight=heads.weights_, measurement_kind=kind).fit(
                    saved["labelled_x"], lab_m, lab_attributes
                )
                refit_s = time.perf_counter() - t0
                predicted = heads.predict(saved["test_x"], test_m)
                report = attribute_scores(test_attributes, {a: predicted.get(a, missing) for a in attributes})
                results[kind] = {
                    "mean_macro_f1": report["mean_macro_f1"],
                    "per_attribute": {a: v["macro_f1"] for a, v in report["per_attribute"].items()},
                    "weights": heads.weights_,
                    "fit_seconds_choosing_weights": round(fit_s, 2),
                    "refit_seconds_chosen_weights": round(refit_s, 2),
                    "attribute_cells": attribute_cells,
                }
                print(
                    f"{path.name} {kind}: {report['mean_macro_f1']:.4f} "
                    f"(choosing weights {fit_s:.1f} s, refit {refit_s:.1f} s)"
                )
        runs.append({"arrays": str(path), "labels": len(rows), "results": results})
    mean = {k: round(float(np.mean([r["results"][k]["mean_macro_f1"] for r in runs])), 4) for k in kinds}
    per_attribute = {
        k: {
            a: round(float(np.mean([r["results"][k]["per_attribute"][a] for r in runs])), 4)
            for a in attributes
        }
        for k in kinds
    }
    print("mean over runs:", mean)
    for a in attributes:
        print(a.ljust(28) + "".join(f"{per_attribute[k][a]:10.3f}" for k in kinds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"command": " ".join(sys.argv), "mean": mean, "per_attribute": per_attribute, "runs": runs},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
