"""Celery tasks: thin. Each takes ids, claims the job row, calls one handler, records the outcome."""

from __future__ import annotations

import logging
import traceback

from celery import shared_task

from annotation import services
from annotation.jobs import JOB_HANDLERS, throttled_progress
from annotation.models import Job

logger = logging.getLogger(__name__)


@shared_task(name="leukoloop.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> str:
    if not services.job_claim(job_id=job_id):
        # Finished, cancelled or deleted: a redelivery of a job that is already done does nothing.
        return "skipped"
    job = Job.objects.select_related("project").get(pk=job_id)
    handler = JOB_HANDLERS.get(job.kind)
    if handler is None:
        services.job_fail(job_id=job_id, error=f"no handler for job kind {job.kind!r}")
        return "failed"
    try:
        result = handler(job, throttled_progress(job_id))
    except Exception as exc:
        logger.exception("job %s (%s) failed", job_id, job.kind)
        services.job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        return "failed"
    services.job_succeed(job_id=job_id, result=result)
    return "succeeded"
