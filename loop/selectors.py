"""Reads of the loop's records: query batches, the latest model version of a kind, and the version a
retried job wrote before it died."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, QuerySet

from annotation.labels import LabelCounts, label_counts
from annotation.models import Annotation, Membership, Project
from jobs.models import Job
from loop.models import ModelVersion, QueryBatch, QueryItem


def latest_version(project: Project | int, kind: str) -> ModelVersion | None:
    """The project's newest version of ``kind`` (encoder, index or classifier), or None."""
    project_id = project if isinstance(project, int) else project.pk
    return ModelVersion.objects.filter(project_id=project_id, kind=kind).order_by("-version").first()


@dataclass(frozen=True)
class LabelBudget:
    """``Project.label_budget`` against what is spent: cells labelled or waiting for review (their label
    was given too), and query cells still waiting in open batches. Agreement and gold cells are second
    looks at cells already counted: they spend annotators' time, not the budget."""

    total: int
    spent: int
    waiting: int

    @property
    def left(self) -> int:
        """How many more cells the loop may ask for; negative when a lead lowered the budget below what
        was spent."""
        return self.total - self.spent - self.waiting

    @property
    def reached(self) -> bool:
        """Every cell the budget allows is labelled: nothing left to ask for and nothing waiting."""
        return self.waiting == 0 and self.spent >= self.total


def label_budget(project: Project, counts: LabelCounts | None = None) -> LabelBudget:
    """``counts``: the project's label counts when the caller has them already."""
    counts = counts or label_counts(project=project)
    annotated = Annotation.objects.filter(cell__project=project, superseded_by__isnull=True).values("cell_id")
    waiting = (
        QueryItem.objects.filter(
            batch__project=project,
            batch__submitted_at__isnull=True,
            purpose=QueryItem.Purpose.QUERY,
            skipped_at__isnull=True,
        )
        .exclude(cell_id__in=annotated)
        .values("cell_id")
        .distinct()
        .count()
    )
    return LabelBudget(total=project.label_budget, spent=counts.labelled + counts.review, waiting=waiting)


def labels_left(project: Project) -> int:
    """:attr:`LabelBudget.left` of ``project``."""
    return label_budget(project).left


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
