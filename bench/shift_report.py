"""The per-source shift report on real cells: the training sources' held-out cells against another lab's.

    .venv/bin/python bench/shift_report.py --out bench/results/shift_report.json

As a project would see it: a labelled set from ../shared/data/leukocytes (``--per-class`` per class,
both sources, pbc and munich_aml), validation cells (``--validation`` per class) that calibrate the
classifier (class-balanced logistic regression, temperature scaling: the loop's retrain) and give the
reference confidence, then three groups of cells nobody labelled: held-out pbc cells, held-out munich_aml
cells, and every cell of ../shared/data/external_bccd (another lab and camera; never trained on). Each
group gets ``learning.shift.source_shift``: distance ratio, class-mix distance, confidence drop and level.
Embeddings: the ImageNet EfficientNet-Lite0 the loop starts on, at ``--image-size`` px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from learning.calibration import TemperatureScaled, calibrate  # noqa: E402
from learning.classifiers import AlignedClassifier  # noqa: E402
from learning.data import CellImageDataset, CellRecord, read_manifest, sample_per_class  # noqa: E402
from learning.embeddings import extract_embeddings  # noqa: E402
from learning.imaging import CROP_MODES  # noqa: E402
from learning.index import EmbeddingIndex  # noqa: E402
from learning.shift import (  # noqa: E402
    LabelledNeighbourhood,
    ShiftReference,
    nearest_other_distance,
    source_shift,
)
from models_zoo import create_model  # noqa: E402


def embed(model: torch.nn.Module, records: list[CellRecord], size: int, crop: str) -> np.ndarray:
    dataset = CellImageDataset(records, size, crop=crop)
    dataset.preload()
    return extract_embeddings(model, dataset)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = REPO.parent / "shared" / "data"
    parser.add_argument("--data", type=Path, default=shared / "leukocytes")
    parser.add_argument("--external", type=Path, default=shared / "external_bccd")
    parser.add_argument("--per-class", type=int, default=90)
    parser.add_argument("--validation", type=int, default=30)
    parser.add_argument("--held-out", type=int, default=400, help="unlabelled cells per training source")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--crop", choices=CROP_MODES, default="cell", help="a new project's default: cell")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    records = read_manifest(args.data / "manifest.csv")
    labelled = sample_per_class(records, args.per_class, seed=0)
    taken = {r.path for r in labelled}
    validation = sample_per_class([r for r in records if r.path not in taken], args.validation, seed=1)
    taken |= {r.path for r in validation}
    rng = random.Random(2)
    groups: dict[str, list[CellRecord]] = {}
    for source in ("pbc", "munich_aml"):
        rest = [r for r in records if r.path not in taken and r.source == source]
        groups[f"{source} (held out)"] = rng.sample(rest, min(args.held_out, len(rest)))
    groups["bccd (another lab)"] = read_manifest(args.external / "manifest.csv")

    model = create_model("efficientnet_lite0", pretrained=True).eval()
    torch.manual_seed(0)
    emb_labelled = embed(model, labelled, args.image_size, args.crop)
    emb_validation = embed(model, validation, args.image_size, args.crop)
    classes = sorted({str(r.label) for r in records})
    y = np.array([str(r.label) for r in labelled])
    base = AlignedClassifier(classes, "logreg").fit(emb_labelled, y)
    calibration = calibrate(
        np.asarray(base.predict_proba(emb_validation)), [str(r.label) for r in validation], classes
    )
    clf = TemperatureScaled(base, calibration.temperature)
    validation_confidence = float(np.asarray(clf.predict_proba(emb_validation)).max(axis=1).mean())
    reference = ShiftReference(emb_labelled, list(y), validation_confidence, classes)
    ids = np.arange(len(labelled), dtype=np.int64)
    index = EmbeddingIndex.build(emb_labelled, ids)
    ref_distance = float(np.median(nearest_other_distance(index, emb_labelled, ids)))
    labelled_cells = LabelledNeighbourhood.build(emb_labelled, ids, y)  # the page's abstention, per class too

    report: dict[str, Any] = {}
    next_id = len(labelled)
    for name, group in groups.items():
        emb = embed(model, group, args.image_size, args.crop)
        group_ids = np.arange(next_id, next_id + len(group), dtype=np.int64)  # none is a labelled cell
        next_id += len(group)
        probs = np.asarray(clf.predict_proba(emb))
        shift = source_shift(
            reference=reference,
            reference_index=index,
            reference_distance=ref_distance,
            source=name,
            embeddings=emb,
            cell_ids=group_ids,
            probabilities=probs,
            labelled_cells=labelled_cells,
        )
        report[name] = shift.to_dict()
    result = {
        "command": " ".join([".venv/bin/python", "bench/shift_report.py", *(argv or sys.argv[1:])]),
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "encoder": f"efficientnet_lite0 ImageNet, {args.image_size} px, {args.crop} crop",
        "labelled": len(labelled),
        "validation": len(validation),
        "temperature": calibration.temperature,
        "validation_confidence": round(validation_confidence, 4),
        "reference_median_distance": round(ref_distance, 4),
        "reference_mix": {k: round(v, 4) for k, v in reference.mix().items()},
        "sources": report,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
