"""Requests for the loop's background work: pretraining, retraining (which builds the next batch) and
fine-tuning, each de-duplicated so that a project never has two of a kind on their way."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import Project
from jobs.models import Job
from jobs.selectors import active_job
from jobs.services import job_create, job_release_waiting


def pretrain_request(
    *, project: Project, created_by: User | None = None, params: dict[str, Any] | None = None
) -> tuple[Job, bool]:
    """Pretrain a new encoder (which re-indexes the cells and retrains on the labels so far), unless a
    pretraining or its indexing is already on its way. Returns the job and whether it is a new one.

    It runs on the ``train`` queue while the loop goes on; a pretraining that waits for the first batch
    (``loop.services.start``) is handed to a worker now, since a lead asked for it."""
    active = active_job(project_id=project.pk, kinds=[Job.Kind.PRETRAIN, Job.Kind.EMBED])
    if active is not None:
        if active.kind == Job.Kind.PRETRAIN and active.status == Job.Status.WAITING:
            pretrain_release_waiting(project=project)
            active.refresh_from_db()
        return active, False
    return job_create(kind=Job.Kind.PRETRAIN, project=project, params=params, created_by=created_by), True


def pretrain_release_waiting(*, project: Project) -> Job | None:
    """Hand the pretraining that waits for the first batch (``loop.services.start``) to a worker; called
    whenever a batch is written. Conditional, so it is released once."""
    return job_release_waiting(project_id=project.pk, kind=Job.Kind.PRETRAIN)


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


def own_batch_request(*, project: Project, user: User) -> Job | None:
    """A member who finds no open batch gets one from a query job: with split work, one of their own (they
    joined, or were resumed, after the last batches were built); on a shared batch, the next one after
    the loop stopped at the label budget and a lead raised it. None when a loop job already on its way
    will build it, when the loop has no index yet (starting it is a lead's action), when the budget is
    spent, or (shared batch) when the last loop job failed: the page shows that failure, and asking
    again on every poll would only repeat it."""
    from loop.models import ModelVersion, QueryBatch
    from loop.selectors import labels_left

    open_batches = QueryBatch.objects.filter(project=project, submitted_at__isnull=True)
    if project.split_work:
        open_batches = open_batches.filter(assignee=user)
    if open_batches.exists():
        return None
    if not ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.INDEX).exists():
        return None
    # A queued or running retrain or query builds a batch for every member without an open one. An
    # embedding (minutes, after a fine-tune) is not waited for: the batch comes from the current index.
    loop_kinds: list[str] = [Job.Kind.QUERY, Job.Kind.RETRAIN]
    if active_job(project_id=project.pk, kinds=loop_kinds) is not None:
        return None
    if labels_left(project) <= 0:
        return None
    if not project.split_work:
        last = Job.objects.filter(project=project, kind__in=loop_kinds).order_by("-created_at", "-pk").first()
        if last is None or last.status != Job.Status.SUCCEEDED:
            return None
    return job_create(kind=Job.Kind.QUERY, project=project, params={"for_users": [user.pk]}, created_by=user)
