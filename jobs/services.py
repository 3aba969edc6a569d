"""Writes of the job lifecycle: create and enqueue, claim, heartbeat, progress, succeed, fail, release the
job waiting behind a finished one, and the sweep that re-sends jobs the broker or a worker lost. Every
status change is a conditional UPDATE, so two workers never both own one job.

Delivery is at least once, and the Job table, not the broker, is what guarantees it:

- a job is sent after its row is committed; a send that fails (broker down) is logged, never raised,
  and the job stays ``queued`` with ``sent_at`` empty;
- the sweep (``job_requeue_stale``, every ``LEUKOLOOP_JOB_SWEEP_SECONDS`` and at each worker's start)
  sends again every queued job never sent for ``LEUKOLOOP_JOB_RESEND_SECONDS``, every queued job whose
  message is older than ``LEUKOLOOP_JOB_LOST_SECONDS`` (lost with a broker that restarted empty, or
  with a worker killed between fetching the message and claiming the job: the embedded filesystem
  broker deletes a message when it is fetched), and every running job whose heartbeat stopped;
- a duplicate message is harmless: only one ``job_claim`` wins, the others do nothing;
- each claim is an attempt, numbered; only the attempt that owns the job may report progress, success
  or failure, and after ``LEUKOLOOP_JOB_MAX_ATTEMPTS`` the job fails with the reason instead of running
  again."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs import dispatch
from jobs.models import Job

logger = logging.getLogger(__name__)


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
    """Send the job once the transaction that wrote it commits (a worker must find the row). A failed
    send does not undo or fail anything: the job is queued and the sweep sends it again."""
    job_id, kind = job.pk, job.kind
    transaction.on_commit(lambda: job_send(job_id=job_id, kind=kind))


def job_send(*, job_id: int, kind: str) -> bool:
    """Hand the job to the broker and record when; a broker error is logged and answered False."""
    try:
        dispatch.send_job(job_id, kind)
    except Exception:
        # kombu's OperationalError (Redis unreachable), ChannelError (the broker folder), OSError, ...:
        # whatever the transport raises, the row is committed and the sweep tries again.
        logger.exception(
            "job %s (%s) not sent to the broker; the stale-job sweep sends it again", job_id, kind
        )
        return False
    Job.objects.filter(pk=job_id).update(sent_at=timezone.now())
    return True


def job_release_waiting(*, project_id: int, kind: str) -> Job | None:
    """Hand the job waiting behind a finished one of the same kind to a worker. The status change is
    conditional, so two finishing jobs cannot both release (and send) the same waiting one."""
    waiting = Job.objects.filter(project_id=project_id, kind=kind, status=Job.Status.WAITING).first()
    if waiting is None:
        return None
    with transaction.atomic():
        released = Job.objects.filter(pk=waiting.pk, status=Job.Status.WAITING).update(
            status=Job.Status.QUEUED, message="", sent_at=None
        )
        if released != 1:
            return None
        job_enqueue(job=waiting)
    return waiting


def _ago(seconds: float) -> Any:
    return timezone.now() - timedelta(seconds=seconds)


def _stale_running() -> Q:
    stale_before = _ago(settings.LEUKOLOOP_JOB_STALE_SECONDS)
    return Q(status=Job.Status.RUNNING) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale_before))


def _unsent_or_lost() -> Q:
    """Queued jobs whose message never reached the broker, or reached it so long ago that it was lost."""
    never_sent = Q(sent_at__isnull=True) & Q(created_at__lt=_ago(settings.LEUKOLOOP_JOB_RESEND_SECONDS))
    lost = Q(sent_at__lt=_ago(settings.LEUKOLOOP_JOB_LOST_SECONDS))
    return Q(status=Job.Status.QUEUED) & (never_sent | lost)


def job_claim(*, job_id: int) -> int | None:
    """Mark a queued job running; returns the number of this attempt (1 for the first), or None when the
    job is not this worker's to run. A conditional UPDATE on the attempt counter, so two workers can never
    both claim one job, and each claim knows which attempt it owns.

    A ``running`` job whose heartbeat stopped was claimed by a worker that died before finishing (late
    acknowledgement or the sweep delivered it again): it is claimed anew as the next attempt, unless it
    has had ``LEUKOLOOP_JOB_MAX_ATTEMPTS`` already, when it fails with the reason. A running job with a
    live heartbeat is left to its worker."""
    row = Job.objects.filter(pk=job_id).filter(Q(status=Job.Status.QUEUED) | _stale_running())
    attempts = row.values_list("attempts", flat=True).first()
    if attempts is None:
        return None  # finished, cancelled, waiting, deleted, or alive in another worker
    if attempts >= settings.LEUKOLOOP_JOB_MAX_ATTEMPTS:
        _give_up(job_id=job_id, attempts=attempts)
        return None
    now = timezone.now()
    claimed = row.filter(attempts=attempts).update(
        status=Job.Status.RUNNING, started_at=now, heartbeat_at=now, attempts=attempts + 1, error=""
    )
    return attempts + 1 if claimed == 1 else None


def _give_up(*, job_id: int, attempts: int) -> bool:
    """Fail a job whose every attempt died (its worker was killed, ran out of memory, lost its heartbeat):
    running it once more would most likely die the same way."""
    job = Job.objects.filter(pk=job_id).values("project_id", "kind", "heartbeat_at").first()
    if job is None:
        return False
    seen = job["heartbeat_at"].isoformat() if job["heartbeat_at"] else "never"
    failed = (
        Job.objects.filter(pk=job_id, attempts=attempts)
        .filter(Q(status=Job.Status.QUEUED) | _stale_running())
        .update(
            status=Job.Status.FAILED,
            message=f"gave up after {attempts} attempts",
            error=(
                f"gave up after {attempts} attempts (LEUKOLOOP_JOB_MAX_ATTEMPTS): the worker running each "
                f"attempt stopped without finishing it (killed, out of memory, or its heartbeat stopped; "
                f"last heartbeat {seen}). See the worker logs."
            ),
            finished_at=timezone.now(),
        )
    )
    if failed != 1:
        return False
    logger.error("job %s (%s) failed: gave up after %s attempts", job_id, job["kind"], attempts)
    if job["project_id"] is not None:
        job_release_waiting(project_id=job["project_id"], kind=job["kind"])
    return True


def _owned(job_id: int, attempt: int) -> Any:
    """The job's row while ``attempt`` still owns it (running, not claimed again since)."""
    return Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, attempts=attempt)


def job_heartbeat(*, job_id: int, attempt: int) -> bool:
    return _owned(job_id, attempt).update(heartbeat_at=timezone.now()) == 1


def job_requeue_stale() -> list[int]:
    """The sweep: send again every queued job the broker never got or lost, and every running job whose
    worker stopped beating; fail those that used up their attempts. Returns the ids sent."""
    for job_id, attempts in Job.objects.filter(
        _stale_running(), attempts__gte=settings.LEUKOLOOP_JOB_MAX_ATTEMPTS
    ).values_list("pk", "attempts"):
        _give_up(job_id=job_id, attempts=attempts)
    due = Job.objects.filter(_stale_running() | _unsent_or_lost()).order_by("pk")
    return [job_id for job_id, kind in due.values_list("pk", "kind") if job_send(job_id=job_id, kind=kind)]


def job_progress(*, job_id: int, attempt: int, progress: float, message: str = "") -> bool:
    return (
        _owned(job_id, attempt).update(
            progress=min(max(progress, 0.0), 1.0), message=message[:500], heartbeat_at=timezone.now()
        )
        == 1
    )


def job_succeed(*, job_id: int, attempt: int, result: dict[str, Any], message: str = "done") -> bool:
    """Record the outcome of ``attempt``; False (and nothing written) when the job is no longer its own:
    a worker that stalled past its heartbeat and whose job was claimed again must not overwrite it."""
    return (
        _owned(job_id, attempt).update(
            status=Job.Status.SUCCEEDED,
            progress=1.0,
            result=result,
            message=message[:500],
            finished_at=timezone.now(),
        )
        == 1
    )


def job_fail(*, job_id: int, attempt: int, error: str) -> bool:
    """As ``job_succeed``, for a failed attempt."""
    return (
        _owned(job_id, attempt).update(
            status=Job.Status.FAILED, error=error, message="failed", finished_at=timezone.now()
        )
        == 1
    )
