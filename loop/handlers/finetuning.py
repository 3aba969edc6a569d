"""Full fine-tuning of the encoder on the labels so far: a new encoder version, which (like a new
pretrained encoder) is re-embedded, re-indexed and retrained on. Runs on request or every N batches
(``Project.finetune_every``); frozen-embedding retraining stays the fast default after each batch.

Supervised by default: cross-entropy on the labelled pool cells, with the labelled cells' attributes
(the resolved annotation's ``attributes``, :func:`annotation.labels.cell_labels`) training one head per
attribute of the project's schema next to the cell-type head. With ``semi`` a random sample of the
unlabelled pool (up to ``unlabelled_factor`` times the labelled count, at most :data:`MAX_UNLABELLED`;
skipped cells left out, as the query leaves them out) joins as FixMatch-style consistency targets. Job
params: ``image_size`` (default ``Project.finetune_image_size``, else the encoder's), ``minutes``,
``epochs``, ``lr``, ``semi`` (true: FixMatch too), ``unlabelled_factor``, ``threshold``, ``lambda_u``,
``ratio``, ``attributes`` (false: no attribute heads), ``probe_heads`` (true: LP-FT, heads start as
linear probes), ``augment`` (a preset name: ``travel`` adds stain jitter, blur and a wider zoom).

Adapting to a new site (``Project.query_source`` set): within each class the sampler draws that source's
labelled cells as often as all the others together, so its first few dozen labels are not drowned by
the hundreds of the old sites. On 50 labels of another lab (bench/README.md, "Adapting by fine-tuning")
this lifted that lab's macro-F1 from 0.68 to 0.72 (2 seeds, 10 epochs) with the old sites' score unchanged.

Why these defaults (bench/README.md, "Fine-tuning recipes"): on the same 810 labels a supervised
fine-tune of 20 epochs beat LP-FT by 0.05 and LP-FT + FixMatch by 0.07 macro-F1, and 20 epochs at 128 px
took 506 s on an idle 2-core machine, inside :data:`DEFAULT_MINUTES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.db import transaction

from annotation.labels import CellLabel, LabelStatus, cell_labels
from annotation.models import Cell, Project
from jobs.models import Job
from jobs.registry import JobProgress
from learning.data import CellImageDataset
from learning.finetune import finetune
from learning.selfsup.train import load_checkpoint, save_encoder
from learning.semi import SemiSupervised
from learning.transforms import augment_config
from loop.handlers.artifacts import ENCODER_FILE, job_dir
from loop.handlers.encoders import encoder_crop, load_backbone, torch_threads
from loop.handlers.records import cell_records
from loop.handlers.retraining import class_names
from loop.models import ModelVersion, QueryItem, relative_artifact
from loop.selectors import latest_version, version_written_by
from loop.services.versions import create_version

DEFAULT_MINUTES = 10.0  # a cap for a busy machine; the epochs end the run first on an idle one
DEFAULT_EPOCHS = 20.0
DEFAULT_SEMI = False
DEFAULT_AUGMENT = "reference"  # a preset of learning.transforms.AUGMENT_PRESETS
DEFAULT_UNLABELLED_FACTOR = 4.0
MAX_UNLABELLED = 4096  # decoded in memory next to the labelled cells: 0.6 GB at 224 px, 50 MB at 64 px


def _flag(value: object) -> bool:
    return value not in (False, 0, "0", "false", "False", "no", None)


def unlabelled_sample(project: Project, states: Mapping[int, CellLabel], *, n: int, seed: int) -> list[Cell]:
    """Up to ``n`` pool cells nobody annotated and the loop did not skip, drawn at random (in pk order)."""
    if n <= 0:
        return []
    skipped = set(
        QueryItem.objects.filter(batch__project=project, skipped_at__isnull=False).values_list(
            "cell_id", flat=True
        )
    )
    pool_ids = (
        Cell.objects.filter(project=project, role=Cell.Role.POOL).order_by("pk").values_list("pk", flat=True)
    )
    free = [pk for pk in pool_ids if pk not in states and pk not in skipped]
    if not free:
        return []
    picked = np.random.default_rng(seed).choice(len(free), size=min(n, len(free)), replace=False)
    return list(Cell.objects.filter(pk__in=[free[i] for i in picked]).order_by("pk"))


def attribute_targets(
    cells: Sequence[Cell], states: Mapping[int, CellLabel], usable: Mapping[str, Sequence[str]]
) -> tuple[np.ndarray, dict[str, int]] | None:
    """(N, A) value indices of the labelled cells' attributes (-1: not given or not in ``usable``, the
    project's :meth:`~annotation.models.Project.learnable_attributes`) and the ``attribute_schema`` for
    :func:`learning.finetune.finetune`; None when no cell has any."""
    if not usable or not cells:
        return None
    targets = np.full((len(cells), len(usable)), -1, dtype=np.int64)
    for j, (name, values) in enumerate(usable.items()):
        for i, cell in enumerate(cells):
            value = states[cell.pk].attributes.get(name)
            if value in values:
                targets[i, j] = values.index(value)
    if not (targets >= 0).any():
        return None
    return targets, {name: len(values) for name, values in usable.items()}


def site_groups(cells: Sequence[Cell], source: str) -> np.ndarray | None:
    """(N,) 1 for the cells of ``source`` (the site being adapted to), 0 for the others, for
    :func:`learning.finetune.finetune`'s ``sample_groups``; None without a source or with no labelled
    cell of it (the sampler then balances classes only)."""
    if not source:
        return None
    groups = np.array([cell.source == source for cell in cells], dtype=np.int64)
    return groups if groups.any() else None


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
    # Labels of retired classes train nothing (their class is not one the model learns).
    cells = [c for c in pool if states[c.pk].status is LabelStatus.LABELLED and states[c.pk].label in classes]
    if len({states[c.pk].label for c in cells}) < 2:
        raise ValueError("fine-tuning needs labels of at least two classes")
    params = job.params
    semi: SemiSupervised | None = None
    free: list[Cell] = []
    if _flag(params.get("semi", DEFAULT_SEMI)):
        semi = SemiSupervised(
            threshold=float(params.get("threshold", 0.95)),
            lambda_u=float(params.get("lambda_u", 1.0)),
            ratio=float(params.get("ratio", 1.0)),
        )
        factor = float(params.get("unlabelled_factor", DEFAULT_UNLABELLED_FACTOR))
        n_free = min(MAX_UNLABELLED, round(factor * len(cells)))
        free = unlabelled_sample(project, states, n=n_free, seed=job.pk)
    attributes = (
        attribute_targets(cells, states, project.learnable_attributes())
        if _flag(params.get("attributes", True))
        else None
    )
    augment = str(params.get("augment", DEFAULT_AUGMENT))
    augment_config(augment)  # an unknown preset fails here, before minutes of decoding
    torch_threads()
    backbone, start_size = load_backbone(encoder)
    # The fine-tuned encoder may see larger cells than the one it starts from (the loop starts at 64 px
    # for a quick first batch; fine-tuning at 128 px is where the accuracy comes from). Global pooling
    # makes the backbone's weights size-agnostic; every later stage reads the size from the new version.
    size = int(params.get("image_size") or project.finetune_image_size or start_size)
    crop = encoder_crop(encoder)
    progress(0.02, f"decoding {len(cells)} labelled and {len(free)} unlabelled cells")
    images = CellImageDataset(cell_records(cells), size, crop=crop).preload()
    unlabelled = CellImageDataset(cell_records(free), size, crop=crop).preload() if free else None
    labels = np.array([classes.index(str(states[c.pk].label)) for c in cells], dtype=np.int64)
    groups = site_groups(cells, project.query_source)
    result = finetune(
        backbone,
        images,
        labels,
        len(classes),
        epochs=float(params.get("epochs", DEFAULT_EPOCHS)),
        minutes=float(params.get("minutes", DEFAULT_MINUTES)),
        lr=float(params.get("lr", 1e-4)),
        progress=lambda fraction, message: progress(0.05 + 0.9 * fraction, message),
        unlabelled=unlabelled,
        semi=semi if unlabelled is not None else None,
        attributes=attributes[0] if attributes is not None else None,
        attribute_schema=attributes[1] if attributes is not None else None,
        probe_heads=_flag(params.get("probe_heads", False)),
        augment=augment,
        sample_groups=groups,
    )
    meta: dict[str, Any] = {
        "backbone": encoder.artifacts.get("backbone"),
        "backbone_kwargs": {},
        "image_size": size,
        "crop": crop,
        "embedding_dim": int(getattr(result.backbone, "num_features", 0)),
        "method": "finetune",
        "finetuned_from": encoder.version,
        "label_count": len(cells),
    }
    if encoder.artifacts.get("checkpoint"):  # keep the pretraining's own description of the backbone
        previous = load_checkpoint(encoder.artifact_path("checkpoint"))["meta"]
        meta.update({k: previous[k] for k in ("backbone", "backbone_kwargs") if k in previous})
    path = save_encoder(job_dir(job) / ENCODER_FILE, result.backbone, meta)
    with transaction.atomic():
        return create_version(
            project=project,
            kind=ModelVersion.Kind.ENCODER,
            job=job,
            parent=encoder,
            artifacts={
                "checkpoint": relative_artifact(path),
                "backbone": meta["backbone"],
                "image_size": size,
                "crop": crop,
                "method": "finetune",
            },
            metrics={
                "epochs_done": result.epochs_done,
                "seconds": round(result.seconds, 2),
                "stopped_by": result.stopped_by,
                "final_loss": result.history[-1]["loss"] if result.history else None,
                "device": str(result.device),
                "unlabelled_cells": result.unlabelled_cells,
                "pseudo_label_rate": result.pseudo_label_rate,
                "attribute_cells": result.attribute_cells,
                "semi": semi.to_dict() if semi is not None and unlabelled is not None else None,
                "augment": augment,
                "site_balanced": {"source": project.query_source, "cells": int(groups.sum())}
                if groups is not None
                else None,
            },
            label_count=len(cells),
            trained_on=sorted(i for c in cells for i in states[c.pk].annotation_ids),
        )
