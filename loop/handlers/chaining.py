"""Follow-up jobs. A job that starts the next step records itself as ``parent_job`` in the new job's
params, so a retried job finds its follow-up already there instead of starting a second one."""

from __future__ import annotations

from typing import Any

from jobs.models import Job
from jobs.services import job_create
from loop.services.requests import retrain_request


def start_follow_up(*, parent: Job, kind: str, params: dict[str, Any] | None = None) -> Job:
    existing = Job.objects.filter(project=parent.project, kind=kind, params__parent_job=parent.pk).first()
    if existing is not None:
        return existing
    return job_create(kind=kind, project=parent.project, params={**(params or {}), "parent_job": parent.pk})


def start_learning(*, parent: Job, has_labels: bool) -> Job:
    """After a new index: retrain on the labels so far (which also builds the next batch), or, with no
    labels yet, build a cold-start batch."""
    if has_labels:
        existing = Job.objects.filter(
            project=parent.project, kind=Job.Kind.RETRAIN, params__parent_job=parent.pk
        ).first()
        if existing is not None:
            return existing
        assert parent.project is not None
        job = retrain_request(project=parent.project, reason=f"new index from job {parent.pk}")
        if "parent_job" not in job.params:
            Job.objects.filter(pk=job.pk).update(params={**job.params, "parent_job": parent.pk})
        return job
    return start_follow_up(parent=parent, kind=Job.Kind.QUERY)
