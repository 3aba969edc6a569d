"""Labels: recording one (history kept) and taking one back.

Writes on one cell are serialized by a row lock on the cell (PostgreSQL; SQLite serializes every write),
so two labels of a cell by one annotator at once supersede one another in turn instead of both inserting
a "current" row (which the partial unique constraint refused with an IntegrityError, a 500). A label
request may carry a client key: its repeat finds the rows the first one wrote and answers with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    client_key: str = "",
) -> Annotation:
    """Record a label. An earlier current annotation by the same annotator is superseded, never changed."""
    Cell.objects.select_for_update().filter(pk=cell.pk).first()  # one write on this cell at a time
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
        client_key=client_key,
    )
    if previous is not None:
        Annotation.objects.filter(pk=previous.pk).update(superseded_by=annotation.pk)
    return annotation


class UnknownCellsError(ValueError):
    """Some of the cells to label are not cells of the project."""


class ClientKeyReusedError(ValueError):
    """The client key was sent before with a different request (other cells, label or flags)."""


@dataclass(frozen=True, slots=True)
class LabelWrite:
    annotations: list[Annotation]
    replayed: bool  # True: a repeat of an earlier request (same client key); nothing was written


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
    client_key: str = "",
) -> LabelWrite:
    """Label several cells at once (a multi-selection): all or nothing, one bad cell labels none. The
    time spent on the selection is shared among its cells.

    With a ``client_key``, a repeat of the request (a retry after a lost answer, a double click) writes
    nothing and returns what the first one wrote; the key sent with a different request is refused."""
    unique_ids = list(dict.fromkeys(cell_ids))
    # Lock the cells first, always in the same order, so that two requests over overlapping cells queue
    # instead of deadlocking; a repeat of a keyed request waits here until the first one has committed.
    cells = {
        c.pk: c
        for c in Cell.objects.select_for_update(of=("self",))
        .filter(project=project, pk__in=unique_ids)
        .select_related("project")
        .order_by("pk")
    }
    missing = [c for c in unique_ids if c not in cells]
    if missing:
        raise UnknownCellsError(f"not cells of this project: {missing}")
    if client_key:
        earlier = list(
            Annotation.objects.filter(annotator=annotator, client_key=client_key)
            .select_related("label", "annotator")
            .order_by("pk")
        )
        if earlier:
            same = (
                sorted(a.cell_id for a in earlier) == sorted(unique_ids)
                and all(a.label_id == (label.pk if label else None) and a.unsure == unsure for a in earlier)
                and all(a.attributes == (attributes or {}) for a in earlier)
            )
            if not same:
                raise ClientKeyReusedError(
                    f"client_key {client_key!r} was already used for another label request"
                )
            return LabelWrite(annotations=earlier, replayed=True)
    per_cell = seconds_spent / len(unique_ids) if seconds_spent is not None else None
    created = [
        annotation_create(
            cell=cells[cell_id],
            annotator=annotator,
            label=label,
            attributes=attributes,
            unsure=unsure,
            seconds_spent=per_cell,
            client_key=client_key,
        )
        for cell_id in unique_ids
    ]
    return LabelWrite(annotations=created, replayed=False)


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
