"""The attribute heads scored offline on the loop's last round: logistic or boosted measurement heads.

Takes the arrays a loop-benchmark run saved at its last round (``python -m learning benchmark ...
--save-final-arrays DIR``: the labelled pool rows and their embeddings on that round's encoder, the test
cells' embeddings), measures those cells (:mod:`learning.morphometry`, cached), and fits the product's
attribute heads (:class:`learning.attribute_heads.FusedAttributeHeads`, each attribute's measurement
weight chosen on the labelled cells) in each setup of ``--setups``, scored on every test cell with
attributes, as the loop benchmark's ``attribute_mean_macro_f1``. A setup is ``KIND[:WEIGHTS[:BEHIND]]``:

- ``KIND``: the measurement head, the class-balanced logistic regression (``logreg``) or gradient-boosted
  trees (``boosted``);
- ``WEIGHTS``: the measurement head the weights are chosen with (cross-validation, the product's embed
  job), ``KIND`` when left out;
- ``BEHIND``: the measurement heads are fitted without this many of the labelled cells (drawn at random:
  the saved rows do not keep the order they were labelled in), as when they are fitted after each batch
  is written and used from the next retrain on, one batch behind its labels; 0 when left out.

Timed on one thread: choosing the weights (the embed job), fitting the measurement heads alone (what a
job beside the loop would do after each batch) and the heads a retrain fits before its batch is written
(with the measurement heads fitted earlier where the setup has ``BEHIND``, else all of them).

Example::

    .venv/bin/python bench/loop_attribute_heads.py --pool var/bench/split/pool.csv \\
        --test var/bench/split/test.csv var/bench/loop_arrays/hybrid_seed{0,1,2,3,4}.npz \\
        --setups logreg,boosted,boosted:logreg,boosted:logreg:48 --out bench/results/loop_attribute_heads.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learning.attribute_heads import FusedAttributeHeads, fit_measurement_heads  # noqa: E402
from learning.classifiers import CLASSIFIER_KINDS, MISSING, ClassifierKind  # noqa: E402
from learning.data import read_manifest  # noqa: E402
from learning.evaluation import attribute_scores  # noqa: E402
from learning.morphometry import measure_cached  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One way of fitting the heads (the module docstring's ``KIND[:WEIGHTS[:BEHIND]]``)."""

    kind: ClassifierKind
    weights_kind: ClassifierKind
    behind: int

    @classmethod
    def parse(cls, text: str) -> Setup:
        parts = text.split(":")
        if not 1 <= len(parts) <= 3 or any(k not in CLASSIFIER_KINDS for k in parts[:2]):
            raise SystemExit(f"setup {text!r}: KIND[:WEIGHTS[:BEHIND]] with kinds from {CLASSIFIER_KINDS}")
        kind = cast(ClassifierKind, parts[0])
        weights_kind = cast(ClassifierKind, parts[1]) if len(parts) > 1 else kind
        return cls(kind, weights_kind, int(parts[2]) if len(parts) > 2 else 0)

    @property
    def name(self) -> str:
        # The plain setups keep the names earlier results files used.
        if self.weights_kind == self.kind and not self.behind:
            return self.kind
        return f"{self.kind}:{self.weights_kind}" + (f":{self.behind}" if self.behind else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("arrays", type=Path, nargs="+", help="--save-final-arrays .npz files")
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    # --measurement-kinds: the name earlier results files' commands used (plain kinds are setups too).
    parser.add_argument(
        "--setups", "--measurement-kinds", default="logreg,boosted", help="KIND[:WEIGHTS[:BEHIND]],..."
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/embeddings"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    setups = [Setup.parse(text) for text in args.setups.split(",")]
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
        lab_x = saved["labelled_x"]
        lab_m = measure_cached([str(r.path) for r in labelled], args.cache_dir, workers=args.workers)
        lab_attributes = {a: np.array([r.attributes.get(a, MISSING) for r in labelled]) for a in attributes}
        attribute_cells = int(sum(bool(r.attributes) for r in labelled))
        results: dict[str, Any] = {}
        choosers: dict[str, tuple[FusedAttributeHeads, float]] = {}  # weights kind -> heads, seconds
        with threadpool_limits(limits=1):
            for setup in setups:
                if setup.weights_kind not in choosers:  # the product's embed job: choose, and fit
                    t0 = time.perf_counter()
                    chooser = FusedAttributeHeads(
                        schema, measurement_weight="cross-validated", measurement_kind=setup.weights_kind
                    ).fit(lab_x, lab_m, lab_attributes)
                    choosers[setup.weights_kind] = (chooser, time.perf_counter() - t0)
                chooser, choose_s = choosers[setup.weights_kind]
                # The measurement heads alone, on the cells labelled up to BEHIND cells ago.
                kept = np.ones(len(rows), dtype=bool)
                if setup.behind:
                    drop = np.random.default_rng(0).choice(len(rows), size=setup.behind, replace=False)
                    kept[drop] = False
                t0 = time.perf_counter()
                measurement_heads = fit_measurement_heads(
                    schema, lab_m[kept], {a: v[kept] for a, v in lab_attributes.items()}, kind=setup.kind
                )
                measurement_s = time.perf_counter() - t0
                # What a retrain does before its batch is written: every head refitted with the chosen
                # weights, or (BEHIND) only the embedding heads beside the measurement heads fitted earlier.
                t0 = time.perf_counter()
                heads = FusedAttributeHeads(
                    schema, measurement_weight=chooser.weights_, measurement_kind=setup.kind
                ).fit(
                    lab_x,
                    lab_m,
                    lab_attributes,
                    measurement_heads=measurement_heads if setup.behind else None,
                )
                refit_s = time.perf_counter() - t0
                predicted = heads.predict(saved["test_x"], test_m)
                report = attribute_scores(test_attributes, {a: predicted.get(a, missing) for a in attributes})
                results[setup.name] = {
                    "mean_macro_f1": report["mean_macro_f1"],
                    "per_attribute": {a: v["macro_f1"] for a, v in report["per_attribute"].items()},
                    "weights": chooser.weights_,
                    "fit_seconds_choosing_weights": round(choose_s, 2),
                    "fit_seconds_measurement_heads": round(measurement_s, 2),
                    "refit_seconds_in_retrain": round(refit_s, 2),
                    "attribute_cells": attribute_cells,
                }
                print(
                    f"{path.name} {setup.name}: {report['mean_macro_f1']:.4f} (choosing weights "
                    f"{choose_s:.1f} s, measurement heads {measurement_s:.1f} s, retrain {refit_s:.1f} s)"
                )
        runs.append({"arrays": str(path), "labels": len(rows), "results": results})
    names = [setup.name for setup in setups]
    mean = {k: round(float(np.mean([r["results"][k]["mean_macro_f1"] for r in runs])), 4) for k in names}
    per_attribute = {
        k: {
            a: round(float(np.mean([r["results"][k]["per_attribute"][a] for r in runs])), 4)
            for a in attributes
        }
        for k in names
    }
    print("mean over runs:", mean)
    for a in attributes:
        print(a.ljust(28) + "".join(f"{per_attribute[k][a]:10.3f}" for k in names))
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
