"""No wait at the start: the loop's first batch comes from the encoder's initial weights, label-free
pretraining runs after it in the background (on the ``train`` queue), its encoder is indexed there too and
the next batch comes from the new index while the current one is still being labelled."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from annotation.models import Project
from annotation.services.annotations import annotation_create
from jobs.models import Job
from jobs.routing import LOOP_QUEUE, TRAIN_QUEUE, queue_for_kind
from loop.models import ModelVersion, QueryBatch
from loop.services.batches import batch_submit
from loop.services.requests import pretrain_request
from loop.services.start import WAITS_FOR_FIRST_BATCH, loop_start
from tests.conftest import run_queued_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def run_loop_jobs() -> list[int]:
    """``run_queued_jobs`` but no dashboard maps (the first UMAP of a process compiles for a minute)."""
    ran: list[int] = []
    while True:
        Job.objects.filter(kind=Job.Kind.MAP, status=Job.Status.QUEUED).update(status=Job.Status.CANCELLED)
        step = run_queued_jobs(limit=1)
        if not step:
            return ran
        ran += step


def kinds_of(job_ids: list[int]) -> list[str]:
    kinds = dict(Job.objects.filter(pk__in=job_ids).values_list("pk", "kind"))
    return [kinds[pk] for pk in job_ids]


def cells_of(batch: QueryBatch) -> set[int]:
    return set(batch.items.values_list("cell_id", flat=True))


def label(batch: QueryBatch, annotator: User, *, first: int | None = None, rest: bool = False) -> list[int]:
    """Label cells of the batch with their reference labels: the first ``first``, or those after them."""
    items = list(batch.items.select_related("cell__reference_label").order_by("rank"))
    chosen = items[first:] if rest else items[:first]
    for item in chosen:
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    return [item.cell_id for item in chosen]


def test_the_first_batch_comes_from_the_initial_weights_before_any_pretraining(loop_project: Project) -> None:
    embed, created = loop_start(project=loop_project)
    assert created and embed.kind == Job.Kind.EMBED
    pretrain = Job.objects.get(project=loop_project, kind=Job.Kind.PRETRAIN)
    assert pretrain.status == Job.Status.WAITING and pretrain.message == WAITS_FOR_FIRST_BATCH
    assert pretrain.params == {"minutes": loop_project.pretrain_minutes}

    assert kinds_of(run_queued_jobs(limit=2)) == [Job.Kind.EMBED, Job.Kind.QUERY]
    batch = QueryBatch.objects.get(project=loop_project)
    assert batch.index is not None and batch.index.parent is not None
    encoder = batch.index.parent
    assert encoder.artifacts["method"] == "none" and "checkpoint" not in encoder.artifacts
    assert batch.items.count() == 12 and batch.strategy == "typiclust"
    # The batch released the pretraining, which has not run: it goes to the training worker.
    pretrain.refresh_from_db()
    assert pretrain.status == Job.Status.QUEUED and pretrain.started_at is None
    assert queue_for_kind(pretrain.kind) == TRAIN_QUEUE and queue_for_kind(Job.Kind.EMBED) == TRAIN_QUEUE
    assert queue_for_kind(Job.Kind.RETRAIN) == LOOP_QUEUE


def test_after_background_pretraining_the_next_batch_comes_from_the_new_index(
    loop_project: Project, annotator: User
) -> None:
    loop_start(project=loop_project)
    run_queued_jobs(limit=2)
    first = QueryBatch.objects.get(project=loop_project)
    labelled = label(first, annotator, first=6)  # the annotator is halfway through batch 1 ...
    open_cells = cells_of(first) - set(labelled)

    ran = run_loop_jobs()  # ... when the pretraining (then its index, then a retrain) runs in the background
    assert kinds_of(ran) == [Job.Kind.PRETRAIN, Job.Kind.EMBED, Job.Kind.RETRAIN]
    jobs = {j.kind: j for j in Job.objects.filter(project=loop_project).exclude(kind=Job.Kind.MAP)}
    assert all(j.status == Job.Status.SUCCEEDED for j in jobs.values()), {k: j.error for k, j in jobs.items()}
    pretrain = jobs[Job.Kind.PRETRAIN]
    assert pretrain.started_at is not None and pretrain.started_at >= first.created_at
    encoder = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.ENCODER, version=2)
    assert encoder.job == pretrain and encoder.artifacts["method"] == loop_project.ssl_method
    assert encoder.metrics["epochs_done"] > 0
    index = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.INDEX, version=2)
    assert index.parent == encoder

    second = QueryBatch.objects.get(project=loop_project, number=2)
    assert second.index == index and second.classifier is not None and second.classifier.parent == index
    assert second.classifier.label_count == 6
    first.refresh_from_db()
    assert first.submitted_at is None  # batch 1 was never interrupted
    assert not cells_of(second) & open_cells  # nor are its open cells asked for again

    # The annotator finishes batch 1 and submits it: the retrain works on the new index, and the batch
    # it builds leaves out the cells of batch 2, now the open one.
    label(first, annotator, first=6, rest=True)
    batch_submit(batch=first, user=annotator)
    assert kinds_of(run_loop_jobs()) == [Job.Kind.RETRAIN]
    third = QueryBatch.objects.get(project=loop_project, number=3)
    assert third.index == index and third.classifier is not None and third.classifier.label_count == 12
    assert not cells_of(third) & cells_of(second)
    assert Job.objects.filter(project=loop_project, kind=Job.Kind.RETRAIN).count() == 2


def test_a_lead_asking_for_pretraining_releases_the_waiting_one_and_a_started_loop_pretrains_again(
    loop_project: Project,
) -> None:
    loop_start(project=loop_project)
    waiting = Job.objects.get(project=loop_project, kind=Job.Kind.PRETRAIN)
    job, created = pretrain_request(project=loop_project)
    assert (job.pk, created, job.status) == (waiting.pk, False, Job.Status.QUEUED)
    run_loop_jobs()
    assert QueryBatch.objects.filter(project=loop_project).count() == 2  # initial index, then pretrained
    again, created = loop_start(project=loop_project, minutes=0.01)
    assert created and again.kind == Job.Kind.PRETRAIN and again.params == {"minutes": 0.01}
    assert ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.ENCODER).count() == 2
