"""The import job: a background import of a folder, manifest or zip into a project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotation.importing.service import LabelMode, StoreMode, import_cells
from annotation.models import Cell
from jobs.models import Job
from jobs.registry import JobProgress, job_handler


@job_handler(Job.Kind.IMPORT)
def run_import(job: Job, progress: JobProgress) -> dict[str, Any]:
    if job.project is None:
        raise ValueError("an import job needs a project")
    params = job.params
    report = import_cells(
        project=job.project,
        source=Path(params["source"]),
        labels=LabelMode(params.get("labels", LabelMode.REFERENCE)),
        store=StoreMode(params.get("store", StoreMode.REFERENCE)),
        default_role=params.get("role", Cell.Role.POOL),
        max_pixels=params.get("max_pixels"),
        progress=lambda done, total: progress(done / max(total, 1), f"checked {done} of {total} files"),
    )
    return report.as_dict()
