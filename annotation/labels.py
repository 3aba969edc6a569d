"""What a cell's label is, given everyone's annotations: the one rule training, the query, the reviewer
queue and the pages share.

- A reviewer's decision is final: the latest current ``review`` annotation wins.
- Otherwise the current annotations (manual or imported) decide when they all give the same label and
  none is flagged unsure.
- A cell flagged unsure, or labelled differently by two people, waits in the reviewer queue and trains
  nothing until a reviewer decides.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Q

from annotation.models import Annotation, Project


class LabelStatus(enum.StrEnum):
    LABELLED = "labelled"
    REVIEW = "review"


@dataclass(frozen=True)
class CellLabel:
    cell_id: int
    status: LabelStatus
    label: str | None  # class name when LABELLED
    attributes: dict[str, str] = field(default_factory=dict)
    annotation_ids: tuple[int, ...] = ()
    reason: str = ""  # why a cell is in review: "unsure" or "disagreement"


_FIELDS = ("id", "cell_id", "origin", "label__name", "unsure", "attributes")


def _resolve(cell_id: int, rows: list[dict[str, Any]]) -> CellLabel:
    if len(rows) == 1:  # most cells: one annotation, the same rule without the bookkeeping
        only = rows[0]
        if only["unsure"] and only["origin"] != Annotation.Origin.REVIEW:
            return CellLabel(cell_id, LabelStatus.REVIEW, None, {}, (int(only["id"]),), "unsure")
        own = dict(only["attributes"] or {})
        return CellLabel(cell_id, LabelStatus.LABELLED, only["label__name"], own, (int(only["id"]),))
    ids = tuple(int(r["id"]) for r in rows)
    reviews = [r for r in rows if r["origin"] == Annotation.Origin.REVIEW]
    if reviews:
        final = max(reviews, key=lambda r: r["id"])
        return CellLabel(cell_id, LabelStatus.LABELLED, final["label__name"], dict(final["attributes"]), ids)
    names = {r["label__name"] for r in rows if not r["unsure"]}
    if any(r["unsure"] for r in rows):
        return CellLabel(cell_id, LabelStatus.REVIEW, None, {}, ids, "unsure")
    if len(names) > 1:
        return CellLabel(cell_id, LabelStatus.REVIEW, None, {}, ids, "disagreement")
    latest = max(rows, key=lambda r: r["id"])
    attributes: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r["id"]):  # later annotations fill in or override attributes
        attributes.update(row["attributes"] or {})
    return CellLabel(cell_id, LabelStatus.LABELLED, latest["label__name"], attributes, ids)


def cell_labels(
    *, project: Project, cell_ids: Iterable[int] | None = None, id_range: tuple[int, int] | None = None
) -> dict[int, CellLabel]:
    """Every annotated cell of the project (or of ``cell_ids``, or with ids in the inclusive ``id_range``,
    which is cheaper than a long ``IN`` list for consecutive chunks) -> its resolved label state."""
    annotations = Annotation.objects.filter(cell__project=project, superseded_by__isnull=True)
    if cell_ids is not None:
        annotations = annotations.filter(cell_id__in=list(cell_ids))
    if id_range is not None:
        annotations = annotations.filter(cell_id__gte=id_range[0], cell_id__lte=id_range[1])
    by_cell: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in annotations.values(*_FIELDS).order_by("id"):
        by_cell[int(row["cell_id"])].append(row)
    return {cell_id: _resolve(cell_id, rows) for cell_id, rows in by_cell.items()}


@dataclass(frozen=True)
class LabelCounts:
    labelled: int
    review: int


def label_counts(*, project: Project) -> LabelCounts:
    """How many cells are labelled and how many wait for review, by the rule above but counted in the
    database (two grouped queries) instead of resolving every cell: the labelling page polls this."""
    per_cell = (
        Annotation.objects.filter(cell__project=project, superseded_by__isnull=True)
        .values("cell_id")
        .annotate(
            n_reviews=Count("id", filter=Q(origin=Annotation.Origin.REVIEW)),
            # (not named like a field: Django would read ``unsure`` in the filter below as this alias)
            n_unsure=Count("id", filter=Q(unsure=True)),
            # Every annotation that is not unsure has a label (a check constraint), so this counts the
            # distinct labels the rule compares.
            n_labels=Count("label_id", filter=Q(unsure=False), distinct=True),
        )
    )
    annotated = per_cell.count()
    waiting = per_cell.filter(Q(n_reviews=0) & (Q(n_unsure__gt=0) | Q(n_labels__gt=1))).count()
    return LabelCounts(labelled=annotated - waiting, review=waiting)


def review_queue_ids(*, project: Project) -> list[int]:
    """Cells waiting for a reviewer, oldest annotation first."""
    states = cell_labels(project=project)
    waiting = [s for s in states.values() if s.status is LabelStatus.REVIEW]
    return [s.cell_id for s in sorted(waiting, key=lambda s: min(s.annotation_ids))]
