"""Celery tasks: thin. ``run_job`` takes a job id, claims the row, calls the handler registered for its
kind and records the outcome; ``requeue_stale_jobs`` is the periodic sweep for jobs of dead workers."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import connection

from jobs import services
from jobs.models import Job
from jobs.registry import JOB_HANDLERS, throttled_progress
from jobs.routing import RUN_JOB_TASK, SWEEP_TASK

logger = logging.getLogger(__name__)


class Heartbeat:
    """Writes the job's heartbeat from a side thread while the handler runs, so a long step without
    progress reports (a classifier fit, a FAISS build) is not mistaken for a dead worker."""

    def __init__(self, job_id: int, every_seconds: float) -> None:
        self.job_id = job_id
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every_seconds):
                services.job_heartbeat(job_id=self.job_id)
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> str:
    if not services.job_claim(job_id=job_id):
        # Finished, cancelled, deleted or alive in another worker: a redelivery does nothing.
        return "skipped"
    job = Job.objects.select_related("project").get(pk=job_id)
    handler = JOB_HANDLERS.get(job.kind)
    if handler is None:
        services.job_fail(job_id=job_id, error=f"no handler for job kind {job.kind!r}")
        return "failed"
    outcome = "succeeded"
    try:
        with Heartbeat(job_id, settings.LEUKOLOOP_JOB_HEARTBEAT_SECONDS):
            result: dict[str, Any] = handler(job, throttled_progress(job_id))
    except Exception as exc:
        logger.exception("job %s (%s) failed", job_id, job.kind)
        services.job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        outcome = "failed"
    else:
        services.job_succeed(job_id=job_id, result=result, message=str(result.get("message", "done")))
    if job.project_id is not None:
        services.job_release_waiting(project_id=job.project_id, kind=job.kind)
    return outcome


@shared_task(name=SWEEP_TASK)
def requeue_stale_jobs() -> list[int]:
    return services.job_requeue_stale()


@worker_ready.connect
def _requeue_on_start(**_: Any) -> None:
    """A worker that starts after a crash picks up the jobs the dead worker left running."""
    try:
        stale = services.job_requeue_stale()
    except Exception:  # the database may not be migrated yet; the periodic sweep tries again
        logger.exception("stale-job sweep at worker start failed")
        return
    if stale:
        logger.info("requeued jobs of a dead worker: %s", stale)
