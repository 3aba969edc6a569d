"""No wait at the start: the loop's first batch comes from the encoder's initial weights, label-free
pretraining runs after it in the background (on the ``train`` queue), its encoder is indexed there too and
the next batch comes from the new index while the current one is still being labelled; a retried
pretraining resumes from its own checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.models import Cell, Project
from annotation.services.annotations import annotation_create
from jobs.models import Job
from jobs.registry import JOB_HANDLERS
from jobs.routing import LOOP_QUEUE, TRAIN_QUEUE, queue_for_kind
from jobs.services import job_claim, job_create
from learning.selfsup.train import load_checkpoint
from loop.handlers import encoders
from loop.handlers.artifacts import ENCODER_FILE, index_embeddings, job_dir
from loop.models import ModelVersion, QueryBatch
from loop.services import start
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
    assert kinds_of(ran) == [Job.Kind.PRETRAIN, Job.Kind.EMBED, Job.Kind.RETRAIN, Job.Kind.SHIFT]
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
    assert kinds_of(run_loop_jobs()) == [Job.Kind.RETRAIN, Job.Kind.SHIFT]
    third = QueryBatch.objects.get(project=loop_project, number=3)
    assert third.index == index and third.classifier is not None and third.classifier.label_count == 12
    assert not cells_of(third) & cells_of(second)
    assert Job.objects.filter(project=loop_project, kind=Job.Kind.RETRAIN).count() == 2


def test_a_large_project_starts_on_a_sample_of_its_cells_then_indexes_every_cell(
    loop_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(start, "START_POOL_SAMPLE", 20)  # 63 pool cells: more than twice as many
    embed, _ = loop_start(project=loop_project, minutes=0)
    assert embed.params["pool_sample"] == 20
    assert kinds_of(run_queued_jobs(limit=2)) == [Job.Kind.EMBED, Job.Kind.QUERY]
    sample = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.INDEX)
    assert sample.artifacts["sampled"] and sample.artifacts["n_cells"] == 20 + 9  # + every validation cell
    ids, _ = index_embeddings(sample)
    roles = dict(Cell.objects.filter(pk__in=ids.tolist()).values_list("pk", "role"))
    assert sorted(roles.values()).count(Cell.Role.VALIDATION) == 9
    first = QueryBatch.objects.get(project=loop_project)
    assert first.index == sample and cells_of(first) <= set(ids.tolist())

    # Every cell is indexed next with the same encoder, and the next batch comes from that index.
    full_job = Job.objects.get(project=loop_project, kind=Job.Kind.EMBED, params__parent_job=embed.pk)
    assert full_job.status == Job.Status.QUEUED and "pool_sample" not in full_job.params
    assert kinds_of(run_loop_jobs()) == [Job.Kind.EMBED, Job.Kind.QUERY]
    full = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.INDEX, version=2)
    assert not full.artifacts["sampled"] and full.artifacts["n_cells"] == 72 and full.parent == sample.parent
    second = QueryBatch.objects.get(project=loop_project, number=2)
    assert second.index == full and not cells_of(second) & cells_of(first)
    assert not Job.objects.filter(project=loop_project, kind=Job.Kind.EMBED, params__parent_job=full_job.pk)


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


class Attempts:
    """Stands in for ``learning``'s ``pretrain`` in the handler: records each call; the first attempt trains
    one epoch and then its worker "dies" (the checkpoint of that epoch is on disk)."""

    def __init__(self) -> None:
        self.real = encoders.pretrain
        self.calls: list[dict[str, Any]] = []

    def __call__(self, records: Any, config: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append({"config": config, **kwargs})
        if len(self.calls) == 1:
            # Exactly one epoch, however busy the machine: with the job's time cap it stopped at half an
            # epoch while other processes held both cores.
            self.real(records, replace(config, epochs=1.0, minutes=None), **kwargs)
            raise RuntimeError("worker died")
        return self.real(records, config, **kwargs)


def start_pretrain_job(project: Project, minutes: float) -> Job:
    job = job_create(kind=Job.Kind.PRETRAIN, project=project, params={"minutes": minutes})
    assert job_claim(job_id=job.pk)
    job.refresh_from_db()
    return job


def test_a_retried_pretrain_resumes_from_its_own_checkpoint(
    loop_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = Attempts()
    monkeypatch.setattr(encoders, "pretrain", attempts)
    job = start_pretrain_job(loop_project, minutes=0.3)
    with pytest.raises(RuntimeError, match="worker died"):
        JOB_HANDLERS[Job.Kind.PRETRAIN](job, lambda f, m: None)
    checkpoint = Path(job_dir(job)) / ENCODER_FILE
    before = load_checkpoint(checkpoint)["meta"]
    assert before["epochs_done"] == 1.0 and attempts.calls[0]["resume"] is None

    JOB_HANDLERS[Job.Kind.PRETRAIN](job, lambda f, m: None)  # the job is delivered again
    retry = attempts.calls[1]
    assert retry["resume"] == checkpoint and retry["out"] == checkpoint
    assert retry["config"].minutes == pytest.approx(0.3 - before["seconds"] / 60)  # what is left
    after = load_checkpoint(checkpoint)["meta"]
    assert after["steps_done"] > before["steps_done"]  # it went on from the first epoch
    assert after["history"][0] == before["history"][0]
    encoder = ModelVersion.objects.get(job=job, kind=ModelVersion.Kind.ENCODER)
    assert encoder.metrics["resumed_after_seconds"] == pytest.approx(before["seconds"], abs=0.01)
    assert encoder.metrics["epochs_done"] == pytest.approx(after["epochs_done"])
    assert encoder.artifact_path("checkpoint") == checkpoint


def test_a_retried_pretrain_whose_budget_was_spent_trains_no_more(
    loop_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = Attempts()
    monkeypatch.setattr(encoders, "pretrain", attempts)
    job = start_pretrain_job(loop_project, minutes=0.001)  # less than one epoch takes
    with pytest.raises(RuntimeError):
        JOB_HANDLERS[Job.Kind.PRETRAIN](job, lambda f, m: None)
    before = load_checkpoint(Path(job_dir(job)) / ENCODER_FILE)["meta"]
    JOB_HANDLERS[Job.Kind.PRETRAIN](job, lambda f, m: None)
    assert len(attempts.calls) == 1  # nothing left to train: the checkpoint is the encoder
    encoder = ModelVersion.objects.get(job=job, kind=ModelVersion.Kind.ENCODER)
    assert encoder.metrics["epochs_done"] == before["epochs_done"]
    assert encoder.metrics["resumed_after_seconds"] == pytest.approx(before["seconds"], abs=0.01)


def test_a_checkpoint_from_other_settings_is_not_resumed(
    loop_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = Attempts()
    monkeypatch.setattr(encoders, "pretrain", attempts)
    job = start_pretrain_job(loop_project, minutes=0.05)
    with pytest.raises(RuntimeError):
        JOB_HANDLERS[Job.Kind.PRETRAIN](job, lambda f, m: None)
    Project.objects.filter(pk=loop_project.pk).update(image_size=24)  # a lead changed the settings
    job.project.refresh_from_db()  # type: ignore[union-attr]
    JOB_HANDLERS[Job.Kind.PRETRAIN](job, lambda f, m: None)
    assert attempts.calls[1]["resume"] is None and attempts.calls[1]["config"].minutes == 0.05
    encoder = ModelVersion.objects.get(job=job, kind=ModelVersion.Kind.ENCODER)
    assert "resumed_after_seconds" not in encoder.metrics
    assert np.isclose(load_checkpoint(encoder.artifact_path("checkpoint"))["meta"]["image_size"], 24)
