"""Pages and API: members see their projects and cells; outsiders get 404; reference labels stay hidden."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.demo import draw_cell
from annotation.importing.service import import_cells
from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(lead: User, annotator: User, tmp_path) -> Project:
    import random

    project = project_create(name="views", lead=lead)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    rng = random.Random(1)
    for kind in ("neutrophil", "blast"):
        (tmp_path / kind).mkdir()
        for i in range(3):
            draw_cell(kind, rng).save(tmp_path / kind / f"{i}.png")
    import_cells(project=project, source=tmp_path)
    return project


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_require_login(project: Project) -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_member_sees_project_and_its_cells(project: Project, annotator: User) -> None:
    client = login(annotator)
    listing = client.get("/")
    assert listing.status_code == 200
    assert b"views" in listing.content
    detail = client.get(f"/projects/{project.pk}/")
    assert detail.status_code == 200
    assert detail.content.count(b'class="cell"') == 6
    cell = project.cells.first()
    assert cell is not None
    image = client.get(f"/cells/{cell.pk}/image")
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content).startswith(b"\x89PNG")  # type: ignore[attr-defined]


def test_outsider_sees_nothing(project: Project, outsider: User) -> None:
    client = login(outsider)
    assert b"views" not in client.get("/").content
    assert client.get(f"/projects/{project.pk}/").status_code == 404
    cell = project.cells.first()
    assert cell is not None
    assert client.get(f"/cells/{cell.pk}/image").status_code == 404
    assert client.get(f"/api/projects/{project.pk}/").status_code == 404
    assert client.get(f"/api/projects/{project.pk}/cells/").status_code == 404
    assert client.get("/api/projects/").json()["count"] == 0


def test_api_lists_projects_and_cells_without_reference_labels(project: Project, annotator: User) -> None:
    client = login(annotator)
    projects = client.get("/api/projects/").json()
    assert [p["name"] for p in projects["results"]] == ["views"]
    assert projects["results"][0]["cell_count"] == 6
    assert len(projects["results"][0]["classes"]) == 9
    cells = client.get(f"/api/projects/{project.pk}/cells/").json()
    assert len(cells["results"]) == 6 and cells["next"] is None
    assert Cell.objects.filter(project=project, reference_label__isnull=False).count() == 6
    for cell in cells["results"]:
        assert "reference_label" not in cell and "reference_attributes" not in cell


def test_api_cell_pages_follow_ids_to_the_last_cell(
    project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from annotation.api.views import CellKeysetPagination

    monkeypatch.setattr(CellKeysetPagination, "page_size", 4)
    client = login(annotator)
    url: str | None = f"/api/projects/{project.pk}/cells/"
    seen: list[int] = []
    pages = 0
    while url:
        page = client.get(url).json()
        seen += [cell["id"] for cell in page["results"]]
        url, pages = page["next"], pages + 1
    assert pages == 2  # 4 + 2
    assert seen == list(Cell.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    assert client.get(f"/api/projects/{project.pk}/cells/?cursor=not-a-cursor").status_code == 404


def test_api_requires_authentication(project: Project) -> None:
    assert Client().get("/api/projects/").status_code in (401, 403)


def test_healthz_reports_the_database() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
