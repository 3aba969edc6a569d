"""A small project built with the services, without images or a trained loop: members of every role, an
outsider, cells with hidden reference labels, annotations, jobs, model versions, an index and a query batch.

Every field that some role must not read carries a sentinel string (tests/api/sentinels.py says which role
may read which): the cells' import paths name their hidden reference label as a folder import would, the
cells carry patient and slide ids, the jobs carry server paths in their params and result and a
traceback in their error. The matrices scan every response body for them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from annotation.models import Annotation, Cell, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from jobs.models import Job
from learning.embeddings import save_embeddings
from learning.index import EmbeddingIndex
from loop.models import ModelVersion, QueryBatch, QueryItem
from tests.api.sentinels import (
    ARTIFACT_PATH,
    CELL_MARKER,
    IMPORT_RESULT_MARKER,
    JOB_ERROR_SUMMARY,
    PARAMS_PATH,
    PATIENT_MARKER,
    REFERENCE_MARKER,
    SLIDE_MARKER,
    TRACEBACK_MARKER,
)

PASSWORD = "pw-api-test-123"
# Strings that must never reach the wrong reader.
PROJECT_NAME = "alpha-confidential"
REFERENCE_LABEL = "basophil"  # every cell's hidden reference label; nobody labels or suggests it
# CELL_MARKER is in every cell's original_name, after the reference label as a folder import writes it
# ("basophil/alpha-confidential/SECRETCELL-0.png"): outsiders, annotators and reviewers never see it.
REVIEWER_LABEL = "lymphocyte"  # only the reviewer gives it: annotators must not see it


@dataclass
class World:
    project: Project
    other: Project
    users: dict[str, User]
    cells: list[Cell]
    other_cell: Cell
    annotator_label: Annotation
    reviewer_label: Annotation
    job: Job
    failed_job: Job
    import_job: Job
    encoder: ModelVersion
    index: ModelVersion
    classifier: ModelVersion
    batch: QueryBatch
    other_batch: QueryBatch
    other_version: ModelVersion


def _cell(project: Project, i: int, reference: str | None) -> Cell:
    return Cell.objects.create(
        project=project,
        image=f"cells/{i:02d}/x.png",
        content_hash=f"{i:064d}",
        width=8,
        height=8,
        original_name=f"{reference or 'unlabelled'}/{project.name}/{CELL_MARKER}-{i}.png",
        patient_id=f"{PATIENT_MARKER}-{i}",
        slide_id=f"{SLIDE_MARKER}-{i}",
        reference_label=project.classes.get(name=reference) if reference else None,
        reference_attributes={"cell_size": REFERENCE_MARKER},
    )


def _index(project: Project, encoder: ModelVersion, cells: list[Cell]) -> ModelVersion:
    """A real FAISS index over made-up embeddings of ``cells``, so that ``similar`` answers neighbours."""
    folder = Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{project.pk}" / "index-fixture"
    ids = np.array([cell.pk for cell in cells], dtype=np.int64)
    emb = np.random.default_rng(0).normal(size=(len(cells), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    save_embeddings(folder / "embeddings", ids.astype(str), emb)
    EmbeddingIndex.build(emb, ids).save(folder / "index")
    return ModelVersion.objects.create(
        project=project,
        kind=ModelVersion.Kind.INDEX,
        version=1,
        parent=encoder,
        artifacts={"embeddings": str(folder / "embeddings"), "index": str(folder / "index")},
    )


def _failed_job(project: Project) -> Job:
    return Job.objects.create(
        project=project,
        kind=Job.Kind.RETRAIN,
        status=Job.Status.FAILED,
        message="failed",
        params={"batch": 1, "artifacts": PARAMS_PATH},
        error=(
            f"{JOB_ERROR_SUMMARY}\n\nTraceback (most recent call last):\n"
            f'  File "{TRACEBACK_MARKER}.py", line 7, in run\n    raise RuntimeError\n'
        ),
    )


def _import_job(project: Project, cells: list[Cell]) -> Job:
    """An import as ``annotation.handlers.run_import`` records it: the source folder in its params, the
    file names (which name the reference label) in its result."""
    return Job.objects.create(
        project=project,
        kind=Job.Kind.IMPORT,
        status=Job.Status.SUCCEEDED,
        message="done",
        params={"source": f"{PARAMS_PATH}/import", "labels": "reference"},
        result={
            "imported": len(cells),
            "duplicates": [{"name": f"{REFERENCE_LABEL}/{IMPORT_RESULT_MARKER}.png", "same_as": cells[0].pk}],
            "errors": [],
        },
    )


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    # Every test here makes six users with passwords; the real hasher takes a second or more for them.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db: None) -> World:
    users = {
        role: User.objects.create_user(role, password=PASSWORD)
        for role in ("annotator", "reviewer", "lead", "admin", "outsider")
    }
    users["superuser"] = User.objects.create_superuser("superuser", password=PASSWORD)
    User.objects.create_user("newcomer", password=PASSWORD)  # in no project: admins may add them
    project = project_create(name=PROJECT_NAME, lead=users["lead"])
    membership_set(project=project, user=users["annotator"], role=Membership.Role.ANNOTATOR)
    membership_set(project=project, user=users["reviewer"], role=Membership.Role.REVIEWER)
    membership_set(project=project, user=users["admin"], role=Membership.Role.ADMIN)
    cells = [_cell(project, i, REFERENCE_LABEL) for i in range(4)]
    neutrophil = project.classes.get(name="neutrophil")
    annotator_label = annotation_create(cell=cells[0], annotator=users["annotator"], label=neutrophil)
    reviewer_label = annotation_create(
        cell=cells[1], annotator=users["reviewer"], label=project.classes.get(name=REVIEWER_LABEL)
    )
    job = Job.objects.create(project=project, kind=Job.Kind.RETRAIN, status=Job.Status.SUCCEEDED)
    encoder = ModelVersion.objects.create(
        project=project, kind=ModelVersion.Kind.ENCODER, version=1, metrics={"loss": 1.5}
    )
    index = _index(project, encoder, cells)
    classifier = ModelVersion.objects.create(
        project=project,
        kind=ModelVersion.Kind.CLASSIFIER,
        version=1,
        job=job,
        artifacts={"classifier": ARTIFACT_PATH, "kind": "logreg"},
        metrics={"macro_f1": 0.5, "per_class_f1": {"neutrophil": 0.5}},
        label_count=1,
        trained_on=[annotator_label.pk],
    )
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="hybrid", strategy="random", classifier=classifier
    )
    for rank, cell in enumerate(cells):
        QueryItem.objects.create(
            batch=batch, cell=cell, rank=rank, score=1.0 - rank / 10, suggestion=neutrophil, confidence=0.4
        )
    # A second project nobody above belongs to (except the superuser), to check cross-project ids.
    other = project_create(name="beta-elsewhere")
    other_cell = _cell(other, 99, None)
    other_batch = QueryBatch.objects.create(
        project=other, number=1, requested_strategy="random", strategy="random"
    )
    QueryItem.objects.create(batch=other_batch, cell=other_cell, rank=0)
    other_version = ModelVersion.objects.create(project=other, kind=ModelVersion.Kind.ENCODER, version=1)
    return World(
        project=project,
        other=other,
        users=users,
        cells=cells,
        other_cell=other_cell,
        annotator_label=annotator_label,
        reviewer_label=reviewer_label,
        job=job,
        failed_job=_failed_job(project),
        import_job=_import_job(project, cells),
        encoder=encoder,
        index=index,
        classifier=classifier,
        batch=batch,
        other_batch=other_batch,
        other_version=other_version,
    )
