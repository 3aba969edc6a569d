"""Reviewers' final decisions on cells in the review queue."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import Annotation, Cell, LabelClass
from annotation.services.annotations import annotation_create
from annotation.services.suspects import suspects_resolve


def review_decide(
    *, cell: Cell, reviewer: User, label: LabelClass, attributes: dict[str, str] | None = None
) -> Annotation:
    """A reviewer's final decision on a cell: an annotation of origin ``review`` (history is kept). It
    also settles a suspected mistake on the cell, whether the reviewer kept the label or changed it."""
    with transaction.atomic():
        decision = annotation_create(
            cell=cell,
            annotator=reviewer,
            label=label,
            attributes=attributes,
            origin=Annotation.Origin.REVIEW,
        )
        suspects_resolve(cell=cell)
    return decision
