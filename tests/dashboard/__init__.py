"""Tests of the project lead's dashboard; ``run_loop`` drives the real loop to a few classifier versions."""

from __future__ import annotations

from django.contrib.auth.models import User

from annotation.models import Project
from annotation.services.annotations import annotation_create
from jobs.models import Job
from jobs.services import job_create
from loop.models import ModelVersion, QueryBatch
from loop.services.batches import batch_submit


def run_loop(project: Project, annotator: User, *, batches: int, second: User | None = None) -> None:
    """Pretrain, then label ``batches`` batches with the cells' reference labels (``second`` labels each
    batch too, the same way) and submit each, running the queued jobs in this process: one classifier
    version per batch."""
    from tests.conftest import run_queued_jobs

    job_create(kind=Job.Kind.PRETRAIN, project=project)
    run_queued_jobs()
    for number in range(1, batches + 1):
        batch = QueryBatch.objects.get(project=project, number=number)
        for item in batch.items.select_related("cell__reference_label"):
            for person in (annotator, second):
                if person is not None:
                    annotation_create(
                        cell=item.cell, annotator=person, label=item.cell.reference_label, seconds_spent=2.5
                    )
        batch_submit(batch=batch, user=annotator)
        run_queued_jobs()
        assert (
            ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.CLASSIFIER).count() == number
        )
