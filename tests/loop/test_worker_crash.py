"""A worker killed in the middle of a retrain loses no label, and the retried job writes exactly one
model version and one batch. Real worker processes, real broker (Redis in CI, and the embedded
filesystem broker), real cells."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Project
from annotation.services.annotations import annotation_create
from jobs.models import Job
from jobs.services import job_create
from loop.models import ModelVersion, QueryBatch
from loop.services.batches import batch_submit
from tests.conftest import WorkerFactory, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]

STALE_SECONDS = 3


def test_killed_worker_mid_retrain_keeps_labels_and_the_retry_makes_one_version(
    loop_project: Project, annotator: User, start_worker: WorkerFactory
) -> None:
    first = start_worker(
        LEUKOLOOP_FAILPOINTS="retrain.before_commit=120", LEUKOLOOP_JOB_HEARTBEAT_SECONDS="1"
    )
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    wait_for(
        lambda: QueryBatch.objects.filter(project=loop_project).exists(),
        timeout=240,
        what="the cold-start batch",
        log=first.log,
    )
    batch = QueryBatch.objects.get(project=loop_project)
    for item in batch.items.select_related("cell__reference_label"):
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    labels_before = sorted(
        Annotation.objects.filter(cell__project=loop_project).values_list("pk", "label_id")
    )
    retrain = batch_submit(batch=batch, user=annotator)

    def held_at_failpoint() -> bool:
        return "failpoint retrain.before_commit" in first.log.read_text()

    wait_for(held_at_failpoint, timeout=120, what="the retrain to reach the failpoint", log=first.log)
    first.kill()
    retrain.refresh_from_db()
    assert retrain.status == Job.Status.RUNNING and retrain.attempts == 1
    assert not ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER).exists()

    time.sleep(STALE_SECONDS + 1.5)  # the dead worker's heartbeat goes stale
    second = start_worker(LEUKOLOOP_JOB_STALE_SECONDS=str(STALE_SECONDS))

    def finished() -> bool:
        retrain.refresh_from_db()
        return retrain.is_finished

    wait_for(finished, timeout=180, what="the retried retrain", log=second.log)
    assert retrain.status == Job.Status.SUCCEEDED, retrain.error
    assert retrain.attempts == 2
    labels_after = sorted(Annotation.objects.filter(cell__project=loop_project).values_list("pk", "label_id"))
    assert labels_after == labels_before
    classifiers = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    assert [v.version for v in classifiers] == [1] and classifiers[0].label_count == 12
    assert list(QueryBatch.objects.filter(project=loop_project).values_list("number", flat=True)) == [2, 1]
    assert Job.objects.filter(project=loop_project, kind=Job.Kind.RETRAIN).count() == 1
