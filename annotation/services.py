"""Writes. Every change to projects, memberships, annotations and jobs goes through these functions
(keyword-only, typed, transactional), so views, tasks, commands and tests share one path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Annotation, Cell, Job, LabelClass, Membership, Project
from annotation.taxonomy import BLOOD_SMEAR_CLASSES, WBCATT_ATTRIBUTES, ClassSpec, validate_attribute_schema


@transaction.atomic
def project_create(
    *,
    name: str,
    description: str = "",
    classes: Sequence[ClassSpec] = BLOOD_SMEAR_CLASSES,
    attribute_schema: list[Any] | None = None,
    label_budget: int = 2000,
    is_synthetic_demo: bool = False,
    lead: User | None = None,
) -> Project:
    schema = validate_attribute_schema(
        attribute_schema if attribute_schema is not None else [dict(a) for a in WBCATT_ATTRIBUTES]
    )
    project = Project.objects.create(
        name=name,
        description=description,
        attribute_schema=schema,
        label_budget=label_budget,
        is_synthetic_demo=is_synthetic_demo,
    )
    LabelClass.objects.bulk_create(
        LabelClass(project=project, order=i, **spec) for i, spec in enumerate(classes)
    )
    if lead is not None:
        membership_set(project=project, user=lead, role=Membership.Role.LEAD)
    return project


def project_get_or_create(*, name: str, **kwargs: Any) -> tuple[Project, bool]:
    existing = Project.objects.filter(name=name).first()
    if existing is not None:
        return existing, False
    return project_create(name=name, **kwargs), True


def membership_set(*, project: Project, user: User, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


@transaction.atomic
def annotation_create(
    *,
    cell: Cell,
    annotator: User,
    label: LabelClass | None,
    attributes: dict[str, str] | None = None,
    unsure: bool = False,
    seconds_spent: float | None = None,
    origin: str = Annotation.Origin.MANUAL,
) -> Annotation:
    """Record a label. An earlier current annotation by the same annotator is superseded, never changed."""
    if label is not None and label.project_id != cell.project_id:
        raise ValueError(f"label {label.name!r} belongs to another project")
    if label is None and not unsure:
        raise ValueError("an annotation needs a label unless it is flagged unsure")
    values = cell.project.attribute_values()
    for name, value in (attributes or {}).items():
        if value not in values.get(name, []):
            raise ValueError(f"attribute {name}={value!r} is not allowed in this project")
    previous = (
        Annotation.objects.select_for_update()
        .filter(cell=cell, annotator=annotator, superseded_by__isnull=True)
        .first()
    )
    if previous is not None:
        # One current annotation per (cell, annotator) is a partial unique constraint: point the old row
        # at itself for a moment (it is then no longer current), insert the new one, then link them.
        Annotation.objects.filter(pk=previous.pk).update(superseded_by=previous.pk)
    annotation = Annotation.objects.create(
        cell=cell,
        annotator=annotator,
        label=label,
        attributes=attributes or {},
        unsure=unsure,
        seconds_spent=seconds_spent,
        origin=origin,
    )
    if previous is not None:
        Annotation.objects.filter(pk=previous.pk).update(superseded_by=annotation.pk)
    return annotation


# --- Jobs -----------------------------------------------------------------------------------------


def job_create(
    *,
    kind: str,
    project: Project | None = None,
    params: dict[str, Any] | None = None,
    created_by: User | None = None,
    enqueue: bool = True,
) -> Job:
    """Create a job row and, once the surrounding transaction commits, hand it to a worker."""
    job = Job.objects.create(kind=kind, project=project, params=params or {}, created_by=created_by)
    if enqueue:
        job_enqueue(job=job)
    return job


def job_enqueue(*, job: Job) -> None:
    from annotation.tasks import run_job  # the task module imports services; import late to avoid a cycle

    job_id = job.pk
    transaction.on_commit(lambda: run_job.delay(job_id))


def job_claim(*, job_id: int) -> bool:
    """Mark a queued job running. A conditional UPDATE, so two workers can never both claim one job.

    A job found ``running`` was claimed by a worker that died before finishing (late acknowledgement
    delivered it again): it is claimed anew and its attempt counter goes up."""
    claimed = Job.objects.filter(pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
        status=Job.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1, error=""
    )
    return claimed == 1


def job_progress(*, job_id: int, progress: float, message: str = "") -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        progress=min(max(progress, 0.0), 1.0), message=message[:500]
    )


def job_succeed(*, job_id: int, result: dict[str, Any], message: str = "done") -> None:
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        result=result,
        message=message[:500],
        finished_at=timezone.now(),
    )


def job_fail(*, job_id: int, error: str) -> None:
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.FAILED, error=error, message="failed", finished_at=timezone.now()
    )
