"""A large import refreshes the query planner's statistics of the tables it filled (ANALYZE): on a
million-cell project without them, PostgreSQL planned each keyset page of the export as a scan of every
cell of the project (0.64 s a page instead of 1 ms; bench/million.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotation.importing import service
from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell
from annotation.services.projects import project_create
from tests.conftest import ManifestWriter

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]


def analyzed(queries: list[dict[str, str]]) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].upper().startswith("ANALYZE")]


def planner_rows(table: str) -> float | None:
    """The row count the planner's statistics hold for ``table`` (None: never analysed)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
            value = float(cursor.fetchone()[0])
            return None if value < 0 else value
        cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if not cursor.fetchone()[0]:
            return None
        cursor.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = %s AND idx IS NULL", [table])
        row = cursor.fetchone()
        if row is None:  # SQLite keeps a table's row count on its indexes' rows
            cursor.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = %s", [table])
            row = cursor.fetchone()
        return None if row is None else float(str(row[0]).split()[0])


def test_an_import_of_many_rows_analyses_the_tables_it_filled(
    make_manifest: ManifestWriter, lead: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = project_create(name="small import", lead=lead)
    with CaptureQueriesContext(connection) as queries:
        report = import_cells(project=small, source=make_manifest(per_class=1), labels=LabelMode.ANNOTATIONS)
    assert report.imported == 9 and analyzed(queries.captured_queries) == []  # under the threshold

    monkeypatch.setattr(service, "ANALYZE_AFTER_ROWS", 10)
    large = project_create(name="large import", lead=lead)
    with CaptureQueriesContext(connection) as queries:
        report = import_cells(
            project=large, source=make_manifest(per_class=2, folder="more"), labels=LabelMode.ANNOTATIONS
        )
    assert report.imported == report.annotations_created == 18
    tables = [Cell._meta.db_table, Annotation._meta.db_table]
    assert analyzed(queries.captured_queries) == [f"ANALYZE {connection.ops.quote_name(t)}" for t in tables]
    # The planner now counts every row of both tables (27 cells and annotations of the two imports).
    assert planner_rows(Cell._meta.db_table) == Cell.objects.count() == 27
    assert planner_rows(Annotation._meta.db_table) == Annotation.objects.count() == 27


def test_a_refused_analyze_loses_no_row(
    make_manifest: ManifestWriter,
    lead: User,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(service, "ANALYZE_AFTER_ROWS", 5)
    monkeypatch.setattr(service, "ANALYZE_STATEMENT", "ANALYZE missing_{table}")  # the database refuses it
    project = project_create(name="refused", lead=lead)
    report = import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.ANNOTATIONS)
    assert report.imported == report.annotations_created == 9
    assert Cell.objects.filter(project=project).count() == 9
    assert Annotation.objects.filter(cell__project=project).count() == 9
    assert "could not refresh the planner's statistics" in caplog.text
    assert Cell.objects.count() == 9  # the connection is still usable after the refusal
