"""Reads for the labelling page and its API: the loop's state, the current batch as one annotator sees it,
provenance of a queried cell, and the reviewer queue."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from annotation.labels import cell_labels, label_counts, review_queue_ids
from annotation.models import Annotation, Cell, Job, ModelVersion, Project, QueryBatch, QueryItem

AnyUser = AbstractBaseUser | AnonymousUser

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING, Job.Status.WAITING)
STAGE_OF_KIND = {
    Job.Kind.PRETRAIN: "pretraining",
    Job.Kind.EMBED: "indexing",
    Job.Kind.RETRAIN: "retraining",
    Job.Kind.FINETUNE: "fine-tuning",
    Job.Kind.QUERY: "querying",
    Job.Kind.IMPORT: "importing",
}


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "progress": round(job.progress, 4),
        "message": job.message,
        "error": job.error.splitlines()[0] if job.error else "",
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _version(project: Project, kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(project=project, kind=kind).order_by("-version").first()


def current_batch(project: Project) -> QueryBatch | None:
    return (
        QueryBatch.objects.filter(project=project)
        .select_related("classifier", "index")
        .order_by("-number")
        .first()
    )


def batch_summary(batch: QueryBatch) -> dict[str, Any]:
    return {
        "id": batch.pk,
        "number": batch.number,
        "strategy": batch.strategy,
        "requested_strategy": batch.requested_strategy,
        "classifier_version": batch.classifier.version if batch.classifier else None,
        "index_version": batch.index.version if batch.index else None,
        "labelled_count": batch.labelled_count,
        "created_at": batch.created_at.isoformat(),
        "submitted": batch.submitted_at is not None,
    }


def loop_state(*, project: Project) -> dict[str, Any]:
    """What the page polls: the loop's running jobs with progress, the versions in use, the newest batch.
    Exports and the dashboard's map run beside the loop and hold no one up, so they are left out."""
    active = list(
        Job.objects.filter(project=project, status__in=ACTIVE, kind__in=list(STAGE_OF_KIND)).order_by(
            "created_at", "pk"
        )
    )
    last_failed = (
        Job.objects.filter(project=project, status=Job.Status.FAILED, kind__in=list(STAGE_OF_KIND))
        .order_by("-finished_at", "-pk")
        .first()
    )
    batch = current_batch(project)
    running = next((j for j in active if j.status == Job.Status.RUNNING), active[0] if active else None)
    if running is not None:
        stage = STAGE_OF_KIND.get(Job.Kind(running.kind), running.kind)
    elif batch is not None:
        stage = "ready"
    else:
        stage = "idle"
    counts = label_counts(project=project)
    classifier = _version(project, ModelVersion.Kind.CLASSIFIER)
    return {
        "project": project.pk,
        "stage": stage,
        "jobs": [job_summary(j) for j in active],
        "last_failed": job_summary(last_failed) if last_failed else None,
        "encoder_version": getattr(_version(project, ModelVersion.Kind.ENCODER), "version", None),
        "index_version": getattr(_version(project, ModelVersion.Kind.INDEX), "version", None),
        "classifier_version": getattr(classifier, "version", None),
        "validation_macro_f1": (classifier.metrics or {}).get("macro_f1") if classifier else None,
        "batch": batch_summary(batch) if batch else None,
        "labels": {
            "count": counts.labelled,
            "budget": project.label_budget,
        },
        "review_count": counts.review,
    }


def annotation_summary(annotation: Annotation) -> dict[str, Any]:
    return {
        "id": annotation.pk,
        "cell": annotation.cell_id,
        "label": annotation.label.name if annotation.label else None,
        "unsure": annotation.unsure,
        "attributes": annotation.attributes,
        "origin": annotation.origin,
        "annotator": annotation.annotator.get_username() if annotation.annotator else None,
        "created_at": annotation.created_at.isoformat(),
    }


def batch_for_annotator(*, batch: QueryBatch, user: AnyUser) -> dict[str, Any]:
    """The batch's cells in query order with the model's suggestion and this user's current label."""
    items = list(batch.items.select_related("suggestion").order_by("rank"))
    mine = {
        a.cell_id: a
        for a in Annotation.objects.filter(
            cell_id__in=[i.cell_id for i in items], annotator_id=user.pk, superseded_by__isnull=True
        ).select_related("label", "annotator")
    }
    return {
        **batch_summary(batch),
        "items": [
            {
                "cell": item.cell_id,
                "rank": item.rank,
                "image_url": f"/cells/{item.cell_id}/image",
                "score": item.score,
                "suggestion": item.suggestion.name if item.suggestion else None,
                "confidence": item.confidence,
                "skipped": item.skipped_at is not None,
                "mine": annotation_summary(mine[item.cell_id]) if item.cell_id in mine else None,
            }
            for item in items
        ],
    }


def cell_provenance(*, cell: Cell) -> list[dict[str, Any]]:
    """Every batch that chose this cell: strategy, score, rank, model and index versions."""
    items = QueryItem.objects.filter(cell=cell).select_related(
        "batch__classifier", "batch__index", "suggestion"
    )
    return [
        {
            **batch_summary(item.batch),
            "batch": item.batch.number,
            "rank": item.rank,
            "batch_size": item.batch.items.count(),
            "score": item.score,
            "suggestion": item.suggestion.name if item.suggestion else None,
            "confidence": item.confidence,
        }
        for item in items.order_by("-batch__number")
    ]


def review_queue(*, project: Project, limit: int = 100) -> list[dict[str, Any]]:
    ids = review_queue_ids(project=project)[:limit]
    states = cell_labels(project=project, cell_ids=ids)
    annotations: dict[int, list[dict[str, Any]]] = {}
    for a in (
        Annotation.objects.filter(cell_id__in=ids, superseded_by__isnull=True)
        .select_related("label", "annotator")
        .order_by("pk")
    ):
        annotations.setdefault(a.cell_id, []).append(annotation_summary(a))
    return [
        {
            "cell": cell_id,
            "image_url": f"/cells/{cell_id}/image",
            "reason": states[cell_id].reason,
            "annotations": annotations.get(cell_id, []),
        }
        for cell_id in ids
    ]


def cell_history(*, cell: Cell) -> list[dict[str, Any]]:
    """Every annotation ever given to the cell, withdrawn and superseded ones included."""
    rows = Annotation.objects.filter(cell=cell).select_related("label", "annotator").order_by("pk")
    return [
        {
            **annotation_summary(a),
            "current": a.superseded_by_id is None,
            "withdrawn": a.withdrawn_at is not None,
        }
        for a in rows
    ]
