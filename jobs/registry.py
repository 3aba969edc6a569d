"""What each kind of background job does. A handler takes the Job row and a progress callback, calls one
service, and returns a JSON-able result. The app that owns a kind registers its handler here (in its
``AppConfig.ready``); the Celery task only claims, dispatches by kind and records the outcome
(``jobs.tasks``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from jobs.models import Job
from jobs.services import job_progress

JobProgress = Callable[[float, str], None]
JobHandler = Callable[[Job, JobProgress], dict[str, Any]]

JOB_HANDLERS: dict[str, JobHandler] = {}


def job_handler(kind: str) -> Callable[[JobHandler], JobHandler]:
    def register(func: JobHandler) -> JobHandler:
        JOB_HANDLERS[kind] = func
        return func

    return register


def throttled_progress(job_id: int, attempt: int, every_seconds: float = 0.5) -> JobProgress:
    """A progress callback that writes to the Job row at most twice a second, while ``attempt`` owns it."""
    last = 0.0

    def report(fraction: float, message: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every_seconds or fraction >= 1.0:
            last = now
            job_progress(job_id=job_id, attempt=attempt, progress=fraction, message=message)

    return report
