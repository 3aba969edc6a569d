"""Reads of the loop's records: query batches, the latest model version of a kind, and the version a
retried job wrote before it died."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from annotation.models import Membership, Project
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
        .select_related("classifier", "index", "assignee")
        .annotate(item_count=Count("items"))
        .order_by("-number")
    )


def open_assigned_batches(project: Project) -> QuerySet[QueryBatch]:
    """With split work: the annotators' batches not yet submitted, a paused annotator's left out (a lead
    paused their queue, so its cells are free for the others)."""
    paused = Membership.objects.filter(project=project, labelling_paused=True).values("user_id")
    return QueryBatch.objects.filter(
        project=project, assignee__isnull=False, submitted_at__isnull=True
    ).exclude(assignee_id__in=paused)
