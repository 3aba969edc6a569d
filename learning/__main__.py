"""``python -m learning COMMAND ...``: pretrain, embed, split, benchmark, bench-query.

Every command shows a progress bar (or progress lines) on stderr and prints a JSON result on stdout.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.data import CellRecord, data_hash, read_manifest, stratified_split
from learning.query import STRATEGIES

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
        }
    from models_zoo import create_model

    model = create_model(args.backbone, pretrained=args.pretrained).eval()
    return model, {
        "encoder": f"{args.backbone}{' (ImageNet weights)' if args.pretrained else ' (random init)'}",
        "backbone": args.backbone,
        "method": None,
        "image_size": args.image_size,
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
    key = hashlib.sha256(f"{encoder_id}|{image_size}|{data_hash(records)}".encode()).hexdigest()[:16]
    if cache_dir is not None and (cache_dir / key / "embeddings.npy").exists():
        _ids, emb, meta = load_embeddings(cache_dir / key)
        return emb, {**info, "image_size": image_size, "seconds": meta.get("seconds", 0.0), "cached": True}
    start = time.perf_counter()
    emb = extract_embeddings(
        model,
        records,
        image_size=image_size,
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
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..S-1)")
    parser.add_argument("--classifier", choices=["logreg", "svm", "mlp"], default="logreg")
    parser.add_argument("--class-balanced", action="store_true")
    parser.add_argument("--pretrain-seconds", type=float, default=None, help="recorded in the summary")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/embeddings"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {', '.join(sorted(STRATEGIES))}")

    pool, test = read_manifest(args.pool), read_manifest(args.test)
    for name, records in (("pool", pool), ("test", test)):
        if any(r.label is None for r in records):
            parser.error(f"every {name} cell needs a label (the oracle and the scorer read them)")
    pool_x, pool_info = embed_records(pool, args, args.cache_dir)
    test_x, test_info = embed_records(test, args, args.cache_dir)
    classes = sorted({r.label for r in pool if r.label} | {r.label for r in test if r.label})
    attributes = sorted({a for r in pool for a in r.attributes})
    schema = {a: sorted({r.attributes[a] for r in [*pool, *test] if a in r.attributes}) for a in attributes}
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
    )
    summary, rounds = run_benchmark(
        problem,
        strategies=strategies,
        seeds=list(range(args.seeds)),
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
