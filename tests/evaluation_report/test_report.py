"""The evaluation report of a classifier version on test cells: numbers against scikit-learn from the same
predictions, cells imported after the index, differential counts, a test set with a subset of the classes,
and who may see the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client
from sklearn.metrics import confusion_matrix, f1_score

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Cell, LabelClass, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from evaluation_report.report import NOT_SCORED_REASON, evaluation_report, source_comparison
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.artifacts import index_embeddings
from loop.models import ModelVersion, QueryBatch
from tests.conftest import ManifestWriter, client_for, import_external_cells, label_and_submit
from tests.dashboard import run_loop

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]


@pytest.fixture
def version(loop_project: Project, annotator: User) -> ModelVersion:
    """One classifier version of the real loop (12 labels), trained on an index of all 72 cells."""
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1)
    return ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)


def unlabelled_pool(project: Project) -> Any:
    return Cell.objects.filter(project=project, role=Cell.Role.POOL, annotations__isnull=True).order_by("pk")


def predictions(version: ModelVersion, cell_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and top-label confidence of ``cell_ids``, recomputed here from the artifacts."""
    assert version.parent is not None
    ids, emb = index_embeddings(version.parent)
    rows = np.searchsorted(ids, np.asarray(cell_ids))
    assert (ids[rows] == np.asarray(cell_ids)).all()
    clf = load_classifier(version)
    probs = clf.predict_proba(emb[rows])
    return np.asarray(clf.classes)[probs.argmax(axis=1)], probs.max(axis=1)


def test_report_matches_sklearn_and_lists_cells_imported_after_the_index(
    version: ModelVersion, loop_project: Project, annotator: User, make_manifest: ManifestWriter
) -> None:
    test_ids = list(unlabelled_pool(loop_project).values_list("pk", flat=True))
    assert len(test_ids) == 72 - 9 - 12
    Cell.objects.filter(pk__in=test_ids).update(role=Cell.Role.TEST)
    Cell.objects.filter(pk__in=test_ids[:20]).update(slide_id="slide-A")
    Cell.objects.filter(pk__in=test_ids[20:40]).update(slide_id="slide-B")  # the rest: no slide id
    # An annotation label overrides the reference label.
    relabelled = Cell.objects.select_related("reference_label").get(pk=test_ids[0])
    other = LabelClass.objects.exclude(pk=relabelled.reference_label_id or 0).filter(project=loop_project)[0]
    annotation_create(cell=relabelled, annotator=annotator, label=other)
    # An external test set imported after the index: 1 new image per class, role test, no embedding yet.
    before = set(Cell.objects.filter(project=loop_project).values_list("pk", flat=True))
    import_cells(
        project=loop_project,
        source=make_manifest(per_class=9, folder="external"),
        labels=LabelMode.REFERENCE,
        default_role=Cell.Role.TEST,
    )
    imported = set(Cell.objects.filter(project=loop_project).values_list("pk", flat=True)) - before
    assert len(imported) == 9

    report = evaluation_report(version, n_boot=200)

    assert report["n"] == len(test_ids) == report["n_selected"] - 9
    assert report["not_scored"] == {"n": 9, "reason": NOT_SCORED_REASON, "cell_ids": sorted(imported)}
    truth_of = dict(Cell.objects.filter(pk__in=test_ids).values_list("pk", "reference_label__name"))
    truth_of[relabelled.pk] = other.name
    truth = np.array([truth_of[i] for i in test_ids])
    predicted, confidence = predictions(version, test_ids)
    cells = report["cells"]
    assert [c["id"] for c in cells] == test_ids
    assert [c["true"] for c in cells] == truth.tolist()
    assert [c["predicted"] for c in cells] == predicted.tolist()
    assert np.allclose([c["confidence"] for c in cells], confidence)

    # Classes in the project's display order (the labelling page's keys 1-9), not alphabetically.
    order = list(loop_project.classes.values_list("name", flat=True))
    assert order != sorted(order)
    present = [c for c in order if c in set(truth.tolist())]
    metrics = report["metrics"]
    assert report["labels"] == metrics["labels"] == list(metrics["per_class_f1"]) == present
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
    )
    per_class = f1_score(truth, predicted, labels=present, average=None, zero_division=0)
    assert metrics["per_class_f1"] == pytest.approx(dict(zip(present, per_class.tolist(), strict=True)))
    all_labels = [c for c in order if c in set(truth.tolist()) | set(predicted.tolist())]
    assert metrics["confusion"]["labels"] == all_labels
    assert metrics["confusion"]["matrix"] == confusion_matrix(truth, predicted, labels=all_labels).tolist()
    lo, hi = metrics["bootstrap"]["macro_f1"]
    assert 0.0 <= lo <= hi <= 1.0
    source_of = dict(Cell.objects.filter(pk__in=test_ids).values_list("pk", "source"))
    assert set(metrics["per_source"]) == set(source_of.values())
    assert metrics["support"] == {lab: int((truth == lab).sum()) for lab in present}

    # Reliability diagram: 10 bins (lo, hi] holding every cell, accuracy and confidence recomputed.
    bins = report["reliability"]["bins"]
    assert len(bins) == 10 and sum(b["n"] for b in bins) == len(test_ids)
    which = np.clip(np.ceil(confidence * 10).astype(int) - 1, 0, 9)
    correct = predicted == truth
    ece = 0.0
    for b, spec in enumerate(bins):
        rows = which == b
        assert spec["n"] == int(rows.sum())
        if rows.any():
            assert spec["accuracy"] == pytest.approx(correct[rows].mean())
            assert spec["confidence"] == pytest.approx(confidence[rows].mean())
            ece += rows.sum() / len(rows) * abs(correct[rows].mean() - confidence[rows].mean())
    assert report["reliability"]["ece"] == pytest.approx(ece)

    # Differential counts: per slide (slide id, else source), proportions summing to 1.
    diff = report["differential"]
    assert set(diff["classes"]) == set(all_labels)
    slides = {s["slide"]: s for s in diff["slides"]}
    # Cells without a slide id are grouped by their source.
    group = np.array(["slide-A"] * 20 + ["slide-B"] * 20 + [source_of[i] for i in test_ids[40:]])
    assert set(slides) == {"slide-A", "slide-B"} | {source_of[i] for i in test_ids[40:]}
    assert slides["slide-A"]["n"] == slides["slide-B"]["n"] == 20
    for name, slide in slides.items():
        assert sum(slide["true"].values()) == pytest.approx(1.0)
        assert sum(slide["predicted"].values()) == pytest.approx(1.0)
        rows = group == name
        for c in diff["classes"]:
            assert slide["true"][c] == pytest.approx((truth[rows] == c).mean())
            assert slide["predicted"][c] == pytest.approx((predicted[rows] == c).mean())
            assert slide["abs_diff"][c] == pytest.approx(abs(slide["true"][c] - slide["predicted"][c]))
    for c in diff["classes"]:
        assert diff["mean_abs_diff"][c] == pytest.approx(np.mean([s["abs_diff"][c] for s in slides.values()]))

    # A source filter selects that source's cells only; an unknown source selects nothing.
    assert evaluation_report(version, source="pbc", n_boot=0)["n"] == sum(
        source_of[i] == "pbc" for i in test_ids
    )
    empty = evaluation_report(version, source="elsewhere", n_boot=0)
    assert empty["n"] == 0 and empty["metrics"] is None and empty["differential"] is None


def test_a_test_set_with_a_subset_of_the_classes_is_scored_over_the_classes_it_has(
    version: ModelVersion, loop_project: Project
) -> None:
    kept = sorted(loop_project.classes.values_list("name", flat=True))[:3]
    cells = unlabelled_pool(loop_project).filter(reference_label__name__in=kept)
    test_ids = list(cells.values_list("pk", flat=True))
    assert test_ids
    Cell.objects.filter(pk__in=test_ids).update(role=Cell.Role.TEST)

    report = evaluation_report(version, n_boot=100)

    truth = np.array(
        [
            dict(Cell.objects.filter(pk__in=test_ids).values_list("pk", "reference_label__name"))[i]
            for i in test_ids
        ]
    )
    predicted, _ = predictions(version, test_ids)
    order = list(loop_project.classes.values_list("name", flat=True))
    present = [c for c in order if c in set(truth.tolist())]
    assert report["labels"] == present and set(present) <= set(kept)
    assert set(report["metrics"]["per_class_f1"]) == set(present)
    assert report["metrics"]["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
    )
    # Differential counts still sum to 1: predictions of absent classes are listed too.
    for slide in report["differential"]["slides"]:
        assert sum(slide["true"].values()) == pytest.approx(1.0)
        assert sum(slide["predicted"].values()) == pytest.approx(1.0)


def test_page_and_json_for_leads_only(
    version: ModelVersion, loop_project: Project, lead: User, annotator: User, outsider: User
) -> None:
    Cell.objects.filter(pk__in=unlabelled_pool(loop_project).values_list("pk", flat=True)[:30]).update(
        role=Cell.Role.TEST
    )
    # The version number within the project, as the README and the dashboard's link give it.
    page = f"/projects/{loop_project.pk}/models/{version.version}/report/"
    data = f"/projects/{loop_project.pk}/models/{version.version}/report.json"

    response = client_for(lead).get(page)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Differential count" in body and "reliability-chart" in body and "evaluation_report.js" in body
    assert 'id="evaluation-report-data"' in body
    payload = client_for(lead).get(data).json()
    assert payload["n"] == 30 and payload["version"]["id"] == version.pk
    assert 'id="macro-f1"' in body and 'id="differential-table"' in body and "<td>slide-" not in body
    assert client_for(lead).get(data, {"source": "elsewhere"}).json()["n"] == 0
    empty = client_for(lead).get(page, {"source": "elsewhere"})
    assert empty.status_code == 200 and "No scored test cells" in empty.content.decode()

    admin = User.objects.create_user("admin-user", password="pw-admin-123")
    membership_set(project=loop_project, user=admin, role=Membership.Role.ADMIN)
    assert client_for(admin).get(data).status_code == 200
    reviewer = User.objects.create_user("reviewer-user", password="pw-reviewer-123")
    membership_set(project=loop_project, user=reviewer, role=Membership.Role.REVIEWER)
    for member in (annotator, reviewer):
        assert client_for(member).get(page).status_code == 403
        assert client_for(member).get(data).status_code == 403
    assert client_for(outsider).get(page).status_code == 404
    assert client_for(outsider).get(data).status_code == 404
    assert Client().get(data).status_code == 302  # to the login page

    # Not a classifier, or a version of another project: 404.
    encoder = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.ENCODER)
    missing = f"/projects/{loop_project.pk}/models/{encoder.version + 100}/report.json"
    assert client_for(lead).get(missing).status_code == 404
    other = project_create(name="other", lead=lead)
    assert (
        client_for(lead).get(f"/projects/{other.pk}/models/{version.version}/report.json").status_code == 404
    )


def test_a_project_without_test_cells_is_scored_on_its_validation_cells_and_says_so(
    version: ModelVersion, loop_project: Project, lead: User
) -> None:
    # As the demo: no test cells, 9 validation cells (one per class) held out of training.
    assert not Cell.objects.filter(project=loop_project, role=Cell.Role.TEST).exists()
    validation = list(
        Cell.objects.filter(project=loop_project, role=Cell.Role.VALIDATION)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    Cell.objects.filter(pk__in=validation[:4]).update(source="smear-1")
    report = evaluation_report(version, n_boot=0)
    assert report["cell_role"] == "validation" and "no test cells" in report["cell_role_note"]
    assert [c["id"] for c in report["cells"]] == validation and report["n"] == 9

    body = client_for(lead).get(f"/projects/{loop_project.pk}/models/{version.version}/report/")
    html = body.content.decode()
    assert 'id="cell-role-note"' in html and '<td id="n-scored">9</td>' in html
    assert '<option value="smear-1"' in html  # the source list comes from the cells scored
    # The tables name classes as the page does, in its order.
    names = list(loop_project.classes.values_list("display_name", flat=True))
    header = html.split('id="confusion-table"', 1)[1].split("</thead>", 1)[0]
    shown = [n for n in names if f"<th>{n}</th>" in header]
    assert shown and sorted(shown, key=header.index) == shown


def test_before_and_after_adapting_to_a_new_site_per_source(
    loop_project: Project, lead: User, annotator: User, data_dir: Path, tmp_path: Path
) -> None:
    """Version 1 is trained before the new site's cells are queried, version 2 after a batch of them
    (query source set); the comparison scores both on the same test cells of each source and counts the
    labels each had from each source, all checked against a recomputation here."""
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    import_external_cells(loop_project, data_dir, tmp_path / "site", 30, every=10)
    bccd = list(Cell.objects.filter(project=loop_project, source="bccd").order_by("pk"))
    pbc_test = unlabelled_pool(loop_project).filter(source="pbc").values_list("pk", flat=True)[:20]
    test_ids = [c.pk for c in bccd[:12]] + list(pbc_test)
    Cell.objects.filter(pk__in=test_ids).update(role=Cell.Role.TEST)
    run_loop(loop_project, annotator, batches=1)
    Project.objects.filter(pk=loop_project.pk).update(query_source="bccd")
    # Batch 2 was built before the source was set; batch 3, after it, holds the new site's cells only.
    label_and_submit(QueryBatch.objects.get(project=loop_project, number=2), annotator)
    third = QueryBatch.objects.get(project=loop_project, number=3)
    assert {item.cell.source for item in third.items.select_related("cell")} == {"bccd"}
    label_and_submit(third, annotator)
    first, last = (
        ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER, version=n)
        for n in (2, 3)
    )

    def labels_by_source(version: ModelVersion) -> dict[str, int]:
        cells = Cell.objects.filter(annotations__pk__in=version.trained_on).distinct()
        return {s: cells.filter(source=s).count() for s in ("bccd", "pbc")}

    comparison = source_comparison(first, last)
    rows = {r["source"]: r for r in comparison["sources"]}
    assert comparison["n"] == len(test_ids)
    assert rows["bccd"]["n"] == 12 and rows["pbc"]["n"] == 20
    for version, when in ((first, "before"), (last, "after")):
        counts = labels_by_source(version)
        assert rows["bccd"][f"labels_{when}"] == counts["bccd"]
        assert rows["pbc"][f"labels_{when}"] == counts["pbc"]
        for source in ("bccd", "pbc"):
            cells = Cell.objects.filter(pk__in=test_ids, source=source).order_by("pk")
            ids = list(cells.values_list("pk", flat=True))
            truth = list(cells.values_list("reference_label__name", flat=True))
            predicted, _ = predictions(version, ids)
            by_hand = f1_score(truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0)
            assert rows[source][f"macro_f1_{when}"] == pytest.approx(by_hand)
    assert rows["bccd"]["labels_after"] > rows["bccd"]["labels_before"]
    assert rows["bccd"]["change"] == pytest.approx(
        rows["bccd"]["macro_f1_after"] - rows["bccd"]["macro_f1_before"]
    )

    # The page and the JSON show it when asked; an unknown version is a 404.
    page = client_for(lead).get(f"/projects/{loop_project.pk}/models/3/report/", {"compare": "2"})
    body = page.content.decode()
    assert page.status_code == 200 and 'id="source-comparison-table"' in body
    assert 'data-source="bccd"' in body and 'data-source="pbc"' in body
    data = client_for(lead).get(f"/projects/{loop_project.pk}/models/3/report.json", {"compare": "2"})
    assert data.json()["comparison"] == json.loads(json.dumps(comparison))
    assert (
        "comparison" not in client_for(lead).get(f"/projects/{loop_project.pk}/models/3/report.json").json()
    )
    for bad in ("99", "two"):
        missing = client_for(lead).get(f"/projects/{loop_project.pk}/models/3/report/", {"compare": bad})
        assert missing.status_code == 404
