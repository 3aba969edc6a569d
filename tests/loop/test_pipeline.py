"""The loop's jobs run in order on real cells: pretrain -> embed + index -> cold-start batch -> labels ->
retrain + next batch, with versions, validation metrics and provenance recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.models import Cell, Project
from annotation.services.annotations import annotation_create
from jobs.models import Job
from jobs.services import job_claim, job_create, job_release_waiting, job_succeed
from loop.handlers.artifacts import index_embeddings
from loop.handlers.encoders import load_backbone
from loop.models import ARTIFACT_PATH_KEYS, ModelVersion, QueryBatch, QueryItem
from loop.services.batches import batch_submit, query_item_skip
from loop.services.requests import finetune_request, retrain_request
from tests.conftest import run_queued_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def start_loop(project: Project) -> None:
    job_create(kind=Job.Kind.PRETRAIN, project=project)
    run_queued_jobs()


def label_batch(batch: QueryBatch, annotator: User, *, n: int | None = None) -> int:
    """Label the batch's cells with their hidden reference labels, as a perfect annotator would."""
    items = list(batch.items.select_related("cell__reference_label"))[:n]
    for item in items:
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    return len(items)


def past_the_cold_start(project: Project, annotator: User) -> QueryBatch:
    """Label and submit the first batch (picked before any model: the fine-tune schedule does not count
    it), run the retrain it asks for, and return the second batch, the first the model chose."""
    first = QueryBatch.objects.get(project=project, number=1)
    label_batch(first, annotator)
    batch_submit(batch=first, user=annotator)
    assert not Job.objects.filter(project=project, kind=Job.Kind.FINETUNE).exists()
    run_queued_jobs()
    return QueryBatch.objects.get(project=project, number=2)


def test_pretrain_then_index_then_cold_start_batch(loop_project: Project) -> None:
    start_loop(loop_project)
    jobs = {j.kind: j for j in Job.objects.filter(project=loop_project)}
    assert {k: j.status for k, j in jobs.items()} == {
        Job.Kind.PRETRAIN: Job.Status.SUCCEEDED,
        Job.Kind.EMBED: Job.Status.SUCCEEDED,
        Job.Kind.QUERY: Job.Status.SUCCEEDED,
        Job.Kind.MAP: Job.Status.SUCCEEDED,  # the dashboard's map of the new index, drawn after the batch
    }, {k: j.error for k, j in jobs.items()}
    encoder = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.ENCODER)
    index = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.INDEX)
    assert index.parent == encoder and encoder.metrics["epochs_done"] > 0
    ids, emb = index_embeddings(index)
    assert len(ids) == Cell.objects.filter(project=loop_project).count() == 72
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    batch = QueryBatch.objects.get(project=loop_project)
    assert batch.number == 1 and batch.classifier is None and batch.index == index
    assert batch.requested_strategy == "hybrid" and batch.strategy == "typiclust"  # cold start
    cells = Cell.objects.filter(query_items__batch=batch)
    assert cells.count() == 12 and set(cells.values_list("role", flat=True)) == {Cell.Role.POOL}


def test_a_submitted_batch_retrains_and_the_next_batch_comes_from_the_new_model(
    loop_project: Project, annotator: User
) -> None:
    start_loop(loop_project)
    first = QueryBatch.objects.get(project=loop_project)
    label_batch(first, annotator)
    batch_submit(batch=first, user=annotator)
    run_queued_jobs()
    retrain = Job.objects.get(project=loop_project, kind=Job.Kind.RETRAIN)
    assert retrain.status == Job.Status.SUCCEEDED, retrain.error
    classifier = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    assert classifier.label_count == 12 and len(classifier.trained_on) == 12
    # Metrics come from the 9 validation cells (their hidden reference labels), never from training cells.
    assert classifier.metrics["n"] == 9 and 0.0 <= classifier.metrics["macro_f1"] <= 1.0
    second = QueryBatch.objects.get(project=loop_project, number=2)
    assert second.classifier == classifier and second.strategy == "hybrid"
    labelled = set(first.items.values_list("cell_id", flat=True))
    items = list(second.items.all())
    assert len(items) == 12 and not labelled & {i.cell_id for i in items}
    assert all(i.suggestion is not None and 0.0 < (i.confidence or 0) <= 1.0 for i in items)
    assert all(i.score is not None for i in items)
    assert set(retrain.result["seconds"]) >= {"load", "fit", "score", "select", "write"}
    # Every file a version names is recorded relative to the artefacts folder (a restore elsewhere works).
    recorded = [
        (version, key)
        for version in ModelVersion.objects.filter(project=loop_project)
        for key in ARTIFACT_PATH_KEYS
        if key in version.artifacts
    ]
    assert {key for _, key in recorded} == {"checkpoint", "embeddings", "index", "classifier"}
    for version, key in recorded:
        assert not Path(version.artifacts[key]).is_absolute(), (version, key)
        assert version.artifact_path(key).exists()


def test_labels_during_a_retrain_trigger_exactly_one_more(loop_project: Project, annotator: User) -> None:
    start_loop(loop_project)
    batch = QueryBatch.objects.get(project=loop_project)
    label_batch(batch, annotator, n=1)  # an untouched batch cannot be submitted
    first = batch_submit(batch=batch, user=annotator)
    assert retrain_request(project=loop_project) == first  # queued: joins it
    attempt = job_claim(job_id=first.pk)  # now running
    assert attempt == 1
    waiting = retrain_request(project=loop_project)
    assert waiting != first and waiting.status == Job.Status.WAITING
    assert retrain_request(project=loop_project) == waiting
    assert retrain_request(project=loop_project) == waiting
    assert job_succeed(job_id=first.pk, attempt=attempt, result={})
    job_release_waiting(project_id=loop_project.pk, kind=Job.Kind.RETRAIN)
    waiting.refresh_from_db()
    assert waiting.status == Job.Status.QUEUED
    assert Job.objects.filter(project=loop_project, kind=Job.Kind.RETRAIN).count() == 2


def test_a_retried_retrain_writes_one_model_version_and_one_batch(
    loop_project: Project, annotator: User
) -> None:
    from jobs.registry import JOB_HANDLERS

    start_loop(loop_project)
    label_batch(QueryBatch.objects.get(project=loop_project), annotator)
    job = retrain_request(project=loop_project)
    assert job_claim(job_id=job.pk)
    job.refresh_from_db()
    first = JOB_HANDLERS[Job.Kind.RETRAIN](job, lambda f, m: None)
    # The worker died before marking the job done: the redelivered job runs the handler again.
    second = JOB_HANDLERS[Job.Kind.RETRAIN](job, lambda f, m: None)
    assert first["batch_id"] == second["batch_id"]
    assert ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER).count() == 1
    assert QueryBatch.objects.filter(project=loop_project).count() == 2


def test_skipped_and_unsure_cells_are_not_queried_again(loop_project: Project, annotator: User) -> None:
    start_loop(loop_project)
    batch = QueryBatch.objects.get(project=loop_project)
    items = list(batch.items.select_related("cell__reference_label"))
    query_item_skip(item=items[0], user=annotator)
    annotation_create(cell=items[1].cell, annotator=annotator, label=None, unsure=True)
    for item in items[2:]:
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    batch_submit(batch=batch, user=annotator)
    run_queued_jobs()
    classifier = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    assert classifier.label_count == 10  # the unsure cell waits for a reviewer
    new_cells = set(QueryItem.objects.filter(batch__number=2).values_list("cell_id", flat=True))
    assert items[0].cell_id not in new_cells and items[1].cell_id not in new_cells


def test_a_new_encoder_reindexes_and_retrains_on_the_existing_labels(
    loop_project: Project, annotator: User
) -> None:
    start_loop(loop_project)
    label_batch(QueryBatch.objects.get(project=loop_project), annotator)
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project, params={"minutes": 0})
    run_queued_jobs()
    kinds: dict[str, Any] = {
        kind: ModelVersion.objects.filter(project=loop_project, kind=kind).count()
        for kind in ModelVersion.Kind.values
    }
    assert kinds == {"encoder": 2, "index": 2, "classifier": 1, "attribute_heads": 0}
    latest = QueryBatch.objects.filter(project=loop_project).first()
    assert latest is not None and latest.index is not None and latest.index.version == 2
    assert latest.classifier is not None and latest.classifier.parent == latest.index


def test_fine_tuning_makes_a_new_encoder_then_index_then_classifier(
    loop_project: Project, annotator: User
) -> None:
    # The loop starts at 32 px; the fine-tuned encoder sees 48 px cells (Project.finetune_image_size).
    Project.objects.filter(pk=loop_project.pk).update(finetune_every=1, finetune_image_size=48)
    start_loop(loop_project)
    batch = past_the_cold_start(loop_project, annotator)
    label_batch(batch, annotator)
    batch_submit(batch=batch, user=annotator)  # the first batch the model chose: every 1
    finetune = Job.objects.get(project=loop_project, kind=Job.Kind.FINETUNE)
    Job.objects.filter(pk=finetune.pk).update(params={"minutes": 0.05, "epochs": 2})
    run_queued_jobs()
    finetune.refresh_from_db()
    assert finetune.status == Job.Status.SUCCEEDED, finetune.error
    encoders = list(ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.ENCODER))
    assert [e.version for e in encoders] == [2, 1]
    tuned = encoders[0]
    assert tuned.artifacts["method"] == "finetune" and tuned.parent == encoders[1] and tuned.label_count == 24
    assert (encoders[1].artifacts["image_size"], tuned.artifacts["image_size"]) == (32, 48)
    assert load_backbone(tuned)[1] == 48  # what embedding, saliency and exports read
    index = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.INDEX).first()
    assert index is not None and index.version == 2 and index.parent == tuned
    latest = QueryBatch.objects.filter(project=loop_project).first()
    assert latest is not None and latest.classifier is not None and latest.classifier.parent == index
    # The fine-tuned embedding space differs from the pretrained one.
    old_ids, old = index_embeddings(ModelVersion.objects.get(project=loop_project, kind="index", version=1))
    new_ids, new = index_embeddings(index)
    assert (old_ids == new_ids).all() and not np.allclose(old, new, atol=1e-3)
    # A fine-tune its time cap cut short says so where the page shows it; one that ran its epochs does not.
    assert "time cap" not in finetune.message
    capped = finetune_request(project=loop_project, minutes=0.002, epochs=500)
    run_queued_jobs()
    capped.refresh_from_db()
    assert capped.status == Job.Status.SUCCEEDED, capped.error
    assert "stopped by its time cap after" in capped.message and "epochs" in capped.message


def test_fine_tuning_uses_unlabelled_pool_cells_and_the_labelled_cells_attributes(
    loop_project: Project, annotator: User
) -> None:
    Project.objects.filter(pk=loop_project.pk).update(finetune_every=1)
    start_loop(loop_project)
    batch = past_the_cold_start(loop_project, annotator)
    items = list(batch.items.select_related("cell__reference_label"))
    with_attributes = 0
    for item in items:  # a perfect annotator who also fills in the attributes where the source has them
        attributes = item.cell.reference_attributes or {}
        with_attributes += bool(attributes)
        annotation_create(
            cell=item.cell, annotator=annotator, label=item.cell.reference_label, attributes=attributes
        )
    assert 0 < with_attributes < len(items)  # some labelled cells come with attributes, some without
    batch_submit(batch=batch, user=annotator)
    finetune = Job.objects.get(project=loop_project, kind=Job.Kind.FINETUNE)
    Job.objects.filter(pk=finetune.pk).update(
        params={"minutes": 0.05, "epochs": 2, "semi": True, "unlabelled_factor": 2, "threshold": 0.0}
    )
    run_queued_jobs()
    finetune.refresh_from_db()
    assert finetune.status == Job.Status.SUCCEEDED, finetune.error
    tuned = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.ENCODER).first()
    assert tuned is not None and tuned.artifacts["method"] == "finetune"
    unannotated = Cell.objects.filter(project=loop_project, role=Cell.Role.POOL, annotations__isnull=True)
    assert 0 < unannotated.count() < 48
    # 2 x 24 labelled cells asked of the unannotated pool, which holds fewer: all of them are drawn.
    # With threshold 0 every pseudo-label counts.
    assert tuned.metrics["unlabelled_cells"] == unannotated.count()
    assert tuned.metrics["pseudo_label_rate"] == 1.0
    assert tuned.metrics["semi"]["threshold"] == 0.0
    assert tuned.metrics["attribute_cells"] == with_attributes
    index = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.INDEX).first()
    assert index is not None and index.parent == tuned  # the loop continues on the new encoder


def test_fine_tuning_by_default_uses_the_labelled_cells_only(loop_project: Project, annotator: User) -> None:
    Project.objects.filter(pk=loop_project.pk).update(finetune_every=1)
    start_loop(loop_project)
    batch = past_the_cold_start(loop_project, annotator)
    label_batch(batch, annotator)
    batch_submit(batch=batch, user=annotator)
    finetune = Job.objects.get(project=loop_project, kind=Job.Kind.FINETUNE)
    # Supervised: the default; here with the augmentation meant for other labs' cells.
    Job.objects.filter(pk=finetune.pk).update(params={"minutes": 0.05, "epochs": 2, "augment": "travel"})
    run_queued_jobs()
    finetune.refresh_from_db()
    assert finetune.status == Job.Status.SUCCEEDED, finetune.error
    tuned = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.ENCODER).first()
    assert tuned is not None and tuned.artifacts["method"] == "finetune"
    assert tuned.metrics["unlabelled_cells"] == 0 and tuned.metrics["pseudo_label_rate"] is None
    assert tuned.metrics["semi"] is None and tuned.metrics["attribute_cells"] == 0  # no attributes given
    assert tuned.metrics["augment"] == "travel"
