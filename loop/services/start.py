"""Starting a project's loop without waiting for pretraining.

The first batch comes from the encoder's initial weights (ImageNet, shipped inside the wheel): that
encoder version is written here at once (it is a description, nothing is trained), and the cells are
embedded and indexed (a large project: a sample of them first, every cell right after), then a
cold-start batch is chosen. Label-free pretraining waits (``waiting``) until
that first batch exists, so it never slows it down, then runs on the ``train`` queue while the
annotators label; its new encoder is indexed there too, and the next batch comes from the new index
(``loop.handlers.kinds``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import Cell, Project
from jobs.models import Job
from jobs.selectors import active_job
from jobs.services import job_create
from loop.models import ModelVersion
from loop.selectors import latest_version
from loop.services.requests import pretrain_request
from loop.services.versions import create_version

WAITS_FOR_FIRST_BATCH = "starts when the first batch is ready"
# A project with more pool cells than twice this starts on an index of this many random pool cells (and
# every validation cell), so its first batch does not wait for every cell's embedding (16k cells take
# over two minutes on 2 CPU cores); the index of every cell follows at once on the train queue.
START_POOL_SAMPLE = 1500


def initial_backbone_kwargs(project: Project) -> dict[str, Any]:
    return {"pretrained": True} if project.encoder_pretrained else {}


def initial_encoder_artifacts(project: Project) -> dict[str, Any]:
    """An encoder version that is the backbone's initial weights (ImageNet, or random without them)."""
    return {
        "backbone": project.encoder_backbone,
        "backbone_kwargs": initial_backbone_kwargs(project),
        "image_size": project.image_size,
        "crop": project.input_crop,
        "method": "none",
    }


@transaction.atomic
def loop_start(
    *, project: Project, created_by: User | None = None, minutes: float | None = None
) -> tuple[Job, bool]:
    """Start the loop, or pretrain again. Returns the job that leads to the next batch and whether it is new.

    A project without an encoder starts on the initial weights: encoder version, then an ``embed`` job
    (whose index leads to a cold-start batch), and ``minutes`` (default the project's
    ``pretrain_minutes``; 0: none) of label-free pretraining that waits for that first batch. A project
    that has an encoder pretrains a new one in the background (``pretrain_request``)."""
    Project.objects.select_for_update().filter(pk=project.pk).first()  # one start at a time
    if latest_version(project, ModelVersion.Kind.ENCODER) is not None or active_job(
        project_id=project.pk, kinds=[Job.Kind.PRETRAIN, Job.Kind.EMBED]
    ):
        budget = {} if minutes is None else {"minutes": minutes}
        return pretrain_request(project=project, created_by=created_by, params=budget)
    encoder = create_version(
        project=project,
        kind=ModelVersion.Kind.ENCODER,
        job=None,
        artifacts=initial_encoder_artifacts(project),
        metrics={"method": "none", "note": "initial weights, no pretraining"},
    )
    params: dict[str, Any] = {"encoder_version": encoder.pk, "reason": "loop start"}
    if Cell.objects.filter(project=project, role=Cell.Role.POOL).count() > 2 * START_POOL_SAMPLE:
        params["pool_sample"] = START_POOL_SAMPLE
    embed = job_create(kind=Job.Kind.EMBED, project=project, params=params, created_by=created_by)
    pretrain_minutes = project.pretrain_minutes if minutes is None else minutes
    if pretrain_minutes > 0:
        Job.objects.create(
            kind=Job.Kind.PRETRAIN,
            project=project,
            status=Job.Status.WAITING,
            params={"minutes": pretrain_minutes},
            created_by=created_by,
            message=WAITS_FOR_FIRST_BATCH,
        )
    return embed, True
