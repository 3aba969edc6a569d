"""Make a compact copy of the leukocyte set for a GPU machine that cannot see ``../shared``.

Every image is decoded by :func:`learning.imaging.decode_square`, the geometry of
:func:`learning.data.load_image` for ``--size`` and ``--crop`` (JPEG draft, the centre square or the
cell's square, bilinear resize) but
*without* gray-world normalisation, and saved as a
``--size`` x ``--size`` JPEG. ``CellImageDataset`` at the same size then neither crops nor resizes it, so
the only difference from decoding the originals is the JPEG re-encoding (quality ``--quality``, 4:2:0).

Writes, under ``--out`` (an ignored folder such as ``var/gpu_data``)::

    images/<same relative paths as the source manifest>
    manifest.csv               same columns and rows as the source, paths relative
    pool.csv, test.csv         the split of ``--split-dir`` (``python -m learning split`` on the originals),
                               rewritten to the compact copy, paths relative (so the folder travels)

Usage::

    .venv/bin/python -m learning split --data ../shared/data/leukocytes/manifest.csv --test-fraction 0.15 \
        --seed 0 --out-dir var/gpu_data/split_orig
    .venv/bin/python bench/gpu/prepare_data.py --data ../shared/data/leukocytes/manifest.csv \
        --split-dir var/gpu_data/split_orig --size 96 --quality 85 --out var/gpu_data
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from learning.imaging import decode_square  # noqa: E402


def shrink(src: Path, dst: Path, size: int, quality: int, crop: str = "centre") -> int:
    """``load_image``'s geometry (draft, ``crop``'s square, bilinear resize), no gray world; returns bytes."""
    img = decode_square(src, size, crop=crop)
    dst.parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, "JPEG", quality=quality, subsampling=2, optimize=True)
    return dst.stat().st_size


def rewrite_split(split_csv: Path, source_root: Path, out_csv: Path) -> int:
    """Turn a split manifest with absolute paths to the originals into one with relative paths."""
    with split_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    for row in rows:
        row["path"] = Path(row["path"]).relative_to(source_root).as_posix()
    with out_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="source manifest (paths relative to it)")
    p.add_argument("--split-dir", type=Path, default=None, help="pool.csv/test.csv of `learning split`")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument(
        "--crop",
        choices=["centre", "cell"],
        default="centre",
        help="square to keep (learning.imaging.square_box); with 'cell' the copy holds the cell crops, "
        "so the GPU machine decodes it with crop='centre' (a no-op at the same size)",
    )
    p.add_argument("--limit", type=int, default=None, help="first N rows only (smoke tests)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    source_root = a.data.absolute().parent
    with a.data.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if a.limit is not None:
        rows = rows[: a.limit]
    a.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        sizes = list(
            pool.map(
                lambda row: shrink(source_root / row["path"], a.out / row["path"], a.size, a.quality, a.crop),
                rows,
                chunksize=64,
            )
        )
    with (a.out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    result = {
        "images": len(rows),
        "bytes": sum(sizes),
        "size": a.size,
        "quality": a.quality,
        "crop": a.crop,
        "out": str(a.out),
    }
    if a.split_dir is not None:
        for name in ("pool", "test"):
            result[name] = rewrite_split(a.split_dir / f"{name}.csv", source_root, a.out / f"{name}.csv")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
