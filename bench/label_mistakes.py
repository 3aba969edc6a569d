"""How many wrong labels the label-mistake ranking finds: flip a known share of real labels, rank, count.

    .venv/bin/python bench/label_mistakes.py --per-class 200 --seeds 5 \
        --out bench/results/label_mistakes.json

A labelled set of real cells (``--per-class`` per class, seeded; byte-identical duplicates dropped so a
cell and its copy never sit on both sides of a fold) is embedded once with the encoder the loop starts on
(ImageNet EfficientNet-Lite0, ``--image-size`` px). For each seed, ``--flip`` of the labels move to another
class chosen uniformly; ``learning.label_issues.rank_label_issues`` ranks the cells (out-of-fold logistic
regression, cleanlab's self-confidence) and the script reports the share of flipped labels in the top
1-30% of the ranking (a random order finds the same share as the fraction looked at), what the
confident-learning filter flags, and how often the suggested class is the true one. The issue's target:
with 5% flipped, the top 5% holds at least 60% of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from learning.data import CellImageDataset, read_manifest, sample_per_class  # noqa: E402
from learning.embeddings import extract_embeddings  # noqa: E402
from learning.label_issues import flip_labels, rank_label_issues, share_found  # noqa: E402
from models_zoo import create_model  # noqa: E402

TOP_FRACTIONS = (0.01, 0.02, 0.05, 0.10, 0.15, 0.20, 0.30)


def distinct_by_content(records: list[Any]) -> list[Any]:
    seen: set[str] = set()
    kept = []
    for record in records:
        digest = hashlib.sha256(Path(record.path).read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(record)
    return kept


def one_seed(emb: np.ndarray, labels: np.ndarray, n_classes: int, flip: float, seed: int) -> dict[str, Any]:
    noisy, flipped = flip_labels(labels, flip, n_classes=n_classes, seed=seed)
    start = time.perf_counter()
    ranking = rank_label_issues(emb, noisy, n_classes=n_classes, seed=seed)
    seconds = time.perf_counter() - start
    flagged = np.flatnonzero(ranking.flagged)
    top = ranking.order[: len(flipped)]
    caught = top[np.isin(top, flipped)]
    return {
        "seed": seed,
        "flipped": len(flipped),
        "found_in_top": {f"{f:.2f}": round(share_found(ranking.order, flipped, f), 4) for f in TOP_FRACTIONS},
        "flagged": len(flagged),
        "flagged_recall": round(float(np.isin(flipped, flagged).mean()), 4),
        "flagged_precision": round(float(np.isin(flagged, flipped).mean()) if len(flagged) else 0.0, 4),
        "suggestion_is_true_class": round(float((ranking.suggested[caught] == labels[caught]).mean()), 4)
        if len(caught)
        else None,
        "rank_seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "leukocytes")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    records = distinct_by_content(
        sample_per_class(read_manifest(args.data / "manifest.csv"), args.per_class, seed=0)
    )
    classes = sorted({str(r.label) for r in records})
    labels = np.array([classes.index(str(r.label)) for r in records])
    start = time.perf_counter()
    dataset = CellImageDataset(records, args.image_size)
    dataset.preload()
    torch.manual_seed(0)
    emb = extract_embeddings(create_model("efficientnet_lite0", pretrained=True).eval(), dataset)
    embed_seconds = time.perf_counter() - start

    runs = [one_seed(emb, labels, len(classes), args.flip, seed) for seed in range(args.seeds)]
    curve = {
        key: {
            "mean": round(float(np.mean([r["found_in_top"][key] for r in runs])), 4),
            "min": round(float(np.min([r["found_in_top"][key] for r in runs])), 4),
            "max": round(float(np.max([r["found_in_top"][key] for r in runs])), 4),
        }
        for key in runs[0]["found_in_top"]
    }
    target_key = f"{args.flip:.2f}"
    result: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/label_mistakes.py", *(argv or sys.argv[1:])]),
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "cells": len(records),
        "classes": classes,
        "encoder": f"efficientnet_lite0 ImageNet, {args.image_size} px (the loop's cold-start encoder)",
        "flip": args.flip,
        "embed_seconds": round(embed_seconds, 1),
        "found_in_top_fraction": curve,
        "random_order_finds": {key: float(key) for key in curve},
        "target": {
            "top_fraction": args.flip,
            "needed": 0.60,
            "worst_seed": curve.get(target_key, {}).get("min"),
        },
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
