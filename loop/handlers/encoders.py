"""Pretrain a project's encoder (label-free) and rebuild any encoder version as a backbone."""

from __future__ import annotations

from typing import Any

import torch
from django.db import transaction

from annotation.models import Cell
from jobs.models import Job
from jobs.registry import JobProgress
from learning.selfsup.train import PretrainConfig, load_encoder, pretrain
from loop.handlers.artifacts import ENCODER_FILE, job_dir
from loop.handlers.records import cell_records
from loop.models import ModelVersion
from loop.selectors import version_written_by
from loop.services.start import initial_backbone_kwargs, initial_encoder_artifacts
from loop.services.versions import create_version
from models_zoo import create_model
from models_zoo.base import Backbone

__all__ = ["initial_backbone_kwargs", "load_backbone", "pretrain_encoder", "torch_threads"]


def load_backbone(encoder: ModelVersion) -> tuple[Backbone, int]:
    """(backbone in eval mode, image size) of an encoder version."""
    checkpoint = encoder.artifacts.get("checkpoint")
    if checkpoint:
        model, meta = load_encoder(checkpoint)
        return model, int(meta["image_size"])
    art = encoder.artifacts
    model = create_model(art["backbone"], **art.get("backbone_kwargs", {}))
    return model.eval(), int(art["image_size"])


def pretrain_encoder(job: Job, progress: JobProgress) -> ModelVersion:
    """Pretrain on every cell that is not held out for testing; returns the new encoder version.

    ``pretrain_minutes == 0`` records the initial weights (ImageNet or random) as the encoder, which
    lets a project start labelling at once and pretrain later.
    """
    project = job.project
    assert project is not None
    done = version_written_by(job, ModelVersion.Kind.ENCODER)
    if done is not None:  # a retry of a job that died after writing its version
        return done
    minutes = float(job.params.get("minutes", project.pretrain_minutes))
    artifacts: dict[str, Any] = initial_encoder_artifacts(project)
    metrics: dict[str, Any] = {}
    if minutes > 0:
        artifacts["method"] = project.ssl_method
        cells = Cell.objects.filter(project=project).exclude(role=Cell.Role.TEST).order_by("pk")
        records = cell_records(cells)
        out = job_dir(job) / ENCODER_FILE
        config = PretrainConfig(
            method=project.ssl_method,
            backbone=project.encoder_backbone,
            image_size=project.image_size,
            minutes=minutes,
            backbone_kwargs=initial_backbone_kwargs(project),
            batch_size=min(128, max(2, len(records) // 2)),
        )
        progress(0.0, f"decoding {len(records)} cells")
        summary = pretrain(
            records,
            config,
            out=out,
            # A retry continues from the last epoch's checkpoint instead of starting over.
            resume=out if out.is_file() else None,
            progress=False,
            on_progress=lambda fraction, message: progress(0.02 + 0.96 * fraction, message),
        )
        artifacts["checkpoint"] = str(out)
        metrics = {
            k: summary[k] for k in ("epochs_done", "seconds", "cells_per_second", "final_loss", "device")
        }
    with transaction.atomic():
        return create_version(
            project=project, kind=ModelVersion.Kind.ENCODER, job=job, artifacts=artifacts, metrics=metrics
        )


def torch_threads() -> None:
    """Use every core in the worker (one job at a time per worker process)."""
    import os

    torch.set_num_threads(max(1, os.cpu_count() or 1))
