"""Command line: ``python -m learning.selfsup --manifest M --method triplet --minutes 10 --out run.pt``.

Prints the JSON summary that :func:`learning.selfsup.pretrain` returns.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from learning.data import default_data_dir, read_manifest
from learning.imaging import CROP_MODES
from learning.selfsup.config import PretrainConfig
from learning.selfsup.methods import METHODS
from learning.selfsup.train import pretrain
from learning.transforms import AUGMENT_PRESETS
from models_zoo import list_models


def _key_values(items: Sequence[str]) -> dict[str, Any]:
    """``["small_input=true", "width=24"]`` -> ``{"small_input": True, "width": 24}`` (JSON values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m learning.selfsup", description=__doc__)
    p.add_argument("--data", "--manifest", dest="manifest", default=str(default_data_dir() / "manifest.csv"))
    p.add_argument("--limit", type=int, default=None, help="use the first N cells only")
    p.add_argument("--method", choices=sorted(METHODS), default=None)
    p.add_argument("--backbone", choices=list_models(), default=None)
    p.add_argument("--backbone-kw", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--method-kw", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument(
        "--crop",
        choices=CROP_MODES,
        default="centre",
        help="what of each image the encoder sees (learning.imaging.square_box); must match --resume's",
    )
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--augment", choices=sorted(AUGMENT_PRESETS), default="reference")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    records = read_manifest(a.manifest, limit=a.limit)
    config = PretrainConfig(
        method=a.method,
        backbone=a.backbone,
        backbone_kwargs=_key_values(a.backbone_kw) or None,
        method_kwargs=_key_values(a.method_kw) or None,
        image_size=a.image_size,
        crop=a.crop,
        epochs=a.epochs,
        minutes=a.minutes,
        batch_size=a.batch_size,
        lr=a.lr,
        augment=a.augment,
        cache_dir=a.cache_dir,
        device=a.device,
        num_threads=a.threads,
        seed=a.seed,
    )
    result = pretrain(records, config, out=a.out, resume=a.resume, progress=not a.quiet)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
