"""Pretrain a project's encoder (label-free) and rebuild any encoder version as a backbone."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from django.db import transaction

from annotation.models import Cell
from jobs.models import Job
from jobs.registry import JobProgress
from learning.selfsup.config import device_recipe, resolve_settings
from learning.selfsup.train import PretrainConfig, load_checkpoint, load_encoder, pretrain
from learning.training import resolve_device
from loop.handlers.artifacts import ENCODER_FILE, job_dir
from loop.handlers.records import cell_records
from loop.models import ModelVersion, relative_artifact
from loop.selectors import version_written_by
from loop.services.start import initial_backbone_kwargs, initial_encoder_artifacts
from loop.services.versions import create_version
from models_zoo import create_model
from models_zoo.base import Backbone

logger = logging.getLogger(__name__)

__all__ = ["encoder_crop", "initial_backbone_kwargs", "load_backbone", "pretrain_encoder", "torch_threads"]


def encoder_crop(encoder: ModelVersion) -> str:
    """The crop an encoder was trained on (:func:`learning.imaging.square_box`), which every image it
    embeds, explains or exports must be decoded with; versions older than the setting used the centre."""
    return str(encoder.artifacts.get("crop", "centre"))


def load_backbone(encoder: ModelVersion) -> tuple[Backbone, int]:
    """(backbone in eval mode, image size) of an encoder version."""
    if encoder.artifacts.get("checkpoint"):
        model, meta = load_encoder(encoder.artifact_path("checkpoint"))
        return model, int(meta["image_size"])
    art = encoder.artifacts
    model = create_model(art["backbone"], **art.get("backbone_kwargs", {}))
    return model.eval(), int(art["image_size"])


def _checkpoint_to_resume(out: Path, config: PretrainConfig) -> tuple[Path | None, float]:
    """The checkpoint a previous attempt of this job left (it writes one after every epoch) and the
    seconds it had trained, if it can be resumed with the project's current settings; else (None, 0)."""
    if not out.is_file():
        return None, 0.0
    try:
        meta = load_checkpoint(out)["meta"]
        resolve_settings(config, meta)
    except (ValueError, RuntimeError, KeyError) as exc:  # settings changed, or an unreadable file
        logger.warning("pretrain: not resuming from %s: %s", out, exc)
        return None, 0.0
    return out, float(meta.get("seconds", 0.0))


def _summary_of(checkpoint: Path) -> dict[str, Any]:
    """A finished run's figures, read back from its checkpoint (nothing left to train)."""
    meta = load_checkpoint(checkpoint)["meta"]
    history = meta.get("history") or []
    return {
        "epochs_done": meta.get("epochs_done"),
        "seconds": round(float(meta.get("seconds", 0.0)), 2),
        "cells_per_second": 0.0,
        "final_loss": history[-1]["loss"] if history else None,
        "device": meta.get("device"),
    }


def pretrain_encoder(job: Job, progress: JobProgress) -> ModelVersion:
    """Pretrain on every cell that is not held out for testing; returns the new encoder version.

    ``pretrain_minutes == 0`` records the initial weights (ImageNet or random) as the encoder, which
    lets a project start labelling at once and pretrain later.

    A retried job (its worker died, or the job was delivered again) resumes from the checkpoint its
    previous attempt wrote after its last complete epoch, with what is left of the budget; the learning
    rate warms up again over that remainder (the optimizer state is restored).
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
        # A GPU worker runs the GPU run's batch and views, a CPU worker the CPU runs' (same code path).
        recipe = device_recipe(resolve_device(), len(records))
        config = PretrainConfig(
            method=project.ssl_method,
            backbone=project.encoder_backbone,
            image_size=project.image_size,
            crop=project.input_crop,
            minutes=minutes,
            backbone_kwargs=initial_backbone_kwargs(project),
            batch_size=recipe.batch_size,
            augment=recipe.augment,
        )
        resume, seconds_done = _checkpoint_to_resume(out, config)
        left = minutes - seconds_done / 60.0
        if resume is not None and left <= 0:
            summary = _summary_of(resume)  # the budget was spent before the worker died
        else:
            what = f"resuming after {seconds_done:.0f} s, " if resume is not None else ""
            progress(0.0, f"{what}decoding {len(records)} cells")
            summary = pretrain(
                records,
                replace(config, minutes=left),
                out=out,
                resume=resume,
                progress=False,
                on_progress=lambda fraction, message: progress(0.02 + 0.96 * fraction, message),
            )
        artifacts["checkpoint"] = relative_artifact(out)
        metrics = {
            k: summary[k] for k in ("epochs_done", "seconds", "cells_per_second", "final_loss", "device")
        }
        if resume is not None:
            metrics["resumed_after_seconds"] = round(seconds_done, 2)
    with transaction.atomic():
        return create_version(
            project=project, kind=ModelVersion.Kind.ENCODER, job=job, artifacts=artifacts, metrics=metrics
        )


def torch_threads() -> None:
    """Use every core in the worker (one job at a time per worker process), or
    ``LEUKOLOOP_TORCH_THREADS`` when several workers share the machine."""
    import os

    from django.conf import settings

    wanted = int(getattr(settings, "LEUKOLOOP_TORCH_THREADS", 0) or 0)
    torch.set_num_threads(wanted if wanted > 0 else max(1, os.cpu_count() or 1))
