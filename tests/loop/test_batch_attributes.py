"""A retrain writes its batch before it fits the attribute heads or measures a cell, and gives the cells
their attribute suggestions just after, those measured already first; the page is told more are coming.
Real cells, real measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from jobs.models import Job
from learning.morphometry import measure
from loop.handlers import attribute_suggestions, batch_attributes
from loop.models import CellMeasurement, QueryBatch, QueryItem
from loop.services.batches import batch_submit
from loop.state import attribute_suggestions_pending
from tests.conftest import client_for, run_queued_jobs
from tests.loop.test_attribute_suggestions import label_with_attributes, second_batch

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def spy_on_measuring(monkeypatch: pytest.MonkeyPatch, number: int = 2) -> list[dict[str, Any]]:
    """For each cell file measured: the file, and batch ``number`` as it stood then (None: not written
    yet): whether it was flagged, and which of its cells had suggestions."""
    seen: list[dict[str, Any]] = []

    def measuring(path: Path) -> Any:
        batch = QueryBatch.objects.filter(number=number).first()
        state = None
        if batch is not None:
            state = {
                "pending": batch.attribute_suggestions_pending,
                "suggested": set(
                    batch.items.exclude(attribute_suggestions={}).values_list("cell_id", flat=True)
                ),
            }
        seen.append({"path": str(path), "batch": state})
        return measure(path)

    monkeypatch.setattr(attribute_suggestions, "measure", measuring)
    return seen


def test_the_first_retrain_with_attributes_measures_after_writing_its_batch(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    seen = spy_on_measuring(monkeypatch)
    batch, given, _ = second_batch(loop_project, annotator, first_batch=24)
    retrain = batch.job
    assert retrain is not None and retrain.kind == Job.Kind.RETRAIN
    measured_by_retrain = [s for s in seen if s["batch"] is None or s["batch"]["pending"]]
    # Nothing was measured before the batch existed: the labelled cells and the batch cells were all
    # measured after the write, while it was flagged and had no suggestions yet.
    assert measured_by_retrain and all(s["batch"] is not None for s in measured_by_retrain)
    assert measured_by_retrain[0]["batch"] == {"pending": True, "suggested": set()}
    # Then every cell got its suggestions and the flag cleared.
    batch.refresh_from_db()
    items = list(batch.items.all())
    assert not batch.attribute_suggestions_pending
    assert all(set(item.attribute_suggestions) == set(given) for item in items)
    assert retrain.result["attribute_suggestions_after_write"] == len(items)
    assert retrain.result["seconds"]["attributes_after_write"] >= 0


def test_cells_measured_already_get_theirs_first_and_the_rest_follow_in_rank_order(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    monkeypatch.setattr(batch_attributes, "FILL_CHUNK", 3)
    second, given, _ = second_batch(loop_project, annotator, first_batch=24)
    # By now every pool cell is measured (the measure job ran): forget every other unlabelled one, as
    # a measure job part-way through would leave them.
    labelled = set(QueryItem.objects.filter(batch__project=loop_project).values_list("cell_id", flat=True))
    pool = Cell.objects.filter(project=loop_project, role=Cell.Role.POOL).exclude(pk__in=labelled)
    forgotten = set(pool.order_by("pk").values_list("pk", flat=True)[::2])
    CellMeasurement.objects.filter(cell_id__in=forgotten).delete()
    label_with_attributes(second, annotator)
    seen = spy_on_measuring(monkeypatch, number=3)
    fitted: list[dict[str, Any]] = []
    real_fit = batch_attributes.fit_attribute_heads

    def fitting(*args: Any, **kwargs: Any) -> Any:
        batch = QueryBatch.objects.filter(number=3).first()
        fitted.append(
            {"written": batch is not None, "pending": batch and batch.attribute_suggestions_pending}
        )
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(batch_attributes, "fit_attribute_heads", fitting)
    batch_submit(batch=second, user=annotator)
    run_queued_jobs()
    batch = QueryBatch.objects.get(project=loop_project, number=3)
    in_batch = list(batch.items.order_by("rank").values_list("cell_id", flat=True))
    later = [cell for cell in in_batch if cell in forgotten]
    assert 0 < len(later) < len(in_batch), "the batch should mix measured and forgotten cells"
    # The heads were fitted once, after the write (the batch waited for none of it).
    assert fitted == [{"written": True, "pending": True}]
    # Nothing was measured before the write; the cells measured already had their suggestions before
    # the first of the others was measured.
    by_retrain = [s for s in seen if s["batch"] is None or s["batch"]["pending"]]
    assert len(by_retrain) == len(later) and all(s["batch"] is not None for s in by_retrain)
    first_stored = by_retrain[0]["batch"]["suggested"]
    assert first_stored == set(in_batch) - forgotten
    # The others after it, FILL_CHUNK at a time in rank order, stored after each chunk.
    stored = [s["batch"]["suggested"] - first_stored for s in by_retrain]
    chunks = [set(later[i : i + 3]) for i in range(0, len(later), 3)]
    expected = [set().union(*chunks[: i // 3]) for i in range(len(later))]
    assert stored == expected
    batch.refresh_from_db()
    assert not batch.attribute_suggestions_pending
    assert all(set(item.attribute_suggestions) == set(given) for item in batch.items.all())
    assert batch.job is not None
    assert batch.job.result["attribute_suggestions_after_write"] == len(in_batch)


def test_a_failure_after_the_write_costs_only_the_suggestions(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk gone")

    monkeypatch.setattr(batch_attributes, "predict_attributes", broken)
    batch, _given, _ = second_batch(loop_project, annotator, first_batch=24)
    assert batch.job is not None and batch.job.status == Job.Status.SUCCEEDED
    assert batch.items.count() == 24
    assert not QueryItem.objects.filter(batch=batch).exclude(attribute_suggestions={}).exists()
    assert not batch.attribute_suggestions_pending  # the page stops waiting


def test_the_page_is_told_while_more_suggestions_are_coming(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    batch, _given, _ = second_batch(loop_project, annotator, first_batch=24)
    client = client_for(annotator)

    def told() -> tuple[bool, bool]:
        state = client.get(f"/api/projects/{loop_project.pk}/loop/").json()["batch"]
        current = client.get(f"/api/projects/{loop_project.pk}/batches/current/").json()["batch"]
        return state["attribute_suggestions_pending"], current["attribute_suggestions_pending"]

    assert told() == (False, False)
    job = batch.job
    assert job is not None
    QueryBatch.objects.filter(pk=batch.pk).update(attribute_suggestions_pending=True)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)  # the retrain is filling them in
    assert told() == (True, True)
    # A retrain that died after its write sends no more: the page is not left waiting.
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED)
    batch.refresh_from_db()
    assert not attribute_suggestions_pending(batch)
    assert told() == (False, False)
