"""The label rule counted in the database (``label_counts``, polled by the labelling page) agrees with the
rule resolved in Python (``cell_labels``) on every kind of history: one label, agreement, disagreement,
unsure, a reviewer's decision over both, a change of mind and an undo."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from annotation.labels import LabelStatus, cell_labels, label_counts
from annotation.models import Cell, Project
from annotation.services.annotations import annotation_create, annotation_withdraw
from annotation.services.projects import project_create
from annotation.services.review import review_decide

pytestmark = pytest.mark.django_db


def make_cells(project: Project, n: int) -> list[Cell]:
    return [
        Cell.objects.create(
            project=project, image=f"cells/{i}.png", content_hash=f"{i:064x}", width=8, height=8
        )
        for i in range(n)
    ]


def test_counts_in_the_database_match_the_rule_in_python(annotator: User, lead: User, outsider: User) -> None:
    project = project_create(name="counts")
    other = project_create(name="elsewhere")
    a, b = list(project.classes.order_by("order")[:2])
    cells = make_cells(project, 10)
    label = annotation_create
    label(cell=cells[0], annotator=annotator, label=a)  # one label
    label(cell=cells[1], annotator=annotator, label=a)  # two agree
    label(cell=cells[1], annotator=lead, label=a)
    label(cell=cells[2], annotator=annotator, label=a)  # two disagree: review
    label(cell=cells[2], annotator=lead, label=b)
    label(cell=cells[3], annotator=annotator, label=None, unsure=True)  # unsure: review
    label(cell=cells[4], annotator=annotator, label=a)  # disagreement decided by a reviewer
    label(cell=cells[4], annotator=lead, label=b)
    review_decide(cell=cells[4], reviewer=outsider, label=b)
    label(cell=cells[5], annotator=annotator, label=a, unsure=True)  # unsure, then decided
    review_decide(cell=cells[5], reviewer=lead, label=a)
    label(cell=cells[6], annotator=annotator, label=a)  # changed mind: the old one is superseded
    label(cell=cells[6], annotator=annotator, label=b)
    label(cell=cells[7], annotator=annotator, label=a)  # undo of a disagreeing second label
    label(cell=cells[7], annotator=lead, label=b)
    taken_back = label(cell=cells[8], annotator=annotator, label=b)  # undone: no label at all
    annotation_withdraw(annotation=taken_back, user=annotator)
    second = annotation_create(cell=cells[7], annotator=lead, label=a)  # lead agrees now
    assert second.label == a
    elsewhere = other.classes.order_by("order").first()
    label(cell=make_cells(other, 1)[0], annotator=annotator, label=elsewhere)  # another project's

    states = cell_labels(project=project).values()
    counts = label_counts(project=project)
    assert counts.labelled == sum(s.status is LabelStatus.LABELLED for s in states)
    assert counts.review == sum(s.status is LabelStatus.REVIEW for s in states)
    # cells 0, 1, 4, 5, 6, 7 labelled; 2 and 3 waiting; 8 undone; 9 never labelled
    assert (counts.labelled, counts.review) == (6, 2)
