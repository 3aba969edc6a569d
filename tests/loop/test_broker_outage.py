"""The broker goes down while an annotator submits a batch, then comes back: the submit is answered, no
label is lost, and the loop resumes by itself (the worker's periodic sweep sends the queued retrain) well
within a minute, then builds the next batch. A private Redis server (killed and started again; the
machine's shared one is not touched), a real worker running the beat, real cells."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from annotation.models import Annotation, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from loop.models import QueryBatch
from tests.brokers import RedisServer, producer_broker
from tests.conftest import WorkerFactory, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]

SWEEP_SECONDS = 5


def test_broker_down_during_submit_then_back_the_loop_resumes_by_itself(
    loop_project: Project, annotator: User, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    if not RedisServer.available():
        pytest.skip("needs the redis-server program")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        with producer_broker(redis.url):
            _outage_during_submit(loop_project, annotator, start_worker, redis)
    finally:
        redis.stop()


def _outage_during_submit(
    project: Project, annotator: User, start_worker: WorkerFactory, redis: RedisServer
) -> None:
    worker = start_worker(
        beat=True,
        CELERY_BROKER_URL=redis.url,
        LEUKOLOOP_JOB_SWEEP_SECONDS=str(SWEEP_SECONDS),
        LEUKOLOOP_JOB_RESEND_SECONDS=str(SWEEP_SECONDS),
    )
    job_create(kind=Job.Kind.PRETRAIN, project=project)
    wait_for(
        lambda: QueryBatch.objects.filter(project=project).exists(),
        timeout=240,
        what="the cold-start batch",
        log=worker.log,
    )
    batch = QueryBatch.objects.get(project=project)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    for item in batch.items.select_related("cell__reference_label"):
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    labels = sorted(Annotation.objects.filter(cell__project=project).values_list("pk", "label_id"))
    client = APIClient()
    client.force_authenticate(annotator)

    redis.stop()  # the broker is down
    answer = client.post(f"/api/projects/{project.pk}/batches/{batch.pk}/submit/")
    assert answer.status_code == 202, answer.content
    retrain = Job.objects.get(pk=answer.json()["retrain_job"]["id"])
    assert (retrain.status, retrain.sent_at) == (Job.Status.QUEUED, None)
    time.sleep(2 * SWEEP_SECONDS)  # sweeps come and go while the broker is down: the job waits
    retrain.refresh_from_db()
    assert retrain.status == Job.Status.QUEUED

    redis.start()  # back, empty (no persistence): nothing of the job was kept there
    back = time.monotonic()

    def claimed() -> bool:
        retrain.refresh_from_db()
        return retrain.status != Job.Status.QUEUED

    wait_for(claimed, timeout=60, what="the retrain to be sent and claimed", log=worker.log)
    resumed_after = time.monotonic() - back
    wait_for(
        lambda: QueryBatch.objects.filter(project=project, number=2).exists(),
        timeout=180,
        what="batch 2",
        log=worker.log,
    )

    # Batch 2 commits with the retrain's results; the job is marked succeeded just after, in its own
    # write, so on a busy machine the batch can be seen a moment before the job's status.
    def finished() -> bool:
        retrain.refresh_from_db()
        return retrain.status != Job.Status.RUNNING

    wait_for(finished, timeout=60, what="the retrain to be marked finished", log=worker.log)
    assert retrain.status == Job.Status.SUCCEEDED, retrain.error
    assert retrain.attempts == 1
    assert resumed_after < 60
    assert sorted(Annotation.objects.filter(cell__project=project).values_list("pk", "label_id")) == labels
    print(f"broker back -> retrain claimed in {resumed_after:.1f} s")
