"""Embed every cell of a project with an encoder version and build its FAISS index."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from annotation.models import Cell
from jobs.models import Job
from jobs.registry import JobProgress
from learning.embeddings import save_embeddings, save_ids_and_meta
from learning.index import EmbeddingIndex
from loop.handlers.artifacts import EMBEDDINGS_DIR, INDEX_DIR, job_dir
from loop.handlers.attribute_suggestions import choose_attribute_weights
from loop.handlers.encoders import encoder_crop, load_backbone, torch_threads
from loop.handlers.retention import prune_index_versions
from loop.handlers.retraining import class_names
from loop.handlers.sharding import embed_cells, embed_in_shards, remove_shards
from loop.handlers.training_set import build_training_set
from loop.models import ModelVersion, relative_artifact
from loop.selectors import latest_version, version_written_by
from loop.services.versions import create_version

logger = logging.getLogger(__name__)


def start_sample(cells: list[Cell], pool_cells: int, *, seed: int) -> list[Cell]:
    """The cells of a loop's first index: every validation cell (the retrain measures on them) and a
    random ``pool_cells`` of the pool (the first batches are chosen among them); test cells wait for the
    full index. In primary-key order, as an index needs."""
    pool = [c for c in cells if c.role == Cell.Role.POOL]
    if len(pool) <= pool_cells:
        return [c for c in cells if c.role != Cell.Role.TEST]
    picked = np.random.default_rng(seed).choice(len(pool), size=pool_cells, replace=False)
    keep = {pool[i].pk for i in picked} | {c.pk for c in cells if c.role == Cell.Role.VALIDATION}
    return [c for c in cells if c.pk in keep]


def attribute_weights(job: Job, emb: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """The index metrics of each attribute's measurement weight, chosen on the labelled cells of this
    new embedding for the retrains that will use it
    (:func:`loop.handlers.attribute_suggestions.choose_attribute_weights`), and of how many cells with
    attributes they were chosen on. Here, on the train worker, because the choice costs seconds and no
    batch should wait for it. A failure costs the choice (the retrains use the default weight), never
    the index."""
    project = job.project
    assert project is not None
    try:
        data = build_training_set(project, ids, class_names(project))
        return choose_attribute_weights(project, emb, ids, data, seed=job.pk)
    except Exception:  # see the docstring; logged with its traceback
        logger.exception("job %s: no attribute weights chosen", job.pk)
        return {}


def embed_and_index(job: Job, progress: JobProgress) -> ModelVersion:
    """Embed all cells (pool, validation and test) and index them; returns the new index version.

    ``job.params["pool_sample"] = N`` (the loop's start, ``loop.services.start``) embeds only the
    validation cells and N random pool cells, so that the first batch of a large project is there in
    seconds; that index is marked ``sampled`` and leads to a full one (``loop.handlers.kinds``)."""
    project = job.project
    assert project is not None
    done = version_written_by(job, ModelVersion.Kind.INDEX)
    if done is not None:
        return done
    encoder_id = job.params.get("encoder_version")
    encoder = (
        ModelVersion.objects.get(pk=encoder_id, project=project)
        if encoder_id
        else latest_version(project, ModelVersion.Kind.ENCODER)
    )
    if encoder is None:
        raise ValueError("the project has no encoder yet: pretrain one first")
    torch_threads()
    model, size = load_backbone(encoder)
    crop = encoder_crop(encoder)
    cells = list(Cell.objects.filter(project=project).order_by("pk"))
    if not cells:
        raise ValueError("the project has no cells to embed")
    n_project = len(cells)
    pool_sample = int(job.params.get("pool_sample") or 0)
    if pool_sample:
        cells = start_sample(cells, pool_sample, seed=job.pk)
    ids = np.array([c.pk for c in cells], dtype=np.int64)  # ascending: rows are found by searchsorted
    out = job_dir(job)
    t0 = time.perf_counter()
    sharding: dict[str, int] = {}
    if len(cells) > settings.LEUKOLOOP_EMBED_SHARD_CELLS:
        emb, sharding = embed_in_shards(job, encoder, cells, out / EMBEDDINGS_DIR, progress)
        save_ids_and_meta(
            out / EMBEDDINGS_DIR, ids.astype(str), emb, meta={"encoder_version": encoder.version}
        )
    else:
        emb = embed_cells(
            model,
            size,
            crop,
            cells,
            lambda done: progress(0.95 * done / len(cells), f"embedded {done} of {len(cells)} cells"),
        )
        save_embeddings(out / EMBEDDINGS_DIR, ids.astype(str), emb, meta={"encoder_version": encoder.version})
    embed_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    EmbeddingIndex.build(emb, ids).save(out / INDEX_DIR)
    index_s = time.perf_counter() - t1
    progress(0.97, "index built")
    sampled = len(ids) < n_project
    weight_metrics = {} if sampled else attribute_weights(job, emb, ids)
    progress(0.99, "attribute weights chosen")
    with transaction.atomic():
        version = create_version(
            project=project,
            kind=ModelVersion.Kind.INDEX,
            job=job,
            parent=encoder,
            artifacts={
                "embeddings": relative_artifact(out / EMBEDDINGS_DIR),
                "index": relative_artifact(out / INDEX_DIR),
                "n_cells": len(ids),
                "dim": int(emb.shape[1]),
                # A start sample (fewer cells than the project has): a full index follows.
                "sampled": sampled,
            },
            metrics={
                "embed_seconds": round(embed_s, 2),
                "index_seconds": round(index_s, 3),
                "cells_per_second": round(len(ids) / max(embed_s, 1e-9), 1),
                **sharding,
                **weight_metrics,
            },
        )
    if sharding:
        remove_shards(job)  # after the version's commit: the shards are in embeddings.npy now
    prune_index_versions(project)  # after the commit too: the new version is the newest kept
    return version
