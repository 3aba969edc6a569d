"""The permission matrix: every API endpoint (GET and the main POSTs) for annotator, reviewer, lead, project
admin, superuser, outsider and anonymous caller, with the status code each gets and what must not leak."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver

from annotation.api import urls as api_urls
from annotation.models import Annotation, Comment, LabelClass, Membership, TaxonomyChange
from dashboard import api_urls as dashboard_api_urls
from jobs.models import Job
from loop.api import urls as loop_api_urls
from loop.models import QueryItem
from tests.api.conftest import (
    ARTIFACT_PATH,
    CELL_MARKER,
    PROJECT_NAME,
    REFERENCE_LABEL,
    REFERENCE_MARKER,
    REVIEWER_LABEL,
    World,
)
from tests.api.sentinels import assert_nothing_hidden
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

ROLES = ("annotator", "reviewer", "lead", "admin", "superuser", "outsider")
MEMBERS = ("annotator", "reviewer", "lead", "admin", "superuser")


@dataclass(frozen=True)
class Case:
    name: str  # the URL pattern's name
    method: str
    url: str  # formatted with the world's ids
    expected: dict[str, int]
    body: dict[str, Any] = field(default_factory=dict)


def members(code: int, outsider: int = 404, **overrides: int) -> dict[str, int]:
    return {**dict.fromkeys(MEMBERS, code), "outsider": outsider, **overrides}


LEADS_ONLY = {"annotator": 403, "reviewer": 403}
ADMINS_ONLY = {"annotator": 403, "reviewer": 403, "lead": 403}
REVIEWERS_ONLY = {"annotator": 403}

CASES = [
    Case("api-project-list", "GET", "/api/projects/", members(200, outsider=200)),
    Case("api-project-detail", "GET", "/api/projects/{project}/", members(200)),
    Case(
        "api-project-detail",
        "PATCH",
        "/api/projects/{project}/",
        members(200, **LEADS_ONLY),
        {"label_budget": 777},
    ),
    Case("api-member-list", "GET", "/api/projects/{project}/members/", members(200, **LEADS_ONLY)),
    Case(
        "api-member-list",
        "POST",
        "/api/projects/{project}/members/",
        members(201, **ADMINS_ONLY),
        {"username": "newcomer", "role": "annotator"},
    ),
    Case(
        "api-member-detail",
        "PATCH",
        "/api/projects/{project}/members/{annotator_user}/",
        members(200, **ADMINS_ONLY),
        {"role": "reviewer"},
    ),
    Case(  # pausing an annotator's queue is a lead's call, unlike their role (test_labelling_pause.py)
        "api-member-detail",
        "PATCH",
        "/api/projects/{project}/members/{annotator_user}/",
        members(200, **LEADS_ONLY),
        {"labelling_paused": True},
    ),
    Case(
        "api-member-detail",
        "DELETE",
        "/api/projects/{project}/members/{reviewer_user}/",
        members(204, **ADMINS_ONLY),
    ),
    Case("api-cell-list", "GET", "/api/projects/{project}/cells/", members(200)),
    Case("api-cell-list", "GET", "/api/projects/{project}/cells/?role=pool", members(200)),
    Case("api-job-list", "GET", "/api/projects/{project}/jobs/", members(200)),
    Case("api-job-list", "GET", "/api/projects/{project}/jobs/?status=failed", members(200)),
    Case("api-job-detail", "GET", "/api/jobs/{job}/", members(200)),
    Case("api-job-detail", "GET", "/api/jobs/{failed_job}/", members(200)),
    Case("api-job-detail", "GET", "/api/jobs/{import_job}/", members(200)),
    Case("api-batch-list", "GET", "/api/projects/{project}/batches/", members(200)),
    Case("api-batch-detail", "GET", "/api/projects/{project}/batches/{batch}/", members(200)),
    Case("api-batch-current", "GET", "/api/projects/{project}/batches/current/", members(200)),
    Case("api-model-list", "GET", "/api/projects/{project}/models/", members(200)),
    Case("api-model-detail", "GET", "/api/projects/{project}/models/{classifier}/", members(200)),
    Case("api-loop", "GET", "/api/projects/{project}/loop/", members(200)),
    Case("api-annotate", "GET", "/api/projects/{project}/annotations/", members(200)),
    Case("api-review", "GET", "/api/projects/{project}/review/", members(200, **REVIEWERS_ONLY)),
    Case("api-cell-why", "GET", "/api/cells/{cell1}/why/", members(200)),
    Case("api-cell-why", "GET", "/api/cells/{cell0}/why/", members(200)),
    # The neighbours of cell 2 are cells 0, 1 and 3: cell 1 carries the reviewer's label, cell 0 the
    # annotator's.
    Case("api-cell-similar", "GET", "/api/cells/{cell2}/similar/", members(200)),
    Case(
        "api-loop-start",
        "POST",
        "/api/projects/{project}/loop/start/",
        members(202, **LEADS_ONLY),
        {"minutes": 0},
    ),
    Case(
        "api-loop-finetune",
        "POST",
        "/api/projects/{project}/loop/finetune/",
        members(202, **LEADS_ONLY),
        {"minutes": 1},
    ),
    Case("api-batch-submit", "POST", "/api/projects/{project}/batches/{batch}/submit/", members(202)),
    Case(
        "api-batch-skip",
        "POST",
        "/api/projects/{project}/batches/{batch}/skip/",
        members(200),
        {"cell": "{cell2}"},
    ),
    Case(
        "api-batch-unskip",
        "POST",
        "/api/projects/{project}/batches/{batch}/unskip/",
        members(200),
        {"cell": "{cell2}"},
    ),
    Case(
        "api-annotate",
        "POST",
        "/api/projects/{project}/annotations/",
        members(201),
        {"cells": ["{cell3}"], "label": "neutrophil"},
    ),
    # Only the annotator may take back their own label.
    Case(
        "api-annotation-undo",
        "POST",
        "/api/annotations/{annotator_label}/undo/",
        members(403, annotator=200),
    ),
    Case(
        "api-review",
        "POST",
        "/api/projects/{project}/review/",
        members(201, **REVIEWERS_ONLY),
        {"cell": "{cell1}", "label": "monocyte"},
    ),
    # The taxonomy: members read it; only leads and admins change it or read its history.
    Case("api-class-list", "GET", "/api/projects/{project}/classes/", members(200)),
    Case(
        "api-class-list",
        "POST",
        "/api/projects/{project}/classes/",
        members(201, **LEADS_ONLY),
        {"display_name": "Smudge cell", "colour": "#c49c94"},
    ),
    Case(
        "api-class-detail",
        "PATCH",
        "/api/projects/{project}/classes/neutrophil/",
        members(200, **LEADS_ONLY),
        {"display_name": "Segmented neutrophil"},
    ),
    Case(
        "api-class-merge",
        "POST",
        "/api/projects/{project}/classes/monocyte/merge/",
        members(200, **LEADS_ONLY),
        {"into": "neutrophil"},
    ),
    Case(
        "api-class-retire", "POST", "/api/projects/{project}/classes/ig/retire/", members(200, **LEADS_ONLY)
    ),
    # Restoring a class that is not retired: leads get past the role check to the conflict.
    Case(
        "api-class-restore",
        "POST",
        "/api/projects/{project}/classes/ig/restore/",
        members(409, **LEADS_ONLY),
    ),
    Case(
        "api-taxonomy-presets",
        "POST",
        "/api/projects/{project}/taxonomy/presets/",
        members(200, **LEADS_ONLY),
        {"names": ["artefact", "smudge_cell"]},
    ),
    Case(
        "api-taxonomy-history", "GET", "/api/projects/{project}/taxonomy/history/", members(200, **LEADS_ONLY)
    ),
    # Comments: every member reads and writes them on the project's cells.
    Case("api-cell-comments", "GET", "/api/cells/{cell0}/comments/", members(200)),
    Case(
        "api-cell-comments",
        "POST",
        "/api/cells/{cell0}/comments/",
        members(201),
        {"text": "nucleus looks <b>odd</b>"},
    ),
    Case(
        "api-token",
        "POST",
        "/api/auth/token/",
        {**members(200), "outsider": 200},
        {"username": "{username}", "password": "pw-api-test-123"},
    ),
    # Revokes the token the request carries: a session has none to revoke (tests/api/test_auth.py).
    Case("api-token-logout", "POST", "/api/auth/token/logout/", {**members(401), "outsider": 401}),
    # Revokes every token of the caller, from a session too.
    Case("api-token-logoutall", "POST", "/api/auth/token/logoutall/", {**members(204), "outsider": 204}),
    # Everyone's own labelling-page preferences; the URL names nobody else (test_page_preferences.py).
    Case("api-page-settings", "GET", "/api/me/page-settings/", members(200, outsider=200)),
    Case(
        "api-page-settings",
        "PATCH",
        "/api/me/page-settings/",
        members(200, outsider=200),
        {"tile_size": 200},
    ),
    # The per-slide differential names slides: leads and admins only.
    Case("api-differential", "GET", "/api/projects/{project}/differential/", members(200, **LEADS_ONLY)),
    Case(
        "api-differential",
        "GET",
        "/api/projects/{project}/differential/?view=first100",
        members(200, **LEADS_ONLY),
    ),
]

# Objects of another project, reached through this project's URLs (or directly): 404 for everyone who
# is not a member of that project, members of this one included.
FOREIGN = [
    Case("api-batch-detail", "GET", "/api/projects/{project}/batches/{other_batch}/", {}),
    Case("api-model-detail", "GET", "/api/projects/{project}/models/{other_version}/", {}),
    Case("api-batch-submit", "POST", "/api/projects/{project}/batches/{other_batch}/submit/", {}),
    Case(
        "api-batch-skip",
        "POST",
        "/api/projects/{project}/batches/{other_batch}/skip/",
        {},
        {"cell": "{other_cell}"},
    ),
    Case(
        "api-batch-unskip",
        "POST",
        "/api/projects/{project}/batches/{other_batch}/unskip/",
        {},
        {"cell": "{other_cell}"},
    ),
    Case(
        "api-batch-skip",
        "POST",
        "/api/projects/{project}/batches/{batch}/skip/",
        {},
        {"cell": "{other_cell}"},
    ),
    Case("api-cell-why", "GET", "/api/cells/{other_cell}/why/", {}),
    Case("api-cell-similar", "GET", "/api/cells/{other_cell}/similar/", {}),
    Case("api-project-detail", "GET", "/api/projects/{other}/", {}),
    Case("api-cell-list", "GET", "/api/projects/{other}/cells/", {}),
    Case("api-loop", "GET", "/api/projects/{other}/loop/", {}),
    Case("api-class-list", "GET", "/api/projects/{other}/classes/", {}),
    Case("api-class-retire", "POST", "/api/projects/{other}/classes/ig/retire/", {}),
    Case("api-taxonomy-history", "GET", "/api/projects/{other}/taxonomy/history/", {}),
    Case("api-differential", "GET", "/api/projects/{other}/differential/", {}),
    Case("api-cell-comments", "GET", "/api/cells/{other_cell}/comments/", {}),
    Case("api-cell-comments", "POST", "/api/cells/{other_cell}/comments/", {}, {"text": "hello"}),
]


def ids(world: World, role: str) -> dict[str, Any]:
    return {
        "project": world.project.pk,
        "other": world.other.pk,
        "job": world.job.pk,
        "failed_job": world.failed_job.pk,
        "import_job": world.import_job.pk,
        "batch": world.batch.pk,
        "other_batch": world.other_batch.pk,
        "classifier": world.classifier.pk,
        "other_version": world.other_version.pk,
        "cell0": world.cells[0].pk,
        "cell1": world.cells[1].pk,
        "cell2": world.cells[2].pk,
        "cell3": world.cells[3].pk,
        "other_cell": world.other_cell.pk,
        "annotator_label": world.annotator_label.pk,
        "annotator_user": world.users["annotator"].pk,
        "reviewer_user": world.users["reviewer"].pk,
        "username": role,
    }


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return values[value[1:-1]]
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def request(world: World, role: str | None, case: Case) -> Any:
    values = ids(world, role or "anonymous")
    url = case.url.format(**values)
    body = {key: _fill(value, values) for key, value in case.body.items()}
    client = client_for(world.users[role] if role else None)
    if case.method == "GET":
        return client.get(url)
    send = {"POST": client.post, "PATCH": client.patch, "DELETE": client.delete}[case.method]
    return send(url, json.dumps(body), content_type="application/json")


def assert_error(response: Any, status: int) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == status and body["error"]["detail"], body


def test_every_api_url_is_in_the_matrix() -> None:
    names = set()
    for pattern in [*api_urls.urlpatterns, *loop_api_urls.urlpatterns, *dashboard_api_urls.urlpatterns]:
        assert isinstance(pattern, URLPattern | URLResolver)
        if isinstance(pattern, URLPattern) and pattern.name not in ("api-schema", "api-docs"):
            names.add(pattern.name)
    assert names == {case.name for case in CASES}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method}-{c.name}")
def test_permission_matrix(world: World, role: str, case: Case) -> None:
    response = request(world, role, case)
    expected = case.expected[role]
    assert response.status_code == expected, (role, case.url, response.content[:500])
    text = response.content.decode()
    assert expected == 204 or response["Content-Type"].startswith("application/json")
    # Never, for anyone: reference labels and attributes of cells, server paths of model files. (Leads
    # and admins read the import job's params, which say its labels were imported as "reference".)
    assert "reference_" not in text and REFERENCE_MARKER not in text and ARTIFACT_PATH not in text
    if role in ("annotator", "reviewer", "outsider"):
        assert "reference" not in text
    # Nor, for each role, any string planted where that role may not read (tests/api/sentinels.py).
    assert_nothing_hidden(role, text, f"{case.method} {case.url}")
    if expected >= 400:
        assert_error(response, expected)
    if role == "outsider":
        # An outsider learns nothing about the project: not its name, not its cells.
        assert PROJECT_NAME not in text and CELL_MARKER not in text, text[:500]
        if case.name == "api-project-list":
            assert response.json()["count"] == 0
        elif case.name == "api-page-settings":
            assert set(response.json()) == {"tile_size", "blind_mode"}  # their own, of no project
        elif not case.name.startswith("api-token"):
            assert response.json()["error"]["detail"].startswith("No such")
    if role == "annotator" and case.name not in ("api-project-list", "api-project-detail", "api-class-list"):
        # Annotators never see reference labels nor anybody else's labels (only these three endpoints
        # list the project's classes, where every class name appears).
        assert REFERENCE_LABEL not in text and REVIEWER_LABEL not in text, (case.url, text[:500])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method}-{c.name}")
def test_anonymous_callers_must_authenticate(world: World, case: Case) -> None:
    response = request(world, None, case)
    if case.name == "api-token":  # the one endpoint that needs no credentials: wrong ones are a 400
        assert response.status_code == 400
        assert_error(response, 400)
        return
    assert response.status_code == 401, (case.url, response.content[:300])
    assert response["WWW-Authenticate"] == "Token"
    assert_error(response, 401)
    assert PROJECT_NAME not in response.content.decode()
    assert_nothing_hidden(None, response.content.decode(), case.url)


@pytest.mark.parametrize("role", MEMBERS)
@pytest.mark.parametrize("case", FOREIGN, ids=lambda c: f"{c.method}-{c.url}")
def test_objects_of_another_project_are_not_found(world: World, role: str, case: Case) -> None:
    response = request(world, role, case)
    if role == "superuser" and case.url.startswith(("/api/cells/", "/api/projects/{other}/")):
        assert response.status_code in (200, 201)  # the superuser is in every project
        return
    assert response.status_code == 404, (role, case.url, response.content[:300])
    assert_error(response, 404)
    assert "beta-elsewhere" not in response.content.decode()


def test_the_matrix_posts_changed_only_what_they_were_allowed_to(world: World) -> None:
    """A refused request changes nothing: the annotator's and outsider's refused POSTs leave no trace."""
    memberships = set(Membership.objects.values_list("project", "user", "role"))
    classes = set(LabelClass.objects.values_list("project", "name", "display_name", "key", "retired_at"))
    budget = world.project.label_budget
    for role in ("outsider", "annotator"):
        for case in CASES:
            if case.method != "GET" and case.expected[role] >= 400:
                request(world, role, case)
    assert set(Membership.objects.values_list("project", "user", "role")) == memberships
    world.project.refresh_from_db()
    assert world.project.label_budget == budget
    assert not Job.objects.filter(kind__in=[Job.Kind.PRETRAIN, Job.Kind.FINETUNE]).exists()
    assert not QueryItem.objects.filter(skipped_at__isnull=False).exists()
    assert not Annotation.objects.filter(origin=Annotation.Origin.REVIEW).exists()
    world.batch.refresh_from_db()
    assert world.batch.submitted_at is None
    # Nor the taxonomy, its history or the retrain a change queues.
    assert (
        set(LabelClass.objects.values_list("project", "name", "display_name", "key", "retired_at")) == classes
    )
    assert not TaxonomyChange.objects.exists()
    assert not Job.objects.filter(kind=Job.Kind.RETRAIN, status=Job.Status.QUEUED).exists()
    assert not Comment.objects.filter(author=world.users["outsider"]).exists()
    # The outsider's label and skip were refused too.
    assert not Annotation.objects.filter(annotator=world.users["outsider"]).exists()
