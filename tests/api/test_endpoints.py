"""What the API's read endpoints return (annotations with filters, batches with provenance, model versions),
token authentication, and the one JSON shape of every error."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from annotation.services.annotations import annotation_create
from learning.shift import ABSTAIN_RATIO
from loop.models import QueryItem
from tests.api.conftest import ARTIFACT_PATH, PASSWORD, REVIEWER_LABEL, World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def get(client: Client, url: str, status: int = 200) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.content[:500]
    return response.json()


def test_annotators_list_only_their_own_annotations_and_history(world: World) -> None:
    annotator = world.users["annotator"]
    monocyte = world.project.classes.get(name="monocyte")
    annotation_create(cell=world.cells[0], annotator=annotator, label=monocyte)  # supersedes
    url = f"/api/projects/{world.project.pk}/annotations/"
    mine = get(client_for(annotator), url)
    assert mine["count"] == 2
    assert [(a["label"], a["current"]) for a in mine["results"]] == [
        ("neutrophil", False),
        ("monocyte", True),
    ]
    assert {a["annotator"] for a in mine["results"]} == {"annotator"}
    # Asking for someone else's gives nothing.
    assert get(client_for(annotator), url + "?annotator=reviewer")["count"] == 0
    # Reviewers, leads and admins see everyone's.
    everyone = get(client_for(world.users["lead"]), url)
    assert {a["annotator"] for a in everyone["results"]} == {"annotator", "reviewer"}
    assert everyone["count"] == 3


def test_annotation_filters(world: World) -> None:
    monocyte = world.project.classes.get(name="monocyte")
    annotation_create(cell=world.cells[0], annotator=world.users["annotator"], label=monocyte)
    client = client_for(world.users["reviewer"])
    url = f"/api/projects/{world.project.pk}/annotations/"
    assert get(client, url + "?current=true")["count"] == 2
    assert get(client, f"{url}?cell={world.cells[0].pk}")["count"] == 2
    assert get(client, f"{url}?cell={world.cells[0].pk}&current=1")["results"][0]["label"] == "monocyte"
    assert [a["annotator"] for a in get(client, f"{url}?label={REVIEWER_LABEL}")["results"]] == ["reviewer"]
    assert get(client, url + "?annotator=annotator")["count"] == 2
    assert get(client, url + "?origin=review")["count"] == 0
    bad = get(client, url + "?label=not-a-class", status=400)
    assert "not a class" in bad["error"]["detail"] and "label" in bad["error"]["fields"]
    bad = get(client, url + "?cell=abc", status=400)
    assert bad["error"]["fields"] == {"cell": ["must be an integer, not 'abc'"]}
    assert get(client, url + "?current=maybe", status=400)["error"]["code"] == "invalid"


def test_batches_list_and_detail_with_provenance(world: World) -> None:
    client = client_for(world.users["annotator"])
    batches = get(client, f"/api/projects/{world.project.pk}/batches/")
    assert batches["count"] == 1
    summary = batches["results"][0]
    assert summary["number"] == 1 and summary["item_count"] == 4 and summary["classifier_version"] == 1
    assert summary["strategy"] == "random" and summary["requested_strategy"] == "hybrid"
    assert summary["index_version"] is None and summary["submitted"] is False
    assert get(client, f"/api/projects/{world.project.pk}/batches/?submitted=true")["count"] == 0
    detail = get(client, f"/api/projects/{world.project.pk}/batches/{world.batch.pk}/")
    assert [i["cell"] for i in detail["items"]] == [c.pk for c in world.cells]
    assert [i["rank"] for i in detail["items"]] == [0, 1, 2, 3]
    first = detail["items"][0]
    # The fixture's suggestions are 40% confident, below the default threshold of 60%: withheld.
    assert first["suggestion"] is None and first["suggestion_withheld"] == "low_confidence"
    assert first["score"] == pytest.approx(1.0)
    # "mine" is the caller's own current label only.
    assert first["mine"]["label"] == "neutrophil" and detail["items"][1]["mine"] is None


def test_model_versions_with_metrics_but_no_server_paths(world: World) -> None:
    client = client_for(world.users["annotator"])
    versions = get(client, f"/api/projects/{world.project.pk}/models/")
    kinds = {(v["kind"], v["version"]) for v in versions["results"]}
    assert kinds == {("encoder", 1), ("index", 1), ("classifier", 1)}
    classifiers = get(client, f"/api/projects/{world.project.pk}/models/?kind=classifier")["results"]
    assert [v["metrics"]["macro_f1"] for v in classifiers] == [0.5]
    assert classifiers[0]["label_count"] == 1 and classifiers[0]["artifact_names"] == ["classifier", "kind"]
    detail = get(client, f"/api/projects/{world.project.pk}/models/{world.classifier.pk}/")
    assert detail["trained_on"] == [world.annotator_label.pk] and detail["job"] == world.job.pk
    assert ARTIFACT_PATH not in str(detail)
    bad = get(client, f"/api/projects/{world.project.pk}/models/?kind=nonsense", status=400)
    assert "kind" in bad["error"]["fields"]


def test_why_shows_annotators_only_their_own_history(world: World) -> None:
    url = f"/api/cells/{world.cells[1].pk}/why/"
    assert get(client_for(world.users["annotator"]), url)["history"] == []
    history = get(client_for(world.users["reviewer"]), url)["history"]
    assert [h["label"] for h in history] == [REVIEWER_LABEL]
    assert get(client_for(world.users["annotator"]), url)["queried"][0]["batch"] == 1


def test_token_authentication(world: World) -> None:
    anonymous = Client()
    response = anonymous.post("/api/auth/token/", {"username": "lead", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    projects = anonymous.get("/api/projects/", HTTP_AUTHORIZATION=f"Token {token}")
    assert projects.status_code == 200 and projects.json()["count"] == 1
    # A new token for each log-in (tests/api/test_auth.py: expiry, digests, revocation).
    again = anonymous.post(
        "/api/auth/token/", {"username": "lead", "password": PASSWORD}, content_type="application/json"
    )
    assert again.json()["token"] != token
    wrong = anonymous.post("/api/auth/token/", {"username": "lead", "password": "nope"})
    assert wrong.status_code == 400
    assert "Unable to log in" in wrong.json()["error"]["detail"]
    bad = anonymous.get("/api/projects/", HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.status_code == 401 and bad.json()["error"]["detail"] == "Invalid token."
    none = anonymous.get("/api/projects/")
    assert none.status_code == 401 and none.json()["error"]["code"] == "not_authenticated"


def test_errors_have_one_shape(world: World) -> None:
    project = world.project.pk
    lead = client_for(world.users["lead"])
    annotator = client_for(world.users["annotator"])
    # 405: a method the endpoint does not have.
    wrong_method = lead.get(f"/api/projects/{project}/loop/start/")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {
        "error": {"status": 405, "code": "method_not_allowed", "detail": 'Method "GET" not allowed.'}
    }
    # 403: names the roles needed.
    forbidden = annotator.post(f"/api/projects/{project}/loop/start/", {}, content_type="application/json")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["detail"] == "this needs one of the roles lead, admin; you are annotator"
    # 404: outsiders and missing objects alike.
    missing = lead.get(f"/api/projects/{project}/batches/999999/")
    assert missing.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "detail": "No such batch in this project",
    }
    # 400 with fields: a request body that does not validate.
    invalid = annotator.post(
        f"/api/projects/{project}/annotations/",
        {"cells": [], "unsure": "perhaps"},
        content_type="application/json",
    )
    assert invalid.status_code == 400
    error = invalid.json()["error"]
    assert set(error["fields"]) == {"cells", "unsure"} and error["code"] == "invalid"
    assert error["detail"].startswith("cells: ")
    # 400 from a service's refusal keeps its message in detail, without a "detail" field.
    refused = annotator.post(
        f"/api/projects/{project}/annotations/",
        {"cells": [world.cells[2].pk], "label": "neutrophil", "attributes": {"cell_size": "huge"}},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert "not allowed in this project" in refused.json()["error"]["detail"]
    assert "fields" not in refused.json()["error"]
    # 409: undoing a label that is no longer current.
    undo = f"/api/annotations/{world.annotator_label.pk}/undo/"
    assert annotator.post(undo).status_code == 200
    conflict = annotator.post(undo)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"
    assert "no longer current" in conflict.json()["error"]["detail"]


def test_unknown_api_urls_answer_in_the_error_shape(client: Any) -> None:
    response = client.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["detail"] == "no API endpoint at /api/no-such-thing/"
    assert "text/html" in client.get("/no-such-page/")["Content-Type"]


def test_the_model_abstains_on_a_cell_unlike_every_labelled_one(world: World) -> None:
    """A confident suggestion for a cell far from every labelled cell is withheld ("unlike_labelled"),
    on the batch-detail API and on the labelling page's state alike; near the labels it is sent."""
    world.project.suggestion_min_confidence = 0.0
    world.project.save(update_fields=["suggestion_min_confidence"])
    items = list(world.batch.items.order_by("rank"))
    items[0].labelled_distance_ratio = ABSTAIN_RATIO + 0.5
    items[1].labelled_distance_ratio = ABSTAIN_RATIO - 0.5
    QueryItem.objects.bulk_update(items[:2], ["labelled_distance_ratio"])
    client = client_for(world.users["annotator"])
    detail = get(client, f"/api/projects/{world.project.pk}/batches/{world.batch.pk}/")["items"]
    current = get(client, f"/api/projects/{world.project.pk}/batches/current/")["batch"]["items"]
    for listed in (detail, current):
        far, near = listed[0], listed[1]
        assert far["suggestion"] is None and far["confidence"] is None
        assert far["suggestion_withheld"] == "unlike_labelled"
        assert far["labelled_distance_ratio"] == pytest.approx(ABSTAIN_RATIO + 0.5)
        assert near["suggestion"] is not None and near["suggestion_withheld"] is None
    # A blind-mode user is told "blind", whatever the distance.
    blind = client.patch("/api/me/page-settings/", {"blind_mode": True}, content_type="application/json")
    assert blind.status_code == 200
    far = get(client, f"/api/projects/{world.project.pk}/batches/current/")["batch"]["items"][0]
    assert far["suggestion_withheld"] == "blind"
