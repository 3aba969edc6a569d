"""The attribute heads on the cells' measurements: fitted beside the loop, used by its retrains.

Each attribute's suggestion averages a head on the embedding with one on the cell's measurements
(:class:`learning.attribute_heads.FusedAttributeHeads`). Boosted trees are the better measurement head
(attribute macro-F1 0.870 against 0.864 for the logistic one at 811 labels, 3 loop runs,
bench/README.md "Trees on the measurements") but take about 29 s to fit on one thread, and a retrain
must write its batch within seconds. The measurement heads do not depend on the embedding, so they need
not be fitted there: after a retrain writes its batch it asks for an ``attribute_heads`` job (the side
queue), which fits them on the labelled cells that then carry attributes and stores them as a model
version; the next retrain uses the newest of those beside embedding heads it fits itself (under a
second). Its suggestions thus hear measurement heads one batch behind its labels. Until the first
version is ready, and for an attribute it has no head for, a retrain fits the logistic measurement head
itself, as before.

The suggestions also need the batch cells' measurements (about 22 ms a cell; 3-5 s for 48 cells while a
fine-tune holds the cores). A retrain measures the cells not measured yet after it writes its batch
(``loop.handlers.batch_attributes``), and once suggestions start, a ``measure`` job on the same queue
measures every cell of the project not measured yet, so that later batches find them stored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Final

import joblib
import numpy as np
from django.db import transaction
from django.db.models import QuerySet
from threadpoolctl import threadpool_limits

from annotation.models import Cell, Project
from annotation.selectors import active_classes
from jobs.models import Job
from jobs.registry import JobProgress
from jobs.services import job_create
from learning.attribute_heads import PRODUCT_MEASUREMENT_KIND, fit_measurement_heads
from learning.classifiers import AlignedClassifier, ClassifierKind
from learning.morphometry import MEASUREMENT_DEFINITION
from loop.handlers.artifacts import index_embeddings, job_dir
from loop.handlers.attribute_suggestions import AttributeRows, attribute_rows, measurements_for
from loop.handlers.training_set import TrainingSet, build_training_set
from loop.models import CellMeasurement, ModelVersion, relative_artifact
from loop.selectors import latest_version
from loop.services.versions import create_version

logger = logging.getLogger(__name__)

# The measurement head the job fits (learning.classifiers' kinds; bench/loop_attribute_heads.py).
MEASUREMENT_HEAD_KIND: Final[ClassifierKind] = PRODUCT_MEASUREMENT_KIND
HEADS_FILE: Final = "measurement_heads.joblib"
# Heads files kept: a version per batch, 2.2-3.5 MB each with 24-120 labelled cells carrying attributes
# (bench/loop_latency.py), growing with them, would reach gigabytes over a long project; only the newest
# is read.
KEEP_HEADS_FILES: Final = 2
# The version metric that fingerprints what the heads were fitted on (see attribute_fingerprint).
FINGERPRINT_METRIC: Final = "fingerprint"
# Cells measured and stored at a time by the measure job (about 6 s of work), and how long one measure
# job goes on before it hands over to a follow-up at the back of the queue.
MEASURE_CHUNK: Final = 256
MEASURE_SECONDS: Final = 60.0


def attribute_fingerprint(
    schema: Mapping[str, list[str]], found: AttributeRows | None, ids: np.ndarray
) -> str | None:
    """A digest of the project's attribute schema and of every labelled cell's attributes the heads
    would train on (``found``: :func:`attribute_rows` of them; None when too few cells carry them):
    equal digests, equal heads."""
    if found is None:
        return None
    _, rows, targets = found
    cells = [int(c) for c in ids[rows]]
    payload = {"schema": schema, "cells": cells, "targets": targets, "kind": MEASUREMENT_HEAD_KIND}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def request_measurement_heads(
    project: Project, parent: Job, data: TrainingSet, ids: np.ndarray
) -> Job | None:
    """After a retrain wrote its batch: an ``attribute_heads`` job, unless the newest heads were fitted
    on exactly these attributes or one is queued already (it will read the labels when it starts)."""
    schema = project.learnable_attributes()
    fingerprint = attribute_fingerprint(schema, attribute_rows(schema, data), ids)
    if fingerprint is None:
        return None
    newest = latest_version(project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    if newest is not None and newest.metrics.get(FINGERPRINT_METRIC) == fingerprint:
        return None
    if Job.objects.filter(project=project, kind=Job.Kind.ATTRIBUTE_HEADS, status=Job.Status.QUEUED).exists():
        return None
    return job_create(
        kind=Job.Kind.ATTRIBUTE_HEADS,
        project=project,
        params={"parent_job": parent.pk, "reason": f"labels of retrain {parent.pk}"},
    )


def unmeasured_cells(project: Project) -> QuerySet[Cell]:
    """The project's pool cells (the ones batches and labels come from) without a measurement of the
    current definition. A file that cannot be read stays here (it is not stored) and is tried again."""
    measured = CellMeasurement.objects.filter(cell__project=project, definition=MEASUREMENT_DEFINITION)
    pool = Cell.objects.filter(project=project, role=Cell.Role.POOL)
    return pool.exclude(pk__in=measured.values("cell_id"))


def request_measuring(project: Project, parent: Job) -> Job | None:
    """A ``measure`` job, unless one is queued or running or every cell is measured."""
    if Job.objects.filter(
        project=project, kind=Job.Kind.MEASURE, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
    ).exists():
        return None
    if not unmeasured_cells(project).exists():
        return None
    return job_create(kind=Job.Kind.MEASURE, project=project, params={"parent_job": parent.pk})


def measure_every_cell(job: Job, progress: JobProgress) -> tuple[int, Job | None]:
    """The ``measure`` job: the project's cells not measured yet, stored a chunk at a time, for at most
    :data:`MEASURE_SECONDS`; then a follow-up job at the back of the queue goes on from there, so the
    side jobs a batch starts meanwhile (attribute heads, map, shift report) are not held up for the
    minutes a large project takes (16k cells: about 6 CPU minutes). Returns how many cells it
    measured and the follow-up, if any."""
    project = job.project
    assert project is not None
    wanted = list(unmeasured_cells(project).order_by("pk").values_list("pk", flat=True))
    started = time.perf_counter()
    done = 0
    while done < len(wanted):
        if done and time.perf_counter() - started >= MEASURE_SECONDS:
            follow = job_create(kind=Job.Kind.MEASURE, project=project, params={"parent_job": job.pk})
            return done, follow
        progress(done / len(wanted), f"measured {done} of {len(wanted)} cells")
        measurements_for(wanted[done : done + MEASURE_CHUNK])
        done = min(done + MEASURE_CHUNK, len(wanted))
    return done, None


def fit_and_store(job: Job, progress: JobProgress) -> ModelVersion | None:
    """The ``attribute_heads`` job: measurement heads on the labelled cells that carry attributes now,
    stored as the next version (None when too few cells carry them, or the newest version already
    holds these)."""
    project = job.project
    assert project is not None
    index = latest_version(project, ModelVersion.Kind.INDEX)
    if index is None:
        raise ValueError("the project has no index yet: embed the cells first")
    ids, _ = index_embeddings(index)
    # The cells a retrain would train the heads on (labelled with an active class).
    data = build_training_set(project, ids, [c.name for c in active_classes(project=project)])
    schema = project.learnable_attributes()
    found = attribute_rows(schema, data)
    fingerprint = attribute_fingerprint(schema, found, ids)
    newest = latest_version(project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    if found is None or (newest is not None and newest.metrics.get(FINGERPRINT_METRIC) == fingerprint):
        return None
    _, rows, targets = found
    progress(0.1, f"measuring {len(rows)} cells")
    measured = measurements_for(ids[rows].tolist())
    progress(0.3, f"fitting {MEASUREMENT_HEAD_KIND} heads on {len(rows)} cells")
    t0 = time.perf_counter()
    # One thread: the fine-tune on the train worker needs the other core more.
    with threadpool_limits(limits=1):
        heads = fit_measurement_heads(schema, measured, targets, kind=MEASUREMENT_HEAD_KIND, seed=job.pk)
    seconds = round(time.perf_counter() - t0, 2)
    path = job_dir(job) / HEADS_FILE
    joblib.dump(heads, path)
    with transaction.atomic():
        version = create_version(
            project=project,
            kind=ModelVersion.Kind.ATTRIBUTE_HEADS,
            job=job,
            artifacts={"heads": relative_artifact(path), "kind": MEASUREMENT_HEAD_KIND, "schema": schema},
            metrics={FINGERPRINT_METRIC: fingerprint, "attribute_cells": len(rows), "fit_seconds": seconds},
            label_count=len(rows),
        )
    prune_heads_files(project)  # after the new version's commit: it is the one the retrains read now
    return version


def prune_heads_files(project: Project) -> int:
    """Delete the heads files of all but the newest :data:`KEEP_HEADS_FILES` versions (the version rows
    stay, marked ``pruned``). Only the newest is ever read, by the retrains; one before it is kept for a
    retrain that started before the newest was stored. Returns how many files went. A file that cannot
    be deleted is logged and left (the next heads job tries again)."""
    old = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.ATTRIBUTE_HEADS).order_by(
        "-version"
    )[KEEP_HEADS_FILES:]
    pruned = 0
    for version in old:
        if "heads" not in version.artifacts:
            continue
        try:
            version.artifact_path("heads").unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("attribute heads v%s: file not deleted (%s)", version.version, exc)
            continue
        version.artifacts = {**{k: v for k, v in version.artifacts.items() if k != "heads"}, "pruned": True}
        version.save(update_fields=["artifacts"])
        pruned += 1
    return pruned


@functools.lru_cache(maxsize=4)
def _load_heads(path: str) -> dict[str, AlignedClassifier]:
    """A version's heads file, read once per worker (a version's file never changes)."""
    heads: dict[str, AlignedClassifier] = joblib.load(path)
    return heads


def stored_measurement_heads(
    project: Project, schema: Mapping[str, list[str]]
) -> dict[str, AlignedClassifier]:
    """The newest stored measurement heads whose values are still the schema's (attribute -> head);
    empty when none are stored or their file cannot be read (the retrain then fits its own)."""
    newest = latest_version(project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    if newest is None:
        return {}
    try:
        heads = _load_heads(str(newest.artifact_path("heads")))
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("attribute heads v%s unreadable (%s): the retrain fits its own", newest.version, exc)
        return {}
    return {name: head for name, head in heads.items() if list(head.classes) == schema.get(name)}


__all__ = [
    "FINGERPRINT_METRIC",
    "HEADS_FILE",
    "KEEP_HEADS_FILES",
    "MEASUREMENT_HEAD_KIND",
    "MEASURE_CHUNK",
    "MEASURE_SECONDS",
    "attribute_fingerprint",
    "fit_and_store",
    "measure_every_cell",
    "prune_heads_files",
    "request_measurement_heads",
    "request_measuring",
    "stored_measurement_heads",
    "unmeasured_cells",
]
