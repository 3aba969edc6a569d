"""Cost- and risk-aware acquisition in the loop on real cells: each class's seconds come from what the
labelling page recorded, a lead's class weights are checked against the taxonomy, and a project with the
strategy gets its batches from it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Cell, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from loop.handlers.querying import TimedSeconds, class_seconds, strategy_options
from loop.models import QueryBatch
from tests.conftest import client_for, label_and_submit, run_queued_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]


def timed_labels(project: Project, annotator: User, seconds_by_class: dict[str, list[float]]) -> None:
    for name, times in seconds_by_class.items():
        cells = Cell.objects.filter(project=project, role=Cell.Role.POOL, reference_label__name=name)[
            : len(times)
        ]
        assert len(cells) == len(times)
        for cell, seconds in zip(cells, times, strict=True):
            annotation_create(
                cell=cell, annotator=annotator, label=cell.reference_label, seconds_spent=seconds
            )


def test_class_seconds_are_the_medians_the_page_recorded(loop_project: Project, annotator: User) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    assert class_seconds(loop_project, ["blast", "neutrophil"]) is None  # nothing timed yet
    timed_labels(
        loop_project,
        annotator,
        {
            "blast": [10.0, 12.0, 14.0, 9.0, 11.0, 30.0, 13.0],
            "neutrophil": [2.0, 3.0, 4.0],
            "platelet": [1.0],
        },
    )
    # blast: 7 timed, median 12; neutrophil: only 3 (< 5), so the median over all 11 labels.
    every = [10.0, 12.0, 14.0, 9.0, 11.0, 30.0, 13.0, 2.0, 3.0, 4.0, 1.0]
    seconds = class_seconds(loop_project, ["blast", "neutrophil", "monocyte"])
    assert seconds is not None
    assert seconds.tolist() == pytest.approx([12.0, float(np.median(every)), float(np.median(every))])
    # A withdrawn (undone) label's time does not count.
    Annotation.objects.filter(seconds_spent=30.0).update(withdrawn_at="2026-01-01T00:00:00Z")
    assert class_seconds(loop_project, ["blast"]).tolist() == pytest.approx([11.5])  # type: ignore[union-attr]

    assert strategy_options(loop_project, ["blast"]) == {}  # another strategy: no options
    loop_project.query_strategy = "cost_aware"
    loop_project.class_weights = {"blast": 3}
    options = strategy_options(loop_project, ["blast", "monocyte"])
    assert options["class_weights"].tolist() == [3.0, 1.0]


def test_each_annotators_seconds_are_their_own_only_on_classes_all_of_them_were_timed_on(
    loop_project: Project, annotator: User
) -> None:
    """Split work deals by each annotator's seconds per class: their own medians on a class every one of
    them labelled 5 times; on any other class the class's median over everyone, the same for all."""
    other = User.objects.create_user("other", password="pw-other-123")
    for user in (annotator, other):
        membership_set(project=loop_project, user=user, role=Membership.Role.ANNOTATOR)
    columns = ["blast", "neutrophil", "monocyte"]
    assert TimedSeconds.of(loop_project).per_annotator(columns, [annotator.pk]) is None  # nothing timed
    timed_labels(loop_project, annotator, {"blast": [10.0, 12.0, 14.0, 9.0, 11.0], "neutrophil": [2.0] * 5})
    timed_labels(loop_project, other, {"neutrophil": [8.0] * 6, "blast": [20.0] * 4})
    team = class_seconds(loop_project, columns)
    every = [10.0, 12.0, 14.0, 9.0, 11.0, *[2.0] * 5, *[8.0] * 6, *[20.0] * 4]
    assert team is not None
    assert team.tolist() == pytest.approx([14.0, 8.0, float(np.median(every))])  # neutrophil: 2 x5, 8 x6
    seconds = TimedSeconds.of(loop_project).per_annotator(columns, [annotator.pk, other.pk])
    assert seconds is not None
    # neutrophil: both timed 5+ times, their own; blast: the other only 4 times, the team's for both.
    assert seconds[:, 1].tolist() == [2.0, 8.0]
    assert seconds[:, 0].tolist() == pytest.approx([14.0, 14.0])
    assert seconds[:, 2].tolist() == pytest.approx([team[2], team[2]])


def test_leads_set_class_weights_for_classes_that_exist(loop_project: Project, lead: User) -> None:
    def patch(body: dict[str, Any]) -> Any:
        return client_for(lead).patch(
            f"/api/projects/{loop_project.pk}/", json.dumps(body), content_type="application/json"
        )

    assert patch({"class_weights": {"blasst": 3}}).status_code == 400
    assert patch({"class_weights": {"blast": -1}}).status_code == 400
    assert patch({"class_weights": ["blast"]}).status_code == 400
    loop_project.refresh_from_db()
    assert loop_project.class_weights == {}
    ok = patch({"class_weights": {"blast": 3}, "query_strategy": "cost_aware"})
    assert ok.status_code == 200, ok.content
    loop_project.refresh_from_db()
    assert (loop_project.class_weights, loop_project.query_strategy) == ({"blast": 3}, "cost_aware")


def test_a_cost_aware_project_gets_its_batches_from_the_strategy(
    loop_project: Project, lead: User, annotator: User
) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    Project.objects.filter(pk=loop_project.pk).update(query_strategy="cost_aware", class_weights={"blast": 3})
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    first = QueryBatch.objects.get(project=loop_project, number=1)
    assert first.strategy != "cost_aware"  # no model yet: the cold start
    label_and_submit(first, annotator)
    second = QueryBatch.objects.get(project=loop_project, number=2)
    assert (second.requested_strategy, second.strategy) == ("cost_aware", "cost_aware")
    assert second.items.count() == 12
    labelled = set(first.items.values_list("cell_id", flat=True))
    assert not labelled & set(second.items.values_list("cell_id", flat=True))
