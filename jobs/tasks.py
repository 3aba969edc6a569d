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
from jobs.failpoints import failpoint
from jobs.models import Job
from jobs.registry import JOB_HANDLERS, throttled_progress
from jobs.routing import RUN_JOB_TASK, SWEEP_TASK

logger = logging.getLogger(__name__)


class Heartbeat:
    """Writes the job's heartbeat from a side thread while the handler runs, so a long step without
    progress reports (a classifier fit, a FAISS build) is not mistaken for a dead worker.

    A failed write (the database restarting, a dropped connection, a lock timeout) is logged and tried
    again at the next beat on a fresh connection: a thread that died on one error would leave a live job
    looking dead, and the sweep would hand it to a second worker."""

    def __init__(self, job_id: int, attempt: int, every_seconds: float) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.every_seconds = every_seconds
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every_seconds):
                self.beat()
        finally:
            connection.close()  # this thread's own database connection

    def beat(self) -> None:
        try:
            services.job_heartbeat(job_id=self.job_id, attempt=self.attempt)
        except Exception:
            self.failures += 1
            logger.exception(
                "heartbeat of job %s failed; trying again in %s s", self.job_id, self.every_seconds
            )
            # The connection may be broken (a restarted server): the next beat opens a new one.
            connection.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> str:
    failpoint("run_job.before_claim")  # crash tests: a worker that fetched the message, then died
    attempt = services.job_claim(job_id=job_id)
    if attempt is None:
        # Finished, cancelled, deleted, alive in another worker, or out of attempts: nothing to run.
        return "skipped"
    job = Job.objects.select_related("project").get(pk=job_id)
    handler = JOB_HANDLERS.get(job.kind)
    if handler is None:
        services.job_fail(job_id=job_id, attempt=attempt, error=f"no handler for job kind {job.kind!r}")
        return "failed"
    try:
        with Heartbeat(job_id, attempt, settings.LEUKOLOOP_JOB_HEARTBEAT_SECONDS):
            result: dict[str, Any] = handler(job, throttled_progress(job_id, attempt))
    except Exception as exc:
        logger.exception("job %s (%s) failed", job_id, job.kind)
        error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        recorded = services.job_fail(job_id=job_id, attempt=attempt, error=error)
        outcome = "failed"
    else:
        message = str(result.get("message", "done"))
        recorded = services.job_succeed(job_id=job_id, attempt=attempt, result=result, message=message)
        outcome = "succeeded"
    if not recorded:
        # This worker stalled past its heartbeat and the job was claimed again: the newer attempt owns it.
        logger.warning(
            "job %s attempt %s %s, but a newer attempt owns the job: not recorded", job_id, attempt, outcome
        )
        return "superseded"
    if job.project_id is not None:
        services.job_release_waiting(project_id=job.project_id, kind=job.kind)
    return outcome


@shared_task(name=SWEEP_TASK)
def requeue_stale_jobs() -> list[int]:
    return services.job_requeue_stale()


@worker_ready.connect
def _requeue_on_start(**_: Any) -> None:
    """A worker that starts after a crash picks up the jobs the dead worker left running or fetched."""
    try:
        stale = services.job_requeue_stale()
    except Exception:  # the database may not be migrated yet; the periodic sweep tries again
        logger.exception("stale-job sweep at worker start failed")
        return
    if stale:
        logger.info("sweep at worker start re-sent jobs %s", stale)
