"""Rows from before relative paths are converted in place: a cell's absolute image path becomes a path
relative to its root (the media folder for leukoloop's own copies; the folder its project's referenced
files share otherwise, links resolved), and a model version's artefact paths become relative to the
artefacts folder; what lies elsewhere is kept as it was. Migrating back restores absolute paths."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.realdata, pytest.mark.migration]

BEFORE = [("annotation", "0005_move_job_and_loop_models_to_their_apps"), ("loop", "0001_initial")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    loader = MigrationExecutor(connection).loader
    return [node for node in loader.graph.leaf_nodes() if node[0] in ("annotation", "loop")]


def test_absolute_cell_and_artefact_paths_become_relative_to_their_roots(
    data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    media = Path(settings.MEDIA_ROOT)
    artifacts = Path(settings.LEUKOLOOP_ARTIFACTS_DIR)
    collection = tmp_path / "collection"
    sources = [data_dir / row["path"] for row in manifest_rows[:3]]
    (collection / "a").mkdir(parents=True)
    (collection / "b").mkdir()
    referenced = [collection / "a" / sources[0].name, collection / "b" / sources[1].name]
    for source, target in zip(sources, referenced, strict=False):
        shutil.copyfile(source, target)
    os.symlink(referenced[1], collection / "a" / "alias.jpg")  # a link the old importer kept as it was
    copied = media / "cells" / "ab" / f"{'ab' * 32}.jpg"
    copied.parent.mkdir(parents=True)
    shutil.copyfile(sources[2], copied)
    classifier = artifacts / "project-1" / "job-3" / "classifier.joblib"
    classifier.parent.mkdir(parents=True)
    classifier.write_bytes(b"model")

    apps = _migrate(BEFORE)
    project = apps.get_model("annotation", "Project").objects.create(name="old paths")
    cell_model = apps.get_model("annotation", "Cell")
    old_images = {
        "a": str(referenced[0]),
        "alias": str(collection / "a" / "alias.jpg"),
        "copied": str(copied),
        "missing": str(collection / "b" / "gone.jpg"),
    }
    for name, image in old_images.items():
        cell_model.objects.create(
            project=project,
            image=image,
            content_hash=hashlib.sha256(name.encode()).hexdigest(),
            width=1,
            height=1,
            original_name=name,
        )
    version_model = apps.get_model("loop", "ModelVersion")
    version_model.objects.create(
        project_id=project.pk,
        kind="classifier",
        version=1,
        artifacts={"classifier": str(classifier), "temperature": 1.5, "kind": "logreg"},
    )
    version_model.objects.create(
        project_id=project.pk,
        kind="encoder",
        version=1,
        artifacts={"checkpoint": "/srv/elsewhere/encoder.pt"},
    )

    try:
        apps = _migrate(_latest())
        cells = {c.original_name: c for c in apps.get_model("annotation", "Cell").objects.all()}
        root = str(collection.resolve())
        assert (cells["a"].image, cells["a"].image_root) == (f"a/{sources[0].name}", root)
        assert (cells["alias"].image, cells["alias"].image_root) == (f"b/{sources[1].name}", root)
        assert (cells["copied"].image, cells["copied"].image_root) == (f"cells/ab/{'ab' * 32}.jpg", "")
        assert (cells["missing"].image, cells["missing"].image_root) == ("b/gone.jpg", root)
        versions = {v.kind: v.artifacts for v in apps.get_model("loop", "ModelVersion").objects.all()}
        assert versions["classifier"] == {
            "classifier": "project-1/job-3/classifier.joblib",
            "temperature": 1.5,
            "kind": "logreg",
        }
        assert versions["encoder"] == {"checkpoint": "/srv/elsewhere/encoder.pt"}  # not ours: kept

        from annotation.models import Cell
        from loop.models import ModelVersion

        assert Cell.objects.get(original_name="a").image_path == referenced[0].resolve()
        assert Cell.objects.get(original_name="copied").image_path == copied
        assert ModelVersion.objects.get(kind="classifier").artifact_path("classifier") == classifier

        apps = _migrate(BEFORE)
        back = {c.original_name: c.image for c in apps.get_model("annotation", "Cell").objects.all()}
        assert back["a"] == str(referenced[0].resolve())
        assert back["copied"] == f"cells/ab/{'ab' * 32}.jpg"  # the old code read this under MEDIA_ROOT
        [old] = apps.get_model("loop", "ModelVersion").objects.filter(kind="classifier")
        assert old.artifacts["classifier"] == str(classifier)
    finally:
        _migrate(_latest())
