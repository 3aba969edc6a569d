"""``python -m learning COMMAND ...``: pretrain, embed, split, benchmark, bench-query.

Every command shows a progress bar (or progress lines) on stderr and prints a JSON result on stdout.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.data import CellRecord, data_hash, read_manifest, stratified_split
from learning.imaging import CROP_MODES
from learning.morphometry import measure_cached
from learning.query import STRATEGIES
from learning.transforms import AUGMENT_PRESETS

# What a benchmark's images are cropped to unless told: a new project's default (annotation.Project).
DEFAULT_CROP = "cell"

COMMANDS = ("pretrain", "embed", "split", "benchmark", "bench-query")


def encoder_spec(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The encoder a command asked for: a pretraining checkpoint, or a registry backbone (optionally with
    its shipped ImageNet weights) used frozen."""
    if args.encoder:
        from learning.selfsup import load_encoder

        model, meta = load_encoder(args.encoder)
        return model, {
            "encoder": str(args.encoder),
            "backbone": meta.get("backbone"),
            "method": meta.get("method"),
            "image_size": args.image_size or meta.get("image_size"),
            "crop": args.crop or meta.get("crop", "centre"),
        }
    from models_zoo import create_model

    model = create_model(args.backbone, pretrained=args.pretrained).eval()
    return model, {
        "encoder": f"{args.backbone}{' (ImageNet weights)' if args.pretrained else ' (random init)'}",
        "backbone": args.backbone,
        "method": None,
        "image_size": args.image_size,
        "crop": args.crop or DEFAULT_CROP,
    }


def embed_records(
    records: Sequence[CellRecord], args: argparse.Namespace, cache_dir: Path | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """L2-normalised embeddings of ``records``, cached on disk by (encoder, image size, data)."""
    from learning.embeddings import extract_embeddings, load_embeddings, save_embeddings

    model, info = encoder_spec(args)
    image_size = int(info["image_size"] or 64)
    encoder_id = (
        hashlib.sha256(Path(args.encoder).read_bytes()).hexdigest()[:12] if args.encoder else info["encoder"]
    )
    crop = str(info["crop"])
    geometry = f"{image_size}" if crop == "centre" else f"{image_size}|{crop}"  # old cache keys still hit
    key = hashlib.sha256(f"{encoder_id}|{geometry}|{data_hash(records)}".encode()).hexdigest()[:16]
    if cache_dir is not None and (cache_dir / key / "embeddings.npy").exists():
        _ids, emb, meta = load_embeddings(cache_dir / key)
        return emb, {**info, "image_size": image_size, "seconds": meta.get("seconds", 0.0), "cached": True}
    start = time.perf_counter()
    emb = extract_embeddings(
        model,
        records,
        image_size=image_size,
        crop=crop,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=True,
    )
    seconds = time.perf_counter() - start
    if cache_dir is not None:
        save_embeddings(
            cache_dir / key,
            [r.id for r in records],
            emb,
            meta={"encoder": info["encoder"], "image_size": image_size, "seconds": seconds},
        )
    return emb, {**info, "image_size": image_size, "seconds": seconds, "cached": False}


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", type=Path, default=None, help="pretraining checkpoint (.pt)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="registry backbone if no --encoder")
    parser.add_argument(
        "--pretrained", action="store_true", help="use the backbone's shipped ImageNet weights"
    )
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument(
        "--crop",
        choices=CROP_MODES,
        default=None,
        help=f"what of each image the encoder sees (learning.imaging.square_box); default the checkpoint's, "
        f"else {DEFAULT_CROP!r} as a new project (runs before the cell crop existed used 'centre')",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")


def cmd_embed(argv: Sequence[str]) -> dict[str, Any]:
    from learning.embeddings import save_embeddings

    parser = argparse.ArgumentParser(prog="python -m learning embed")
    parser.add_argument("--data", type=Path, required=True, help="manifest CSV")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_encoder_options(parser)
    args = parser.parse_args(argv)
    records = read_manifest(args.data)
    emb, info = embed_records(records, args, cache_dir=None)
    save_embeddings(args.out, [r.id for r in records], emb, meta=info)
    return {
        **info,
        "cells": len(records),
        "dim": int(emb.shape[1]),
        "out": str(args.out),
        "cells_per_second": len(records) / max(info["seconds"], 1e-9),
    }


def write_manifest(path: Path, records: Sequence[CellRecord], source_csv: Path) -> None:
    """A manifest with the same columns as ``source_csv`` and absolute paths, so it works from anywhere."""
    with source_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = {row["path"]: row for row in reader}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({**rows[record.id], "path": str(record.path)})


def content_groups(records: Sequence[CellRecord]) -> list[list[int]]:
    """Indices of byte-identical images grouped together (SHA-256 of the files), in manifest order."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(hashlib.sha256(record.path.read_bytes()).hexdigest(), []).append(i)
    return list(groups.values())


def cmd_split(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m learning split",
        description="Stratified (label x source) pool/test split of a manifest. Byte-identical images stay "
        "on one side, so a duplicate can never be trained on and tested on.",
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    records = read_manifest(args.data)
    groups = content_groups(records)
    # Split the distinct images; each group follows its first member's stratum and side.
    first = [records[g[0]] for g in groups]
    pool_groups, test_groups = stratified_split(
        [(r.label, r.source) for r in first], args.test_fraction, seed=args.seed
    )
    pool_idx = sorted(i for g in pool_groups for i in groups[g])
    test_idx = sorted(i for g in test_groups for i in groups[g])
    write_manifest(args.out_dir / "pool.csv", [records[i] for i in pool_idx], args.data)
    write_manifest(args.out_dir / "test.csv", [records[i] for i in test_idx], args.data)
    return {
        "pool": len(pool_idx),
        "test": len(test_idx),
        "duplicate_groups_kept_together": sum(len(g) > 1 for g in groups),
        "out_dir": str(args.out_dir),
    }


def seed_list(args: argparse.Namespace) -> list[int]:
    """The seeds a benchmark run covers: ``--seeds`` of them from ``--first-seed``."""
    return list(range(args.first_seed, args.first_seed + args.seeds))


def cmd_benchmark(argv: Sequence[str]) -> dict[str, Any]:
    from learning.benchmark import ALProblem, run_benchmark, write_outputs

    parser = argparse.ArgumentParser(prog="python -m learning benchmark")
    parser.add_argument("--pool", type=Path, required=True, help="manifest of the pool (labels = oracle)")
    parser.add_argument("--test", type=Path, required=True, help="manifest of the held-out test set")
    add_encoder_options(parser)
    parser.add_argument("--strategies", default="random,margin,hybrid,typiclust")
    parser.add_argument("--start", choices=["stratified", "cold"], default="stratified")
    parser.add_argument("--batch", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--label-budget",
        type=int,
        default=None,
        help="with --finetune-every: the project's label budget (the last batch is cut to it, and the "
        "round that reaches it fine-tunes and ends the run)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (F..F+S-1)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="F: run seeds from here (one seed per run, merged later)"
    )
    parser.add_argument("--classifier", choices=["logreg", "svm", "mlp"], default="logreg")
    parser.add_argument("--class-balanced", action="store_true")
    parser.add_argument("--pretrain-seconds", type=float, default=None, help="recorded in the summary")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/embeddings"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--external",
        type=Path,
        default=None,
        help="manifest of another lab's cells, never trained on: each final model is also scored there "
        "(over the classes it holds: per-class recall, macro-F1 over all and over classes with >= 20 "
        "cells, share predicted as each class)",
    )
    parser.add_argument(
        "--save-final-arrays",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --finetune-every and --external: write DIR/<strategy>_seed<S>.npz at each run's last "
        "round (the labelled, test and external cells' embeddings on that round's encoder and the initial "
        "one, their labels, and the round's probabilities) for bench/loop_abstention_rules.py",
    )
    parser.add_argument(
        "--adapt-labels",
        type=int,
        default=0,
        help="with --external: also adapt each final model to that lab with N of its cells labelled, "
        "chosen by the strategy over its cells (as Project.query_source does), and score it on the "
        "lab's other cells and on the test cells (forgetting = test macro-F1 before minus after)",
    )
    tuning = parser.add_argument_group(
        "fine-tuning loop",
        "with --finetune-every K: the product's loop with fine-tuning. The classifier (class-balanced, as "
        "the loop's retrain job fits it) is refit after every batch; after every K batches the encoder is "
        "fine-tuned on the labels so far, every cell re-embedded, and querying continues on the new "
        "embedding. Reports per round: macro-F1 + bootstrap CI, per-source macro-F1, per-class recall, "
        "attribute mean macro-F1, ECE.",
    )
    tuning.add_argument("--finetune-every", type=int, default=0, help="K; 0 (default): frozen embeddings")
    tuning.add_argument("--finetune-minutes", type=float, default=4.0, help="wall-clock budget per fine-tune")
    tuning.add_argument("--finetune-epochs", type=float, default=None, help="epoch cap per fine-tune")
    tuning.add_argument(
        "--finetune-image-size",
        type=int,
        default=None,
        help="side the fine-tunes train and re-embed at (default: --image-size); the loop queries on "
        "--image-size embeddings until the first fine-tune, as a project with finetune_image_size does",
    )
    tuning.add_argument("--finetune-lr", type=float, default=1e-4)
    tuning.add_argument("--finetune-batch", type=int, default=32, help="labelled cells per step")
    tuning.add_argument(
        "--restart-finetune", action="store_true", help="fine-tune the initial encoder each time"
    )
    tuning.add_argument(
        "--probe-heads",
        action="store_true",
        help="LP-FT: heads start as linear probes of the frozen features",
    )
    tuning.add_argument("--no-attribute-heads", action="store_true", help="do not train attribute heads")
    tuning.add_argument(
        "--finetune-augment",
        default="reference",
        choices=sorted(AUGMENT_PRESETS),
        help="augmentation preset of the fine-tunes (travel: + stain jitter, blur, wider zoom)",
    )
    tuning.add_argument("--semi", action="store_true", help="FixMatch-style: also use unlabelled pool cells")
    tuning.add_argument("--semi-threshold", type=float, default=0.95)
    tuning.add_argument("--semi-ratio", type=float, default=1.0, help="unlabelled per labelled cell per step")
    tuning.add_argument("--lambda-u", type=float, default=1.0)
    tuning.add_argument(
        "--unlabelled-factor",
        type=float,
        default=4.0,
        help="unlabelled sample per fine-tune, x labelled count",
    )
    tuning.add_argument(
        "--reference-minutes", type=float, default=None, help="also fine-tune on every pool label this long"
    )
    tuning.add_argument(
        "--reference-product-classifier",
        action="store_true",
        help="score the reference with the loop's classifier too (re-embeds the whole pool)",
    )
    tuning.add_argument(
        "--full-reembed-last",
        action="store_true",
        help="after a fine-tune in the last round re-embed the whole pool, not only the labelled cells",
    )
    tuning.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    tuning.add_argument(
        "--no-measurements",
        action="store_true",
        help="attribute heads on the embedding alone, without the cells' measurements (learning.morphometry)",
    )
    tuning.add_argument("--image-cache", type=Path, default=Path("var/cache"), help="decoded-image cache")
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {', '.join(sorted(STRATEGIES))}")

    pool, test = read_manifest(args.pool), read_manifest(args.test)
    for name, records in (("pool", pool), ("test", test)):
        if any(r.label is None for r in records):
            parser.error(f"every {name} cell needs a label (the oracle and the scorer read them)")
    if args.adapt_labels and args.finetune_every:
        parser.error(
            "--adapt-labels refits the frozen-feature classifier; with --finetune-every it is not built "
            "(bench/finetune_recipe.py --adapt-labels adapts by fine-tuning)"
        )
    if args.adapt_labels and args.external is None:
        parser.error("--adapt-labels needs --external (the lab to adapt to)")
    if args.save_final_arrays is not None and (args.external is None or not args.finetune_every):
        parser.error("--save-final-arrays needs --finetune-every and --external (it saves their last round)")
    external = read_manifest(args.external) if args.external is not None else []
    if any(r.label is None for r in external):
        parser.error("every external cell needs a label (the scorer reads them)")
    pool_x, pool_info = embed_records(pool, args, args.cache_dir)
    test_x, test_info = embed_records(test, args, args.cache_dir)
    external_x = embed_records(external, args, args.cache_dir)[0] if external else None
    classes = sorted({r.label for r in pool if r.label} | {r.label for r in test if r.label})
    attributes = sorted({a for r in pool for a in r.attributes})
    schema = {a: sorted({r.attributes[a] for r in [*pool, *test] if a in r.attributes}) for a in attributes}
    pool_m = test_m = None
    if attributes and not args.no_measurements:
        workers = max(1, args.threads or os.cpu_count() or 1)
        pool_m = measure_cached([str(r.path) for r in pool], args.cache_dir, workers=workers)
        test_m = measure_cached([str(r.path) for r in test], args.cache_dir, workers=workers)
    problem = ALProblem(
        pool_x=pool_x,
        pool_y=np.array([r.label for r in pool]),
        test_x=test_x,
        test_y=np.array([r.label for r in test]),
        classes=classes,
        test_sources=np.array([r.source for r in test]),
        pool_attributes={a: np.array([r.attributes.get(a, "") for r in pool]) for a in attributes},
        test_attributes={a: np.array([r.attributes.get(a, "") for r in test]) for a in attributes},
        attribute_classes=schema,
        pool_measurements=pool_m,
        test_measurements=test_m,
        external_x=external_x,
        external_y=np.array([r.label for r in external]) if external else None,
        adapt_labels=args.adapt_labels,
    )
    if args.finetune_every:
        return finetune_benchmark(args, argv, problem, pool, test, pool_info, test_info, strategies, external)
    summary, rounds = run_benchmark(
        problem,
        strategies=strategies,
        seeds=seed_list(args),
        start=args.start,
        batch=args.batch,
        rounds=args.rounds,
        classifier=args.classifier,
        class_balanced=args.class_balanced,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    summary["encoder"] = {k: v for k, v in pool_info.items() if k != "seconds"}
    summary["stage_seconds"] = {
        "pretrain": args.pretrain_seconds,
        "embed_pool": pool_info["seconds"],
        "embed_test": test_info["seconds"],
        "embeddings_cached": pool_info["cached"] and test_info["cached"],
    }
    summary["command"] = "python -m learning benchmark " + " ".join(argv)
    write_outputs(args.out, summary, rounds)
    return {
        "out": str(args.out),
        "full_label_macro_f1": summary["full_label_macro_f1"],
        "knn20_macro_f1": summary["knn20_macro_f1"],
        "strategies": {
            s: {k: v for k, v in entry.items() if k != "final_test_per_seed"}
            for s, entry in summary["strategies"].items()
        },
    }


def finetune_benchmark(
    args: argparse.Namespace,
    argv: Sequence[str],
    problem: Any,
    pool: Sequence[CellRecord],
    test: Sequence[CellRecord],
    pool_info: dict[str, Any],
    test_info: dict[str, Any],
    strategies: Sequence[str],
    external: Sequence[CellRecord] = (),
) -> dict[str, Any]:
    """``benchmark --finetune-every K``: the loop with fine-tuning (:mod:`learning.finetune_benchmark`);
    ``external``: another lab's cells, scored every round on the current encoder (never trained on)."""
    import os

    import torch

    from learning.data import CellImageDataset
    from learning.finetune_benchmark import (
        FinetunePlan,
        against_targets,
        full_label_reference,
        run_finetune_loop,
    )
    from learning.semi import SemiSupervised

    started = time.perf_counter()
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    # The loop embeds at --image-size until the first fine-tune; the fine-tuned encoders see
    # --finetune-image-size (as Project.finetune_image_size), so the images are decoded at that size.
    size = args.finetune_image_size or int(pool_info["image_size"])
    t0 = time.perf_counter()
    crop = str(pool_info["crop"])
    pool_images = CellImageDataset(pool, size, crop=crop).preload(cache_dir=args.image_cache, progress=True)
    test_images = CellImageDataset(test, size, crop=crop).preload(cache_dir=args.image_cache, progress=True)
    external_images = CellImageDataset(list(external), size, crop=crop).preload() if external else None
    preload_s = time.perf_counter() - t0
    semi = (
        SemiSupervised(threshold=args.semi_threshold, lambda_u=args.lambda_u, ratio=args.semi_ratio)
        if args.semi
        else None
    )
    plan = FinetunePlan(
        every=args.finetune_every,
        minutes=args.finetune_minutes,
        epochs=args.finetune_epochs,
        semi=semi,
        unlabelled_factor=args.unlabelled_factor,
        attributes=not args.no_attribute_heads,
        lr=args.finetune_lr,
        batch_size=args.finetune_batch,
        continue_from_last=not args.restart_finetune,
        full_reembed_last=args.full_reembed_last,
        probe_heads=args.probe_heads,
        augment=args.finetune_augment,
    )
    encoder, _info = encoder_spec(args)
    runs = [
        run_finetune_loop(
            problem,
            pool_images,
            test_images,
            encoder,
            plan,
            strategy=strategy,
            seed=seed,
            batch=args.batch,
            rounds=args.rounds,
            classifier=args.classifier,
            progress=say,
            start=args.start,
            label_budget=args.label_budget,
            external_images=external_images,
            save_final_arrays=args.save_final_arrays,
        )
        for seed in seed_list(args)
        for strategy in strategies
    ]
    reference = None
    if args.reference_minutes:
        reference = full_label_reference(
            problem,
            pool_images,
            test_images,
            encoder,
            plan,
            minutes=args.reference_minutes,
            classifier=args.classifier,
            product_classifier=args.reference_product_classifier,
            progress=say,
        )
    finals: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        last = [run.rounds[-1] for run in runs if run.strategy == strategy]
        mean: dict[str, Any] = {
            key: float(np.mean([r[key] for r in last]))
            for key in ("labels", "macro_f1", "accuracy", "ece", "attribute_mean_macro_f1")
            if all(r.get(key) is not None for r in last)
        }
        mean["per_source_macro_f1"] = {
            s: float(np.mean([r["per_source_macro_f1"][s] for r in last]))
            for s in last[0]["per_source_macro_f1"]
        }
        mean["per_class_recall"] = {
            c: float(np.mean([r["per_class_recall"][c] for r in last])) for c in last[0]["per_class_recall"]
        }
        mean["finetune_seconds"] = float(np.mean([r["finetune_seconds_so_far"] for r in last]))
        if all("external" in r for r in last):
            mean["external"] = external_means(last)
        mean["against_targets"] = against_targets(mean)
        finals[strategy] = mean
    summary: dict[str, Any] = {
        "command": "python -m learning benchmark " + " ".join(argv),
        "encoder": {k: v for k, v in pool_info.items() if k != "seconds"},
        "protocol": {
            "loop": "finetune",
            "strategies": list(strategies),
            "seeds": seed_list(args),
            "start": args.start,
            "batch": args.batch,
            "rounds": args.rounds,
            "classifier": args.classifier,
            "class_weight": "balanced",
            "plan": plan.to_dict(),
            "threads": torch.get_num_threads(),
        },
        "pool_size": len(pool),
        "test_size": len(test),
        "final": finals,
        "reference": reference,
        "runs": [
            {"strategy": r.strategy, "seed": r.seed, "rounds": r.rounds, "finetunes": r.finetunes}
            for r in runs
        ],
        "stage_seconds": {
            "embed_pool": pool_info["seconds"],
            "embed_test": test_info["seconds"],
            "embeddings_cached": pool_info["cached"] and test_info["cached"],
            "preload_images": round(preload_s, 1),
            "total_wall": round(time.perf_counter() - started, 1),
        },
    }
    write_finetune_outputs(args.out, summary)
    return {
        "out": str(args.out),
        "final": finals,
        "reference": reference and {"head_test": reference["head_test"], "test": reference["test"]},
    }


def external_means(last: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seed means of the other lab's figures in the final rounds: macro-F1, what it is called blast,
    and, per abstention rule, the share abstained on (own test cells and the lab's) and of the lab's
    cells answered "blast"."""
    ext = [r["external"] for r in last]
    out: dict[str, Any] = {
        "macro_f1_min20": float(np.mean([e["macro_f1_min20"] or 0.0 for e in ext])),
        "macro_f1_all": float(np.mean([e["macro_f1_all"] for e in ext])),
        "predicted_blast": float(np.mean([e["predicted_share"].get("blast", 0.0) for e in ext])),
        "per_class_recall": {
            c: float(np.mean([e["per_class_recall"][c] for e in ext])) for c in ext[0]["per_class_recall"]
        },
    }
    for rule in last[0]["abstention"]:
        rows = [r["abstention"][rule] for r in last]
        out[f"abstention_{rule}"] = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    return out


def write_finetune_outputs(out_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``rounds.csv`` (one row per round: the headline numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_number) + "\n")
    columns = [
        "strategy",
        "seed",
        "round",
        "labels",
        "encoder_version",
        "finetuned",
        "macro_f1",
        "macro_f1_lo",
        "macro_f1_hi",
        "accuracy",
        "pbc_macro_f1",
        "munich_aml_macro_f1",
        "blast_recall",
        "attribute_mean_macro_f1",
        "ece",
        "finetune_seconds_so_far",
        "embed_seconds_so_far",
        "retrain_and_score_seconds",
        "query_seconds",
        "ran_as",
    ]
    with (out_dir / "rounds.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for run in summary["runs"]:
            for r in run["rounds"]:
                sources = r.get("per_source_macro_f1") or {}
                ci = r.get("macro_f1_ci") or [None, None]
                row = {
                    **r,
                    "finetuned": bool(r.get("finetuned")),
                    "macro_f1_lo": ci[0],
                    "macro_f1_hi": ci[1],
                    "pbc_macro_f1": sources.get("pbc"),
                    "munich_aml_macro_f1": sources.get("munich_aml"),
                    "blast_recall": r["per_class_recall"].get("blast"),
                }
                writer.writerow([_cell(row.get(c)) for c in columns])


def _cell(value: Any) -> Any:
    return f"{value:.5f}" if isinstance(value, float) else ("" if value is None else value)


def _json_number(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m learning {{{','.join(COMMANDS)}}} [options]  (--help after a command)",
            file=sys.stderr,
        )
        return 2
    command, rest = argv[0], argv[1:]
    if command == "pretrain":
        from learning.selfsup.__main__ import main as pretrain_main

        return pretrain_main(rest)
    if command == "bench-query":
        from learning.bench_query import main as bench_query_main

        return int(bench_query_main(rest) or 0)
    handlers = {"embed": cmd_embed, "split": cmd_split, "benchmark": cmd_benchmark}
    result = handlers[command](rest)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
