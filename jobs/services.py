"""Writes of the job lifecycle: create and enqueue, claim, heartbeat, progress, succeed, fail, release the
job waiting behind a finished one, and requeue jobs of dead workers. Every status change is a conditional
UPDATE, so two workers never both own one job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import dispatch
from jobs.models import Job


def job_create(
    *,
    kind: str,
    project: Any = None,
    params: dict[str, Any] | None = None,
    created_by: User | None = None,
    enqueue: bool = True,
) -> Job:
    """Create a job row and, once the surrounding transaction commits, hand it to a worker."""
    job = Job.objects.create(kind=kind, project=project, params=params or {}, created_by=created_by)
    if enqueue:
        job_enqueue(job=job)
    return job


def job_enqueue(*, job: Job) -> None:
    job_id, kind = job.pk, job.kind
    transaction.on_commit(lambda: dispatch.send_job(job_id, kind))


def job_release_waiting(*, project_id: int, kind: str) -> Job | None:
    """Hand the job waiting behind a finished one of the same kind to a worker. The status change is
    conditional, so two finishing jobs cannot both release (and send) the same waiting one."""
    waiting = Job.objects.filter(project_id=project_id, kind=kind, status=Job.Status.WAITING).first()
    if waiting is None:
        return None
    with transaction.atomic():
        released = Job.objects.filter(pk=waiting.pk, status=Job.Status.WAITING).update(
            status=Job.Status.QUEUED, message=""
        )
        if released != 1:
            return None
        job_enqueue(job=waiting)
    return waiting


def _stale_before() -> Any:
    return timezone.now() - timedelta(seconds=settings.LEUKOLOOP_JOB_STALE_SECONDS)


def _stale_running() -> Q:
    return Q(status=Job.Status.RUNNING) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=_stale_before()))


def job_claim(*, job_id: int) -> bool:
    """Mark a queued job running. A conditional UPDATE, so two workers can never both claim one job.

    A ``running`` job whose heartbeat stopped was claimed by a worker that died before finishing (late
    acknowledgement or the stale-job sweep delivered it again): it is claimed anew and its attempt
    counter goes up. A running job with a live heartbeat is left to its worker."""
    now = timezone.now()
    claimed = (
        Job.objects.filter(pk=job_id)
        .filter(Q(status=Job.Status.QUEUED) | _stale_running())
        .update(
            status=Job.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            error="",
        )
    )
    return claimed == 1


def job_heartbeat(*, job_id: int) -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())


def job_requeue_stale() -> list[int]:
    """Send every running job whose worker stopped beating back to the queue; returns their ids."""
    stale = list(Job.objects.filter(_stale_running()).values_list("pk", "kind"))
    for job_id, kind in stale:
        dispatch.send_job(job_id, kind)
    return [job_id for job_id, _ in stale]


def job_progress(*, job_id: int, progress: float, message: str = "") -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        progress=min(max(progress, 0.0), 1.0), message=message[:500], heartbeat_at=timezone.now()
    )


def job_succeed(*, job_id: int, result: dict[str, Any], message: str = "done") -> None:
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        result=result,
        message=message[:500],
        finished_at=timezone.now(),
    )


def job_fail(*, job_id: int, error: str) -> None:
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.FAILED, error=error, message="failed", finished_at=timezone.now()
    )
