"""The per-slide differential on real cells: two slides, a batch labelled by two annotators and a real
classifier. Expert counts and percentages match a count by hand, the model's predictions for the cells
without an expert label are shown apart (and match the classifier's own answer), the first-N view counts
in labelling order, annotators and reviewers are refused, the CSV is spreadsheet-safe, and a project
without slide ids or without a model says so."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Cell, LabelClass, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from dashboard.differential import slide_differential
from learning.manifest import FORMULA_PREFIXES
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.artifacts import index_embeddings
from loop.models import ModelVersion
from tests.conftest import client_for
from tests.dashboard import run_loop

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_artifacts")]

SLIDE_A = "SLIDE-A"
SLIDE_B = "=HYPERLINK(1)"  # a hostile slide id: the CSV must not hand it to a spreadsheet as a formula
NO_SLIDE = 3  # cells left without a slide id


def give_slides(project: Project, labelled_ids: set[int]) -> dict[int, str]:
    """Alternate the project's cells between two slides, leaving the last few unlabelled ones without
    one. The labelled cells alternate on their own, so each slide gets half of them whichever cells the
    batch happened to pick (alternating all cells by id once gave one slide only 3 labelled cells)."""
    ids = list(Cell.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    done = [pk for pk in ids if pk in labelled_ids]
    rest = [pk for pk in ids if pk not in labelled_ids][:-NO_SLIDE]
    slides = {
        pk: (SLIDE_A if i % 2 == 0 else SLIDE_B) for group in (done, rest) for i, pk in enumerate(group)
    }
    for pk, slide in slides.items():
        Cell.objects.filter(pk=pk).update(slide_id=slide)
    return slides


def predicted_by_hand(version: ModelVersion, cell_ids: list[int]) -> list[str]:
    assert version.parent is not None
    ids, emb = index_embeddings(version.parent)
    rows = np.searchsorted(ids, np.asarray(cell_ids))
    assert (ids[rows] == np.asarray(cell_ids)).all()
    clf = load_classifier(version)
    return np.asarray(clf.classes)[clf.predict_proba(emb[rows]).argmax(axis=1)].tolist()


@pytest.fixture
def labelled(loop_project: Project, annotator: User, lead: User) -> dict[str, Any]:
    """The real loop's first batch labelled by two annotators, one more cell on which they disagree (it
    waits for review), and slide ids on all cells but three."""
    second = User.objects.create_user("second", password="pw-second-123")
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    membership_set(project=loop_project, user=second, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1, second=second)
    labelled_ids = set(
        Annotation.objects.filter(cell__project=loop_project).values_list("cell_id", flat=True).distinct()
    )
    slides = give_slides(loop_project, labelled_ids)
    untouched = Cell.objects.filter(project=loop_project, slide_id=SLIDE_B, annotations__isnull=True)
    disputed = untouched.order_by("pk").first()
    assert disputed is not None
    classes = list(loop_project.classes.order_by("order"))
    annotation_create(cell=disputed, annotator=annotator, label=classes[0])
    annotation_create(cell=disputed, annotator=second, label=classes[1])
    return {"slides": slides, "labelled": labelled_ids, "disputed": disputed.pk, "second": second}


@pytest.mark.realdata
@pytest.mark.slow
def test_counts_percentages_and_predictions_match_a_hand_count(
    loop_project: Project, lead: User, annotator: User, labelled: dict[str, Any]
) -> None:
    slides: dict[int, str] = labelled["slides"]
    data = client_for(lead).get(f"/api/projects/{loop_project.pk}/differential/").json()

    # By hand: each labelled cell's class is the reference label both annotators gave it.
    expected: dict[str, Counter[str]] = {SLIDE_A: Counter(), SLIDE_B: Counter()}
    for cell in Cell.objects.filter(pk__in=labelled["labelled"]).select_related("reference_label"):
        if cell.pk in slides:
            assert cell.reference_label is not None
            expected[slides[cell.pk]][cell.reference_label.name] += 1
    assert sum(sum(c.values()) for c in expected.values()) > 0
    by_slide = {row["slide"]: row for row in data["slides"]}
    assert list(by_slide) == sorted([SLIDE_A, SLIDE_B])
    names = [c["name"] for c in data["classes"]]
    active = list(loop_project.classes.filter(retired_at__isnull=True).order_by("order", "pk"))
    assert names == [c.name for c in active]  # display order
    assert [c["display_name"] for c in data["classes"]] == [c.display_name for c in active]
    assert data["cells_without_slide"] == NO_SLIDE and data["has_slides"] is True
    for slide, counts in expected.items():
        row = by_slide[slide]
        n = sum(counts.values())
        assert row["cells"] == sum(1 for s in slides.values() if s == slide)
        assert row["labelled"] == row["counted"] == n
        assert row["counts"] == {name: counts.get(name, 0) for name in names}
        assert row["percent"] == {name: round(100 * counts.get(name, 0) / n, 1) for name in names}
        assert row["blasts"] == counts.get("blast", 0)
        assert row["cells"] == row["labelled"] + row["in_review"] + row["unlabelled"]
    assert by_slide[SLIDE_B]["in_review"] == 1 and by_slide[SLIDE_A]["in_review"] == 0
    # The column total sums the slides.
    total = data["total"]
    assert total["counts"] == {n: sum(row["counts"][n] for row in data["slides"]) for n in names}
    assert total["counted"] == sum(sum(c.values()) for c in expected.values())

    # Predictions: the classifier's own answer for each slide's cells without an expert label (the
    # disputed cell included), counted apart from the expert counts.
    version = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    assert data["model"] == {"version": version.version, "labels": version.label_count, "note": ""}
    states = cell_labels(project=loop_project)
    for slide in (SLIDE_A, SLIDE_B):
        waiting = sorted(
            pk
            for pk, s in slides.items()
            if s == slide and (pk not in states or states[pk].status is not LabelStatus.LABELLED)
        )
        assert labelled["disputed"] in waiting or slide == SLIDE_A
        hand = Counter(predicted_by_hand(version, waiting))
        row = by_slide[slide]
        assert row["predicted_cells"] == len(waiting) == row["in_review"] + row["unlabelled"]
        assert row["predicted"] == {name: hand.get(name, 0) for name in names}
        # Apart: adding predictions changed no expert count.
        assert sum(row["counts"].values()) == row["labelled"]


@pytest.mark.realdata
@pytest.mark.slow
def test_first_n_counts_the_first_labelled_cells_of_each_slide_in_labelling_order(
    loop_project: Project, lead: User, labelled: dict[str, Any]
) -> None:
    slides: dict[int, str] = labelled["slides"]
    first_ids: dict[str, list[int]] = {SLIDE_A: [], SLIDE_B: []}
    # Labelling order: each cell's first current annotation.
    seen: set[int] = set()
    for cell_id in (
        Annotation.objects.filter(cell__project=loop_project, superseded_by__isnull=True)
        .order_by("pk")
        .values_list("cell_id", flat=True)
    ):
        if cell_id not in seen and cell_id in slides and cell_id != labelled["disputed"]:
            seen.add(cell_id)
            first_ids[slides[cell_id]].append(cell_id)
    data = slide_differential(loop_project, first=3)
    for row in data["slides"]:
        taken = first_ids[row["slide"]][:3]
        hand = Counter(
            Cell.objects.get(pk=pk).reference_label.name  # type: ignore[union-attr]
            for pk in taken
        )
        assert row["counted"] == 3 < row["labelled"]
        assert {k: v for k, v in row["counts"].items() if v} == dict(hand)
        assert sum(row["percent"][k] for k in hand) == pytest.approx(100.0, abs=0.2)
    # The page's own toggle is 100 cells: with fewer labelled, the same numbers as "all".
    client = client_for(lead)
    every = client.get(f"/api/projects/{loop_project.pk}/differential/").json()
    first = client.get(f"/api/projects/{loop_project.pk}/differential/?view=first100").json()
    assert first["view"] == "first100" and first["slides"] == every["slides"]
    assert client.get(f"/api/projects/{loop_project.pk}/differential/?view=first7").status_code == 400


@pytest.mark.realdata
@pytest.mark.slow
def test_annotators_and_reviewers_are_refused_and_the_csv_is_formula_safe(
    loop_project: Project, lead: User, annotator: User, labelled: dict[str, Any]
) -> None:
    reviewer = User.objects.create_user("rev", password="pw-rev-123")
    membership_set(project=loop_project, user=reviewer, role=Membership.Role.REVIEWER)
    urls = [
        f"/projects/{loop_project.pk}/differential/",
        f"/projects/{loop_project.pk}/differential.csv",
        f"/api/projects/{loop_project.pk}/differential/",
    ]
    for user in (annotator, labelled["second"], reviewer):
        for url in urls:
            response = client_for(user).get(url)
            assert response.status_code == 403, (user, url)
            assert SLIDE_A not in response.content.decode()

    # A class display name a spreadsheet would run, too.
    LabelClass.objects.filter(project=loop_project, name="basophil").update(display_name="+basophil()")
    response = client_for(lead).get(urls[1])
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    for row in rows:
        for value in row:
            assert not value.startswith(FORMULA_PREFIXES), value
    header, body = rows[0], rows[1:]
    assert "'+basophil() n" in header
    by_slide = {row[0]: dict(zip(header, row, strict=True)) for row in body}
    assert set(by_slide) == {SLIDE_A, "'" + SLIDE_B, "total"}
    data = client_for(lead).get(urls[2]).json()
    for row in data["slides"]:
        line = by_slide[row["slide"] if row["slide"] == SLIDE_A else "'" + row["slide"]]
        assert int(line["counted"]) == row["counted"]
        assert int(line["Neutrophil n"]) == row["counts"]["neutrophil"]
        assert int(line["predicted_cells"]) == row["predicted_cells"]


def test_a_project_without_slide_ids_says_how_to_import_them(lead: User) -> None:
    project = project_create(name="no-slides", lead=lead)
    Cell.objects.create(project=project, image="x.png", content_hash="0" * 64, width=8, height=8)
    page = client_for(lead).get(f"/projects/{project.pk}/differential/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "No slide ids in this project" in html and "<code>slide_id</code>" in html
    assert "import_cells" in html
    data = client_for(lead).get(f"/api/projects/{project.pk}/differential/").json()
    assert data["has_slides"] is False and data["slides"] == [] and data["cells_without_slide"] == 1


def test_a_project_without_a_model_says_no_model_yet(lead: User) -> None:
    project = project_create(name="no-model", lead=lead)
    neutrophil = project.classes.get(name="neutrophil")
    blast = project.classes.get(name="blast")
    cells = [
        Cell.objects.create(
            project=project, image=f"{i}.png", content_hash=f"{i:064d}", width=8, height=8, slide_id="S1"
        )
        for i in range(4)
    ]
    annotation_create(cell=cells[0], annotator=lead, label=neutrophil)
    annotation_create(cell=cells[1], annotator=lead, label=neutrophil)
    annotation_create(cell=cells[2], annotator=lead, label=blast)
    data = client_for(lead).get(f"/api/projects/{project.pk}/differential/").json()
    (row,) = data["slides"]
    assert data["model"] == {"version": None, "labels": None, "note": "no model yet"}
    assert row["predicted"] is None and row["predicted_cells"] is None
    assert row["counts"]["neutrophil"] == 2 and row["percent"]["neutrophil"] == 66.7
    assert row["blasts"] == 1 and row["percent"]["blast"] == 33.3 and row["unlabelled"] == 1
    html = client_for(lead).get(f"/projects/{project.pk}/differential/").content.decode()
    assert "no model yet" in html
    assert 'class="slide-row has-blasts"' in html and 'class="count blast"' in html
