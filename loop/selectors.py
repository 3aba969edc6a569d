"""Reads of the loop's records: query batches, the latest model version of a kind, and the version a
retried job wrote before it died."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from annotation.models import Project
from jobs.models import Job
from loop.models import ModelVersion, QueryBatch


def latest_version(project: Project | int, kind: str) -> ModelVersion | None:
    """The project's newest version of ``kind`` (encoder, index or classifier), or None."""
    project_id = project if isinstance(project, int) else project.pk
    return ModelVersion.objects.filter(project_id=project_id, kind=kind).order_by("-version").first()


def version_written_by(job: Job, kind: str) -> ModelVersion | None:
    """The version ``job`` wrote before it died, if any: a retried job returns it instead of writing a
    second one (``one_model_version_per_job`` would refuse that anyway)."""
    return ModelVersion.objects.filter(job=job, kind=kind).first()


def batch_list(*, project: Project) -> QuerySet[QueryBatch]:
    """The project's query batches, newest first, with their versions and item counts."""
    return (
        QueryBatch.objects.filter(project=project)
        .select_related("classifier", "index")
        .annotate(item_count=Count("items"))
        .order_by("-number")
    )
