"""Reads of jobs: the statuses that count as in flight, and a job as the pages and the API show it."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from jobs.models import Job

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING, Job.Status.WAITING)
# The longest error summary shown; a longer first line is cut.
ERROR_SUMMARY_CHARS = 300


def error_summary(error: str) -> str:
    """The first line of a job's error (``Kind: message``), without the traceback that follows it."""
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= ERROR_SUMMARY_CHARS else line[: ERROR_SUMMARY_CHARS - 1] + "…"


def job_list(*, project_id: int) -> QuerySet[Job]:
    return Job.objects.filter(project_id=project_id).order_by("-created_at", "-id")


def active_job(*, project_id: int, kinds: list[str]) -> Job | None:
    return Job.objects.filter(project_id=project_id, kind__in=kinds, status__in=ACTIVE).first()


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "progress": round(job.progress, 4),
        "message": job.message,
        "error": error_summary(job.error),
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
