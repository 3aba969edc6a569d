"""Embedding extraction throughput against the raw model forward pass, same model and batch size.

    .venv/bin/python bench/embed_throughput.py --cells 512 --model resnet18 --image-size 64 --batch 128

Both are timed in one run after a warm-up batch: the raw path calls ``forward_features`` on a ready
tensor; ``extract_embeddings`` decodes the real images itself (records in, L2-normalised numpy out) and,
separately, runs from a preloaded dataset. Prints images per second and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning.data import CellImageDataset, default_data_dir, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings
from models_zoo import create_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=512)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    records = sample_per_class(read_manifest(default_data_dir() / "manifest.csv"), args.cells // 9 + 1)[
        : args.cells
    ]
    model = create_model(args.model, pretrained=args.pretrained).eval().to(memory_format=torch.channels_last)
    dataset = CellImageDataset(records, args.image_size)
    dataset.preload()
    images = dataset.images.float().div(255).contiguous(memory_format=torch.channels_last)

    with torch.inference_mode():
        model.forward_features(images[: args.batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(images), args.batch):
            model.forward_features(images[i : i + args.batch])
        raw = time.perf_counter() - start
    start = time.perf_counter()
    extract_embeddings(model, dataset, batch_size=args.batch)
    preloaded = time.perf_counter() - start
    start = time.perf_counter()
    extract_embeddings(model, records, image_size=args.image_size, batch_size=args.batch)
    decoding = time.perf_counter() - start

    n = len(records)
    result = {
        "command": "python bench/embed_throughput.py " + " ".join(sys.argv[1:]),
        "cells": n,
        "model": args.model,
        "image_size": args.image_size,
        "batch": args.batch,
        "raw_forward_img_per_s": round(n / raw, 1),
        "extract_preloaded_img_per_s": round(n / preloaded, 1),
        "extract_decoding_img_per_s": round(n / decoding, 1),
        "ratio_preloaded_to_raw": round(raw / preloaded, 3),
        "ratio_decoding_to_raw": round(raw / decoding, 3),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
