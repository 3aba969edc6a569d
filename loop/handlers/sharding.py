"""Embedding a large project in shards that several workers share.

An embed job over more than ``LEUKOLOOP_EMBED_SHARD_CELLS`` cells cuts them, in primary-key order, into
shards and creates one ``embed_shard`` job per shard on the train queue. It then works through the shards
itself, claiming each with the same conditional update a worker uses (``jobs.services.job_claim``), while
any other worker reading the train queue claims the rest: whoever claims a shard embeds it, and nobody
embeds one twice. With one train worker the embed job does every shard (no deadlock, no slower than
before); each added worker takes shards off it. A shard whose worker died is claimed again once its
heartbeat is stale; a failed one is embedded by the embed job itself. Each shard is written to its own
file (ids + embeddings, replaced atomically) under the embed job's folder; the embed job then copies them
into one memory-mapped embeddings file, so the whole set is never held in memory twice.

Shards are defined by primary-key ranges, and the embed job checks that the cells a shard embedded are
exactly the ones it expected (a cell imported or deleted meanwhile makes it embed that range again).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from numpy.lib.format import open_memmap

from annotation.models import Cell
from jobs import services
from jobs.models import Job
from jobs.registry import JobProgress
from learning.data import CellImageDataset
from learning.embeddings import EMBEDDINGS_FILE, extract_embeddings
from loop.handlers.artifacts import job_dir
from loop.handlers.encoders import encoder_crop, load_backbone, torch_threads
from loop.handlers.records import cell_records
from loop.models import ModelVersion

SHARDS_DIR = "shards"
# Cells decoded and embedded per step: bounds memory and sets how often progress is reported.
CHUNK = 1024
WAIT_SECONDS = 0.5


def embed_cells(
    model: Any, size: int, crop: str, cells: list[Cell], on_chunk: Callable[[int], None] | None = None
) -> np.ndarray:
    """L2-normalised embeddings (N, D) of ``cells`` in their order, ``CHUNK`` decoded at a time."""
    records = cell_records(cells)
    chunks: list[np.ndarray] = []
    for start in range(0, len(records), CHUNK):
        dataset = CellImageDataset(records[start : start + CHUNK], size, crop=crop)
        dataset.preload()  # threaded JPEG decoding
        chunks.append(extract_embeddings(model, dataset, batch_size=256, device="cpu"))
        if on_chunk is not None:
            on_chunk(min(start + CHUNK, len(records)))
    return np.concatenate(chunks)


def shard_ranges(ids: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of shards of at most ``size`` cells covering ``ids``."""
    return [(start, min(start + size, len(ids))) for start in range(0, len(ids), size)]


def remove_shards(parent: Job) -> None:
    """Delete ``parent``'s shard files: called once its index version is committed, when they are in
    ``embeddings.npy`` and a retry of the job returns that version without reading them. They are as large
    as the embeddings themselves (83 MB at 16k cells with EfficientNet-Lite0), once per re-embedding."""
    shutil.rmtree(job_dir(parent) / SHARDS_DIR, ignore_errors=True)


def shard_file(parent: Job, number: int) -> Path:
    folder = job_dir(parent) / SHARDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{number:05d}.npz"


def write_shard(path: Path, ids: np.ndarray, emb: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        np.savez(f, ids=ids.astype(np.int64), emb=emb.astype(np.float32))
    os.replace(tmp, path)


def shard_ids(path: Path) -> np.ndarray | None:
    """The cell ids a shard file holds, without reading its embeddings (an npz member loads on access)."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return np.asarray(data["ids"])


def read_shard(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["ids"], data["emb"]


def run_shard(job: Job, progress: JobProgress) -> dict[str, Any]:
    """The ``embed_shard`` job: embed the cells of one primary-key range into the parent's shard file."""
    params = job.params
    parent = Job.objects.get(pk=params["parent"])
    encoder = ModelVersion.objects.get(pk=params["encoder_version"])
    first, last = int(params["first_pk"]), int(params["last_pk"])
    torch_threads()
    model, size = load_backbone(encoder)
    assert job.project_id is not None
    project_cells = Cell.objects.filter(project_id=job.project_id)
    cells = list(project_cells.filter(pk__gte=first, pk__lte=last).order_by("pk"))
    total = max(len(cells), 1)
    emb = embed_cells(
        model,
        size,
        encoder_crop(encoder),
        cells,
        lambda done: progress(done / total, f"embedded {done} of {len(cells)} cells"),
    )
    write_shard(shard_file(parent, int(params["number"])), np.array([c.pk for c in cells]), emb)
    return {"cells": len(cells), "message": f"shard {params['number']}: {len(cells)} cells"}


def _shard_jobs(
    parent: Job, encoder: ModelVersion, ids: np.ndarray, ranges: list[tuple[int, int]]
) -> list[Job]:
    """The parent's shard jobs, created once (a retried parent finds those of its earlier attempt)."""
    existing = {
        int(j.params["number"]): j
        for j in Job.objects.filter(kind=Job.Kind.EMBED_SHARD, params__parent=parent.pk)
    }
    jobs = []
    for number, (start, stop) in enumerate(ranges):
        job = existing.get(number)
        if job is None:
            params = {
                "parent": parent.pk,
                "encoder_version": encoder.pk,
                "number": number,
                "first_pk": int(ids[start]),
                "last_pk": int(ids[stop - 1]),
            }
            job = services.job_create(kind=Job.Kind.EMBED_SHARD, project=parent.project, params=params)
        jobs.append(job)
    return jobs


def embed_in_shards(
    parent: Job,
    encoder: ModelVersion,
    cells: list[Cell],
    out: Path,
    progress: JobProgress,
    *,
    shard_cells: int | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Embed ``cells`` (primary-key order) in shards shared with other train workers; returns the
    embeddings memory-mapped from ``out`` (``embeddings.npy`` written there) and how many shards there
    were and how many this job embedded itself."""
    from jobs.tasks import Heartbeat

    ids = np.array([c.pk for c in cells], dtype=np.int64)
    ranges = shard_ranges(ids, shard_cells or settings.LEUKOLOOP_EMBED_SHARD_CELLS)
    jobs = _shard_jobs(parent, encoder, ids, ranges)
    model, size = load_backbone(encoder)
    crop = encoder_crop(encoder)
    embedded_here = 0

    def embed_here(number: int) -> None:
        nonlocal embedded_here
        start, stop = ranges[number]
        emb = embed_cells(model, size, crop, cells[start:stop])
        write_shard(shard_file(parent, number), ids[start:stop], emb)
        embedded_here += 1

    def finished(number: int) -> bool:
        # Checked while waiting on other workers: the ids only, never the shard's embeddings.
        held = shard_ids(shard_file(parent, number))
        start, stop = ranges[number]
        return held is not None and np.array_equal(held, ids[start:stop])

    pending = [n for n in range(len(ranges)) if not finished(n)]

    def report() -> None:
        done = len(ranges) - len(pending)
        progress(0.95 * done / len(ranges), f"embedded {done} of {len(ranges)} shards")

    while pending:
        for number in list(pending):
            job = jobs[number]
            attempt = services.job_claim(job_id=job.pk)
            if attempt is not None:  # ours now: no other worker will run it
                with Heartbeat(job.pk, attempt, settings.LEUKOLOOP_JOB_HEARTBEAT_SECONDS):
                    embed_here(number)
                services.job_succeed(
                    job_id=job.pk,
                    attempt=attempt,
                    result={"by": "embed job"},
                    message="embedded by its embed job",
                )
            status = Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()
            if status == Job.Status.SUCCEEDED and not finished(number):
                embed_here(number)  # cells changed under it: embed the range as it is now
            elif status in (Job.Status.FAILED, Job.Status.CANCELLED):
                embed_here(number)
            if finished(number):
                pending.remove(number)
                # After every shard, not once per pass: the first pass claims and embeds shard after
                # shard, so at a million cells it is most of the embedding (the page showed 0% for it).
                report()
        if pending:
            time.sleep(WAIT_SECONDS)  # the rest are running on other workers
    # One embeddings file, filled shard by shard through a memory map.
    first = read_shard(shard_file(parent, 0))
    assert first is not None
    out.mkdir(parents=True, exist_ok=True)
    emb = open_memmap(out / EMBEDDINGS_FILE, mode="w+", dtype=np.float32, shape=(len(ids), first[1].shape[1]))
    for number, (start, stop) in enumerate(ranges):
        shard = read_shard(shard_file(parent, number))
        assert shard is not None
        emb[start:stop] = shard[1]
    emb.flush()
    del emb
    info = {"shards": len(ranges), "shards_embedded_by_this_job": embedded_here}
    return np.load(out / EMBEDDINGS_FILE, mmap_mode="r"), info
