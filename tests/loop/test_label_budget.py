"""The label budget (``Project.label_budget``) is a stopping point the loop keeps, not only a figure on the
dashboard: the last batch is cut to it, no batch is built past it, the model it buys is fine-tuned on all
of it, and raising it lets the loop go on. Real cells, a tiny encoder (``loop_project``)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from jobs.models import Job
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.selectors import label_budget
from loop.services.batches import batch_submit, finetune_scheduled, query_item_skip
from loop.services.requests import own_batch_request
from tests.conftest import client_for, run_queued_jobs
from tests.loop.test_pipeline import label_batch, start_loop

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]


def test_the_schedule_does_not_count_the_cold_start_batch() -> None:
    # Batches of 48 with every 8: fine-tunes at 432 and 816 labels, what bench/README.md measured.
    assert [n for n in range(1, 26) if finetune_scheduled(n, 8)] == [9, 17, 25]
    assert [n for n in range(1, 5) if finetune_scheduled(n, 1)] == [2, 3, 4]


def queued_queries(project: Project) -> int:
    return Job.objects.filter(project=project, kind=Job.Kind.QUERY, status=Job.Status.QUEUED).count()


def submit_and_run(batch: QueryBatch, annotator: User) -> None:
    batch_submit(batch=batch, user=annotator)
    # Any fine-tune the submit asked for runs briefly: these tests are about when it is asked for.
    Job.objects.filter(kind=Job.Kind.FINETUNE, status=Job.Status.QUEUED).update(
        params={"minutes": 0.02, "epochs": 1}
    )
    run_queued_jobs()


def test_the_last_batch_is_cut_to_the_budget_and_the_loop_stops_there(
    loop_project: Project, annotator: User, lead: User
) -> None:
    # 30 labels in batches of 12: 12 + 12 + 6. Fine-tunes every 8 batches would never come.
    Project.objects.filter(pk=loop_project.pk).update(label_budget=30, finetune_every=8)
    loop_project.refresh_from_db()
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    start_loop(loop_project)
    first = QueryBatch.objects.get(project=loop_project, number=1)
    assert label_budget(loop_project).waiting == 12 and label_budget(loop_project).left == 18

    label_batch(first, annotator)
    submit_and_run(first, annotator)
    second = QueryBatch.objects.get(project=loop_project, number=2)
    assert second.items.count() == 12
    assert not Job.objects.filter(project=loop_project, kind=Job.Kind.FINETUNE).exists()

    label_batch(second, annotator)
    submit_and_run(second, annotator)
    third = QueryBatch.objects.get(project=loop_project, number=3)
    assert third.items.count() == 6  # cut from 12 to what the budget has left
    budget = label_budget(loop_project)
    assert (budget.spent, budget.waiting, budget.left, budget.reached) == (24, 6, 0, False)

    label_batch(third, annotator)
    submit_and_run(third, annotator)
    # The budget is reached: no fourth batch, the retrain says why, and one fine-tune sees all 30 labels.
    assert not QueryBatch.objects.filter(project=loop_project, number=4).exists()
    retrain = Job.objects.filter(project=loop_project, kind=Job.Kind.RETRAIN).order_by("-pk").first()
    assert retrain is not None and retrain.status == Job.Status.SUCCEEDED, retrain and retrain.error
    assert "label budget (30) is spent" in retrain.message
    finetunes = list(Job.objects.filter(project=loop_project, kind=Job.Kind.FINETUNE))
    assert len(finetunes) == 1 and finetunes[0].status == Job.Status.SUCCEEDED, finetunes[0].error
    tuned = ModelVersion.objects.get(job=finetunes[0], kind=ModelVersion.Kind.ENCODER)
    assert tuned.label_count == 30
    # The page says so, and asking for a batch builds none while the budget is spent.
    annotator_client = client_for(annotator)
    state = annotator_client.get(f"/api/projects/{loop_project.pk}/loop/").json()
    assert state["labels"] == {"count": 30, "budget": 30, "left": 0}
    assert annotator_client.get(f"/api/projects/{loop_project.pk}/batches/current/").status_code == 200
    assert queued_queries(loop_project) == 0

    # A lead raises the budget; the annotator's page asks for the next batch and gets the 6 more.
    response = client_for(lead).patch(
        f"/api/projects/{loop_project.pk}/", {"label_budget": 36}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert annotator_client.get(f"/api/projects/{loop_project.pk}/batches/current/").status_code == 200
    assert queued_queries(loop_project) == 1
    annotator_client.get(f"/api/projects/{loop_project.pk}/batches/current/")  # a second poll asks nothing
    assert queued_queries(loop_project) == 1
    run_queued_jobs()
    fourth = QueryBatch.objects.get(project=loop_project, number=4)
    loop_project.refresh_from_db()
    assert fourth.items.count() == 6 and label_budget(loop_project).left == 0


def test_skipped_cells_and_second_looks_do_not_spend_the_budget(
    loop_project: Project, annotator: User, lead: User
) -> None:
    Project.objects.filter(pk=loop_project.pk).update(label_budget=100)
    loop_project.refresh_from_db()
    start_loop(loop_project)
    batch = QueryBatch.objects.get(project=loop_project, number=1)
    items = list(batch.items.select_related("cell__reference_label").order_by("rank"))
    query_item_skip(item=items[0], user=annotator)  # left the batch: nobody will label it
    label_batch(batch, annotator, n=4)  # items[0] labelled anyway: it counts as spent, once
    # A second annotator's label of a cell already labelled spends nothing more.
    annotation_create(cell=items[1].cell, annotator=lead, label=items[1].cell.reference_label)
    # An agreement cell in the open batch is a second look, not a new cell.
    QueryItem.objects.filter(pk=items[5].pk).update(purpose=QueryItem.Purpose.OVERLAP)
    budget = label_budget(loop_project)
    # 4 labelled; 12 - 4 labelled - 1 agreement = 7 waiting (the skipped cell was labelled, so not waiting).
    assert (budget.spent, budget.waiting, budget.left) == (4, 7, 89)
    assert Annotation.objects.filter(cell=items[1].cell).count() == 2


def test_a_shared_batch_is_not_asked_for_again_after_a_failed_loop_job(
    loop_project: Project, annotator: User
) -> None:
    start_loop(loop_project)
    first = QueryBatch.objects.get(project=loop_project, number=1)
    label_batch(first, annotator)
    batch_submit(batch=first, user=annotator)
    retrain = Job.objects.get(project=loop_project, kind=Job.Kind.RETRAIN)
    Job.objects.filter(pk=retrain.pk).update(status=Job.Status.FAILED)
    # No open batch and budget left, but the last loop job failed: the page shows that, it does not retry.
    assert own_batch_request(project=loop_project, user=annotator) is None
    Job.objects.filter(pk=retrain.pk).update(status=Job.Status.SUCCEEDED)
    assert own_batch_request(project=loop_project, user=annotator) is not None
