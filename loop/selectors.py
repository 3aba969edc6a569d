"""Reads of model versions: the latest of a kind, and the one a retried job wrote before it died."""

from __future__ import annotations

from annotation.models import Project
from jobs.models import Job
from loop.models import ModelVersion


def latest_version(project: Project | int, kind: str) -> ModelVersion | None:
    """The project's newest version of ``kind`` (encoder, index or classifier), or None."""
    project_id = project if isinstance(project, int) else project.pk
    return ModelVersion.objects.filter(project_id=project_id, kind=kind).order_by("-version").first()


def version_written_by(job: Job, kind: str) -> ModelVersion | None:
    """The version ``job`` wrote before it died, if any: a retried job returns it instead of writing a
    second one (``one_model_version_per_job`` would refuse that anyway)."""
    return ModelVersion.objects.filter(job=job, kind=kind).first()
