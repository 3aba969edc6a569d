"""The export job handler (registered in ``AnnotationConfig.ready``)."""

from __future__ import annotations

from typing import Any

from exports.service import run_export
from jobs.models import Job
from jobs.registry import JobProgress, job_handler


@job_handler(Job.Kind.EXPORT)
def run_export_job(job: Job, progress: JobProgress) -> dict[str, Any]:
    return run_export(job, progress)
