"""Does the saliency overlay point at the nucleus? Fraction of real cells whose map is hotter on the
nucleus than on the background, for the loop's model and both saliency methods.

    .venv/bin/python bench/saliency_nucleus.py --cells 200 --out bench/results/saliency_nucleus.json

The loop's model as a project starts it: the ImageNet EfficientNet-Lite0 encoder at the project's
default 64 px (``pretrain_minutes=0``: no label-free pretraining), L2-normalised embeddings and a
logistic-regression head fitted on ``--labels`` labelled cells per class (about three batches' worth),
folded into torch as the web process does (``learning.saliency.linear_head_from_classifier``). The
scored cells are other cells of the five nucleated PBC leukocyte classes (platelets have no nucleus).
The nucleus comes from the stain, not from any model (``learning.saliency_check``). A random map and a
map of the centre distance (a "blob in the middle" prior) are scored on the same cells as controls.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning.classifiers import AlignedClassifier
from learning.data import CellImageDataset, default_data_dir, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings
from learning.saliency import linear_head_from_classifier, saliency_map
from learning.saliency_check import NucleusSummary, score_map, summarise
from models_zoo import create_model

CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _summary(summary: NucleusSummary, seconds: float | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "fraction_on_nucleus": round(summary.fraction, 3),
        "cells_scored": summary.cells,
        "cells_skipped_no_nucleus": summary.skipped,
        "median_nucleus_to_background_ratio": round(summary.median_ratio, 3),
    }
    if seconds is not None:
        out["seconds_per_cell"] = round(seconds / max(1, summary.cells + summary.skipped), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=200, help="cells to score")
    parser.add_argument("--labels", type=int, default=30, help="labelled cells per class for the head")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", default="integrated_gradients,gradcam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    records = [r for r in read_manifest(default_data_dir() / "manifest.csv") if r.label in CLASSES]
    per_class = args.labels + args.cells // len(CLASSES) + 1
    chosen = sample_per_class(records, per_class, seed=args.seed)
    # The first ``labels`` sampled cells of each class (manifest order) fit the head; the rest
    # are scored, taken round-robin over the classes so every class is represented.
    by_class = {c: [r for r in chosen if r.label == c] for c in CLASSES}
    train = [r for c in CLASSES for r in by_class[c][: args.labels]]
    rest = [by_class[c][args.labels :] for c in CLASSES]
    scored = [r for group in zip(*rest, strict=False) for r in group][: args.cells]
    assert not {r.path for r in train} & {r.path for r in scored}

    backbone = create_model(args.model, pretrained=True).eval()
    train_set, scored_set = (
        CellImageDataset(train, args.image_size),
        CellImageDataset(scored, args.image_size),
    )
    train_set.preload()
    scored_set.preload()
    emb = extract_embeddings(backbone, train_set, batch_size=64)
    clf = AlignedClassifier(CLASSES, "logreg").fit(emb, [str(r.label) for r in train])
    scored_emb = extract_embeddings(backbone, scored_set, batch_size=64)
    predicted = np.asarray(CLASSES)[clf.predict_proba(scored_emb).argmax(axis=1)]
    accuracy = float((predicted == np.asarray([r.label for r in scored])).mean())
    head = linear_head_from_classifier(clf, emb.shape[1])
    assert head is not None

    images = scored_set.images
    results: dict[str, object] = {}
    for method in args.methods.split(","):
        start = time.perf_counter()
        scores = [score_map(saliency_map(backbone, head, img, method=method), img) for img in images]
        results[method] = _summary(summarise(scores), time.perf_counter() - start)
        print(method, results[method], file=sys.stderr, flush=True)
    side = args.image_size
    rng = np.random.default_rng(args.seed)
    yy, xx = np.mgrid[:side, :side]
    centre = 1.0 - np.hypot(yy - (side - 1) / 2, xx - (side - 1) / 2) / side
    results["control_random_map"] = _summary(
        summarise([score_map(rng.random((side, side)), i) for i in images])
    )
    results["control_centre_blob"] = _summary(summarise([score_map(centre, i) for i in images]))

    out = {
        "command": "python " + " ".join(sys.argv),
        "model": f"{args.model} (ImageNet weights, no pretraining) at {args.image_size} px + logreg head",
        "labelled_cells_per_class": args.labels,
        "classes": CLASSES,
        "head_accuracy_on_scored_cells": round(accuracy, 3),
        "methods": results,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
