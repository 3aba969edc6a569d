"""Split work on a real loop with three simulated annotators: each gets a batch of their own, disjoint from
the others' except the configured agreement sample; gold cells are hidden among the rest; no label is lost
or counted twice; and the dashboard's agreement and gold accuracy match a count by hand."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Cell, LabelClass, Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.review import review_decide
from dashboard.data import annotators
from jobs.models import Job
from jobs.services import job_create
from loop.handlers.training_set import open_batch_cells
from loop.models import QueryBatch, QueryItem
from tests.conftest import client_for, run_queued_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]

PEOPLE = ("ana", "ben", "cai")
GOLD_CELLS = 6


@pytest.fixture
def team(loop_project: Project, lead: User) -> dict[str, User]:
    """Three annotators on the loop project with split work, 3 agreement and 2 gold cells per batch of
    12, and six pool cells a reviewer (the lead) decided: the gold set."""
    people = {name: User.objects.create_user(name, password=f"pw-{name}-123") for name in PEOPLE}
    for user in people.values():
        membership_set(project=loop_project, user=user, role=Membership.Role.ANNOTATOR)
    Project.objects.filter(pk=loop_project.pk).update(
        split_work=True, overlap_fraction=0.25, gold_fraction=0.17
    )
    loop_project.refresh_from_db()
    for cell in Cell.objects.filter(project=loop_project, role=Cell.Role.POOL).order_by("pk")[:GOLD_CELLS]:
        assert cell.reference_label is not None
        review_decide(cell=cell, reviewer=lead, label=cell.reference_label)
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    return people


def open_batch(project: Project, user: User) -> QueryBatch:
    return QueryBatch.objects.get(project=project, assignee=user, submitted_at__isnull=True)


def purposes(batch: QueryBatch) -> dict[int, str]:
    return dict(batch.items.values_list("cell_id", "purpose"))


def own_batch(client: Client, project: Project) -> dict[str, Any]:
    response = client.get(f"/api/projects/{project.pk}/batches/current/")
    assert response.status_code == 200
    batch: dict[str, Any] = response.json()["batch"]
    return batch


def wrong_class(project: Project, cell: Cell) -> LabelClass:
    assert cell.reference_label is not None
    other = (
        LabelClass.objects.filter(project=project, retired_at__isnull=True)
        .exclude(pk=cell.reference_label.pk)
        .first()
    )
    assert other is not None
    return other


def test_each_annotator_gets_a_disjoint_batch_with_agreement_and_gold_cells(
    loop_project: Project, team: dict[str, User], lead: User
) -> None:
    batches = {name: open_batch(loop_project, user) for name, user in team.items()}
    gold = set(
        Annotation.objects.filter(cell__project=loop_project, origin=Annotation.Origin.REVIEW).values_list(
            "cell_id", flat=True
        )
    )
    query_cells: dict[str, set[int]] = {}
    for name, batch in batches.items():
        kinds = purposes(batch)
        assert len(kinds) == 12
        assert sorted(kinds.values()).count("query") == 7
        assert sorted(kinds.values()).count("overlap") == 3
        assert sorted(kinds.values()).count("gold") == 2
        query_cells[name] = {c for c, p in kinds.items() if p == "query"}
        assert {c for c, p in kinds.items() if p == "gold"} <= gold
        assert not query_cells[name] & gold
    everyone = [c for cells in query_cells.values() for c in cells]
    assert len(everyone) == len(set(everyone)) == 21  # the strategy's cells: nobody's twice
    # Each agreement cell is another annotator's query cell, shown to exactly one second annotator.
    shown: dict[int, list[str]] = defaultdict(list)
    for name, batch in batches.items():
        for cell, purpose in purposes(batch).items():
            if purpose != "gold":
                shown[cell].append(name)
    for name, batch in batches.items():
        for cell, purpose in purposes(batch).items():
            if purpose == "overlap":
                owners = [n for n, cells in query_cells.items() if cell in cells]
                assert len(owners) == 1 and owners[0] != name
                assert len(shown[cell]) == 2

    # An annotator's page and API see their own batch, with no word of which cells are agreement or gold.
    ana = client_for(team["ana"])
    mine = own_batch(ana, loop_project)
    assert mine["id"] == batches["ana"].pk and mine["assignee"] == "ana"
    detail = ana.get(f"/api/projects/{loop_project.pk}/batches/{batches['ana'].pk}/").json()
    assert {item["purpose"] for item in detail["items"]} == {None}
    assert all("purpose" not in item for item in mine["items"])
    # ...and not another's: it is not listed, cannot be opened, skipped in or submitted.
    listed = ana.get(f"/api/projects/{loop_project.pk}/batches/").json()
    assert {b["id"] for b in listed["results"]} == {batches["ana"].pk}
    assert ana.get(f"/api/projects/{loop_project.pk}/batches/{batches['ben'].pk}/").status_code == 404
    other_cell = next(iter(query_cells["ben"]))
    skip = ana.post(
        f"/api/projects/{loop_project.pk}/batches/{batches['ben'].pk}/skip/",
        {"cell": other_cell},
        content_type="application/json",
    )
    assert skip.status_code == 403 and skip.json()["error"]["code"] == "not_your_batch"
    submit = ana.post(f"/api/projects/{loop_project.pk}/batches/{batches['ben'].pk}/submit/")
    assert submit.status_code == 403
    assert QueryBatch.objects.get(pk=batches["ben"].pk).submitted_at is None
    # The lead sees why each cell is there.
    as_lead = client_for(lead).get(f"/api/projects/{loop_project.pk}/batches/{batches['ana'].pk}/").json()
    assert sorted(item["purpose"] for item in as_lead["items"]) == sorted(purposes(batches["ana"]).values())


def test_labels_are_neither_lost_nor_double_counted_and_the_dashboard_matches_a_hand_count(
    loop_project: Project, team: dict[str, User], lead: User
) -> None:
    batches = {name: open_batch(loop_project, user) for name, user in team.items()}
    given: dict[int, dict[str, str]] = defaultdict(dict)  # cell -> annotator -> class, as posted
    gold_answers: dict[str, list[bool]] = defaultdict(list)
    for name, batch in batches.items():
        client = client_for(team[name])
        items = list(batch.items.select_related("cell__reference_label").order_by("rank"))
        first_gold, first_overlap = True, True
        for item in items:
            cell = item.cell
            label = cell.reference_label
            assert label is not None
            # ben gets one gold cell and one agreement cell wrong: one gold miss, one disagreement.
            if name == "ben" and item.purpose == "gold" and first_gold:
                label, first_gold = wrong_class(loop_project, cell), False
            elif name == "ben" and item.purpose == "overlap" and first_overlap:
                label, first_overlap = wrong_class(loop_project, cell), False
            response = client.post(
                f"/api/projects/{loop_project.pk}/annotations/",
                {"cells": [cell.pk], "label": label.name, "seconds_spent": 2.0},
                content_type="application/json",
            )
            assert response.status_code == 201, response.content
            given[cell.pk][name] = label.name
            if item.purpose == "gold":
                gold_answers[name].append(label.pk == cell.reference_label_id)
        submitted = client.post(f"/api/projects/{loop_project.pk}/batches/{batch.pk}/submit/")
        assert submitted.status_code == 202
    run_queued_jobs()

    # Every posted label is there once, as its annotator's current label.
    current = Annotation.objects.filter(
        cell__project=loop_project, origin=Annotation.Origin.MANUAL, superseded_by__isnull=True
    )
    assert current.count() == sum(len(people) for people in given.values()) == 36
    for cell_id, by_person in given.items():
        for name, class_name in by_person.items():
            mine = current.get(cell_id=cell_id, annotator=team[name])
            assert mine.label is not None and mine.label.name == class_name
    # A cell two annotators labelled alike counts once; the one they disagree on waits for review.
    states = cell_labels(project=loop_project, cell_ids=list(given))
    non_gold = [c for c in given if c not in gold_cells(loop_project)]  # a reviewer decided those
    disagreements = [c for c in non_gold if len(set(given[c].values())) > 1]
    assert len(disagreements) == 1
    assert states[disagreements[0]].status is LabelStatus.REVIEW
    assert states[disagreements[0]].reason == "disagreement"
    labelled_now = {c for c in non_gold if states[c].status is LabelStatus.LABELLED}
    assert labelled_now == set(non_gold) - set(disagreements)
    assert len(labelled_now) == 21 - 1  # 21 query cells, 9 of them labelled twice, one in dispute

    # The dashboard against a count by hand.
    people: dict[str, Any] = {row["annotator"]: row for row in annotators(loop_project)["people"]}
    for name in PEOPLE:
        answers = gold_answers[name]
        assert people[name]["gold"] == {
            "answered": len(answers),
            "correct": sum(answers),
            "accuracy": pytest.approx(sum(answers) / len(answers)),
        }
        shared = [c for c, who in given.items() if name in who and len(who) > 1]
        agree = sum(given[c][name] == given[c][other] for c in shared for other in given[c] if other != name)
        pairs = sum(len(given[c]) - 1 for c in shared)
        assert people[name]["agreement"] == pytest.approx(agree / pairs, abs=1e-5)  # rounded to 6 places
        assert people[name]["labels"] == 12
    assert people["ben"]["gold"]["correct"] == 1 and people["ana"]["gold"]["correct"] == 2
    # Seconds per label by class: every label above took 2 s; counts by hand from what was posted.
    seconds = annotators(loop_project)["seconds_by_class"]
    posted = [label for by_person in given.values() for label in by_person.values()]
    assert {c: v["n"] for c, v in seconds["project"].items()} == {c: posted.count(c) for c in set(posted)}
    assert {v["median"] for v in seconds["project"].values()} == {2.0}
    ben = next(row for row in seconds["annotators"] if row["annotator"] == "ben")["by_class"]
    assert sum(v["n"] for v in ben.values()) == 12

    # Every annotator has a new batch, disjoint from the others' and from every labelled cell.
    new = {name: open_batch(loop_project, user) for name, user in team.items()}
    assert all(b.number > batches[n].number for n, b in new.items())
    fresh = [c for b in new.values() for c, p in purposes(b).items() if p == "query"]
    assert len(fresh) == len(set(fresh)) and not set(fresh) & set(given)


def purposes_of_kind(project: Project, purpose: str) -> list[int]:
    return list(
        QueryItem.objects.filter(batch__project=project, purpose=purpose).values_list("cell_id", flat=True)
    )


def test_a_paused_annotator_gets_no_batch_and_their_open_cells_go_to_the_others(
    loop_project: Project, team: dict[str, User], lead: User
) -> None:
    cai_batch = open_batch(loop_project, team["cai"])
    cai_cells = set(cai_batch.items.values_list("cell_id", flat=True))
    assert cai_cells <= open_batch_cells(loop_project) | gold_cells(loop_project)
    response = client_for(lead).patch(
        f"/api/projects/{loop_project.pk}/members/{team['cai'].pk}/",
        {"labelling_paused": True},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert not cai_cells & open_batch_cells(loop_project) - shared_with_others(loop_project, "cai")
    # ana submits: her next batch may take cai's cells, and cai gets nothing new.
    ana = client_for(team["ana"])
    batch = open_batch(loop_project, team["ana"])
    item = batch.items.select_related("cell__reference_label").first()
    assert item is not None and item.cell.reference_label is not None
    ana.post(
        f"/api/projects/{loop_project.pk}/annotations/",
        {"cells": [item.cell_id], "label": item.cell.reference_label.name},
        content_type="application/json",
    )
    assert ana.post(f"/api/projects/{loop_project.pk}/batches/{batch.pk}/submit/").status_code == 202
    run_queued_jobs()
    assert QueryBatch.objects.filter(project=loop_project, assignee=team["cai"]).count() == 1
    paused_page = client_for(team["cai"]).get(f"/api/projects/{loop_project.pk}/batches/current/")
    assert paused_page.json()["batch"]["id"] == cai_batch.pk
    run_queued_jobs()
    assert QueryBatch.objects.filter(project=loop_project, assignee=team["cai"]).count() == 1


def gold_cells(project: Project) -> set[int]:
    return set(purposes_of_kind(project, "gold"))


def shared_with_others(project: Project, name: str) -> set[int]:
    """Cells of ``name``'s batch that another annotator's open batch holds too (agreement cells)."""
    mine = set(
        QueryItem.objects.filter(batch__project=project, batch__assignee__username=name).values_list(
            "cell_id", flat=True
        )
    )
    others = set(
        QueryItem.objects.filter(
            batch__project=project, batch__submitted_at__isnull=True, batch__assignee__isnull=False
        )
        .exclude(batch__assignee__username=name)
        .values_list("cell_id", flat=True)
    )
    return mine & others


def test_a_member_without_a_batch_gets_one_when_their_page_asks(
    loop_project: Project, team: dict[str, User], lead: User
) -> None:
    newcomer = User.objects.create_user("dee", password="pw-dee-123")
    membership_set(project=loop_project, user=newcomer, role=Membership.Role.REVIEWER)
    client = client_for(newcomer)
    assert own_batch(client, loop_project) is None  # a query job is on its way
    assert (
        Job.objects.filter(project=loop_project, kind=Job.Kind.QUERY, status=Job.Status.QUEUED).count() == 1
    )
    assert own_batch(client, loop_project) is None
    assert (
        Job.objects.filter(project=loop_project, kind=Job.Kind.QUERY, status=Job.Status.QUEUED).count() == 1
    )
    run_queued_jobs()
    batch = own_batch(client, loop_project)
    assert batch is not None and batch["assignee"] == "dee" and len(batch["items"]) == 12
    others = {c for name in PEOPLE for c in purposes(open_batch(loop_project, team[name]))}
    dee_query = {i.cell_id for i in QueryItem.objects.filter(batch_id=batch["id"], purpose="query")}
    assert not dee_query & others


def test_cost_aware_deals_each_annotator_the_cells_they_are_quickest_at(
    loop_project: Project, lead: User, make_manifest: Any
) -> None:
    """Two annotators with opposite speeds on two classes (5 timed labels of each, on the same cells):
    their next batches, chosen together by the cost-aware strategy, are dealt so that no swap of two
    cells between them would save expected seconds (the optimal deal for two), and each gets more of
    the class they are quick at."""
    from annotation.importing.service import LabelMode, import_cells
    from annotation.services.annotations import annotation_create
    from loop.handlers.artifacts import classifier, index_embeddings
    from loop.handlers.querying import TimedSeconds
    from loop.handlers.training_set import rows_of
    from loop.services.batches import batch_submit

    people = {name: User.objects.create_user(name, password=f"pw-{name}-123") for name in ("ana", "ben")}
    for user in people.values():
        membership_set(project=loop_project, user=user, role=Membership.Role.ANNOTATOR)
    Project.objects.filter(pk=loop_project.pk).update(
        split_work=True,
        overlap_fraction=0.0,
        gold_fraction=0.0,
        query_strategy="cost_aware",
        query_batch_size=6,
    )
    # 6 more cells of each class (13 in the pool): the first two batches (12 cells, chosen with seeds
    # that follow the job ids) may take several lymphocytes, and 5 of each timed class must stay out of
    # them. With 7 per class they once left 4.
    more = import_cells(
        project=loop_project, source=make_manifest(per_class=14, folder="more"), labels=LabelMode.REFERENCE
    )
    assert more.imported == 54, more.as_dict()
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    first = {name: open_batch(loop_project, user) for name, user in people.items()}
    queued = {item.cell_id for batch in first.values() for item in batch.items.all()}
    quick = {"ana": "neutrophil", "ben": "lymphocyte"}
    for label_name in quick.values():
        cells = Cell.objects.filter(
            project=loop_project, role=Cell.Role.POOL, reference_label__name=label_name
        ).exclude(pk__in=queued)[:5]
        assert len(cells) == 5
        for cell in cells:
            for name, user in people.items():
                spent = 2.0 if quick[name] == label_name else 10.0
                annotation_create(cell=cell, annotator=user, label=cell.reference_label, seconds_spent=spent)
    for name, batch in first.items():
        for item in batch.items.select_related("cell__reference_label"):
            annotation_create(
                cell=item.cell, annotator=people[name], label=item.cell.reference_label, seconds_spent=5.0
            )
        batch_submit(batch=batch, user=people[name])
    run_queued_jobs()

    second = {name: open_batch(loop_project, user) for name, user in people.items()}
    assert second["ana"].job_id == second["ben"].job_id  # chosen together by one job
    classifier_version = second["ana"].classifier
    assert classifier_version is not None and second["ana"].index is not None
    clf = classifier(classifier_version)
    columns = list(clf.classes)
    seconds = TimedSeconds.of(loop_project).per_annotator(columns, [people["ana"].pk, people["ben"].pk])
    assert seconds is not None
    for row, name in enumerate(("ana", "ben")):  # each one's own medians on their two timed classes
        for label_name in quick.values():
            assert seconds[row, columns.index(label_name)] == (2.0 if quick[name] == label_name else 10.0)
    ids, emb = index_embeddings(second["ana"].index)
    expected: dict[str, np.ndarray] = {}
    suggested: dict[str, list[str]] = {}
    for name, batch in second.items():
        items = list(batch.items.order_by("rank").select_related("suggestion"))
        assert len(items) == 6 and {i.purpose for i in items} == {QueryItem.Purpose.QUERY}
        rows, found = rows_of(ids, np.array([i.cell_id for i in items]))
        assert found.all()
        expected[name] = np.asarray(clf.predict_proba(emb[rows])) @ seconds.T  # (6, 2): ana's, ben's
        suggested[name] = [i.suggestion.name for i in items if i.suggestion is not None]
    # Optimal for two: every cell ana got costs her, relative to ben, no more than any cell ben got.
    ana_edge = expected["ana"][:, 0] - expected["ana"][:, 1]
    ben_edge = expected["ben"][:, 0] - expected["ben"][:, 1]
    assert ana_edge.max() <= ben_edge.min() + 1e-9
    assert suggested["ana"].count("neutrophil") >= suggested["ben"].count("neutrophil")
    assert suggested["ben"].count("lymphocyte") >= suggested["ana"].count("lymphocyte")
