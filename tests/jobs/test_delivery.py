"""No job is lost when the broker or a worker fails (issue 11): a submit while the broker is down is
answered and its job sent by the sweep once the broker is back; a job's status belongs to the attempt
that claimed it last; a job whose workers keep dying fails with the reason after a few attempts; one
database error does not stop a job's heartbeat."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.utils import timezone
from rest_framework.test import APIClient

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Cell, Membership
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from config.broker import AtomicFilesystemTransport
from jobs import services, tasks
from jobs.models import Job
from jobs.registry import JOB_HANDLERS, JobProgress
from jobs.services import (
    job_claim,
    job_create,
    job_fail,
    job_heartbeat,
    job_progress,
    job_requeue_stale,
    job_succeed,
)
from loop.models import QueryBatch, QueryItem
from tests.brokers import closed_port_url, filesystem_job_ids, filesystem_options, producer_broker
from tests.conftest import ManifestWriter, wait_for


def _age(job: Job, seconds: float) -> None:
    """Move the job's clocks back: created, sent and last heartbeat ``seconds`` earlier."""
    then = timezone.now() - timedelta(seconds=seconds)
    Job.objects.filter(pk=job.pk).update(created_at=then)
    Job.objects.filter(pk=job.pk, sent_at__isnull=False).update(sent_at=then)
    Job.objects.filter(pk=job.pk, heartbeat_at__isnull=False).update(heartbeat_at=then)


def _beat_within(job: Job, seconds: float) -> bool:
    beat = Job.objects.get(pk=job.pk).heartbeat_at
    return beat is not None and timezone.now() - beat < timedelta(seconds=seconds)


def _worker_died(job: Job) -> None:
    """The worker running the job stopped beating long ago (killed, out of memory)."""
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))


# --- the broker down during a submit ------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.django_db(transaction=True)
def test_a_submit_while_the_broker_is_down_is_answered_and_sent_by_the_sweep_once_it_is_back(
    make_manifest: ManifestWriter, lead: User, annotator: User, tmp_path: Path, settings: Any
) -> None:
    """The audit's reproduction: the submit answered 500 after the retrain row was committed ``queued``,
    later submits joined that job, the sweep ignored queued jobs, and nothing was ever sent."""
    settings.LEUKOLOOP_JOB_RESEND_SECONDS = 30
    project = project_create(name="outage", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    cells = list(Cell.objects.filter(project=project).order_by("pk")[:4])
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="margin", strategy="margin"
    )
    for rank, cell in enumerate(cells):
        QueryItem.objects.create(batch=batch, cell=cell, rank=rank, score=0.5)
    annotation_create(cell=cells[0], annotator=annotator, label=cells[0].reference_label)
    client = APIClient()
    client.force_authenticate(annotator)
    submit = f"/api/projects/{project.pk}/batches/{batch.pk}/submit/"

    with producer_broker(closed_port_url()):
        answer = client.post(submit)
        assert answer.status_code == 202, answer.content
        job = Job.objects.get(pk=answer.json()["retrain_job"]["id"])
        assert (job.kind, job.status, job.sent_at) == (Job.Kind.RETRAIN, Job.Status.QUEUED, None)
        # A second submit joins the queued job and is answered too.
        assert client.post(submit).json()["retrain_job"]["id"] == job.pk
        # The sweep leaves a fresh job to its own send, and a due one stays queued while the broker is down.
        assert job_requeue_stale() == []
        _age(job, 31)
        assert job_requeue_stale() == []
        job.refresh_from_db()
        assert (job.status, job.sent_at) == (Job.Status.QUEUED, None)

    broker = tmp_path / "broker"
    with producer_broker(
        "filesystem://", transport=AtomicFilesystemTransport, options=filesystem_options(broker)
    ):
        assert job_requeue_stale() == [job.pk]
        assert filesystem_job_ids(broker) == [job.pk]
        job.refresh_from_db()
        assert job.status == Job.Status.QUEUED and job.sent_at is not None
        # Sent: the next sweeps leave it to the worker (no duplicate every sweep).
        assert job_requeue_stale() == []
        assert filesystem_job_ids(broker) == [job.pk]


@pytest.mark.django_db(transaction=True)
def test_a_send_error_after_commit_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    project = project_create(name="send-error")
    with producer_broker(closed_port_url()):
        job = job_create(kind=Job.Kind.MAP, project=project)  # committed at once (autocommit): sent now
    job.refresh_from_db()
    assert (job.status, job.sent_at) == (Job.Status.QUEUED, None)
    assert f"job {job.pk} (map) not sent to the broker" in caplog.text


@pytest.mark.django_db
def test_a_queued_job_whose_message_was_lost_is_sent_again_after_the_lost_delay(
    settings: Any, tmp_path: Path
) -> None:
    """A worker killed between fetching the message and claiming the job (the filesystem broker deletes a
    message when it is fetched), or a broker restarted empty: the job is queued with its message gone."""
    settings.LEUKOLOOP_JOB_LOST_SECONDS = 600
    job = job_create(kind=Job.Kind.IMPORT, project=project_create(name="lost"), enqueue=False)
    Job.objects.filter(pk=job.pk).update(sent_at=timezone.now())
    broker = tmp_path / "broker"
    with producer_broker(
        "filesystem://", transport=AtomicFilesystemTransport, options=filesystem_options(broker)
    ):
        _age(job, 300)
        assert job_requeue_stale() == []  # sent five minutes ago: most likely waiting behind others
        _age(job, 601)
        assert job_requeue_stale() == [job.pk]
        assert job_requeue_stale() == []  # sent again just now
    assert filesystem_job_ids(broker) == [job.pk]


# --- attempts: who owns a job, and how many tries it gets ---------------------------------------------


@pytest.mark.django_db
def test_a_stale_attempt_cannot_overwrite_the_job_claimed_again() -> None:
    job = job_create(kind=Job.Kind.IMPORT, project=project_create(name="stale"), enqueue=False)
    first = job_claim(job_id=job.pk)
    assert first == 1
    _worker_died(job)  # worker 1 stalls past its heartbeat; the sweep hands the job to worker 2
    second = job_claim(job_id=job.pk)
    assert second == 2
    assert job_claim(job_id=job.pk) is None  # worker 2 is alive: nobody else claims it

    # Worker 1 wakes up and reports: nothing it says is written.
    assert not job_progress(job_id=job.pk, attempt=first, progress=0.9, message="stale")
    assert not job_heartbeat(job_id=job.pk, attempt=first)
    assert not job_succeed(job_id=job.pk, attempt=first, result={"by": "stale"})
    assert not job_fail(job_id=job.pk, attempt=first, error="stale failure")
    job.refresh_from_db()
    assert (job.status, job.attempts, job.progress, job.result, job.error) == (
        Job.Status.RUNNING,
        2,
        0.0,
        {},
        "",
    )
    # Worker 2 owns it.
    assert job_progress(job_id=job.pk, attempt=second, progress=0.5, message="half")
    assert job_succeed(job_id=job.pk, attempt=second, result={"by": "second"})
    assert not job_fail(job_id=job.pk, attempt=second, error="after the end")  # finished: final
    job.refresh_from_db()
    assert (job.status, job.result, job.error) == (Job.Status.SUCCEEDED, {"by": "second"}, "")


@pytest.mark.django_db
def test_run_job_of_a_stalled_worker_does_not_record_its_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_create(kind=Job.Kind.MAP, project=project_create(name="stalled"), enqueue=False)

    def stall_then_fail(row: Job, progress: JobProgress) -> dict[str, Any]:
        # While this worker is stuck, its heartbeat goes stale and another worker claims the job.
        _worker_died(row)
        assert job_claim(job_id=row.pk) == 2
        raise RuntimeError("the stalled worker's late failure")

    monkeypatch.setitem(JOB_HANDLERS, Job.Kind.MAP, stall_then_fail)
    monkeypatch.setattr(tasks.settings, "LEUKOLOOP_JOB_HEARTBEAT_SECONDS", 3600)
    assert tasks.run_job(job.pk) == "superseded"
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error) == (Job.Status.RUNNING, 2, "")


@pytest.mark.django_db
def test_a_job_whose_worker_keeps_dying_fails_with_the_reason_after_the_attempt_cap(settings: Any) -> None:
    settings.LEUKOLOOP_JOB_MAX_ATTEMPTS = 3
    project = project_create(name="cap")
    job = job_create(kind=Job.Kind.RETRAIN, project=project, enqueue=False)
    waiting = Job.objects.create(kind=Job.Kind.RETRAIN, project=project, status=Job.Status.WAITING)
    for attempt in (1, 2, 3):
        assert job_claim(job_id=job.pk) == attempt
        _worker_died(job)
    assert tasks.run_job(job.pk) == "skipped"  # a fourth delivery: no fourth attempt
    job.refresh_from_db()
    assert (job.status, job.attempts, job.message) == (Job.Status.FAILED, 3, "gave up after 3 attempts")
    assert "gave up after 3 attempts" in job.error and "worker" in job.error
    assert job.finished_at is not None
    # The retrain waiting behind it is not stuck behind a job that will never finish.
    waiting.refresh_from_db()
    assert waiting.status == Job.Status.QUEUED


@pytest.mark.django_db
def test_the_sweep_fails_a_job_out_of_attempts_instead_of_sending_it_again(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LEUKOLOOP_JOB_MAX_ATTEMPTS = 2
    job = job_create(kind=Job.Kind.IMPORT, project=project_create(name="sweep-cap"), enqueue=False)
    assert job_claim(job_id=job.pk) == 1
    _worker_died(job)
    sent: list[int] = []
    monkeypatch.setattr(services.dispatch, "send_job", lambda job_id, kind: sent.append(job_id))
    assert job_requeue_stale() == [job.pk]  # one attempt left: sent again
    assert job_claim(job_id=job.pk) == 2
    _worker_died(job)
    assert job_requeue_stale() == []
    assert sent == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.message) == (Job.Status.FAILED, "gave up after 2 attempts")


# --- the heartbeat ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_database_error_does_not_stop_the_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_create(kind=Job.Kind.IMPORT, project=project_create(name="beat"), enqueue=False)
    attempt = job_claim(job_id=job.pk)
    assert attempt == 1
    _worker_died(job)
    calls: list[str] = []
    real_heartbeat = services.job_heartbeat

    def flaky_heartbeat(**kwargs: Any) -> bool:
        calls.append("beat")
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_heartbeat(**kwargs)

    monkeypatch.setattr(services, "job_heartbeat", flaky_heartbeat)
    with tasks.Heartbeat(job.pk, attempt, 0.05) as heartbeat:
        wait_for(lambda: len(calls) >= 3, timeout=10, what="three heartbeats")
    assert heartbeat.failures == 1
    assert _beat_within(job, 5)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_reconnects_after_the_database_dropped_its_connection() -> None:
    """A real database error: PostgreSQL terminates the heartbeat thread's connection (as a restart of
    the server would); the next beat fails, the one after opens a new connection and writes."""
    if connection.vendor != "postgresql":
        pytest.skip("terminating a server connection needs PostgreSQL")
    job = job_create(kind=Job.Kind.IMPORT, project=project_create(name="beat-pg"), enqueue=False)
    attempt = job_claim(job_id=job.pk)
    assert attempt is not None

    def others() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    with tasks.Heartbeat(job.pk, attempt, 0.3) as heartbeat:
        wait_for(lambda: bool(others()), timeout=10, what="the heartbeat's connection")
        with connection.cursor() as cursor:
            for pid in others():
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        _worker_died(job)
        wait_for(lambda: heartbeat.failures >= 1, timeout=10, what="the failed beat")
        wait_for(lambda: _beat_within(job, 5), timeout=10, what="a beat on a new connection")


def test_by_default_a_job_queued_while_the_broker_was_down_is_sent_within_a_minute_of_its_return() -> None:
    """Worst case: the broker comes back just after a sweep; the next sweep comes one interval later and
    sends every job queued longer than the resend delay (tests/loop/test_broker_outage.py runs it)."""
    from django.conf import settings

    sweep: dict[str, Any] = settings.CELERY_BEAT_SCHEDULE["requeue-stale-jobs"]
    assert sweep["task"] == "leukoloop.requeue_stale_jobs"
    assert sweep["schedule"] + settings.LEUKOLOOP_JOB_RESEND_SECONDS <= 60
    assert settings.LEUKOLOOP_JOB_LOST_SECONDS > settings.LEUKOLOOP_JOB_STALE_SECONDS
