"""Moving Job to `jobs` and ModelVersion, QueryBatch, QueryItem to `loop` keeps every row.

A database is built as the commit before the move left it (migrations up to annotation 0004), filled
through that state's historical models with real cells and their real labels, then migrated forward. Every
row of every table of the annotation app's era must read back identical, through raw SQL and through the
moved models, and the content types must follow the models (admin log entries and permissions point at
them). Runs on whatever database the suite uses: SQLite here, PostgreSQL under CI=true."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from PIL import Image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.realdata, pytest.mark.migration]

BEFORE_MOVE = [("annotation", "0004_project_settings_validators")]
# The move alone: later migrations change rows on purpose (annotation 0006 makes image paths relative).
AFTER_MOVE = [("annotation", "0005_move_job_and_loop_models_to_their_apps"), ("loop", "0001_initial")]
MOVED_TABLES = ("annotation_job", "annotation_modelversion", "annotation_querybatch", "annotation_queryitem")
KEPT_TABLES = ("annotation_project", "annotation_labelclass", "annotation_cell", "annotation_annotation")


def _migrate(targets: list[tuple[str, str]]) -> Any:
    """Migrate to ``targets`` and return that state's models, every other app at its latest."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    loader = MigrationExecutor(connection).loader
    apps = {app for app, _ in targets}
    others = [node for node in loader.graph.leaf_nodes() if node[0] not in apps | {"jobs", "loop"}]
    return loader.project_state([*others, *targets]).apps


def _columns(table: str) -> list[str]:
    with connection.cursor() as cursor:
        return [column.name for column in connection.introspection.get_table_description(cursor, table)]


def _rows(table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """The rows, in the columns the table had before the move (later migrations add columns)."""
    names = ", ".join(connection.ops.quote_name(column) for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM {connection.ops.quote_name(table)} ORDER BY id")
        return [tuple(row) for row in cursor.fetchall()]


def _fill_with_real_cells(apps: Any, data_dir: Path, manifest_rows: list[dict[str, str]]) -> None:
    """A project as the old code wrote it: real cells with real labels, jobs, versions, a batch."""
    user = apps.get_model("auth", "User").objects.create(username="hematologist")
    project = apps.get_model("annotation", "Project").objects.create(name="before the move")
    label_class = apps.get_model("annotation", "LabelClass")
    names = sorted({row["label"] for row in manifest_rows})
    classes = {
        name: label_class.objects.create(
            project=project, name=name, display_name=name, key=str(i + 1), order=i
        )
        for i, name in enumerate(names)
    }
    cell_model = apps.get_model("annotation", "Cell")
    annotation_model = apps.get_model("annotation", "Annotation")
    chosen: dict[str, dict[str, str]] = {}
    for row in manifest_rows:
        chosen.setdefault(row["label"], row)
    cells = []
    for row in chosen.values():
        data = (data_dir / row["path"]).read_bytes()
        width, height = Image.open(io.BytesIO(data)).size
        cell = cell_model.objects.create(
            project=project,
            image=str(data_dir / row["path"]),
            content_hash=hashlib.sha256(data).hexdigest(),
            width=width,
            height=height,
            original_name=row["path"],
            source=row["source"],
            reference_label=classes[row["label"]],
        )
        annotation_model.objects.create(
            cell=cell, annotator=user, label=classes[row["label"]], seconds_spent=2.5
        )
        cells.append(cell)

    job_model = apps.get_model("annotation", "Job")
    version_model = apps.get_model("annotation", "ModelVersion")
    pretrain = job_model.objects.create(
        project=project, kind="pretrain", status="succeeded", params={"minutes": 1}, created_by=user
    )
    retrain = job_model.objects.create(
        project=project, kind="retrain", status="succeeded", result={"macro_f1": 0.5}, attempts=2
    )
    job_model.objects.create(project=project, kind="retrain", status="waiting", message="waits")
    encoder = version_model.objects.create(
        project=project, kind="encoder", version=1, job=pretrain, artifacts={"encoder": "x/encoder.pt"}
    )
    index = version_model.objects.create(project=project, kind="index", version=1, parent=encoder)
    classifier = version_model.objects.create(
        project=project,
        kind="classifier",
        version=1,
        job=retrain,
        parent=index,
        metrics={"macro_f1": 0.5},
        label_count=len(cells),
        trained_on=list(annotation_model.objects.values_list("pk", flat=True)),
    )
    batch = apps.get_model("annotation", "QueryBatch").objects.create(
        project=project,
        number=1,
        requested_strategy="hybrid",
        strategy="typiclust",
        classifier=classifier,
        index=index,
        job=retrain,
        submitted_at=timezone.now(),
        submitted_by=user,
    )
    item_model = apps.get_model("annotation", "QueryItem")
    for rank, cell in enumerate(cells):
        item_model.objects.create(
            batch=batch,
            cell=cell,
            rank=rank,
            score=0.1 * rank,
            suggestion=cell.reference_label,
            confidence=0.9,
            skipped_at=timezone.now() if rank == 0 else None,
            skipped_by=user if rank == 0 else None,
        )


def test_a_database_from_before_the_move_migrates_and_keeps_every_row(
    data_dir: Path, manifest_rows: list[dict[str, str]]
) -> None:
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old_apps = _migrate(BEFORE_MOVE)
    try:
        _fill_with_real_cells(old_apps, data_dir, manifest_rows)
        content_types = old_apps.get_model("contenttypes", "ContentType")
        for model in ("job", "modelversion", "querybatch", "queryitem"):
            content_types.objects.get_or_create(app_label="annotation", model=model)
        columns = {table: _columns(table) for table in (*MOVED_TABLES, *KEPT_TABLES)}
        before = {table: _rows(table, columns[table]) for table in columns}
        old_type_ids = dict(content_types.objects.filter(app_label="annotation").values_list("model", "pk"))
        _migrate(AFTER_MOVE)
        after = {table: _rows(table, columns[table]) for table in before}
    finally:
        _migrate(latest)

    assert after == before
    assert all(before[table] for table in before), "every table had rows to carry"

    from django.contrib.contenttypes.models import ContentType

    from annotation.models import Cell
    from jobs.models import Job
    from loop.models import ModelVersion, QueryBatch, QueryItem

    assert Job.objects.count() == len(before["annotation_job"]) == 3
    classifier = ModelVersion.objects.get(kind=ModelVersion.Kind.CLASSIFIER)
    assert classifier.parent is not None and classifier.parent.parent is not None
    assert classifier.job is not None and classifier.job.kind == Job.Kind.RETRAIN
    batch = QueryBatch.objects.select_related("classifier", "index", "job").get()
    assert (batch.classifier, batch.job) == (classifier, classifier.job)
    items = QueryItem.objects.filter(batch=batch).select_related("cell", "suggestion")
    assert len(items) == Cell.objects.count() == len(before["annotation_cell"])
    assert all(item.suggestion == item.cell.reference_label for item in items)
    assert Cell.objects.filter(query_items__isnull=False).distinct().count() == len(items)
    # The content types moved with their models: same ids, new app.
    # (Models the apps gained later, such as loop's CellMeasurement, have new types of their own.)
    moved = {
        ct.model: ct.pk
        for ct in ContentType.objects.filter(app_label__in=["jobs", "loop"], model__in=list(old_type_ids))
    }
    assert moved == {model: old_type_ids[model] for model in moved}
    assert set(moved) == {"job", "modelversion", "querybatch", "queryitem"}
    assert not ContentType.objects.filter(app_label="annotation", model__in=list(moved)).exists()
