"""The export job handler (registered in ``AnnotationConfig.ready``)."""

from __future__ import annotations

from typing import Any

from annotation.exports.service import run_export
from annotation.jobs import JobProgress, job_handler
from annotation.models import Job


@job_handler(Job.Kind.EXPORT)
def run_export_job(job: Job, progress: JobProgress) -> dict[str, Any]:
    return run_export(job, progress)
