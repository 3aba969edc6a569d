"""Do the cell's measurements (learning.morphometry) lift the attribute heads over the embedding alone?

The loop's attribute heads were logistic regressions on the (fine-tuned) embedding of the
labelled cells that carry attributes. The cell crop scales every cell to the same share of the input,
so the embedding no longer knows a cell's size; the measurements put size, nucleus shape and colour back.
This script takes the fine-tuned features ``bench/finetune_recipe.py --save-features DIR`` saved (the
labelled and the test cells of one fine-tune), measures every labelled and test cell, and scores the
attribute heads on the test cells with the embedding alone, the measurements alone, both in one regression
(concatenated), and the two heads' probabilities averaged at a few weights (learning.attribute_heads).

Example::

    .venv/bin/python bench/finetune_recipe.py --pool var/bench/split/pool.csv \
        --test var/bench/split/test.csv --image-size 128 --crop cell --per-class 90 --seeds 4 \
        --recipes supervised --epochs 20 --save-features var/bench/ft_features \
        --out var/bench/ft_recipe_attr.json
    .venv/bin/python bench/attribute_features.py --pool var/bench/split/pool.csv \
        --test var/bench/split/test.csv --features var/bench/ft_features/supervised_seed{0,1,2,3}.npz \
        --out bench/results/attribute_features.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learning.attribute_heads import FusedAttributeHeads, WeightSetting  # noqa: E402
from learning.classifiers import MultiTaskClassifier  # noqa: E402
from learning.data import read_manifest  # noqa: E402
from learning.evaluation import attribute_scores  # noqa: E402
from learning.finetune_benchmark import normalise  # noqa: E402
from learning.morphometry import MEASUREMENT_NAMES, measure_cached  # noqa: E402

# The version-1 measurements are the first columns of MEASUREMENT_NAMES (version 2 appended its own).
VERSION_1_COLUMNS = MEASUREMENT_NAMES.index("nucleus_lobes_eroded")

# The prefix bench/finetune_recipe.py saves the network's attribute-head probabilities under.
NETWORK_HEAD = "network_head:"


def scored(attributes_test: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict[str, Any]:
    return attribute_scores(attributes_test, {a: predicted[a] for a in attributes_test})


def most_probable(schema: dict[str, list[str]], probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {a: np.asarray(schema[a], dtype=object)[p.argmax(axis=1)].astype(str) for a, p in probs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--features", type=Path, nargs="+", required=True, help="finetune_recipe .npz files")
    parser.add_argument(
        "--weights",
        default="0.3,0.5,0.7",
        help="measurement weights of the fused heads; 'cross-validated' chooses one per attribute",
    )
    parser.add_argument(
        "--version-1",
        action="store_true",
        help="also score the fused heads on the 20 version-1 measurements (no constrictions)",
    )
    parser.add_argument(
        "--network-weights", default="0.33,0.5", help="weights of the network's heads beside the fused two"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/embeddings"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pool, test = read_manifest(args.pool), read_manifest(args.test)
    attributes = sorted({a for r in pool for a in r.attributes})
    schema = {a: sorted({r.attributes[a] for r in [*pool, *test] if a in r.attributes}) for a in attributes}
    classes = sorted({r.label for r in pool if r.label})
    t0 = time.perf_counter()
    pool_measured = measure_cached([str(r.path) for r in pool], args.cache_dir, workers=args.workers)
    test_measured = measure_cached([str(r.path) for r in test], args.cache_dir, workers=args.workers)
    measure_s = time.perf_counter() - t0
    attrs_test = {a: np.array([r.attributes.get(a, "") for r in test]) for a in attributes}
    runs: list[dict[str, Any]] = []
    for features_file in args.features:
        saved = np.load(features_file)
        rows = saved["rows"]
        labelled = [pool[i] for i in rows]
        m_lab, m_test = pool_measured[rows], test_measured
        e_lab, e_test = normalise(saved["labelled"]), normalise(saved["test"])
        y = np.array([str(r.label) for r in labelled])
        attrs_lab = {a: np.array([r.attributes.get(a, "") for r in labelled]) for a in attributes}
        results: dict[str, Any] = {}
        with threadpool_limits(limits=1):
            # What the loop benchmark scored before: MultiTaskClassifier's logistic heads, C 1, unweighted.
            before = MultiTaskClassifier(classes, schema, kind="logreg", seed=0).fit(e_lab, y, attrs_lab)
            results["embedding_unweighted_C1"] = scored(attrs_test, before.predict(e_test))
            for name, (xl, xt) in {
                "embedding": (e_lab, e_test),
                "measurements": (m_lab, m_test),
                "concatenated": (np.hstack([e_lab, m_lab]), np.hstack([e_test, m_test])),
            }.items():
                heads = FusedAttributeHeads(schema, measurement_weight=0.0).fit(xl, None, attrs_lab)
                results[name] = scored(attrs_test, heads.predict(xt, None))
            versions = {"": (m_lab, m_test)}
            if args.version_1:
                versions["v1_"] = (m_lab[:, :VERSION_1_COLUMNS], m_test[:, :VERSION_1_COLUMNS])
            for prefix, (ml, mt) in versions.items():
                for setting in args.weights.split(","):
                    w: WeightSetting = "cross-validated" if setting == "cross-validated" else float(setting)
                    t_fit = time.perf_counter()
                    heads = FusedAttributeHeads(schema, measurement_weight=w).fit(e_lab, ml, attrs_lab)
                    key = f"fused_{prefix}" + ("cross-validated" if w == "cross-validated" else f"w{w:g}")
                    results[key] = scored(attrs_test, heads.predict(e_test, mt))
                    results[key]["fit_seconds"] = round(time.perf_counter() - t_fit, 2)
                    results[key]["weights"] = heads.weights_
            network = {
                key.removeprefix(NETWORK_HEAD): saved[key]
                for key in saved.files
                if key.startswith(NETWORK_HEAD)
            }
            if network:
                # The fine-tuned network's own attribute heads (finetune_recipe.py saves their test
                # probabilities), alone and as a third voice beside the product's two heads.
                results["network"] = scored(attrs_test, most_probable(schema, network))
                fused = FusedAttributeHeads(schema).fit(e_lab, m_lab, attrs_lab).predict_proba(e_test, m_test)
                for v in (float(x) for x in args.network_weights.split(",")):
                    mixed = {a: (1 - v) * p + v * network[a] for a, p in fused.items() if a in network}
                    results[f"fused_network_w{v:g}"] = scored(attrs_test, most_probable(schema, mixed))
        for name, result in results.items():
            print(f"{features_file.name} {name}: mean attribute macro-F1 {result['mean_macro_f1']:.3f}")
        runs.append({"features": str(features_file), "labels": len(rows), "results": results})
    names = list(runs[0]["results"])
    mean = {n: float(np.mean([r["results"][n]["mean_macro_f1"] for r in runs])) for n in names}
    per_attribute = {
        n: {
            a: float(np.mean([r["results"][n]["per_attribute"][a]["macro_f1"] for r in runs]))
            for a in attributes
        }
        for n in names
    }
    for n in names:
        print(f"mean over {len(runs)} runs, {n}: {mean[n]:.3f}")
    # An upper bound on choosing one weight per attribute: the best fixed weight of --weights for each
    # attribute, picked on the test cells themselves (so not a figure any product could reach).
    fixed = [n for n in names if n.startswith("fused_w")]
    best_fixed: dict[str, str] = {}
    if len(fixed) > 1:
        for a in attributes:
            best_fixed[a] = max(fixed, key=lambda n: per_attribute[n][a])
    oracle = float(np.mean([per_attribute[n][a] for a, n in best_fixed.items()])) if best_fixed else None
    if oracle is not None:
        print(f"mean over {len(runs)} runs, best weight per attribute, test-chosen: {oracle:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "measurements": list(MEASUREMENT_NAMES),
                "measure_seconds": round(measure_s, 1),
                "mean_over_runs": mean,
                "per_attribute_mean_over_runs": per_attribute,
                "test_chosen_weight_per_attribute": best_fixed,
                "test_chosen_weights_mean": oracle,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
