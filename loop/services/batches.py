"""Writes on query batches: skipping a cell and submitting a batch (which asks for a retrain)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.models import Annotation, Project
from jobs.models import Job
from jobs.selectors import active_job
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.selectors import label_budget
from loop.services.requests import finetune_request, retrain_request


class EmptyBatchError(ValueError):
    """Refused: nothing in the batch was labelled or skipped, so submitting it would only throw it away."""


def query_item_skip(*, item: QueryItem, user: User) -> QueryItem:
    """Skip a queried cell: it leaves the batch for everyone and is not queried again."""
    QueryItem.objects.filter(pk=item.pk, skipped_at__isnull=True).update(
        skipped_at=timezone.now(), skipped_by=user
    )
    item.refresh_from_db()
    return item


def query_item_unskip(*, item: QueryItem) -> QueryItem:
    """Undo a skip: the cell is back in its batch (and may be queried again)."""
    QueryItem.objects.filter(pk=item.pk).update(skipped_at=None, skipped_by=None)
    item.refresh_from_db()
    return item


def batch_is_untouched(batch: QueryBatch) -> bool:
    """No cell of the batch has a current label (from anyone) and none was skipped."""
    items = QueryItem.objects.filter(batch=batch)
    if items.filter(skipped_at__isnull=False).exists():
        return False
    return not Annotation.objects.filter(
        cell_id__in=items.values("cell_id"), superseded_by__isnull=True
    ).exists()


@transaction.atomic
def batch_submit(*, batch: QueryBatch, user: User) -> Job:
    """The annotator is done with a batch: retrain on every label so far and build the next batch.

    An untouched batch is refused (``EmptyBatchError``): a stray submit must not retrain on zero new
    labels and leave its cells behind."""
    if batch.submitted_at is None and batch_is_untouched(batch):
        raise EmptyBatchError(
            f"batch {batch.number} has no labelled or skipped cell: label some before submitting"
        )
    first_submission = QueryBatch.objects.filter(pk=batch.pk, submitted_at__isnull=True).update(
        submitted_at=timezone.now(), submitted_by=user
    )
    project = batch.project
    job = retrain_request(project=project, created_by=user, reason=f"batch {batch.number} submitted")
    if first_submission and project.finetune_every:
        submitted = QueryBatch.objects.filter(project=project, submitted_at__isnull=False).count()
        if finetune_scheduled(submitted, project.finetune_every) or budget_needs_finetune(project):
            finetune_request(project=project, created_by=user)
    return job


def finetune_scheduled(submitted: int, every: int) -> bool:
    """A fine-tune after every ``every`` batches the model chose. The first batch, picked before there is
    any model (the cold start), is not counted: with batches of 48 and ``every`` 8 the fine-tunes come at
    432 and 816 labels, the schedule the benchmark measured (bench/README.md, "The product's own
    schedule")."""
    return submitted > 1 and (submitted - 1) % every == 0


def budget_needs_finetune(project: Project) -> bool:
    """The label budget is reached and no fine-tune has seen all of it yet: the model the budget buys is
    fine-tuned on every label, whatever the schedule (a budget of 700 with batches of 48 and ``every`` 8
    ends in batch 15, which the schedule would not fine-tune after; at 811 the schedule's batch 17 does)."""
    if not label_budget(project).reached:
        return False
    if active_job(project_id=project.pk, kinds=[Job.Kind.FINETUNE]) is not None:
        return False
    tuned = ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.ENCODER, artifacts__method="finetune"
    ).order_by("-version")
    latest = tuned.first()
    return latest is None or latest.label_count < project.label_budget
