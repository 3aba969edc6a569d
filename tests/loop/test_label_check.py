"""Label-mistake finding in the loop, on real cells: after a retrain with enough labels a side-queue job
ranks the current labels and sends the likely mistakes to the reviewer queue with the reason; a
reviewer's decision settles a flag, a changed label drops it, a new run replaces the open flags and
leaves reviewed cells alone; with few labels no check runs."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Cell, Membership, Project, SuspectedLabel
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.routing import SIDE_QUEUE, queue_for_kind
from loop.handlers.label_check import MAX_SUSPECTS, MIN_LABELLED
from loop.services.requests import retrain_request
from tests.conftest import client_for, run_queued_jobs
from tests.dashboard import run_loop

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.usefixtures("own_artifacts"),
]

FLIPPED = 4


def label_every_pool_cell(project: Project, annotator: User) -> list[int]:
    """Label each unlabelled pool cell with its reference label, except ``FLIPPED`` of them given the
    next class in the list; returns the flipped cells."""
    classes = list(project.classes.order_by("order"))
    flipped: list[int] = []
    pool = Cell.objects.filter(project=project, role=Cell.Role.POOL, annotations__isnull=True).order_by("pk")
    for cell in pool.select_related("reference_label"):
        label = cell.reference_label
        assert label is not None
        if len(flipped) < FLIPPED and cell.pk % 7 == 0:
            label = classes[(classes.index(label) + 1) % len(classes)]
            flipped.append(cell.pk)
        annotation_create(cell=cell, annotator=annotator, label=label)
    return flipped


def review_entries(user: User, project: Project) -> list[dict[str, Any]]:
    response = client_for(user).get(f"/api/projects/{project.pk}/review/")
    assert response.status_code == 200, response.content
    return [e for e in response.json()["queue"] if e["reason"] == "suspected_mistake"]


def test_no_check_runs_with_few_labels(loop_project: Project, annotator: User) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1)  # 12 labels
    assert not Job.objects.filter(kind=Job.Kind.LABEL_CHECK).exists()
    assert queue_for_kind(Job.Kind.LABEL_CHECK) == SIDE_QUEUE


def test_likely_mistakes_reach_the_review_queue_and_a_decision_settles_them(
    loop_project: Project, annotator: User, lead: User
) -> None:
    reviewer = User.objects.create_user("rev", password="pw-rev-123")
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    membership_set(project=loop_project, user=reviewer, role=Membership.Role.REVIEWER)
    run_loop(loop_project, annotator, batches=1)
    label_every_pool_cell(loop_project, annotator)
    retrain_request(project=loop_project, reason="all labelled")
    run_queued_jobs()

    check = Job.objects.get(project=loop_project, kind=Job.Kind.LABEL_CHECK)
    assert check.status == Job.Status.SUCCEEDED, check.error
    pool_labelled = Cell.objects.filter(project=loop_project, role=Cell.Role.POOL).count()
    assert check.result["checked"] == pool_labelled >= MIN_LABELLED
    flags = list(SuspectedLabel.objects.filter(cell__project=loop_project).select_related("annotation"))
    assert 0 < len(flags) == check.result["flagged"] <= min(MAX_SUSPECTS, check.result["flagged_by_filter"])
    assert [f.rank for f in sorted(flags, key=lambda f: f.rank)] == list(range(1, len(flags) + 1))
    for flag in flags:
        # The doubted label is the cell's current one, and the suggestion is another class.
        assert flag.annotation.superseded_by_id is None and flag.annotation.label_id == flag.label_id
        assert flag.suggested_id != flag.label_id
        assert 0.0 <= flag.quality <= flag.suggested_confidence <= 1.0

    # The reviewer queue shows them, most likely first, with the reason and the suggestion.
    entries = review_entries(reviewer, loop_project)
    by_rank = sorted(flags, key=lambda f: f.rank)
    assert [e["cell"] for e in entries] == [f.cell_id for f in by_rank]
    first = entries[0]
    assert first["suspect"]["label"] == by_rank[0].label.name
    assert first["suspect"]["rank"] == 1 and first["suggestion"]["label"] == by_rank[0].suggested.name
    html = client_for(reviewer).get(f"/projects/{loop_project.pk}/review/").content.decode()
    assert "suspected mistake" in html and "did not see this label" in html
    # The labelling page's poll counts them beside the cells waiting for a decision.
    state = client_for(annotator).get(f"/api/projects/{loop_project.pk}/loop/").json()
    assert state["suspected_count"] == len(flags)
    # Annotators do not see the review queue.
    assert client_for(annotator).get(f"/api/projects/{loop_project.pk}/review/").status_code == 403

    # The reviewer keeps the first label as it is: the flag is settled, the cell leaves the queue.
    decided = by_rank[0]
    response = client_for(reviewer).post(
        f"/projects/{loop_project.pk}/review/", {"cell": decided.cell_id, "label": decided.label.name}
    )
    assert response.status_code == 302
    decided.refresh_from_db()
    assert decided.resolved_at is not None
    state = client_for(annotator).get(f"/api/projects/{loop_project.pk}/loop/").json()
    assert state["suspected_count"] == len(flags) - 1
    assert decided.cell_id not in [e["cell"] for e in review_entries(reviewer, loop_project)]
    if len(by_rank) > 1:
        # The annotator changes the second label: the flag doubted a label that is gone.
        changed = by_rank[1]
        annotation_create(cell=changed.cell, annotator=annotator, label=changed.suggested)
        assert changed.cell_id not in [e["cell"] for e in review_entries(reviewer, loop_project)]

    # A new run replaces the open flags (no duplicates) and leaves the reviewed cell alone.
    again = Job.objects.create(project=loop_project, kind=Job.Kind.LABEL_CHECK)
    run_queued_jobs()
    again.refresh_from_db()
    assert again.status == Job.Status.SUCCEEDED, again.error
    assert again.result["checked"] == pool_labelled - 1  # the reviewed cell is not ranked
    open_flags = SuspectedLabel.objects.filter(cell__project=loop_project, resolved_at__isnull=True)
    assert open_flags.count() == again.result["flagged"]
    assert len(set(open_flags.values_list("cell_id", flat=True))) == open_flags.count()
    assert not open_flags.filter(cell_id=decided.cell_id).exists()
    assert SuspectedLabel.objects.filter(pk=decided.pk, resolved_at__isnull=False).exists()
    assert Annotation.objects.filter(cell_id=decided.cell_id, origin=Annotation.Origin.REVIEW).count() == 1
