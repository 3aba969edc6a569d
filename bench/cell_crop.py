"""Does a cell-centred, scale-normalised crop make a model trained on one lab hold up on another?

    .venv/bin/python bench/cell_crop.py --out bench/results/cell_crop.json

Each variant decodes the cells one way (``centre``: the centre square, what the platform did; ``cell:K``:
:func:`learning.imaging.decode_square` with ``crop="cell"`` and the nucleus' diameter times K) and is
scored as the loop would score it: frozen ImageNet EfficientNet-Lite0 embeddings (the encoder the loop
starts on), a class-balanced logistic regression on ``--per-class`` labelled cells per class drawn from the
duplicate-free pool (one draw per seed, from the same ``--candidates`` per class for every variant), then

- in-domain: macro-F1 on the test split, per source;
- cross-lab: ../shared/data/external_bccd (never trained on), macro-F1 over its classes with at least 20
  cells and over all five, per-class recall, and the share of its (all normal) cells called blast.

The split is ``python -m learning split ... --seed 0`` (bench/README.md).
"""

from __future__ import annotations

import argparse
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

from learning.adaptation import adapt_to_site  # noqa: E402
from learning.classifiers import AlignedClassifier  # noqa: E402
from learning.data import CellImageDataset, CellRecord, read_manifest, sample_per_class  # noqa: E402
from learning.embeddings import batchnorm_for_source, extract_embeddings  # noqa: E402
from learning.evaluation import external_report, macro_f1, per_source  # noqa: E402
from learning.shift import abstention  # noqa: E402
from models_zoo import create_model  # noqa: E402


def parse_variant(text: str) -> tuple[str, float, str]:
    """``centre`` or ``cell:K``, optionally ``+reinhard`` or ``+adabn`` -> (crop, cell_scale, colour).

    ``adabn``: each set is embedded with batch-norm statistics re-estimated on its own images
    (``learning.embeddings.batchnorm_for_source``): the labelled and test cells on the labelled cells, the
    other lab's on its own 351 (no label of theirs is used)."""
    text, _, colour = text.partition("+")
    if colour not in ("", "reinhard", "adabn"):
        raise argparse.ArgumentTypeError(f"colour {colour!r}: expected 'reinhard' or 'adabn'")
    if text == "centre":
        return "centre", 0.0, colour
    crop, _, scale = text.partition(":")
    if crop != "cell" or not scale:
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected 'centre' or 'cell:K'")
    return "cell", float(scale), colour


# Reinhard et al. (2001) colour transfer: each image's L*a*b* channels are moved to a fixed mean and
# standard deviation: the averages over 180 pool cells (20 per class, cell crop, gray world; no other
# lab's cell). Tried as a stain normalisation on top of gray world; not in the product unless it pays.
REINHARD_TARGET = {"mean": (77.3, 1.5, -0.7), "std": (19.9, 15.7, 19.1)}


def reinhard(images: torch.Tensor) -> None:
    """In place on a uint8 (N, 3, S, S) tensor."""
    from skimage.color import lab2rgb, rgb2lab

    mean, std = np.array(REINHARD_TARGET["mean"]), np.array(REINHARD_TARGET["std"])
    for i in range(len(images)):
        lab = rgb2lab(images[i].permute(1, 2, 0).numpy())
        lab = (lab - lab.mean(axis=(0, 1))) / (lab.std(axis=(0, 1)) + 1e-6) * std + mean
        rgb = np.clip(lab2rgb(lab) * 255.0, 0, 255).round().astype(np.uint8)
        images[i] = torch.from_numpy(rgb).permute(2, 0, 1)


ADAPT_PICKS = ("hybrid", "hybrid+balanced", "random")


def adaptation(
    classes: list[str],
    labelled: np.ndarray,
    y_labelled: np.ndarray,
    external: np.ndarray,
    y_external: np.ndarray,
    test: np.ndarray,
    y_test: np.ndarray,
    n: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Adapting to the other lab with ``n`` of its cells labelled (:func:`learning.adaptation.adapt_to_site`),
    chosen as the loop chooses them with ``Project.query_source`` set (hybrid), by the class-balanced
    hybrid, or at random."""
    out = {}
    for how in ADAPT_PICKS:
        strategy, _, balanced = how.partition("+")
        report = adapt_to_site(
            lambda: AlignedClassifier(classes, "logreg", class_weight="balanced"),
            labelled_x=labelled,
            labelled_y=y_labelled,
            site_x=external,
            site_y=y_external,
            test_x=test,
            test_y=y_test,
            n=n,
            strategy=strategy,
            seed=seed,
            strategy_options={"class_balanced": True} if balanced else None,
        )
        after = report["site_after"]
        out[how] = {
            "picked_per_class": report["picked_per_class"],
            "external_rest_macro_f1_min20": after["macro_f1_min20"],
            "external_rest_macro_f1_all": after["macro_f1_all"],
            "external_rest_recall": after["per_class_recall"],
            "external_rest_predicted_blast": after["predicted_share"].get("blast", 0.0),
            "test_macro_f1": report["test_after"],
            "forgetting": report["forgetting"],
        }
    return out


def embed(
    model: torch.nn.Module, records: list[CellRecord], size: int, crop: str, scale: float, colour: str
) -> np.ndarray:
    kwargs: dict[str, Any] = {"crop": crop}
    if crop == "cell":
        kwargs["cell_scale"] = scale
    dataset = CellImageDataset(records, size, **kwargs)
    images = dataset.preload()
    if colour == "reinhard":
        reinhard(images)  # the dataset serves its cache, so this is what gets embedded
    return extract_embeddings(model, dataset)


def dataset_of(records: list[CellRecord], size: int, crop: str, scale: float) -> CellImageDataset:
    kwargs: dict[str, Any] = {"crop": crop}
    if crop == "cell":
        kwargs["cell_scale"] = scale
    dataset = CellImageDataset(records, size, **kwargs)
    dataset.preload()
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = REPO.parent / "shared" / "data"
    parser.add_argument("--pool", type=Path, default=REPO / "var/bench/split/pool.csv")
    parser.add_argument("--test", type=Path, default=REPO / "var/bench/split/test.csv")
    parser.add_argument("--external", type=Path, default=shared / "external_bccd" / "manifest.csv")
    parser.add_argument("--variants", default="centre,cell:2,cell:2.5,cell:3")
    parser.add_argument("--per-class", type=int, default=90)
    parser.add_argument("--candidates", type=int, default=300, help="pool cells per class embedded")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--adapt-labels", type=int, default=0, help="also adapt with N labelled cells of the other lab"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    candidates = sample_per_class(read_manifest(args.pool), args.candidates, seed=0)
    test = read_manifest(args.test)
    external = read_manifest(args.external)
    classes = sorted({str(r.label) for r in candidates})
    y_candidates = np.array([str(r.label) for r in candidates])
    y_test = np.array([str(r.label) for r in test])
    y_external = np.array([str(r.label) for r in external])
    model = create_model("efficientnet_lite0", pretrained=True).eval()

    results: dict[str, Any] = {}
    for text in args.variants.split(","):
        crop, scale, colour = parse_variant(text)
        started = time.perf_counter()
        models: dict[str, torch.nn.Module] = {"candidates": model, "test": model, "external": model}
        if colour == "adabn":
            # Batch-norm statistics per lab: ours from the labelled candidates, theirs from their cells.
            ours = batchnorm_for_source(model, dataset_of(candidates, args.image_size, crop, scale))
            theirs = batchnorm_for_source(model, dataset_of(external, args.image_size, crop, scale))
            models = {"candidates": ours, "test": ours, "external": theirs}
        emb = {
            name: embed(models[name], records, args.image_size, crop, scale, colour)
            for name, records in (("candidates", candidates), ("test", test), ("external", external))
        }
        seconds = time.perf_counter() - started
        runs = []
        for seed in range(args.seeds):
            chosen = sample_per_class(candidates, args.per_class, seed=seed)
            keep = {r.id for r in chosen}
            rows = np.array([r.id in keep for r in candidates])
            clf = AlignedClassifier(classes, "logreg", class_weight="balanced").fit(
                emb["candidates"][rows], y_candidates[rows]
            )
            pred_test = np.asarray(clf.predict(emb["test"])).astype(str)
            pred_external = np.asarray(clf.predict(emb["external"])).astype(str)
            report = external_report(y_external, pred_external)
            abstain = abstention(
                emb["candidates"][rows],
                emb["test"],
                emb["external"],
                y_test,
                pred_test,
                pred_external,
                labelled_labels=y_candidates[rows],
            )
            adapted = (
                adaptation(
                    classes,
                    emb["candidates"][rows],
                    y_candidates[rows],
                    emb["external"],
                    y_external,
                    emb["test"],
                    y_test,
                    args.adapt_labels,
                    seed,
                )
                if args.adapt_labels
                else None
            )
            runs.append(
                {
                    "seed": seed,
                    "labels": int(rows.sum()),
                    "test_macro_f1": macro_f1(y_test, pred_test),
                    "test_per_source": {
                        s: v["macro_f1"]
                        for s, v in per_source(y_test, pred_test, [r.source for r in test]).items()
                    },
                    "external_macro_f1_min20": report["macro_f1_min20"],
                    "external_macro_f1_all": report["macro_f1_all"],
                    "external_recall": report["per_class_recall"],
                    "external_predicted_blast": report["predicted_share"].get("blast", 0.0),
                    "external_predicted_share": report["predicted_share"],
                    "abstention": abstain,
                    "adaptation": adapted,
                }
            )

        def mean(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return round(float(np.mean([r[key] for r in runs])), 4)

        results[text] = {
            "crop": crop,
            "cell_scale": scale or None,
            "colour": colour or "gray world",
            "batchnorm": "per lab (AdaBN)" if colour == "adabn" else "ImageNet",
            "embed_seconds": round(seconds, 1),
            "test_macro_f1": mean("test_macro_f1"),
            "test_pbc_macro_f1": round(float(np.mean([r["test_per_source"]["pbc"] for r in runs])), 4),
            "external_macro_f1_min20": mean("external_macro_f1_min20"),
            "external_macro_f1_min20_per_seed": [round(r["external_macro_f1_min20"], 3) for r in runs],
            "external_macro_f1_all": mean("external_macro_f1_all"),
            "external_predicted_blast": mean("external_predicted_blast"),
            "abstention": {
                limit: {
                    key: round(float(np.mean([r["abstention"][limit][key] for r in runs])), 4)
                    for key in runs[0]["abstention"][limit]
                }
                for limit in runs[0]["abstention"]
            },
            "adaptation": None
            if not args.adapt_labels
            else {
                how: {
                    key: round(float(np.mean([r["adaptation"][how][key] for r in runs])), 4)
                    for key in (
                        "external_rest_macro_f1_min20",
                        "external_rest_macro_f1_all",
                        "external_rest_predicted_blast",
                        "test_macro_f1",
                        "forgetting",
                    )
                }
                for how in ADAPT_PICKS
            },
            "external_recall": {
                c: round(float(np.mean([r["external_recall"][c] for r in runs])), 3)
                for c in runs[0]["external_recall"]
            },
            "runs": runs,
        }
        summary = {k: v for k, v in results[text].items() if k != "runs"}
        print(text, json.dumps(summary), flush=True)

    result = {
        "command": " ".join([".venv/bin/python", "bench/cell_crop.py", *(argv or sys.argv[1:])]),
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "encoder": f"efficientnet_lite0 ImageNet (frozen), {args.image_size} px, gray world",
        "classifier": "class-balanced logistic regression",
        "per_class": args.per_class,
        "seeds": args.seeds,
        "variants": results,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
