"""The permission matrix of the pages (every non-API URL) and of the export API, which the API matrix in
test_permissions.py does not walk: annotator, reviewer, lead, project admin, superuser, outsider and
anonymous caller, with the status each gets and what must not leak.

Outsiders get 404 for anything of a project, and the 404 is byte for byte the one a project or cell that
does not exist gives, so it says nothing. Anonymous callers are sent to the login page.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver
from PIL import Image

from annotation import urls as page_urls
from annotation.models import Annotation, Cell
from annotation.project_settings import urls as settings_urls
from config import urls as root_urls
from dashboard import urls as dashboard_urls
from evaluation_report import urls as report_urls
from exports import page_urls as export_page_urls
from exports import urls as export_urls
from exports.service import export_path
from jobs.models import Job
from loop import urls as loop_page_urls
from loop.handlers.inference import saliency_cache_file
from loop.models import ModelVersion
from tests.api.conftest import (
    ARTIFACT_PATH,
    CELL_MARKER,
    PROJECT_NAME,
    REFERENCE_MARKER,
    World,
)
from tests.api.sentinels import JOB_ERROR_SUMMARY, TRACEBACK_MARKER, assert_nothing_hidden
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

ROLES = ("annotator", "reviewer", "lead", "admin", "superuser", "outsider")
MEMBERS = ("annotator", "reviewer", "lead", "admin", "superuser")
MISSING_ID = 987654321  # no project, cell or job has it


@dataclass(frozen=True)
class Case:
    name: str  # the URL pattern's name
    method: str
    url: str  # formatted with the world's ids
    expected: dict[str, int]  # by role; "anonymous" too
    body: dict[str, Any] = field(default_factory=dict)
    json_body: bool = False  # the API posts JSON, pages post forms
    location: str = ""  # where a 302 goes (a prefix), for every role that gets one
    login_required: bool = True  # anonymous callers go to /accounts/login/?next=<url>


def members(code: int, outsider: int = 404, anonymous: int = 302, **overrides: int) -> dict[str, int]:
    return {**dict.fromkeys(MEMBERS, code), "outsider": outsider, "anonymous": anonymous, **overrides}


def everyone(code: int, **overrides: int) -> dict[str, int]:
    return {**dict.fromkeys(ROLES, code), "anonymous": code, **overrides}


LEADS_ONLY = {"annotator": 403, "reviewer": 403}
ADMINS_ONLY = {"annotator": 403, "reviewer": 403, "lead": 403}
REVIEWERS_ONLY = {"annotator": 403}

PAGES = [
    Case("project-list", "GET", "/", members(200, outsider=200)),
    Case("project-detail", "GET", "/projects/{project}/", members(200)),
    Case("label", "GET", "/projects/{project}/label/", members(200)),
    Case("review", "GET", "/projects/{project}/review/", members(200, **REVIEWERS_ONLY)),
    # The reviewer's decision, then back to the review page.
    Case(
        "review",
        "POST",
        "/projects/{project}/review/",
        members(302, **REVIEWERS_ONLY),
        {"cell": "{cell2}", "label": "monocyte"},
        location="/projects/{project}/review/",
    ),
    Case("cell-image", "GET", "/cells/{cell1}/image", members(200)),
    Case("cell-saliency", "GET", "/cells/{cell1}/saliency.png", members(200)),
    Case("healthz", "GET", "/healthz", everyone(200), login_required=False),
    # Password reset by e-mail (config/urls.py): open to anyone; a bad link shows a page that says so.
    Case("password_reset", "GET", "/accounts/password-reset/", everyone(200), login_required=False),
    Case(
        "password_reset",
        "POST",
        "/accounts/password-reset/",
        everyone(302),
        {"email": "nobody@example.org"},
        location="/accounts/password-reset/sent/",
        login_required=False,
    ),
    Case("password_reset_done", "GET", "/accounts/password-reset/sent/", everyone(200), login_required=False),
    Case(
        "password_reset_confirm",
        "GET",
        "/accounts/reset/MQ/not-a-token/",
        everyone(200),
        login_required=False,
    ),
    Case("password_reset_complete", "GET", "/accounts/reset/done/", everyone(200), login_required=False),
    Case("dashboard", "GET", "/projects/{project}/dashboard/", members(200, **LEADS_ONLY)),
    Case("dashboard-data", "GET", "/projects/{project}/dashboard/data.json", members(200, **LEADS_ONLY)),
    Case("dashboard-map", "GET", "/projects/{project}/dashboard/map.json", members(200, **LEADS_ONLY)),
    # The per-slide differential shows slide ids: leads and admins only, like every page of provenance.
    Case("differential", "GET", "/projects/{project}/differential/", members(200, **LEADS_ONLY)),
    # This world's classifier has no index (no embeddings to score with): leads get past the access check
    # and find nothing to report on (404). tests/evaluation_report shows the 200 on a real loop.
    Case(
        "evaluation-report",
        "GET",
        "/projects/{project}/models/{classifier}/report/",
        members(404, **LEADS_ONLY),
    ),
    Case(
        "evaluation-report-data",
        "GET",
        "/projects/{project}/models/{classifier}/report.json",
        members(404, **LEADS_ONLY),
    ),
    # Settings and members (annotation/project_settings/), exports page.
    Case("project-settings", "GET", "/projects/{project}/settings/", members(200, **LEADS_ONLY)),
    Case(
        "project-settings",
        "POST",
        "/projects/{project}/settings/",
        members(302, **LEADS_ONLY),
        {
            "label_budget": "777",
            "query_strategy": "margin",
            "query_batch_size": "24",
            "encoder_backbone": "resnet18",
            "ssl_method": "simclr",
            "image_size": "64",
            "input_crop": "cell",
            "pretrain_minutes": "1",
            "classifier_kind": "logreg",
            "finetune_every": "0",
            "finetune_image_size": "128",
            "suggestion_min_confidence": "0.6",
            "overlap_fraction": "0.1",
            "gold_fraction": "0",
        },
        location="/projects/{project}/settings/",
    ),
    # An invitation by e-mail (leads and admins), then back to the settings page.
    Case(
        "member-invite",
        "POST",
        "/projects/{project}/invite/",
        members(302, **LEADS_ONLY),
        {"email": "invitee@example.org", "role": "annotator"},
        location="/projects/{project}/settings/",
    ),
    Case(
        "member-add",
        "POST",
        "/projects/{project}/members/",
        members(302, **ADMINS_ONLY),
        {"username": "newcomer", "role": "annotator"},
        location="/projects/{project}/settings/",
    ),
    Case(
        "member-change",
        "POST",
        "/projects/{project}/members/{annotator_user}/",
        members(302, **ADMINS_ONLY),
        {"action": "role", "role": "reviewer"},
        location="/projects/{project}/settings/",
    ),
    Case("exports", "GET", "/projects/{project}/exports/", members(200, **LEADS_ONLY)),
    # config/urls.py's own pages.
    Case("login", "GET", "/accounts/login/", everyone(200), login_required=False),
    Case(
        "logout",
        "POST",
        "/accounts/logout/",
        everyone(302),
        location="/accounts/login/",
        login_required=False,
    ),
    # The admin site: the superuser only (nobody else here is staff); the others go to its login page.
    Case(
        "admin",
        "GET",
        "/admin/",
        everyone(302, superuser=200),
        location="/admin/login/",
        login_required=False,
    ),
]

# The export API (annotation/exports/urls.py), JSON like the rest of the API: anonymous callers get 401.
EXPORTS = [
    Case(
        "api-export-list",
        "GET",
        "/api/projects/{project}/exports/",
        members(200, anonymous=401, **LEADS_ONLY),
    ),
    Case(
        "api-export-list",
        "POST",
        "/api/projects/{project}/exports/",
        members(202, anonymous=401, **LEADS_ONLY),
        {"format": "csv"},
        json_body=True,
    ),
    Case(
        "api-export-download",
        "GET",
        "/api/exports/{export_job}/download",
        members(200, anonymous=401, **LEADS_ONLY),
    ),
]
# Files a page links to for download (no HTML: outside the CSP and hostile-name walks of PAGES).
DOWNLOADS = [
    Case("differential-csv", "GET", "/projects/{project}/differential.csv", members(200, **LEADS_ONLY)),
]
CASES = PAGES + EXPORTS + DOWNLOADS

# Pages of another project (or its cell), reached by members of this one: 404 (unless ``expected`` says
# otherwise), as for outsiders.
FOREIGN = [
    Case("project-detail", "GET", "/projects/{other}/", {}),
    Case("label", "GET", "/projects/{other}/label/", {}),
    Case("review", "GET", "/projects/{other}/review/", {}),
    Case("review", "POST", "/projects/{other}/review/", {}, {"cell": "{other_cell}", "label": "monocyte"}),
    # This project's review page cannot decide on another project's cell either (the annotator is refused
    # before the cell is looked up).
    Case(
        "review",
        "POST",
        "/projects/{project}/review/",
        {"annotator": 403},
        {"cell": "{other_cell}", "label": "monocyte"},
    ),
    Case("cell-image", "GET", "/cells/{other_cell}/image", {}),
    Case("cell-saliency", "GET", "/cells/{other_cell}/saliency.png", {}),
    Case("dashboard", "GET", "/projects/{other}/dashboard/", {}),
    Case("dashboard-data", "GET", "/projects/{other}/dashboard/data.json", {}),
    Case("dashboard-map", "GET", "/projects/{other}/dashboard/map.json", {}),
    Case("differential", "GET", "/projects/{other}/differential/", {}),
    Case("differential-csv", "GET", "/projects/{other}/differential.csv", {}),
    Case("project-settings", "GET", "/projects/{other}/settings/", {}),
    Case("exports", "GET", "/projects/{other}/exports/", {}),
    Case("member-add", "POST", "/projects/{other}/members/", {}, {"username": "newcomer"}),
    # A user of this project through another project's member URL, and the reverse.
    Case(
        "member-change",
        "POST",
        "/projects/{other}/members/{annotator_user}/",
        {},
        {"action": "remove"},
    ),
    Case("api-export-list", "GET", "/api/projects/{other}/exports/", {}),
    Case("evaluation-report", "GET", "/projects/{other}/models/{other_version}/report/", {}),
    # Another project's model version through this project's URL (leads only get that far).
    Case(
        "evaluation-report",
        "GET",
        "/projects/{project}/models/{other_version}/report/",
        {"annotator": 403, "reviewer": 403},
    ),
    Case(
        "evaluation-report-data",
        "GET",
        "/projects/{project}/models/{other_version}/report.json",
        {"annotator": 403, "reviewer": 403},
    ),
]


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def pages(world: World, settings: Any, tmp_path: Path) -> World:
    """The world, plus what the file-serving pages need for a real 200: the image file of cell 1 (and of
    the other project's cell) and a finished CSV export."""
    settings.LEUKOLOOP_ARTIFACTS_DIR = tmp_path / "artifacts"
    for cell in (world.cells[1], world.other_cell):
        cell.image_path.parent.mkdir(parents=True, exist_ok=True)
        cell.image_path.write_bytes(_png((200, 30, 30)))
        # The view serves only the bytes a cell was imported with: record these as the imported ones.
        Cell.objects.filter(pk=cell.pk).update(content_hash=hashlib.sha256(_png((200, 30, 30))).hexdigest())
    job = Job.objects.create(
        project=world.project, kind=Job.Kind.EXPORT, status=Job.Status.SUCCEEDED, params={"format": "csv"}
    )
    export_path(job).parent.mkdir(parents=True, exist_ok=True)
    export_path(job).write_text("path,label\n")
    # A failed export: the export list shows leads its error, never its traceback.
    Job.objects.create(
        project=world.project,
        kind=Job.Kind.EXPORT,
        status=Job.Status.FAILED,
        params={"format": "csv"},
        error=f'{JOB_ERROR_SUMMARY}\n\nTraceback (most recent call last):\n  File "{TRACEBACK_MARKER}.py"',
    )
    world.export_job = job  # type: ignore[attr-defined]
    return world


def saliency_servable(world: World) -> None:
    """A cached saliency map of cell 1 under an encoder -> index -> classifier chain: the view serves the
    cache without loading a model, so the permission check is what is tested, not Grad-CAM (which
    tests/learning covers with a trained model). Only for the saliency row: elsewhere the classifier stays
    without an index, so the evaluation report has nothing to score."""
    ModelVersion.objects.filter(pk=world.classifier.pk).update(parent=world.index)
    cached = saliency_cache_file(
        project_id=world.project.pk, classifier_version=world.classifier.version, cell_id=world.cells[1].pk
    )
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_png((0, 0, 255)))


def ids(world: World, role: str) -> dict[str, Any]:
    return {
        "project": world.project.pk,
        "other": world.other.pk,
        # The report's URL takes a version number within the project, not a row id.
        "classifier": world.classifier.version,
        "other_version": world.other_version.version,
        "cell1": world.cells[1].pk,
        "cell2": world.cells[2].pk,
        "other_cell": world.other_cell.pk,
        "export_job": world.export_job.pk,  # type: ignore[attr-defined]
        "annotator_user": world.users["annotator"].pk,
        "username": role,
    }


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return values[value[1:-1]]
    return value


def request(world: World, role: str | None, case: Case, *, values: dict[str, Any] | None = None) -> Any:
    values = values or ids(world, role or "anonymous")
    url = case.url.format(**values)
    body = {key: _fill(value, values) for key, value in case.body.items()}
    client = client_for(world.users[role] if role else None)
    if case.method == "GET":
        return client.get(url)
    if case.json_body:
        return client.post(url, json.dumps(body), content_type="application/json")
    return client.post(url, body)


def content(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        data = b"".join(response.streaming_content)
        response.close()
        return data
    return bytes(response.content)


def _text(response: Any, data: bytes) -> str:
    kind = response.get("Content-Type", "")
    if kind.startswith(("image/", "application/octet-stream")):
        return ""  # the image itself
    return data.decode()


def test_every_page_url_is_in_the_matrix() -> None:
    """Every URL pattern of the page modules and of config/urls.py has a row, and config/urls.py includes
    nothing else but the API (walked by test_permissions.py) and the modules covered here."""
    patterns = [
        *page_urls.urlpatterns,
        *loop_page_urls.urlpatterns,
        *export_page_urls.urlpatterns,
        *dashboard_urls.urlpatterns,
        *report_urls.urlpatterns,
        *export_urls.urlpatterns,
        *settings_urls.urlpatterns,
    ]
    names = {p.name for p in patterns if isinstance(p, URLPattern)}
    included: set[str] = set()
    for pattern in root_urls.urlpatterns:
        if isinstance(pattern, URLPattern):
            names.add(pattern.name)
        elif isinstance(pattern, URLResolver) and pattern.namespace == "admin":
            names.add("admin")
        else:
            assert isinstance(pattern, URLResolver)
            included.add(getattr(pattern.urlconf_name, "__name__", str(pattern.urlconf_name)))
    assert included == {
        "annotation.api.urls",  # tests/api/test_permissions.py
        "loop.api.urls",  # tests/api/test_permissions.py
        "dashboard.api_urls",  # tests/api/test_permissions.py
        "exports.urls",
        "exports.page_urls",
        "loop.urls",
        "dashboard.urls",
        "evaluation_report.urls",
        "annotation.project_settings.urls",
        "annotation.urls",
    }
    assert names == {case.name for case in CASES}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method}-{c.name}")
def test_page_permission_matrix(pages: World, role: str, case: Case) -> None:
    world = pages
    if case.name == "cell-saliency":
        saliency_servable(world)
    response = request(world, role, case)
    expected = case.expected[role]
    data = content(response)
    assert response.status_code == expected, (role, case.method, case.url, data[:500])
    if expected == 302:
        assert response["Location"].startswith(case.location.format(**ids(world, role))), response["Location"]
    text = _text(response, data)
    # Never, for anyone: reference attributes of cells, server paths of model files.
    assert REFERENCE_MARKER not in text and ARTIFACT_PATH not in text, (role, case.url)
    # Nor, for each role, any string planted where that role may not read (tests/api/sentinels.py).
    assert_nothing_hidden(role, text, f"{case.method} {case.url}")
    if role == "annotator":
        # Annotators never see reference labels (the word itself appears on no page they may open).
        assert "reference" not in text.lower(), (case.url, text[:500])
    if expected == 200 and case.name in ("cell-image", "cell-saliency"):
        assert response["Content-Type"] == "image/png" and data.startswith(b"\x89PNG")
    if role == "outsider":
        # An outsider learns nothing about the project: not its name, its cells or that it exists.
        assert PROJECT_NAME not in text and CELL_MARKER not in text, (case.url, text[:500])
        for cell in world.cells:
            assert f"/cells/{cell.pk}/" not in text and f"cell {cell.pk}" not in text
        if case.name == "project-list":
            assert f"/projects/{world.project.pk}/" not in text
        if expected == 404 and case.name.startswith("api-"):
            assert json.loads(data)["error"]["detail"].startswith("No such"), data[:300]
        elif expected == 404:
            # The same answer as for a project / cell / job that does not exist.
            missing: dict[str, Any] = dict.fromkeys(ids(world, role), MISSING_ID)
            missing["username"] = role
            gone = request(world, role, case, values=missing)
            assert gone.status_code == 404
            assert content(gone) == data


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method}-{c.name}")
def test_anonymous_callers_are_sent_to_log_in(pages: World, case: Case) -> None:
    if case.name == "cell-saliency":
        saliency_servable(pages)
    response = request(pages, None, case)
    expected = case.expected["anonymous"]
    data = content(response)
    assert response.status_code == expected, (case.url, data[:300])
    text = data.decode()
    assert PROJECT_NAME not in text and CELL_MARKER not in text
    assert_nothing_hidden(None, text, case.url)
    if expected == 302 and case.login_required:
        url = case.url.format(**ids(pages, "anonymous"))
        assert response["Location"] == f"/accounts/login/?next={url}", response["Location"]
    elif expected == 302:
        assert response["Location"].startswith(case.location), response["Location"]


@pytest.mark.parametrize("role", [r for r in MEMBERS if r != "superuser"])  # the superuser is in both
@pytest.mark.parametrize("case", FOREIGN, ids=lambda c: f"{c.method}-{c.url}")
def test_pages_of_another_project_are_not_found(pages: World, role: str, case: Case) -> None:
    response = request(pages, role, case)
    data = content(response)
    assert response.status_code == case.expected.get(role, 404), (role, case.url, data[:300])
    assert b"beta-elsewhere" not in data


def test_refused_review_decisions_change_nothing(pages: World) -> None:
    for role in ("annotator", "outsider", None):
        for case in PAGES + FOREIGN:
            if case.method == "POST" and case.name == "review":
                request(pages, role, case)
    for role in MEMBERS:
        if role != "superuser":
            for case in FOREIGN:
                if case.method == "POST":
                    request(pages, role, case)
    assert not Annotation.objects.filter(origin=Annotation.Origin.REVIEW).exists()
    assert not Annotation.objects.filter(cell=pages.other_cell).exists()
