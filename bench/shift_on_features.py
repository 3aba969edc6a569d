"""The shift report's two distance signals on saved fine-tuned features, per source of the test cells.

``bench/finetune_recipe.py --external M --save-features DIR`` saves, per fine-tune, the embedding of the
labelled, the test and the other lab's cells. For each file this prints, per test-cell source and for the
other lab: the median distance to the nearest labelled cell over the labelled cells' own median (the
report's distance ratio) and the share of cells beyond the abstention rule (the unlike share), with the
same functions the dashboard uses (``learning.shift``).

Example (the figures in bench/README.md, "Shift report per source")::

    .venv/bin/python bench/shift_on_features.py --test var/bench/split/test.csv \
        var/bench/ft_features/supervised_seed0.npz var/bench/ft_features/supervised_seed1.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learning.data import read_manifest  # noqa: E402
from learning.finetune_benchmark import normalise  # noqa: E402
from learning.shift import ABSTAIN_RATIO, LabelledNeighbourhood, nearest_other_distance  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--test", type=Path, required=True, help="the test manifest the features follow")
    parser.add_argument("features", type=Path, nargs="+", help="finetune_recipe.py --save-features files")
    args = parser.parse_args(argv)
    sources = np.array([r.source for r in read_manifest(args.test)])
    report = {}
    for path in args.features:
        saved = np.load(path)
        labelled = normalise(saved["labelled"])
        hood = LabelledNeighbourhood.build(labelled)
        assert hood is not None
        own = nearest_other_distance(hood.index, labelled, np.arange(len(labelled), dtype=np.int64))
        groups = {str(s): normalise(saved["test"])[sources == s] for s in sorted(set(sources.tolist()))}
        if "external" in saved.files:
            groups["external"] = normalise(saved["external"])
        rows = {}
        for name, cells in groups.items():
            ratios = hood.ratios(cells)
            distances = ratios * hood.reference_distance
            rows[name] = {
                "cells": len(cells),
                "distance_ratio": round(float(np.median(distances) / np.median(own)), 3),
                "unlike_share": round(float((ratios > ABSTAIN_RATIO).mean()), 4),
            }
        report[str(path)] = rows
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
