"""Distinct cell files for the million-cell benchmark, made from the shared cells by small real transforms.

    .venv/bin/python bench/million_files.py --data ../shared/data/leukocytes/manifest.csv \
        --cells 1000000 --out var/bench-million/files [--workers 2] [--parts 4]

Each shared cell is decoded once and written as up to 64 variants: the 8 symmetries of the square
(rotations by 90 degrees, with and without a mirror) times 8 JPEG qualities (82 to 96). Every variant is a
real picture of the same cell, as a turned slide or another camera setting would give, and a different
file (its own bytes, so its own content hash). Variants are taken cell by cell in the manifest's order, all
of one variant before the next, so any prefix holds every class in the shared proportions.

Writes ``part-K.csv`` manifests (path, label, subtype, source, role; the role of the shared cell's row is
kept blank: the import assigns validation cells itself) of at most ``ceil(cells / parts)`` rows each: a
manifest is read whole and capped at 64 MiB (``annotation.importing.sources``), so a million cells are
imported as a few manifests, as a lab would add them. ``source.csv`` maps every file to its shared cell.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

TRANSPOSES: list[Image.Transpose | None] = [
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
]
QUALITIES = [82, 84, 86, 88, 90, 92, 94, 96]
VARIANTS = len(TRANSPOSES) * len(QUALITIES)


def variant_name(variant: int) -> str:
    return f"v{variant:02d}"


def write_variants(job: tuple[str, str, list[int]]) -> int:
    """Decode one shared cell and write the asked variants; returns the bytes written."""
    source, out_dir, variants = job
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    written = 0
    for variant in variants:
        transpose = TRANSPOSES[variant % len(TRANSPOSES)]
        quality = QUALITIES[variant // len(TRANSPOSES)]
        picture = image if transpose is None else image.transpose(transpose)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality)
        target = Path(out_dir) / f"{variant_name(variant)}.jpg"
        target.write_bytes(buffer.getvalue())
        written += buffer.tell()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parts", type=int, default=4)
    args = parser.parse_args()

    with args.data.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if args.cells > len(rows) * VARIANTS:
        raise SystemExit(f"at most {len(rows) * VARIANTS} distinct variants of {len(rows)} cells")
    # variant v of row r is file number v * len(rows) + r: a prefix covers every cell before any repeats
    per_row: list[list[int]] = [[] for _ in rows]
    for number in range(args.cells):
        per_row[number % len(rows)].append(number // len(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index, (row, variants) in enumerate(zip(rows, per_row, strict=True)):
        folder = args.out / "cells" / f"{index // 1000:03d}" / f"{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((str(args.data.parent / row["path"]), str(folder), variants))
    start = time.perf_counter()
    total = 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done, size in enumerate(pool.map(write_variants, jobs, chunksize=64), start=1):
            total += size
            if done % 2000 == 0:
                print(f"{done}/{len(jobs)} cells, {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start

    per_part = math.ceil(args.cells / args.parts)
    fields = ["path", "label", "subtype", "source"]
    handles = [(args.out / f"part-{k}.csv").open("w", newline="") for k in range(args.parts)]
    writers = [csv.DictWriter(h, fieldnames=fields) for h in handles]
    for writer in writers:
        writer.writeheader()
    with (args.out / "source.csv").open("w", newline="") as mapping:
        mapper = csv.writer(mapping)
        mapper.writerow(["path", "shared_path", "variant"])
        for number in range(args.cells):
            index, variant = number % len(rows), number // len(rows)
            row = rows[index]
            rel = f"cells/{index // 1000:03d}/{index:05d}/{variant_name(variant)}.jpg"
            writers[number // per_part].writerow(
                {
                    "path": rel,
                    "label": row["label"],
                    "subtype": row.get("subtype", ""),
                    "source": row["source"],
                }
            )
            mapper.writerow([rel, row["path"], variant])
    for handle in handles:
        handle.close()
    print(f"{args.cells} files, {total / 1e9:.2f} GB, {seconds:.0f} s with {args.workers} processes")


if __name__ == "__main__":
    main()
