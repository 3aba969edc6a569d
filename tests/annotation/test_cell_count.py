"""A project's cell count is kept, not counted per view (a million rows took 0.35 s of every project list
and detail; bench/million.py): the import's bulk insert, its one-by-one fallback and a cell saved new each
add what they added, a re-import adds nothing, and the pages read the kept count without counting cells."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from annotation.importing import service
from annotation.importing.service import LabelMode, import_cells
from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from tests.conftest import ManifestWriter, client_for

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]


def kept(project: Project) -> int:
    project.refresh_from_db(fields=["cell_count"])
    return project.cell_count


def cell_counts(queries: list[dict[str, str]]) -> list[str]:
    """The statements that counted the cell table."""
    table = connection.ops.quote_name(Cell._meta.db_table)
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and f"FROM {table}" in q["sql"]]


def test_the_import_and_a_saved_cell_keep_the_count(
    make_manifest: ManifestWriter, lead: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_create(name="counted", lead=lead)
    other = project_create(name="other", lead=lead)
    manifest = make_manifest(per_class=2)
    assert import_cells(project=project, source=manifest).imported == 18
    assert kept(project) == Cell.objects.filter(project=project).count() == 18
    assert import_cells(project=project, source=manifest).imported == 0  # already there: nothing added
    assert kept(project) == 18 and kept(other) == 0

    # The bulk insert clashes (another import landed some of the cells meanwhile): one by one, each counted.
    real_insert = service._insert_cells

    def clash(*args: object, **kwargs: object) -> list[int]:
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(service, "_insert_cells", clash)
    report = import_cells(
        project=other, source=make_manifest(per_class=1, folder="more"), labels=LabelMode.NONE
    )
    monkeypatch.setattr(service, "_insert_cells", real_insert)
    assert report.imported == 9 and kept(other) == Cell.objects.filter(project=other).count() == 9

    Cell.objects.create(project=project, image="x.png", content_hash="f" * 64, width=8, height=8)
    cell = Cell.objects.filter(project=project).first()
    assert cell is not None
    cell.role = Cell.Role.VALIDATION
    cell.save()  # a change to an existing cell adds nothing
    assert kept(project) == Cell.objects.filter(project=project).count() == 19


def test_the_project_pages_read_the_kept_count(
    make_manifest: ManifestWriter, lead: User, annotator: User
) -> None:
    project = project_create(name="pages", lead=lead)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    import_cells(project=project, source=make_manifest(per_class=1))
    client = client_for(annotator)
    with CaptureQueriesContext(connection) as queries:
        listed = client.get("/api/projects/").json()["results"]
        detail = client.get(f"/api/projects/{project.pk}/").json()
        html = client.get("/").content.decode()
        page = client.get(f"/projects/{project.pk}/").content.decode()
    assert [p["cell_count"] for p in listed] == [9] and detail["cell_count"] == 9
    assert "<td>9</td>" in html and "9 cells" in page
    assert cell_counts(queries.captured_queries) == []  # no view counted the cells
    # One role's cells are counted: the kept count is the project's.
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"/projects/{project.pk}/?role=validation").content.decode()
    validation = Cell.objects.filter(project=project, role=Cell.Role.VALIDATION).count()
    assert f"{validation} cells (validation)" in page and len(cell_counts(queries.captured_queries)) == 1
