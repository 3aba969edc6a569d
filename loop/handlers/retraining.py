"""Retrain the classifier on every label so far, measure it on the validation cells, score the pool and
build the next batch: one job, so that a submitted batch is followed by the next one in seconds."""

from __future__ import annotations

import logging
import time
from typing import Any

import joblib
import numpy as np
from django.db import transaction
from threadpoolctl import threadpool_limits

from annotation.models import Project
from annotation.selectors import active_classes
from jobs.failpoints import failpoint
from jobs.models import Job
from jobs.registry import JobProgress
from learning.calibration import TemperatureScaled, apply_temperature, calibrate
from learning.classifiers import AlignedClassifier
from learning.evaluation import evaluate
from learning.query.cost import deal_by_seconds
from learning.shift import LabelledNeighbourhood
from loop.handlers.artifacts import CLASSIFIER_FILE, index_embeddings, job_dir
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.attribute_suggestions import (
    attribute_cells,
    choose_attribute_weights,
    weights_are_stale,
)
from loop.handlers.batch_attributes import AttributeSuggester
from loop.handlers.measurement_heads import request_measurement_heads, request_measuring
from loop.handlers.querying import (
    Choice,
    TimedSeconds,
    choose,
    model_view,
    strategy_options,
    write_batch,
)
from loop.handlers.training_set import TrainingSet, build_training_set
from loop.handlers.work_split import Describe, Shares, deal, plan_batches, recipients
from loop.models import ModelVersion, QueryBatch, relative_artifact
from loop.selectors import labels_left, latest_version
from loop.services.versions import create_version

logger = logging.getLogger(__name__)


def class_names(project: Project) -> list[str]:
    """The classes the classifier learns: the active taxonomy (retired and merged classes left out)."""
    return [c.name for c in active_classes(project=project)]


# Rows scored per step: the copy of the pool's embeddings a step makes stays at 64k x D floats (320 MB at
# 1,280 dimensions) instead of the whole pool's (5 GB at a million cells).
SCORE_CHUNK = 65_536


def pool_probabilities(clf: TemperatureScaled, emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), C) calibrated probabilities of ``rows`` of the (memory-mapped) embeddings, a chunk
    at a time."""
    parts = [
        clf.predict_proba(emb[rows[start : start + SCORE_CHUNK]])
        for start in range(0, len(rows), SCORE_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(clf.classes)))


def _validate_and_calibrate(
    raw: AlignedClassifier, emb: np.ndarray, data: TrainingSet, classes: list[str]
) -> tuple[TemperatureScaled, dict[str, Any]]:
    """Fit the temperature on the validation cells (``learning.calibration``: skipped, T = 1, when they
    are too few) and measure the calibrated classifier there. The metrics keep ECE before and after."""
    if not len(data.val_rows):
        skipped = {"temperature": 1.0, "status": "skipped", "reason": "no validation cells", "n": 0}
        return TemperatureScaled(raw, 1.0), {"calibration": skipped}
    raw_val = raw.predict_proba(emb[data.val_rows])
    calibration = calibrate(raw_val, data.val_labels, classes)
    clf = TemperatureScaled(raw, calibration.temperature)
    probs_val = apply_temperature(raw_val, calibration.temperature)
    metrics = evaluate(
        data.val_labels,
        np.asarray(classes)[probs_val.argmax(axis=1)],
        probs=probs_val,  # "ece" is that of the calibrated probabilities, the ones the loop uses
        classes=classes,
        sources=data.val_sources,
        n_boot=200,
    )
    metrics["calibration"] = calibration.to_dict()
    return clf, metrics


def _batch_result(batch: QueryBatch, seconds: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "batch": batch.number,
        "batch_id": batch.pk,
        "strategy": batch.strategy,
        "classifier_version": batch.classifier.version if batch.classifier else None,
        "index_version": batch.index.version if batch.index else None,
        "cells": batch.items.count(),
        "seconds": seconds or {},
        "message": f"batch {batch.number} ready ({batch.strategy})",
    }


def budget_spent_message(project: Project) -> str:
    return (
        f"no new batch: the label budget ({project.label_budget}) is spent; "
        "a lead raises it in the project's settings to go on"
    )


def _split_result(batches: list[QueryBatch], seconds: dict[str, float] | None = None) -> dict[str, Any]:
    if not batches:
        return {"batches": [], "seconds": seconds or {}, "message": "every annotator has an open batch"}
    numbers = ", ".join(str(b.number) for b in batches)
    return {
        "batches": [{**_batch_result(b), "assignee": b.assignee_id} for b in batches],
        "seconds": seconds or {},
        "message": f"batches {numbers} ready for {len(batches)} annotator(s) ({batches[0].strategy})",
    }


def _describer(
    clf: TemperatureScaled | None,
    emb: np.ndarray,
    ids: np.ndarray,
    neighbourhood: LabelledNeighbourhood | None,
) -> Describe:
    """What the model says of any rows, for split-work batches whose agreement and gold cells may be
    labelled ones (so never their own labelled neighbour)."""

    def describe(rows: np.ndarray) -> tuple[Any, Any, Any, Any]:
        if clf is None or not len(rows):
            return None, None, None, None
        with threadpool_limits(limits=1):
            probs = clf.predict_proba(emb[rows])
        view = model_view(probs)
        ratios = None
        if neighbourhood is not None:
            suggested = np.asarray(clf.classes)[view[1]]
            ratios = neighbourhood.ratios(emb[rows], cell_ids=ids[rows], predicted=suggested)
        return (*view, ratios)

    return describe


PlannedWrite = tuple[Choice, int | None, list[str] | None]  # choice, assignee, item purposes


def _planned_batches(
    project: Project,
    job: Job,
    emb: np.ndarray,
    ids: np.ndarray,
    data: TrainingSet,
    probs: np.ndarray | None,
    clf: TemperatureScaled | None,
    left: int,
) -> list[PlannedWrite]:
    """The batches this job writes: the project's one shared batch, or with split work one for every
    annotator who needs one (none when all have an open batch). Never more query cells than the label
    budget has ``left``: the last batch is cut to it, and once it is spent none is built."""
    if left <= 0:
        return []
    people = recipients(project, job) if project.split_work else []
    if project.split_work and not people:
        return []
    # With fewer cells left than annotators waiting, the first ones get a cell each and the rest none.
    people = people[:left]
    wanted = Shares.of(project).query * len(people) if people else project.query_batch_size
    # Read once: the strategy ranks with the team's seconds, the split deals with each annotator's.
    timed = TimedSeconds.of(project) if project.query_strategy == "cost_aware" and clf is not None else None
    # The cells the model was trained on, per class too: a suggestion far from them is withheld.
    neighbourhood = (
        LabelledNeighbourhood.build(emb[data.train_rows], ids[data.train_rows], data.train_labels)
        if clf is not None
        else None
    )
    choice = choose(
        project=project,
        embeddings=emb,
        pool_rows=data.pool_rows,
        pool_annotated=data.pool_annotated,
        probs=probs,
        seed=job.pk,
        pool_sources=data.pool_sources,
        labelled=neighbourhood,
        columns=list(clf.classes) if clf is not None else (),
        n=min(wanted, left),
        options=strategy_options(project, list(clf.classes), timed) if clf is not None else None,
    )
    if not project.split_work:
        return [(choice, None, None)]
    planned = plan_batches(
        project=project,
        people=people,
        query_rows=choice.rows,
        dealt=_dealt_by_seconds(people, choice.rows, emb, clf, timed),
        strategy=choice.strategy,
        ids=ids,
        describe=_describer(clf, emb, ids, neighbourhood),
        seed=job.pk,
    )
    return [(plan.choice, plan.assignee, plan.purposes) for plan in planned]


def _dealt_by_seconds(
    people: list[int],
    rows: np.ndarray,
    emb: np.ndarray,
    clf: TemperatureScaled | None,
    timed: TimedSeconds | None,
) -> list[np.ndarray] | None:
    """With the cost-aware strategy (``timed``: its timed labels), the chosen cells dealt by each
    annotator's own seconds per class (``learning.query.cost.deal_by_seconds``), as many to each as
    round-robin gives; None (round-robin) for other strategies, one annotator, no model or no seconds
    measured yet."""
    if timed is None or clf is None or len(people) < 2 or not len(rows):
        return None
    seconds = timed.per_annotator(list(clf.classes), people)
    if seconds is None:
        return None
    with threadpool_limits(limits=1):
        probs = np.asarray(clf.predict_proba(emb[rows]))
    sizes = [len(share) for share in deal(rows, len(people))]
    return [rows[positions] for positions in deal_by_seconds(probs, seconds, sizes)]


def _refresh_attribute_weights(
    project: Project, job: Job, emb: np.ndarray, ids: np.ndarray, data: TrainingSet, index: ModelVersion
) -> None:
    """Choose the attribute weights again and store them with the index when the labelled cells that
    carry attributes have doubled since they were chosen (:func:`weights_are_stale`). The embed job
    chooses them after every re-embedding; a project that never fine-tunes re-embeds rarely and would
    otherwise keep weights chosen on its first few labels. Called after the batch is written, so no batch
    waits; a failure costs the refresh, never the batch."""
    try:
        cells = attribute_cells(project, data)
        if not weights_are_stale(index.metrics, cells):
            return
        chosen = choose_attribute_weights(project, emb, ids, data, seed=job.pk)
        with transaction.atomic():
            locked = ModelVersion.objects.select_for_update().get(pk=index.pk)
            if not chosen or not weights_are_stale(locked.metrics, cells):  # another retrain chose meanwhile
                return
            locked.metrics = {**locked.metrics, **chosen}
            locked.save(update_fields=["metrics"])
    except Exception:  # see the docstring; logged with its traceback
        logger.exception("job %s: attribute weights not refreshed", job.pk)


def _still_wanted(project: Project, to_write: list[PlannedWrite]) -> list[PlannedWrite]:
    """Inside the final transaction: drop a planned split-work batch whose annotator got an open batch
    meanwhile (another loop worker's job), with the project row locked so two jobs cannot both write."""
    if not project.split_work:
        return to_write
    Project.objects.select_for_update().filter(pk=project.pk).first()
    busy = set(
        QueryBatch.objects.filter(
            project=project, submitted_at__isnull=True, assignee__isnull=False
        ).values_list("assignee_id", flat=True)
    )
    return [entry for entry in to_write if entry[1] not in busy]


def retrain_and_query(job: Job, progress: JobProgress, *, fit: bool = True) -> dict[str, Any]:
    """``fit=False`` (a query job) reuses the latest classifier when it was trained on the latest index,
    and otherwise makes a cold-start batch. With split work, every annotator who needs a batch gets one
    (``loop.handlers.work_split``)."""
    project = job.project
    assert project is not None
    written = list(
        QueryBatch.objects.filter(job=job).select_related("classifier", "index").order_by("number")
    )
    if written:  # a retry of a job that died after its final transaction
        return _split_result(written) if project.split_work else _batch_result(written[0])
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name] = round(now - t, 4)
        t = now

    index = latest_version(project, ModelVersion.Kind.INDEX)
    if index is None:
        raise ValueError("the project has no index yet: embed the cells first")
    ids, emb = index_embeddings(index)
    classes = class_names(project)
    data = build_training_set(project, ids, classes)
    lap("load")
    clf: TemperatureScaled | None = None
    classifier_version: ModelVersion | None = None
    metrics: dict[str, Any] = {}
    # One BLAS thread: these problems are small (hundreds to thousands of rows), and with a second
    # busy process (the web server, another job) a multi-threaded BLAS spins waiting for a core. Measured
    # on this 2-core machine: a 48-label logistic regression fit took 7.3 s with 2 threads, 0.24 s with 1.
    raw: AlignedClassifier | None = None
    with threadpool_limits(limits=1):
        if fit and len(data.train_rows):
            progress(0.2, f"training on {len(data.train_rows)} labels")
            raw = AlignedClassifier(classes, project.classifier_kind, class_weight="balanced")  # type: ignore[arg-type]
            raw.fit(emb[data.train_rows], data.train_labels)
            lap("fit")
            clf, metrics = _validate_and_calibrate(raw, emb, data, classes)
            lap("validate")
        elif not fit:
            latest = latest_version(project, ModelVersion.Kind.CLASSIFIER)
            if latest is not None and latest.parent_id == index.pk:
                classifier_version, clf = latest, load_classifier(latest)
        # Calibrated probabilities: the suggestions' confidences and the strategy's uncertainty use them.
        probs = (
            pool_probabilities(clf, emb, data.pool_rows) if clf is not None and len(data.pool_rows) else None
        )
    lap("score")
    progress(0.6, "choosing the next batch")
    left = labels_left(project)  # read once: it decides the batch size and, at 0, says why there is none
    to_write = _planned_batches(project, job, emb, ids, data, probs, clf, left)
    lap("select")
    # Attribute suggestions come after the write (loop.handlers.batch_attributes): here only whether any.
    suggester = AttributeSuggester(project, emb, ids, data, index, seed=job.pk)
    attribute_rows_after_write = suggester.plan([choice.rows for choice, _, _ in to_write])
    if fit:
        failpoint("retrain.before_commit")  # crash tests kill the worker here
    artifacts: dict[str, Any] = {}
    if fit and raw is not None and clf is not None:
        path = job_dir(job) / CLASSIFIER_FILE
        joblib.dump(raw, path)  # the fitted model; its temperature goes with the version's artifacts
        artifacts = {
            "classifier": relative_artifact(path),
            "kind": project.classifier_kind,
            "classes": classes,
            "temperature": clf.temperature,
        }
    with transaction.atomic():
        if fit and clf is not None:
            classifier_version = create_version(
                project=project,
                kind=ModelVersion.Kind.CLASSIFIER,
                job=job,
                parent=index,
                artifacts=artifacts,
                metrics=metrics,
                label_count=len(data.train_rows),
                trained_on=data.annotation_ids,
            )
        columns = list(clf.classes) if clf is not None else []
        batches = [
            write_batch(
                project=project,
                job=job,
                choice=batch_choice,
                cell_ids=ids,
                index=index,
                classifier=classifier_version,
                labelled_count=len(data.train_rows),
                columns=columns,
                assignee_id=assignee,
                purposes=purposes,
                attribute_suggestions_pending=attribute_rows_after_write is not None,
            )
            for batch_choice, assignee, purposes in _still_wanted(project, to_write)
        ]
    lap("write")
    attributes_after_write = 0
    if attribute_rows_after_write is not None and batches:
        # The page shows the batch meanwhile, and refreshes the suggestions until the flag clears.
        attributes_after_write = suggester.fill(batches, attribute_rows_after_write)
        lap("attributes_after_write")
    heads_job: Job | None = None
    measure_job: Job | None = None
    if fit:
        _refresh_attribute_weights(project, job, emb, ids, data, index)
        lap("attribute_weights")
        # The next retrain's measurement heads, fitted on the side queue (seconds to half a minute).
        # A failure costs the newer heads (the next retrain asks again), never the written batch.
        try:
            heads_job = request_measurement_heads(project, job, data, ids)
            if heads_job is not None or attributes_after_write:  # the heads are in use: measure every cell
                measure_job = request_measuring(project, job)
        except Exception:  # logged with its traceback
            logger.exception("job %s: no attribute heads or measure job requested", job.pk)
    if project.split_work:
        result = _split_result(batches, seconds)
    elif batches:
        result = _batch_result(batches[0], seconds)
    else:
        result = {"batch": None, "seconds": seconds}
    if not batches and left <= 0:
        result["message"] = budget_spent_message(project)
    if metrics:
        result["validation_macro_f1"] = metrics.get("macro_f1")
    if data.missing_from_index:
        result["cells_not_indexed"] = data.missing_from_index
    if attributes_after_write:
        result["attribute_suggestions_after_write"] = attributes_after_write
    if heads_job is not None:
        result["attribute_heads_job"] = heads_job.pk
    if measure_job is not None:
        result["measure_job"] = measure_job.pk
    return result
