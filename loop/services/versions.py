"""Writing model versions: the next number of a kind, taken under the project's row lock."""

from __future__ import annotations

from typing import Any

from django.db.models import Max

from annotation.models import Project
from jobs.models import Job
from loop.models import ModelVersion


def create_version(
    *,
    project: Project,
    kind: str,
    job: Job | None,
    artifacts: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    parent: ModelVersion | None = None,
    label_count: int = 0,
    trained_on: list[int] | None = None,
) -> ModelVersion:
    """The next version of ``kind``. Call inside a transaction; the project row is locked so that two
    jobs never take the same number (on PostgreSQL; SQLite serialises writers anyway)."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    last = ModelVersion.objects.filter(project=project, kind=kind).aggregate(v=Max("version"))["v"] or 0
    return ModelVersion.objects.create(
        project=project,
        kind=kind,
        version=last + 1,
        job=job,
        artifacts=artifacts,
        metrics=metrics or {},
        parent=parent,
        label_count=label_count,
        trained_on=trained_on or [],
    )
