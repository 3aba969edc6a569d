"""The dashboard's job handlers, the embedding map and the shift report (registered in
``AnnotationConfig.ready``)."""

from __future__ import annotations

from typing import Any

from dashboard.embedding_map import draw_latest_map
from dashboard.shift import refresh_report
from jobs.models import Job
from jobs.registry import JobProgress, job_handler


@job_handler(Job.Kind.MAP)
def run_map_job(job: Job, progress: JobProgress) -> dict[str, Any]:
    if job.project is None:
        raise ValueError("a map job needs a project")
    progress(0.05, "drawing the embedding map (UMAP)")
    return draw_latest_map(job.project)


@job_handler(Job.Kind.SHIFT)
def run_shift_job(job: Job, progress: JobProgress) -> dict[str, Any]:
    if job.project is None:
        raise ValueError("a shift job needs a project")
    progress(0.05, "measuring each source against the labelled cells")
    report = refresh_report(job.project)
    model = report.get("model") or {}
    return {
        "classifier_version": model.get("version"),
        "sources": len(report.get("sources", [])),
        "message": f"shift report of model v{model['version']} ready" if model else report.get("note", ""),
    }
