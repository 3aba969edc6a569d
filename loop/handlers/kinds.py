"""Job handlers of the active-learning loop, registered with the platform's job dispatcher.

start (initial weights) -> embed (+ FAISS index) -> query (cold start) ... label ... retrain (+ next batch)
A new encoder (pretrained or fine-tuned, in the background on the ``train`` queue) always leads to a new
index, and a new index to a retrain (or a cold-start batch) and to the dashboard's embedding map (``map``,
drawn by ``annotation.dashboard``). The first batch written releases the label-free pretraining that
waits for it (``loop.services.start``).
"""

from __future__ import annotations

from typing import Any

from annotation.labels import label_counts
from jobs.models import Job
from jobs.registry import JobProgress, job_handler
from loop.handlers.chaining import start_follow_up, start_learning
from loop.handlers.encoders import pretrain_encoder
from loop.handlers.finetuning import finetune_encoder
from loop.handlers.indexing import embed_and_index
from loop.handlers.label_check import MIN_LABELLED, check_labels
from loop.handlers.measurement_heads import fit_and_store, measure_every_cell
from loop.handlers.retraining import retrain_and_query
from loop.handlers.sharding import run_shard
from loop.models import ModelVersion
from loop.services.requests import pretrain_release_waiting


def _embed_new_encoder(job: Job, encoder: ModelVersion, what: str) -> dict[str, Any]:
    """Every new encoder (pretrained or fine-tuned) is embedded and indexed next."""
    follow = start_follow_up(parent=job, kind=Job.Kind.EMBED, params={"encoder_version": encoder.pk})
    return {
        "encoder_version": encoder.version,
        "metrics": encoder.metrics,
        "next_job": follow.pk,
        "message": f"{what} v{encoder.version} ready",
    }


@job_handler(Job.Kind.PRETRAIN)
def run_pretrain(job: Job, progress: JobProgress) -> dict[str, Any]:
    return _embed_new_encoder(job, pretrain_encoder(job, progress), "encoder")


@job_handler(Job.Kind.FINETUNE)
def run_finetune(job: Job, progress: JobProgress) -> dict[str, Any]:
    encoder = finetune_encoder(job, progress)
    result = _embed_new_encoder(job, encoder, "fine-tuned encoder")
    metrics = encoder.metrics or {}
    if metrics.get("stopped_by") == "minutes":
        # Said on the page: a fine-tune cut short by its time cap is a weaker model (on a loaded 2-core
        # machine the loop benchmark's second fine-tune stopped at 7.4 of 20 epochs and ended 0.015 lower).
        result["message"] += (
            f", stopped by its time cap after {float(metrics.get('epochs_done') or 0):.1f} epochs: the "
            "machine may be busy; give it more minutes or a GPU worker"
        )
    return result


@job_handler(Job.Kind.EMBED)
def run_embed(job: Job, progress: JobProgress) -> dict[str, Any]:
    index = embed_and_index(job, progress)
    assert job.project is not None
    follow = start_learning(parent=job, has_labels=label_counts(project=job.project).labelled > 0)
    result: dict[str, Any] = {}
    if index.artifacts.get("sampled"):  # the start's sample: every cell is indexed next, same encoder
        full = start_follow_up(
            parent=job,
            kind=Job.Kind.EMBED,
            params={"encoder_version": index.parent_id, "reason": "every cell, after the start sample"},
        )
        result["full_index_job"] = full.pk
    # Queued after the retrain, so a single worker builds the next batch first and draws the map after.
    start_follow_up(parent=job, kind=Job.Kind.MAP, params={"index_version": index.version})
    what = "a start sample of " if index.artifacts.get("sampled") else ""
    return {
        "index_version": index.version,
        "metrics": index.metrics,
        "next_job": follow.pk,
        **result,
        "message": f"index v{index.version} of {what}{index.artifacts['n_cells']} cells ready",
    }


def _after_batch(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """A batch is there: the pretraining that waited for the first one may start (idempotent, so a
    retried job that found its batch releases it too)."""
    assert job.project is not None
    released = pretrain_release_waiting(project=job.project)
    if released is not None:
        result["released_pretrain"] = released.pk
    return result


@job_handler(Job.Kind.EMBED_SHARD)
def run_embed_shard(job: Job, progress: JobProgress) -> dict[str, Any]:
    return run_shard(job, progress)


@job_handler(Job.Kind.RETRAIN)
def run_retrain(job: Job, progress: JobProgress) -> dict[str, Any]:
    result = _after_batch(job, retrain_and_query(job, progress, fit=True))
    assert job.project is not None
    # Label-mistake finding follows on the side queue, once there are enough labels to rank.
    if label_counts(project=job.project).labelled >= MIN_LABELLED:
        result["label_check_job"] = start_follow_up(parent=job, kind=Job.Kind.LABEL_CHECK).pk
    # So does the dashboard's shift report of the new classifier (seconds at a million cells).
    result["shift_job"] = start_follow_up(parent=job, kind=Job.Kind.SHIFT).pk
    return result


@job_handler(Job.Kind.ATTRIBUTE_HEADS)
def run_attribute_heads(job: Job, progress: JobProgress) -> dict[str, Any]:
    version = fit_and_store(job, progress)
    if version is None:
        return {"message": "no new attribute heads: the newest hold these labels, or too few carry any"}
    cells, seconds = version.metrics["attribute_cells"], version.metrics["fit_seconds"]
    return {
        "attribute_heads_version": version.version,
        "message": f"attribute heads v{version.version} fitted on {cells} cells in {seconds} s",
    }


@job_handler(Job.Kind.MEASURE)
def run_measure(job: Job, progress: JobProgress) -> dict[str, Any]:
    measured, follow = measure_every_cell(job, progress)
    result: dict[str, Any] = {
        "cells_measured": measured,
        "message": f"{measured} cells measured for the attribute heads",
    }
    if follow is not None:
        result["next_job"] = follow.pk
        result["message"] += ", the rest follows"
    return result


@job_handler(Job.Kind.LABEL_CHECK)
def run_label_check(job: Job, progress: JobProgress) -> dict[str, Any]:
    return check_labels(job, progress)


@job_handler(Job.Kind.QUERY)
def run_query(job: Job, progress: JobProgress) -> dict[str, Any]:
    return _after_batch(job, retrain_and_query(job, progress, fit=False))
