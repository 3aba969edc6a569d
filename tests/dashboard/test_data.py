"""The dashboard page and its JSON: permissions, budget, curve, current model, annotators and the map."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score

from annotation.models import Annotation, Cell, LabelClass, Membership, Project
from annotation.services.annotations import annotation_create, annotation_withdraw
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from dashboard.embedding_map import map_path, project_2d, sample_rows, umap_settings
from jobs.models import Job
from loop.models import ModelVersion
from tests.conftest import client_for, run_queued_jobs
from tests.dashboard import run_loop

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_artifacts")]


@pytest.fixture
def project(lead: User) -> Project:
    project = project_create(name="dash", lead=lead, label_budget=50)
    Project.objects.filter(pk=project.pk).update(query_batch_size=5)
    project.refresh_from_db()
    return project


def make_cells(project: Project, n: int) -> list[Cell]:
    return [
        Cell.objects.create(
            project=project,
            image=f"c{i}.png",
            content_hash=f"{i:064d}",
            width=8,
            height=8,
            source="scanner-a",
        )
        for i in range(n)
    ]


def classifier(project: Project, version: int, labels: int, f1: float | None, **metrics: Any) -> ModelVersion:
    report: dict[str, Any] = {}
    if f1 is not None:
        report = {
            "n": 9,
            "macro_f1": f1,
            "accuracy": f1,
            "bootstrap": {"macro_f1": [f1 - 0.1, f1 + 0.05], "confidence": 0.95, "n_boot": 200},
            **metrics,
        }
    return ModelVersion.objects.create(
        project=project,
        kind=ModelVersion.Kind.CLASSIFIER,
        version=version,
        label_count=labels,
        metrics=report,
    )


@pytest.mark.parametrize("path", ["", "data.json", "map.json"])
def test_only_leads_and_admins_see_the_dashboard(
    project: Project, lead: User, annotator: User, outsider: User, path: str
) -> None:
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    reviewer = User.objects.create_user("reviewer", password="x")
    membership_set(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    admin = User.objects.create_user("padmin", password="x")
    membership_set(project=project, user=admin, role=Membership.Role.ADMIN)
    url = f"/projects/{project.pk}/dashboard/{path}"
    assert client_for(lead).get(url).status_code == 200
    assert client_for(admin).get(url).status_code == 200
    assert client_for(annotator).get(url).status_code == 403
    assert client_for(reviewer).get(url).status_code == 403
    assert client_for(outsider).get(url).status_code == 404
    assert client_for(lead).get(f"/projects/{project.pk + 1000}/dashboard/{path}").status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")


def test_the_page_states_the_stopping_rule_and_loads_chartjs(project: Project, lead: User) -> None:
    page = client_for(lead).get(f"/projects/{project.pk}/dashboard/")
    html = page.content.decode()
    assert "Stop labelling when the last 3 classifier versions" in html
    assert "vendor/chartjs/chart.umd.min.js" in html and "js/dashboard.js" in html
    assert "css/dashboard.css" in html and 'id="dashboard-config"' in html


def test_an_empty_project(project: Project, lead: User) -> None:
    data = client_for(lead).get(f"/projects/{project.pk}/dashboard/data.json").json()
    assert data["budget"] == {"total": 50, "used": 0, "left": 50, "in_review": 0, "in_batches": 0}
    assert len(data["class_counts"]) == project.classes.count() and data["learning_curve"] == []
    assert data["current_model"] is None and data["stopping"]["state"] == "too-early"
    assert data["annotators"] == {**data["annotators"], "people": [], "pairs": [], "cells_labelled_twice": 0}
    assert client_for(lead).get(f"/projects/{project.pk}/dashboard/map.json").json()["points"] is None


def test_a_failed_map_is_reported_and_not_started_again_and_again(project: Project, lead: User) -> None:
    ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.INDEX, version=1)
    client = client_for(lead)
    first = client.get(f"/projects/{project.pk}/dashboard/map.json").json()
    assert first["pending"] and first["points"] is None
    Job.objects.filter(pk=first["job"]).update(
        status=Job.Status.FAILED, finished_at=timezone.now(), error="ValueError: no embeddings\n\ntraceback"
    )
    for _ in range(3):  # the page keeps asking
        answer = client.get(f"/projects/{project.pk}/dashboard/map.json").json()
        assert answer["failed"] and answer["job"] == first["job"] and "pending" not in answer
        assert "failed (job" in answer["note"] and "ValueError: no embeddings" in answer["note"]
    assert Job.objects.filter(project=project, kind=Job.Kind.MAP).count() == 1
    # A newer index gets its own attempt.
    ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.INDEX, version=2)
    assert client.get(f"/projects/{project.pk}/dashboard/map.json").json()["pending"]
    assert Job.objects.filter(project=project, kind=Job.Kind.MAP).count() == 2


def test_budget_classes_annotators_and_kappa_on_two_annotators(
    project: Project, lead: User, annotator: User
) -> None:
    bob = User.objects.create_user("bob", password="x")
    classes = {c.name: c for c in LabelClass.objects.filter(project=project)}
    a = [
        "neutrophil",
        "neutrophil",
        "lymphocyte",
        "monocyte",
        "lymphocyte",
        "neutrophil",
        "eosinophil",
        "basophil",
    ]
    b = [
        "neutrophil",
        "lymphocyte",
        "lymphocyte",
        "monocyte",
        "lymphocyte",
        "neutrophil",
        "monocyte",
        "basophil",
    ]
    cells = make_cells(project, 10)
    start = timezone.now() - timedelta(hours=1)
    for i, (la, lb) in enumerate(zip(a, b, strict=True)):
        first = annotation_create(
            cell=cells[i], annotator=annotator, label=classes[la], seconds_spent=float(i + 1)
        )
        second = annotation_create(cell=cells[i], annotator=bob, label=classes[lb], seconds_spent=3.0)
        Annotation.objects.filter(pk=first.pk).update(created_at=start + timedelta(seconds=30 * i))
        Annotation.objects.filter(pk=second.pk).update(created_at=start + timedelta(seconds=30 * i + 5))
    # Only the annotator labels cell 8; cell 9 is flagged unsure; an undone label counts for nothing.
    annotation_create(cell=cells[8], annotator=annotator, label=classes["blast"])
    annotation_create(cell=cells[9], annotator=annotator, label=None, unsure=True)
    undone = annotation_create(cell=cells[9], annotator=bob, label=classes["neutrophil"])
    annotation_withdraw(annotation=undone, user=bob)

    data = client_for(lead).get(f"/projects/{project.pk}/dashboard/data.json").json()
    agreed = sum(x == y for x, y in zip(a, b, strict=True))  # 6 cells agree; 2 disagree -> review
    # Cells waiting for review spent their label too: the loop will not ask for them again.
    assert data["budget"] == {
        "total": 50,
        "used": agreed + 1,
        "left": 50 - agreed - 1 - 3,
        "in_review": 3,
        "in_batches": 0,
    }
    counts = {c["name"]: c["count"] for c in data["class_counts"]}
    assert sum(counts.values()) == agreed + 1 and counts["lymphocyte"] == 2 and counts["blast"] == 1

    annotators = data["annotators"]
    assert annotators["cells_labelled_twice"] == 8
    (pair,) = annotators["pairs"]
    assert (pair["a"], pair["b"], pair["shared"]) == ("annotator", "bob", 8)
    assert pair["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)
    people = {p["annotator"]: p for p in annotators["people"]}
    assert people["annotator"]["labels"] == 10 and people["bob"]["labels"] == 8  # the undone one is gone
    assert people["annotator"]["median_seconds"] == pytest.approx(4.5)  # 1..8 s; two labels untimed
    assert people["bob"]["median_seconds"] == pytest.approx(3.0)
    assert people["annotator"]["kappa"] == pytest.approx(pair["kappa"], abs=1e-6)
    assert people["bob"]["labels_per_hour"] > 0
    assert "Cohen's kappa" in annotators["rules"]


def test_curve_has_one_point_per_classifier_version_and_the_stop_signal(project: Project, lead: User) -> None:
    confusion = {"labels": ["lymphocyte", "neutrophil"], "matrix": [[3, 1], [0, 5]]}
    classifier(project, 1, 5, 0.40)
    classifier(project, 2, 10, None)  # no validation cells at the time: a point without a score
    classifier(project, 3, 15, 0.70)
    classifier(project, 4, 20, 0.702)
    classifier(
        project,
        5,
        25,
        0.705,
        per_class_f1={"lymphocyte": 0.8, "neutrophil": 0.61},
        confusion=confusion,
        ece=0.1,
    )
    ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.INDEX, version=1)  # not on the curve
    data = client_for(lead).get(f"/projects/{project.pk}/dashboard/data.json").json()
    curve = data["learning_curve"]
    assert [p["version"] for p in curve] == [1, 2, 3, 4, 5]
    assert [p["labels"] for p in curve] == [5, 10, 15, 20, 25]
    assert curve[1]["macro_f1"] is None and curve[1]["interval"] is None
    assert curve[0]["interval"] == pytest.approx([0.30, 0.45])
    model = data["current_model"]
    assert model["version"] == 5 and model["confusion"] == confusion
    assert model["per_class_f1"] == {"lymphocyte": 0.8, "neutrophil": 0.61} and model["ece"] == 0.1
    stopping = data["stopping"]
    assert stopping["state"] == "stop" and stopping["window"] == [3, 4, 5]
    assert stopping["labels_added"] == 10 and stopping["gain"] == pytest.approx(0.005)


def test_map_sampling_and_settings() -> None:
    import numpy as np

    assert list(sample_rows(5)) == [0, 1, 2, 3, 4]
    rows = sample_rows(10_000)
    assert len(rows) == 3000 and len(set(rows.tolist())) == 3000 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, sample_rows(10_000))  # the same cells every time
    assert umap_settings(72)["n_neighbors"] == 15 and umap_settings(72)["n_epochs"] == 50
    assert umap_settings(5000)["n_epochs"] == 200
    xy, method = project_2d(np.eye(4, 6, dtype=np.float32))
    assert xy.shape == (4, 2) and method == "pca"


@pytest.mark.realdata
@pytest.mark.slow
def test_dashboard_of_a_real_loop_with_two_classifier_versions(
    loop_project: Project, lead: User, annotator: User
) -> None:
    run_loop(loop_project, annotator, batches=2)
    client = client_for(lead)
    data = client.get(f"/projects/{loop_project.pk}/dashboard/data.json").json()
    versions = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    assert len(data["learning_curve"]) == versions.count() == 2
    assert [p["labels"] for p in data["learning_curve"]] == [12, 24]
    assert all(0.0 <= p["macro_f1"] <= 1.0 for p in data["learning_curve"])
    assert all(p["interval"][0] <= p["macro_f1"] + 1e-9 for p in data["learning_curve"])
    # The third batch is open: its 12 cells are asked for, so they are not left.
    assert data["budget"]["used"] == 24 and data["budget"]["in_batches"] == 12
    assert data["budget"]["left"] == loop_project.label_budget - 24 - 12
    assert sum(c["count"] for c in data["class_counts"]) == 24
    model = data["current_model"]
    assert model["version"] == 2 and model["n_validation"] == 9
    assert len(model["confusion"]["matrix"]) == len(model["confusion"]["labels"])
    assert sum(map(sum, model["confusion"]["matrix"])) == 9
    assert data["stopping"]["state"] == "too-early"
    (person,) = data["annotators"]["people"]
    assert person["annotator"] == "annotator" and person["labels"] == 24 and person["median_seconds"] == 2.5

    # The map: drawn by the job the embed job started (after its retrain), then read from the cache.
    index = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.INDEX).first()
    assert index is not None
    (drawn,) = Job.objects.filter(project=loop_project, kind=Job.Kind.MAP)
    assert drawn.status == Job.Status.SUCCEEDED and drawn.result["index_version"] == index.version
    embed = Job.objects.get(project=loop_project, kind=Job.Kind.EMBED)
    assert drawn.params["parent_job"] == embed.pk and drawn.pk > embed.result["next_job"]
    path = map_path(index)
    assert (
        path.is_file()
        and path.parent.name == "maps"
        and path.parent.parent.name == f"project-{loop_project.pk}"
    )
    # Without a map, the request answers "pending" at once and starts one job, however often it asks.
    path.unlink()
    pending = [client.get(f"/projects/{loop_project.pk}/dashboard/map.json").json() for _ in range(2)]
    assert all(p["pending"] and p["points"] is None for p in pending) and not path.exists()
    (queued,) = Job.objects.filter(project=loop_project, kind=Job.Kind.MAP, status=Job.Status.QUEUED)
    assert pending[0]["job"] == pending[1]["job"] == queued.pk
    run_queued_jobs()
    first = client.get(f"/projects/{loop_project.pk}/dashboard/map.json").json()
    assert path.is_file() and "pending" not in first
    assert first["index_version"] == index.version and first["method"] == "umap"
    assert first["n_shown"] == first["n_total"] == 72
    points = first["points"]
    assert {len(v) for v in points.values()} == {72}
    assert first["classifier_version"] == 2
    assert all(p is not None for p in points["prediction"])
    assert all(0.0 <= u <= 1.0 for u in points["uncertainty"])
    assert sum(label is not None for label in points["label"]) == 24
    mtime = path.stat().st_mtime_ns
    second = client.get(f"/projects/{loop_project.pk}/dashboard/map.json").json()
    assert path.stat().st_mtime_ns == mtime and second["points"]["x"] == points["x"]
