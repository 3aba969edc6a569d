"""Reviewers' final decisions on cells in the review queue."""

from __future__ import annotations

from django.contrib.auth.models import User

from annotation.models import Annotation, Cell, LabelClass
from annotation.services.annotations import annotation_create


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
