"""Flags on labels that label-mistake finding ranks among the likely wrong (``SuspectedLabel``): each run
replaces the project's open flags; a reviewer's decision on the cell resolves its flag."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from annotation.models import Annotation, Cell, LabelClass, Project, SuspectedLabel


@dataclass(frozen=True)
class Suspect:
    """One likely mistake as the ranking found it (class names, not ids: the learning layer's terms)."""

    cell_id: int
    annotation_id: int
    label: str
    suggested: str
    quality: float
    suggested_confidence: float


@transaction.atomic
def suspects_replace(
    *, project: Project, suspects: Sequence[Suspect], index_version: int
) -> list[SuspectedLabel]:
    """Drop the project's open flags and record ``suspects`` (most likely mistake first). A suspect whose
    annotation is no longer current (relabelled while the ranking ran) is left out: it doubted a label
    that is gone."""
    SuspectedLabel.objects.filter(cell__project=project, resolved_at__isnull=True).delete()
    classes = {c.name: c for c in LabelClass.objects.filter(project=project)}
    current = set(
        Annotation.objects.filter(
            pk__in=[s.annotation_id for s in suspects], superseded_by__isnull=True, withdrawn_at__isnull=True
        ).values_list("pk", flat=True)
    )
    rows = [
        SuspectedLabel(
            cell_id=s.cell_id,
            annotation_id=s.annotation_id,
            label=classes[s.label],
            suggested=classes[s.suggested],
            quality=s.quality,
            suggested_confidence=s.suggested_confidence,
            rank=rank,
            index_version=index_version,
        )
        for rank, s in enumerate(suspects, start=1)
        if s.annotation_id in current and s.label in classes and s.suggested in classes
    ]
    return SuspectedLabel.objects.bulk_create(rows)


def suspects_resolve(*, cell: Cell) -> int:
    """A reviewer decided on the cell: its open flags are done (kept, with the time, as history)."""
    return SuspectedLabel.objects.filter(cell=cell, resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )
