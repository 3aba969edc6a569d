"""The attribute heads on the measurements are fitted beside the loop after each batch, and the next
retrain's suggestions use them, on real cells."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from sklearn.ensemble import HistGradientBoostingClassifier

from annotation.models import Cell, Project
from annotation.services.annotations import annotation_create
from jobs.models import Job
from jobs.routing import SIDE_QUEUE, queue_for_kind
from jobs.services import job_create
from learning.attribute_heads import FusedAttributeHeads
from loop.handlers import attribute_suggestions, batch_attributes, measurement_heads
from loop.models import CellMeasurement, ModelVersion, QueryBatch
from loop.selectors import latest_version
from loop.services.batches import batch_submit
from tests.conftest import run_queued_jobs
from tests.loop.test_attribute_suggestions import label_with_attributes, second_batch

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def record_heads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The measurement heads each retrain hands to ``fit_attribute_heads``, in order."""
    passed: list[dict[str, Any]] = []
    real_fit = batch_attributes.fit_attribute_heads

    def recording(*args: Any, **kwargs: Any) -> FusedAttributeHeads | None:
        passed.append(dict(kwargs.get("measurement_heads") or {}))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(batch_attributes, "fit_attribute_heads", recording)
    return passed


def label_only(batch: Any, annotator: User) -> None:
    """Label a batch's cells with their class and no attributes, and submit it."""
    for item in batch.items.select_related("cell__reference_label"):
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    batch_submit(batch=batch, user=annotator)


def test_heads_fitted_after_a_batch_serve_the_next_retrain(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    passed = record_heads(monkeypatch)
    assert queue_for_kind(Job.Kind.ATTRIBUTE_HEADS) == SIDE_QUEUE  # never on the loop's queue
    batch, given, with_attributes = second_batch(loop_project, annotator, first_batch=24)
    # The first retrain had no stored heads: it fitted its own, then asked for them; the job ran.
    assert passed and passed[0] == {}
    job = Job.objects.get(project=loop_project, kind=Job.Kind.ATTRIBUTE_HEADS)
    assert job.status == Job.Status.SUCCEEDED, job.error
    version = latest_version(loop_project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    assert version is not None and version.job_id == job.pk
    assert version.metrics["attribute_cells"] == with_attributes == version.label_count
    assert version.artifacts["kind"] == measurement_heads.MEASUREMENT_HEAD_KIND == "boosted"
    stored = measurement_heads.stored_measurement_heads(loop_project, loop_project.learnable_attributes())
    assert set(stored) == set(given)
    # Boosted trees wherever the labelled cells gave an attribute two values or more (one value needs
    # no model: every cell is that value).
    assert all(head.kind == "boosted" for head in stored.values())
    assert any(isinstance(head.estimator_, HistGradientBoostingClassifier) for head in stored.values())
    # The next batch adds labels but no attributes: its retrain uses those heads as they are, and asks
    # for no new ones (they would be fitted on the same cells).
    before = len(passed)
    label_only(batch, annotator)
    run_queued_jobs()
    assert len(passed) == before + 1 and set(passed[-1]) == set(given)
    # The heads handed over are the stored ones: the same answers on real cells' measurements.
    cells = attribute_suggestions.measurements_for(list(batch.items.values_list("cell_id", flat=True)[:5]))
    for name, head in passed[-1].items():
        np.testing.assert_allclose(head.predict_proba(cells), stored[name].predict_proba(cells))
    assert Job.objects.filter(project=loop_project, kind=Job.Kind.ATTRIBUTE_HEADS).count() == 1


def test_new_attributes_ask_for_new_heads_and_a_lost_file_costs_only_them(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    passed = record_heads(monkeypatch)
    batch, _given, _ = second_batch(loop_project, annotator, first_batch=24)
    first = latest_version(loop_project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    assert first is not None
    first.artifact_path("heads").unlink()  # the file is gone (a cleaned disk, a moved folder)
    # The next batch carries attributes: its retrain still writes its batch with suggestions (heads
    # fitted in the retrain itself), and asks for heads on the new attributes.
    label_with_attributes(batch, annotator)
    batch_submit(batch=batch, user=annotator)
    run_queued_jobs()
    assert passed[-1] == {}
    third = QueryBatch.objects.get(project=loop_project, number=3)
    assert any(item.attribute_suggestions for item in third.items.all())
    newest = latest_version(loop_project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    assert newest is not None and newest.version == first.version + 1
    assert newest.metrics["attribute_cells"] > first.metrics["attribute_cells"]
    assert newest.metrics["fingerprint"] != first.metrics["fingerprint"]


def test_heads_whose_values_are_not_the_schemas_are_not_used(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    second_batch(loop_project, annotator, first_batch=24)
    schema = loop_project.learnable_attributes()
    stored = measurement_heads.stored_measurement_heads(loop_project, schema)
    assert stored
    name = next(iter(stored))
    changed = {**schema, name: [*schema[name], "a value added since"]}
    kept = measurement_heads.stored_measurement_heads(loop_project, changed)
    assert name not in kept and set(kept) == set(stored) - {name}


def test_once_suggestions_start_every_pool_cell_is_measured_beside_the_loop(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    assert measurement_heads.unmeasured_cells(loop_project).exists()
    batch, _given, _ = second_batch(loop_project, annotator, first_batch=24)
    job = Job.objects.get(project=loop_project, kind=Job.Kind.MEASURE)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert queue_for_kind(Job.Kind.MEASURE) == SIDE_QUEUE
    # Every pool cell is measured now, and the validation cells were left alone.
    assert not measurement_heads.unmeasured_cells(loop_project).exists()
    pool = Cell.objects.filter(project=loop_project, role=Cell.Role.POOL)
    assert CellMeasurement.objects.filter(cell__in=pool).count() == pool.count()
    assert not CellMeasurement.objects.filter(cell__project=loop_project, cell__role=Cell.Role.VALIDATION)
    # So the next retrain measures nothing itself (its suggestions read the stored measurements), and
    # asks for no second measure job.
    measured: list[str] = []
    real_measure = attribute_suggestions.measure

    def counting(path: Any) -> Any:
        measured.append(str(path))
        return real_measure(path)

    monkeypatch.setattr(attribute_suggestions, "measure", counting)
    label_only(batch, annotator)
    run_queued_jobs()
    third = QueryBatch.objects.get(project=loop_project, number=3)
    assert any(item.attribute_suggestions for item in third.items.all())
    assert measured == []
    assert Job.objects.filter(project=loop_project, kind=Job.Kind.MEASURE).count() == 1


def test_a_measure_job_hands_over_to_a_follow_up_after_its_time(
    loop_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slice of no time: each job measures one chunk and queues the next, until every cell is measured.
    monkeypatch.setattr(measurement_heads, "MEASURE_SECONDS", 0.0)
    monkeypatch.setattr(measurement_heads, "MEASURE_CHUNK", 16)
    pool = Cell.objects.filter(project=loop_project, role=Cell.Role.POOL).count()
    first = job_create(kind=Job.Kind.MEASURE, project=loop_project)
    assert measurement_heads.request_measuring(loop_project, first) is None  # one is queued already
    run_queued_jobs()
    jobs = list(Job.objects.filter(project=loop_project, kind=Job.Kind.MEASURE).order_by("pk"))
    assert len(jobs) == -(-pool // 16)  # one job per chunk
    assert all(job.status == Job.Status.SUCCEEDED for job in jobs)
    assert [job.result["cells_measured"] for job in jobs] == [16] * (len(jobs) - 1) + [
        pool - 16 * (len(jobs) - 1)
    ]
    assert all(job.params["parent_job"] == before.pk for before, job in itertools.pairwise(jobs))
    assert not measurement_heads.unmeasured_cells(loop_project).exists()
    # Nothing left to measure: no job is asked for.
    assert measurement_heads.request_measuring(loop_project, jobs[-1]) is None


def test_only_the_newest_heads_files_are_kept(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    monkeypatch.setattr(measurement_heads, "KEEP_HEADS_FILES", 1)
    batch, _given, _ = second_batch(loop_project, annotator, first_batch=24)
    first = latest_version(loop_project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    assert first is not None and first.artifact_path("heads").is_file()
    label_with_attributes(batch, annotator)
    batch_submit(batch=batch, user=annotator)
    run_queued_jobs()
    newest = latest_version(loop_project, ModelVersion.Kind.ATTRIBUTE_HEADS)
    assert newest is not None and newest.version == first.version + 1
    # The older file is gone and its version says so; the newest is the one the retrains read.
    old_path = first.artifact_path("heads")
    first.refresh_from_db()
    assert not old_path.exists()
    assert first.artifacts["pruned"] is True and "heads" not in first.artifacts
    assert newest.artifact_path("heads").is_file()
    stored = measurement_heads.stored_measurement_heads(loop_project, loop_project.learnable_attributes())
    assert stored
    # Nothing left to prune.
    assert measurement_heads.prune_heads_files(loop_project) == 0
