"""Writes on query batches: skipping a cell and submitting a batch (which asks for a retrain)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.models import Annotation
from jobs.models import Job
from loop.models import QueryBatch, QueryItem
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
        if submitted % project.finetune_every == 0:
            finetune_request(project=project, created_by=user)
    return job
