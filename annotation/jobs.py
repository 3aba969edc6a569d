"""What each kind of background job does. A handler takes the Job row and a progress callback, calls one
service, and returns a JSON-able result. Handlers are registered by kind; the Celery task only claims,
dispatches and records the outcome (see annotation/tasks.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from annotation import services
from annotation.importing.service import LabelMode, StoreMode, import_cells
from annotation.models import Cell, Job

JobProgress = Callable[[float, str], None]
JobHandler = Callable[[Job, JobProgress], dict[str, Any]]

JOB_HANDLERS: dict[str, JobHandler] = {}


def job_handler(kind: str) -> Callable[[JobHandler], JobHandler]:
    def register(func: JobHandler) -> JobHandler:
        JOB_HANDLERS[kind] = func
        return func

    return register


def throttled_progress(job_id: int, every_seconds: float = 0.5) -> JobProgress:
    """A progress callback that writes to the Job row at most twice a second."""
    last = 0.0

    def report(fraction: float, message: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every_seconds or fraction >= 1.0:
            last = now
            services.job_progress(job_id=job_id, progress=fraction, message=message)

    return report


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
