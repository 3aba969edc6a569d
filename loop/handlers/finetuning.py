"""Full fine-tuning of the encoder on the labels so far: a new encoder version, which (like a new
pretrained encoder) is re-embedded, re-indexed and retrained on. Runs on request or every N batches
(``Project.finetune_every``); frozen-embedding retraining stays the fast default after each batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import transaction

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell
from jobs.models import Job
from jobs.registry import JobProgress
from learning.data import CellImageDataset
from learning.finetune import finetune
from learning.selfsup.train import load_checkpoint, save_encoder
from loop.handlers.artifacts import ENCODER_FILE, job_dir
from loop.handlers.encoders import load_backbone, torch_threads
from loop.handlers.records import cell_records
from loop.handlers.retraining import class_names
from loop.models import ModelVersion
from loop.selectors import latest_version, version_written_by
from loop.services.versions import create_version

DEFAULT_MINUTES = 5.0
DEFAULT_EPOCHS = 15.0


def finetune_encoder(job: Job, progress: JobProgress) -> ModelVersion:
    project = job.project
    assert project is not None
    done = version_written_by(job, ModelVersion.Kind.ENCODER)
    if done is not None:
        return done
    encoder = latest_version(project, ModelVersion.Kind.ENCODER)
    if encoder is None:
        raise ValueError("the project has no encoder to fine-tune yet")
    classes = class_names(project)
    states = cell_labels(project=project)
    pool = Cell.objects.filter(project=project, role=Cell.Role.POOL, pk__in=list(states)).order_by("pk")
    cells = [c for c in pool if states[c.pk].status is LabelStatus.LABELLED and states[c.pk].label]
    if len({states[c.pk].label for c in cells}) < 2:
        raise ValueError("fine-tuning needs labels of at least two classes")
    torch_threads()
    backbone, size = load_backbone(encoder)
    progress(0.02, f"decoding {len(cells)} labelled cells")
    images = CellImageDataset(cell_records(cells), size).preload()
    labels = np.array([classes.index(str(states[c.pk].label)) for c in cells], dtype=np.int64)
    result = finetune(
        backbone,
        images,
        labels,
        len(classes),
        epochs=float(job.params.get("epochs", DEFAULT_EPOCHS)),
        minutes=float(job.params.get("minutes", DEFAULT_MINUTES)),
        lr=float(job.params.get("lr", 1e-4)),
        progress=lambda fraction, message: progress(0.05 + 0.9 * fraction, message),
    )
    meta: dict[str, Any] = {
        "backbone": encoder.artifacts.get("backbone"),
        "backbone_kwargs": {},
        "image_size": size,
        "embedding_dim": int(getattr(result.backbone, "num_features", 0)),
        "method": "finetune",
        "finetuned_from": encoder.version,
        "label_count": len(cells),
    }
    if encoder.artifacts.get("checkpoint"):  # keep the pretraining's own description of the backbone
        previous = load_checkpoint(encoder.artifacts["checkpoint"])["meta"]
        meta.update({k: previous[k] for k in ("backbone", "backbone_kwargs") if k in previous})
    path = save_encoder(job_dir(job) / ENCODER_FILE, result.backbone, meta)
    with transaction.atomic():
        return create_version(
            project=project,
            kind=ModelVersion.Kind.ENCODER,
            job=job,
            parent=encoder,
            artifacts={
                "checkpoint": str(path),
                "backbone": meta["backbone"],
                "image_size": size,
                "method": "finetune",
            },
            metrics={
                "epochs_done": result.epochs_done,
                "seconds": round(result.seconds, 2),
                "stopped_by": result.stopped_by,
                "final_loss": result.history[-1]["loss"] if result.history else None,
                "device": str(result.device),
            },
            label_count=len(cells),
            trained_on=sorted(i for c in cells for i in states[c.pk].annotation_ids),
        )
