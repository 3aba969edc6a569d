"""What the version-2 measurements add to the measurement head alone, per attribute.

The measurement head (:class:`learning.attribute_heads.FusedAttributeHeads`' second voice: a
class-balanced logistic regression, C 0.1, on :mod:`learning.morphometry`'s measurements) is trained on
``--cells`` random pool cells that carry attributes (about what the loop's 811 labels hold), ``--draws``
times, and scored on every test cell with attributes: once on the 20 version-1 measurements, once with
the nucleus' constrictions added (28), once with all 43 (the cell's outline and colours against the
background too). No embedding and no fine-tune: this isolates the measurements; what they add beside the
fine-tuned embedding is ``bench/attribute_features.py``'s question.

``--work-sides 192,400`` measures the same cells at other working resolutions too (400: the files' own,
360 x 363 for the cells with attributes) and scores all 43 measurements there: whether the nucleus'
filaments, 1-2 px at the working side of 192, are what holds nucleus shape back.

``--time-cells N`` also times :func:`learning.morphometry.measure` on N test cells, side by side in one
process: as shipped (version 2) and with the version-2 helpers switched off (version 1's work).

Example::

    .venv/bin/python bench/measurement_heads.py --pool var/bench/split/pool.csv \\
        --test var/bench/split/test.csv --time-cells 200 --out bench/results/measurement_heads.json
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

from learning import morphometry  # noqa: E402
from learning.attribute_heads import ATTRIBUTE_C  # noqa: E402
from learning.classifiers import MISSING, AlignedClassifier  # noqa: E402
from learning.data import read_manifest  # noqa: E402
from learning.evaluation import macro_f1  # noqa: E402
from learning.morphometry import MEASUREMENT_NAMES, measure, measure_cached  # noqa: E402

# Column sets: the measurement list grew by appending, so each version is a prefix.
COLUMN_SETS = {
    "version 1 (20)": MEASUREMENT_NAMES.index("nucleus_lobes_eroded"),
    "+ constrictions (28)": MEASUREMENT_NAMES.index("cell_solidity"),
    "version 2 (43)": len(MEASUREMENT_NAMES),
}


def milliseconds_per_cell(paths: list[str]) -> dict[str, float]:
    """Mean ms of :func:`measure` per cell, version 2 and version 1's work, interleaved in rounds so
    that a change in the machine's load falls on both."""
    constrictions, outline = morphometry._constrictions, morphometry._outline_and_relative_colour
    zeros_c = dict.fromkeys(
        MEASUREMENT_NAMES[COLUMN_SETS["version 1 (20)"] : COLUMN_SETS["+ constrictions (28)"]], 0.0
    )
    zeros_o = dict.fromkeys(MEASUREMENT_NAMES[COLUMN_SETS["+ constrictions (28)"] :], 0.0)
    spent = {"version 2": 0.0, "version 1's work": 0.0}
    for start in range(0, len(paths), 20):
        chunk = paths[start : start + 20]
        for name in spent:
            v1 = name != "version 2"
            morphometry._constrictions = (lambda _n: zeros_c) if v1 else constrictions  # type: ignore[assignment]
            morphometry._outline_and_relative_colour = (lambda *_a: zeros_o) if v1 else outline
            t0 = time.perf_counter()
            for path in chunk:
                measure(path)
            spent[name] += time.perf_counter() - t0
    morphometry._constrictions, morphometry._outline_and_relative_colour = constrictions, outline
    return {name: round(1000 * seconds / len(paths), 1) for name, seconds in spent.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=420, help="labelled cells with attributes per draw")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--time-cells", type=int, default=0, help="time measure() on this many test cells")
    parser.add_argument(
        "--work-sides",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[morphometry.WORK_SIDE],
        help="working resolutions (longer side, px) to measure at; the first is scored with every column "
        "set, the others with all 43 measurements (400: the files' own resolution)",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("var/embeddings"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pool, test = read_manifest(args.pool), read_manifest(args.test)
    test = [r for r in test if r.attributes]
    attributes = sorted({a for r in pool for a in r.attributes})
    carriers = np.array([i for i, r in enumerate(pool) if r.attributes])
    draws = [
        np.random.default_rng(draw).choice(carriers, args.cells, replace=False) for draw in range(args.draws)
    ]
    # Only the cells a draw trains on and the scored test cells are measured (a full-resolution
    # measurement of the whole pool would take most of the run).
    measured = np.unique(np.concatenate(draws))
    where = np.full(len(pool), -1)
    where[measured] = np.arange(len(measured))
    column_sets = {name: (args.work_sides[0], columns) for name, columns in COLUMN_SETS.items()}
    column_sets |= {f"version 2, {side} px": (side, len(MEASUREMENT_NAMES)) for side in args.work_sides[1:]}
    tables = {}
    for side in args.work_sides:
        paths = [str(pool[i].path) for i in measured] + [str(r.path) for r in test]
        values_at = measure_cached(paths, args.cache_dir, workers=args.workers, work_side=side)
        tables[side] = (values_at[: len(measured)], values_at[len(measured) :])
    scores: dict[str, dict[str, list[float]]] = {name: {a: [] for a in attributes} for name in column_sets}
    with threadpool_limits(limits=1):
        for rows in draws:
            for attribute in attributes:
                y = np.array([pool[i].attributes.get(attribute, MISSING) for i in rows])
                truth = np.array([r.attributes.get(attribute, MISSING) for r in test])
                keep, scored = y != MISSING, truth != MISSING
                values = sorted(set(y[keep]) | set(truth[scored]))
                for name, (side, columns) in column_sets.items():
                    pool_m, test_m = tables[side]
                    head = AlignedClassifier(values, "logreg", C=ATTRIBUTE_C, class_weight="balanced")
                    head.fit(pool_m[where[rows]][keep][:, :columns], y[keep])
                    predicted = head.predict(test_m[scored][:, :columns])
                    scores[name][attribute].append(macro_f1(truth[scored], predicted))
    summary: dict[str, Any] = {
        name: {
            "mean_macro_f1": float(np.mean([np.mean(v) for v in per.values()])),
            "per_attribute": {a: round(float(np.mean(v)), 4) for a, v in per.items()},
        }
        for name, per in scores.items()
    }
    for name, result in summary.items():
        print(f"{name}: mean {result['mean_macro_f1']:.3f}")
    print("attribute".ljust(28) + "".join(name.rjust(22) for name in summary))
    for attribute in attributes:
        row = "".join(f"{summary[name]['per_attribute'][attribute]:22.3f}" for name in summary)
        print(attribute.ljust(28) + row)
    timing = (
        milliseconds_per_cell([str(r.path) for r in test[: args.time_cells]]) if args.time_cells else None
    )
    if timing:
        print("ms per cell:", timing)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "cells": args.cells,
                "draws": args.draws,
                "test_cells_with_attributes": len(test),
                "work_sides": args.work_sides,
                "results": summary,
                "milliseconds_per_cell": timing,
                "timed_cells": args.time_cells,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
