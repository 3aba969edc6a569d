from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError

from annotation.models import Annotation, Cell, Project
from annotation.services.annotations import annotation_create
from annotation.services.projects import project_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def project() -> Project:
    return project_create(name="svc")


@pytest.fixture
def cell(project: Project) -> Cell:
    return Cell.objects.create(
        project=project, image="cells/aa/x.png", content_hash="a" * 64, width=8, height=8
    )


def test_project_gets_the_blood_smear_taxonomy_with_unique_keys(project: Project) -> None:
    classes = list(project.classes.all())
    assert [c.name for c in classes][:3] == ["neutrophil", "lymphocyte", "monocyte"]
    assert len(classes) == 9
    assert len({c.key for c in classes}) == 9
    assert len(project.attribute_schema) == 11


def test_learnable_attributes_leave_out_an_attribute_with_one_value() -> None:
    schema = [
        {"name": "cell_size", "values": ["big", "small"]},
        {"name": "stain", "values": ["wright"]},  # nothing to learn: every cell has it
    ]
    project = project_create(name="one value", attribute_schema=schema)
    assert project.attribute_values() == {"cell_size": ["big", "small"], "stain": ["wright"]}
    assert project.learnable_attributes() == {"cell_size": ["big", "small"]}


def test_new_annotation_supersedes_the_old_one_and_keeps_history(cell: Cell, annotator: User) -> None:
    neutrophil = cell.project.classes.get(name="neutrophil")
    monocyte = cell.project.classes.get(name="monocyte")
    first = annotation_create(cell=cell, annotator=annotator, label=neutrophil, seconds_spent=2.5)
    second = annotation_create(
        cell=cell, annotator=annotator, label=monocyte, attributes={"cell_size": "big"}
    )

    first.refresh_from_db()
    assert first.superseded_by == second
    assert first.label == neutrophil  # history is never rewritten
    assert second.is_current
    assert Annotation.objects.filter(cell=cell, superseded_by__isnull=True).get() == second


def test_two_annotators_each_keep_a_current_annotation(cell: Cell, annotator: User, lead: User) -> None:
    label = cell.project.classes.first()
    annotation_create(cell=cell, annotator=annotator, label=label)
    annotation_create(cell=cell, annotator=lead, label=label)
    assert Annotation.objects.filter(cell=cell, superseded_by__isnull=True).count() == 2


def test_database_refuses_two_current_annotations_by_one_annotator(cell: Cell, annotator: User) -> None:
    label = cell.project.classes.first()
    Annotation.objects.create(cell=cell, annotator=annotator, label=label)
    with pytest.raises(IntegrityError):
        Annotation.objects.create(cell=cell, annotator=annotator, label=label)


def test_label_from_another_project_and_unknown_attribute_values_are_refused(
    cell: Cell, annotator: User
) -> None:
    other = project_create(name="other")
    with pytest.raises(ValueError, match="another project"):
        annotation_create(cell=cell, annotator=annotator, label=other.classes.first())
    with pytest.raises(ValueError, match="not allowed"):
        annotation_create(
            cell=cell,
            annotator=annotator,
            label=cell.project.classes.first(),
            attributes={"cell_size": "huge"},
        )
    with pytest.raises(ValueError, match="unless it is flagged unsure"):
        annotation_create(cell=cell, annotator=annotator, label=None)
    assert Annotation.objects.count() == 0


def test_unsure_without_label_is_allowed(cell: Cell, annotator: User) -> None:
    annotation = annotation_create(cell=cell, annotator=annotator, label=None, unsure=True)
    assert annotation.unsure and annotation.label is None


def test_project_strategy_choices_are_the_learning_engines_strategies() -> None:
    from annotation.models import QueryStrategy
    from learning.query import STRATEGIES

    assert set(QueryStrategy.values) == set(STRATEGIES)
