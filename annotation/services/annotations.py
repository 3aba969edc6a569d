"""Labels: recording one (history kept) and taking one back."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.models import Annotation, Cell, LabelClass, Project


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


class UnknownCellsError(ValueError):
    """Some of the cells to label are not cells of the project."""


@transaction.atomic
def annotations_create(
    *,
    project: Project,
    cell_ids: Sequence[int],
    annotator: User,
    label: LabelClass | None,
    attributes: dict[str, str] | None = None,
    unsure: bool = False,
    seconds_spent: float | None = None,
) -> list[Annotation]:
    """Label several cells at once (a multi-selection): all or nothing, one bad cell labels none. The
    time spent on the selection is shared among its cells."""
    unique_ids = list(dict.fromkeys(cell_ids))
    cells = {
        c.pk: c for c in Cell.objects.filter(project=project, pk__in=unique_ids).select_related("project")
    }
    missing = [c for c in unique_ids if c not in cells]
    if missing:
        raise UnknownCellsError(f"not cells of this project: {missing}")
    per_cell = seconds_spent / len(unique_ids) if seconds_spent is not None else None
    return [
        annotation_create(
            cell=cells[cell_id],
            annotator=annotator,
            label=label,
            attributes=attributes,
            unsure=unsure,
            seconds_spent=per_cell,
        )
        for cell_id in unique_ids
    ]


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
