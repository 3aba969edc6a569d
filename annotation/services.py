"""Writes. Every change to projects, memberships, annotations and jobs goes through these functions
(keyword-only, typed, transactional), so views, tasks, commands and tests share one path."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Annotation, Cell, Job, LabelClass, Membership, Project, QueryBatch, QueryItem
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


class LastAdminError(ValueError):
    """Refused: the change would leave a project that has an admin without one."""


def _keep_an_admin(membership: Membership, new_role: str | None) -> None:
    if membership.role != Membership.Role.ADMIN or new_role == Membership.Role.ADMIN:
        return
    # The admins' rows are locked (a list, not COUNT: an aggregate takes no row locks), so two admins
    # demoting each other at once cannot both succeed.
    admins = list(
        Membership.objects.select_for_update()
        .filter(project_id=membership.project_id, role=Membership.Role.ADMIN)
        .values_list("pk", flat=True)
    )
    if len(admins) <= 1:
        raise LastAdminError(f"{membership.user} is the project's only admin: make someone else admin first")


def _check_role(role: str) -> None:
    if role not in Membership.Role.values:
        raise ValueError(f"unknown role {role!r} (use one of {', '.join(Membership.Role.values)})")


@transaction.atomic
def membership_add(*, project: Project, user: User, role: str) -> Membership:
    """A new member; raises ValueError if ``user`` is already one (change the role instead)."""
    _check_role(role)
    if Membership.objects.filter(project=project, user=user).exists():
        raise ValueError(f"{user} is already a member of this project")
    return Membership.objects.create(project=project, user=user, role=role)


@transaction.atomic
def membership_change(*, membership: Membership, role: str) -> Membership:
    _check_role(role)
    _keep_an_admin(membership, role)
    Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.refresh_from_db()
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Take someone out of the project. Their annotations stay: labels are history, not membership."""
    _keep_an_admin(membership, None)
    membership.delete()


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


@transaction.atomic
def annotation_withdraw(*, annotation: Annotation, user: User) -> Annotation | None:
    """Undo: take back ``annotation`` (which must be ``user``'s current one). Nothing is deleted: the row
    is marked withdrawn and the annotation it replaced, if any, becomes current again (and is returned).
    """
    locked = Annotation.objects.select_for_update().get(pk=annotation.pk)
    if locked.annotator_id != user.pk:
        raise PermissionError("only the annotator can take back their own label")
    if locked.superseded_by_id is not None:
        raise ValueError("this label is no longer current; only the latest one can be undone")
    Annotation.objects.filter(pk=locked.pk).update(superseded_by=locked.pk, withdrawn_at=timezone.now())
    previous = Annotation.objects.filter(superseded_by=locked.pk).exclude(pk=locked.pk).first()
    if previous is not None:
        Annotation.objects.filter(pk=previous.pk).update(superseded_by=None)
        previous.refresh_from_db()
    return previous


def review_decide(
    *, cell: Cell, reviewer: User, label: LabelClass, attributes: dict[str, str] | None = None
) -> Annotation:
    """A reviewer's final decision on a cell: an annotation of origin ``review`` (history is kept)."""
    return annotation_create(
        cell=cell,
        annotator=reviewer,
        label=label,
        attributes=attributes,
        origin=Annotation.Origin.REVIEW,
    )


def query_item_skip(*, item: QueryItem, user: User) -> QueryItem:
    """Skip a queried cell: it leaves the batch for everyone and is not queried again."""
    QueryItem.objects.filter(pk=item.pk, skipped_at__isnull=True).update(
        skipped_at=timezone.now(), skipped_by=user
    )
    item.refresh_from_db()
    return item


@transaction.atomic
def batch_submit(*, batch: QueryBatch, user: User) -> Job:
    """The annotator is done with a batch: retrain on every label so far and build the next batch."""
    first_submission = QueryBatch.objects.filter(pk=batch.pk, submitted_at__isnull=True).update(
        submitted_at=timezone.now(), submitted_by=user
    )
    project = batch.project
    job = retrain_request(project=project, created_by=user, reason=f"batch {batch.number} submitted")
    if first_submission and project.finetune_every:
        submitted = QueryBatch.objects.filter(project=project, submitted_at__isnull=False).count()
        if submitted % project.finetune_every == 0:
            finetune_request(project=project, created_by=user)
    return job


def finetune_request(*, project: Project, created_by: User | None = None, **params: Any) -> Job:
    """Fine-tune the whole encoder on the labels (then re-embed, re-index, retrain); one at a time."""
    active = Job.objects.filter(
        project=project, kind=Job.Kind.FINETUNE, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
    ).first()
    if active is not None:
        return active
    return job_create(kind=Job.Kind.FINETUNE, project=project, params=params, created_by=created_by)


@transaction.atomic
def retrain_request(*, project: Project, created_by: User | None = None, reason: str = "") -> Job:
    """Ask for a retrain (which also builds the next query batch). At most one retrain per project is
    in flight: a request while one is queued joins it (it will see the new labels anyway); a request
    while one runs leaves exactly one job waiting, released when the running one ends."""
    Project.objects.select_for_update().filter(pk=project.pk).first()  # one request at a time per project
    retrains = Job.objects.filter(project=project, kind=Job.Kind.RETRAIN)
    pending = retrains.filter(status__in=[Job.Status.QUEUED, Job.Status.WAITING]).first()
    if pending is not None:
        return pending
    params = {"reason": reason}
    if retrains.filter(status=Job.Status.RUNNING).exists():
        return Job.objects.create(
            kind=Job.Kind.RETRAIN,
            project=project,
            status=Job.Status.WAITING,
            params=params,
            created_by=created_by,
            message="waits for the running retrain",
        )
    return job_create(kind=Job.Kind.RETRAIN, project=project, params=params, created_by=created_by)


@transaction.atomic
def job_release_waiting(*, project_id: int, kind: str) -> Job | None:
    """Hand the job waiting behind a finished one to a worker."""
    Project.objects.select_for_update().filter(pk=project_id).first()
    waiting = Job.objects.filter(project_id=project_id, kind=kind, status=Job.Status.WAITING).first()
    if waiting is None:
        return None
    Job.objects.filter(pk=waiting.pk).update(status=Job.Status.QUEUED, message="")
    job_enqueue(job=waiting)
    return waiting


def hold_out_validation(
    *, project: Project, fraction: float = 0.05, per_class_min: int = 2, seed: int = 0
) -> int:
    """Move a stratified sample of the pool's reference-labelled cells to the validation role, where
    every retrain is measured and nothing is queried. Does nothing when the project has validation cells
    already. Returns how many cells were moved."""
    import random

    if Cell.objects.filter(project=project, role=Cell.Role.VALIDATION).exists():
        return 0
    pool = Cell.objects.filter(project=project, role=Cell.Role.POOL, reference_label__isnull=False)
    by_class: dict[int, list[int]] = {}
    for cell_id, label_id in pool.values_list("pk", "reference_label_id").order_by("pk"):
        by_class.setdefault(label_id, []).append(cell_id)
    rng = random.Random(seed)
    chosen: list[int] = []
    for ids in by_class.values():
        if len(ids) <= per_class_min:  # too rare to spare: keep them for labelling
            continue
        n = min(max(per_class_min, round(fraction * len(ids))), len(ids) // 2)
        chosen += rng.sample(ids, n)
    return Cell.objects.filter(pk__in=chosen).update(role=Cell.Role.VALIDATION)


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


# Celery queues. The loop's jobs (import, pretrain, embed, retrain, query, fine-tune) share Celery's
# default queue; exports and the dashboard's map run beside the loop on their own, so a minute of UMAP or
# a large export never holds up the next batch (`make run` starts one worker for each queue).
LOOP_QUEUE = "celery"
SIDE_QUEUE = "side"
SIDE_KINDS = frozenset({Job.Kind.EXPORT, Job.Kind.MAP})


def job_queue(kind: str) -> str:
    return SIDE_QUEUE if kind in SIDE_KINDS else LOOP_QUEUE


def _send(job_id: int, kind: str) -> None:
    from annotation.tasks import run_job  # the task module imports services; import late to avoid a cycle

    run_job.apply_async((job_id,), queue=job_queue(kind))


def job_enqueue(*, job: Job) -> None:
    job_id, kind = job.pk, job.kind
    transaction.on_commit(lambda: _send(job_id, kind))


def _stale_before() -> Any:
    return timezone.now() - timedelta(seconds=settings.LEUKOLOOP_JOB_STALE_SECONDS)


def _stale_running() -> Q:
    return Q(status=Job.Status.RUNNING) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=_stale_before()))


def job_claim(*, job_id: int) -> bool:
    """Mark a queued job running. A conditional UPDATE, so two workers can never both claim one job.

    A ``running`` job whose heartbeat stopped was claimed by a worker that died before finishing (late
    acknowledgement or the stale-job sweep delivered it again): it is claimed anew and its attempt
    counter goes up. A running job with a live heartbeat is left to its worker."""
    now = timezone.now()
    claimed = (
        Job.objects.filter(pk=job_id)
        .filter(Q(status=Job.Status.QUEUED) | _stale_running())
        .update(
            status=Job.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            error="",
        )
    )
    return claimed == 1


def job_heartbeat(*, job_id: int) -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())


def job_requeue_stale() -> list[int]:
    """Send every running job whose worker stopped beating back to the queue; returns their ids."""
    stale = list(Job.objects.filter(_stale_running()).values_list("pk", "kind"))
    for job_id, kind in stale:
        _send(job_id, kind)
    return [job_id for job_id, _ in stale]


def job_progress(*, job_id: int, progress: float, message: str = "") -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        progress=min(max(progress, 0.0), 1.0), message=message[:500], heartbeat_at=timezone.now()
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
