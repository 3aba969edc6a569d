"""Hand a job to a worker: the Celery message, sent by task name so that nothing here imports the task
module (which imports the job services)."""

from __future__ import annotations

from celery import current_app

from jobs.routing import RUN_JOB_TASK, queue_for_kind


def send_job(job_id: int, kind: str) -> None:
    current_app.send_task(RUN_JOB_TASK, args=(job_id,), queue=queue_for_kind(kind))
