"""The embedding map's job handler (registered in ``AnnotationConfig.ready``)."""

from __future__ import annotations

from typing import Any

from dashboard.embedding_map import draw_latest_map
from jobs.models import Job
from jobs.registry import JobProgress, job_handler


@job_handler(Job.Kind.MAP)
def run_map_job(job: Job, progress: JobProgress) -> dict[str, Any]:
    if job.project is None:
        raise ValueError("a map job needs a project")
    progress(0.05, "drawing the embedding map (UMAP)")
    return draw_latest_map(job.project)
