"""Merge loop-benchmark runs of one seed each (``python -m learning benchmark ... --seeds 1 --first-seed S``)
into one summary: the final round's figures per seed, their mean, min, max and a 95% t-interval over seeds,
and the mean curve per round.

    .venv/bin/python bench/merge_loop_seeds.py bench/al_finetune_lite0_64to128_cell/*/summary.json \
        --out bench/results/al_finetune_64to128_cell_seeds.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

FIGURES = ("macro_f1", "ece", "attribute_mean_macro_f1", "finetune_seconds")
TARGETS = {"macro_f1": 0.95, "pbc": 0.93, "blast_recall": 0.97, "attribute_mean_macro_f1": 0.87}


def interval(values: list[float]) -> list[float]:
    """95% t-interval of the mean over seeds (the seeds are the repeated experiment)."""
    if len(values) < 2:
        return [values[0], values[0]]
    mean = float(np.mean(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return [round(mean - half, 4), round(mean + half, 4)]


def final_of(summary: dict[str, Any], strategy: str) -> dict[str, float]:
    final = summary["final"][strategy]
    out = {
        **{k: float(final[k]) for k in FIGURES if final.get(k) is not None},
        "labels": float(final["labels"]),
        "pbc": float(final["per_source_macro_f1"]["pbc"]),
        "blast_recall": float(final["per_class_recall"]["blast"]),
    }
    external = final.get("external")
    if external is not None:  # another lab's cells (``--external``), never trained on
        out["external_macro_f1_min20"] = float(external["macro_f1_min20"])
        out["external_predicted_blast"] = float(external["predicted_blast"])
        for rule in ("product", "global", "initial", "product_and_initial"):
            if f"abstention_{rule}" not in external:  # runs from before the rule was measured
                continue
            rows = external[f"abstention_{rule}"]
            out[f"external_answered_blast_{rule}"] = float(rows["external_answered_blast"])
            out[f"external_abstain_{rule}"] = float(rows["external_abstain"])
            out[f"test_abstain_{rule}"] = float(rows["test_abstain"])
    # Runs whose attribute heads heard the measurements also scored the same heads without them.
    last = [r for r in summary["runs"] if r.get("strategy", strategy) == strategy][-1]["rounds"][-1]
    if last.get("attribute_mean_macro_f1_embedding_only") is not None:
        out["attribute_mean_macro_f1_embedding_only"] = float(last["attribute_mean_macro_f1_embedding_only"])
    return out


def curve_of(path: Path, strategy: str) -> list[dict[str, float]]:
    rows = csv.DictReader((path.parent / "rounds.csv").open())
    return [
        {"labels": float(r["labels"]), "macro_f1": float(r["macro_f1"])}
        for r in rows
        if r["strategy"] == strategy
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("summaries", type=Path, nargs="+")
    parser.add_argument("--strategy", default="hybrid")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    per_seed = []
    curves = []
    for path in args.summaries:
        summary = json.loads(path.read_text())
        per_seed.append(
            {"seeds": summary["protocol"]["seeds"], "from": str(path), **final_of(summary, args.strategy)}
        )
        curves.append(curve_of(path, args.strategy))
    keys = [k for k in per_seed[0] if k not in ("seeds", "from")]
    merged: dict[str, Any] = {}
    for key in keys:
        values = [float(s[key]) for s in per_seed if key in s]
        merged[key] = {
            "mean": round(float(np.mean(values)), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
            "ci95": interval(values),
        }
        if key in TARGETS:
            merged[key]["target"] = TARGETS[key]
            merged[key]["seeds_meeting_target"] = sum(v >= TARGETS[key] for v in values)
    rounds = min(len(c) for c in curves)
    mean_curve = [
        {
            "labels": curves[0][r]["labels"],
            "macro_f1": round(float(np.mean([c[r]["macro_f1"] for c in curves])), 4),
            "min": round(min(c[r]["macro_f1"] for c in curves), 4),
            "max": round(max(c[r]["macro_f1"] for c in curves), 4),
        }
        for r in range(rounds)
    ]
    out = {
        "command": "python bench/merge_loop_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "strategy": args.strategy,
        "seeds": len(per_seed),
        "final": merged,
        "per_seed": per_seed,
        "curve": mean_curve,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"seeds": len(per_seed), "final": merged}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
