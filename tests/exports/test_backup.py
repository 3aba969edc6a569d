"""``manage.py backup`` then ``manage.py restore`` into another var folder and another (SQLite) database:
users and their tokens, cells, labels and model versions survive, the artefacts are where the versions
say, and every image is served again (leukoloop's own copies from the new media folder, a referenced
collection from where it was moved to). The source is the suite's database (PostgreSQL under CI=true),
the restore a separate process that knows nothing of the first."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from knox.models import AuthToken

from annotation.importing.service import StoreMode, import_cells
from annotation.models import Annotation, Cell, Membership
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from loop.models import ModelVersion, relative_artifact
from tests.conftest import REPO, ManifestWriter

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]

# Runs in the restored installation: restore, then read everything back through the platform itself.
RESTORE_AND_CHECK = """
import hashlib, json, sys
import django
django.setup()
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.contrib.auth.models import User
from knox.auth import TokenAuthentication
from annotation.models import Annotation, Cell
from loop.models import ModelVersion

backup, moved = sys.argv[1], json.loads(sys.argv[2])
call_command("restore", backup, move_root=moved, verbosity=0)
try:
    call_command("restore", backup, verbosity=0)
    again = "restored twice"
except CommandError as exc:
    again = str(exc)
client = Client()
client.force_login(User.objects.get(username="annotator"))
served = {}
for cell in Cell.objects.all():
    response = client.get(f"/cells/{cell.pk}/image")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    served[cell.content_hash] = [response.status_code, hashlib.sha256(body).hexdigest()]
labels = {a.cell.content_hash: a.label.name for a in Annotation.objects.select_related("cell", "label")}
versions = {
    f"{v.kind}-{v.version}": {
        "metrics": v.metrics,
        "file": hashlib.sha256(v.artifact_path("classifier").read_bytes()).hexdigest(),
        "under_new_artifacts": str(v.artifact_path("classifier")).startswith(sys.argv[3]),
    }
    for v in ModelVersion.objects.filter(kind="classifier")
}
print(json.dumps({
    "served": served,
    "labels": labels,
    "versions": versions,
    "token_user": TokenAuthentication().authenticate_credentials(sys.argv[4].encode())[0].username,
    "password_ok": User.objects.get(username="lead").check_password("pw-lead-123"),
    "again": again,
}))
"""


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_backup_restores_into_another_folder_and_database_with_images_served(
    make_manifest: ManifestWriter, lead: User, annotator: User, tmp_path: Path
) -> None:
    project = project_create(name="kept safe", lead=lead)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    copied = import_cells(
        project=project, source=make_manifest(per_class=1, folder="copied"), store=StoreMode.COPY
    )
    collection = make_manifest(per_class=2, folder="collection")
    referenced = import_cells(project=project, source=collection, store=StoreMode.REFERENCE)
    assert copied.imported == 9 and referenced.imported == 9, referenced.as_dict()
    cells = list(Cell.objects.filter(project=project).select_related("reference_label").order_by("pk"))
    for cell in cells[::3]:
        annotation_create(cell=cell, annotator=annotator, label=cell.reference_label)
    model_file = (
        Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{project.pk}" / "job-7" / "classifier.joblib"
    )
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"a fitted classifier")
    ModelVersion.objects.create(
        project=project,
        kind=ModelVersion.Kind.CLASSIFIER,
        version=1,
        artifacts={"classifier": relative_artifact(model_file), "temperature": 1.2},
        metrics={"macro_f1": 0.83},
    )
    _, token = AuthToken.objects.create(user=lead)
    expected_images = {c.content_hash: _hash(c.image_path.read_bytes()) for c in cells}
    expected_labels = {
        a.cell.content_hash: a.label.name
        for a in Annotation.objects.select_related("cell", "label")
        if a.label is not None
    }
    assert len(expected_labels) == 6

    backup = tmp_path / "backup"
    call_command("backup", str(backup), verbosity=0)
    manifest = json.loads((backup / "backup.json").read_text())
    assert manifest["counts"]["annotation.cell"] == 18
    assert manifest["image_roots"] == [{"root": str(collection.parent.resolve()), "cells": 9}]
    with pytest.raises(CommandError, match="not empty"):
        call_command("backup", str(backup), verbosity=0)

    # Elsewhere: the referenced collection moved, a fresh var folder, a fresh SQLite database.
    moved = tmp_path / "moved-collection"
    shutil.copytree(collection.parent, moved, symlinks=True)
    other = tmp_path / "other-var"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LEUKOLOOP_VAR_DIR": str(other),
        "DATABASE_URL": f"sqlite:///{other / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
    }
    for name in ("LEUKOLOOP_MEDIA_ROOT", "LEUKOLOOP_ARTIFACTS_DIR"):
        env.pop(name, None)
    shutil.rmtree(collection.parent)  # nothing may still be read from the old places
    shutil.rmtree(settings.MEDIA_ROOT)
    shutil.rmtree(settings.LEUKOLOOP_ARTIFACTS_DIR)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RESTORE_AND_CHECK,
            str(backup),
            json.dumps([f"{collection.parent.resolve()}={moved}"]),
            str(other / "artifacts"),
            token,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    restored: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])

    assert restored["served"] == {h: [200, digest] for h, digest in expected_images.items()}
    assert restored["labels"] == expected_labels
    assert restored["versions"] == {
        "classifier-1": {
            "metrics": {"macro_f1": 0.83},
            "file": _hash(b"a fitted classifier"),
            "under_new_artifacts": True,
        }
    }
    assert restored["token_user"] == "lead" and restored["password_ok"] is True
    assert "empty" in restored["again"]  # a second restore on top is refused, nothing merged
