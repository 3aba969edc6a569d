"""Taxonomy editing by leads (annotation.services.taxonomy and its loop side, loop.services.taxonomy):
merging moves the labels, retiring keeps them, keys stay 1-9 then letters without a clash, every change
leaves a history row, and a change the model must learn queues a retrain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Cell, LabelClass, Project, TaxonomyChange
from annotation.selectors import active_classes
from annotation.services.annotations import annotation_create
from annotation.services.projects import project_create
from annotation.services.taxonomy import (
    TaxonomyConflict,
    TaxonomyError,
    class_add,
    class_rename,
    keys_reassign,
)
from annotation.taxonomy import (
    PAGE_COMMAND_LETTERS,
    PRESET_CLASSES,
    REVIEW_COMMAND_LETTERS,
    class_keys,
)
from jobs.models import Job
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.services.taxonomy import (
    taxonomy_add,
    taxonomy_add_presets,
    taxonomy_merge,
    taxonomy_restore,
    taxonomy_retire,
)

pytestmark = pytest.mark.django_db

STATE_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "label" / "state.js"
REVIEW_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "review.js"


@pytest.fixture
def project(lead: User) -> Project:
    return project_create(name="taxonomy", lead=lead)


def cls(project: Project, name: str) -> LabelClass:
    return LabelClass.objects.get(project=project, name=name)


def make_cells(project: Project, n: int, reference: str | None = None) -> list[Cell]:
    start = Cell.objects.count()
    return [
        Cell.objects.create(
            project=project,
            image=f"cells/{start + i}.png",
            content_hash=f"{start + i:064d}",
            width=8,
            height=8,
            reference_label=cls(project, reference) if reference else None,
        )
        for i in range(n)
    ]


def with_index(project: Project) -> None:
    """The loop has started: an index exists, so a taxonomy change has something to retrain."""
    ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.INDEX, version=1)


def keys_of(project: Project) -> dict[str, str]:
    return dict(LabelClass.objects.filter(project=project).values_list("name", "key"))


def assert_keys_compact(project: Project) -> None:
    """Active classes hold 1-9 then letters in display order, retired ones none, no key twice."""
    active = active_classes(project=project)
    assert [c.key for c in active] == class_keys(len(active))
    assert not LabelClass.objects.filter(project=project, retired_at__isnull=False).exclude(key="").exists()
    keys = [k for k in keys_of(project).values() if k]
    assert len(keys) == len(set(keys))


def test_merge_moves_annotations_and_reference_labels_and_retires_the_merged_class(
    project: Project, lead: User, annotator: User
) -> None:
    basophil, neutrophil = cls(project, "basophil"), cls(project, "neutrophil")
    cells = make_cells(project, 3, reference="basophil")
    first = annotation_create(cell=cells[0], annotator=annotator, label=basophil)
    annotation_create(cell=cells[0], annotator=annotator, label=basophil)  # supersedes the first
    annotation_create(cell=cells[1], annotator=lead, label=basophil)
    annotation_create(cell=cells[2], annotator=annotator, label=cls(project, "monocyte"))
    with_index(project)

    result, job = taxonomy_merge(source=basophil, target=neutrophil, actor=lead)

    assert result.annotations_moved == 3  # the superseded one too: history reads the same class
    assert result.ground_truth_moved == 3
    assert not Annotation.objects.filter(label=basophil).exists()
    first.refresh_from_db()
    assert first.label == neutrophil
    states = cell_labels(project=project)
    assert states[cells[0].pk].label == "neutrophil" and states[cells[1].pk].label == "neutrophil"
    assert states[cells[2].pk].label == "monocyte"
    assert not Cell.objects.filter(reference_label=basophil).exists()
    basophil.refresh_from_db()
    assert basophil.retired_at is not None and basophil.merged_into == neutrophil and basophil.key == ""
    assert "basophil" not in [c.name for c in active_classes(project=project)]
    assert_keys_compact(project)
    assert job is not None and job.kind == Job.Kind.RETRAIN and job.status == Job.Status.QUEUED
    change = TaxonomyChange.objects.get(project=project)
    assert change.action == "merge" and change.actor == lead and change.label_class == basophil
    assert change.before["retired"] is False and change.after["merged_into"] == "neutrophil"
    assert change.after["annotations_moved"] == 3


def test_merge_makes_two_annotators_agree_when_they_differed_only_by_the_merged_classes(
    project: Project, lead: User, annotator: User
) -> None:
    (cell,) = make_cells(project, 1)
    annotation_create(cell=cell, annotator=annotator, label=cls(project, "ig"))
    annotation_create(cell=cell, annotator=lead, label=cls(project, "neutrophil"))
    assert cell_labels(project=project)[cell.pk].status is LabelStatus.REVIEW
    taxonomy_merge(source=cls(project, "ig"), target=cls(project, "neutrophil"), actor=lead)
    state = cell_labels(project=project)[cell.pk]
    assert state.status is LabelStatus.LABELLED and state.label == "neutrophil"


def test_merge_moves_the_models_suggestions_to_the_target(project: Project, lead: User) -> None:
    cells = make_cells(project, 2)
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="random", strategy="random"
    )
    for rank, cell in enumerate(cells):
        QueryItem.objects.create(batch=batch, cell=cell, rank=rank, suggestion=cls(project, "blast"))
    taxonomy_merge(source=cls(project, "blast"), target=cls(project, "monocyte"), actor=lead)
    assert set(QueryItem.objects.values_list("suggestion__name", flat=True)) == {"monocyte"}


def test_retire_keeps_labels_and_frees_its_key(project: Project, lead: User, annotator: User) -> None:
    cells = make_cells(project, 2)
    for cell in cells:
        annotation_create(cell=cell, annotator=annotator, label=cls(project, "monocyte"))
    with_index(project)

    monocyte, job = taxonomy_retire(label_class=cls(project, "monocyte"), actor=lead)

    assert Annotation.objects.filter(label=monocyte, superseded_by__isnull=True).count() == 2
    assert {s.label for s in cell_labels(project=project).values()} == {"monocyte"}
    assert monocyte.retired_at is not None and monocyte.key == "" and monocyte.merged_into is None
    keys = keys_of(project)
    assert keys["lymphocyte"] == "2" and keys["eosinophil"] == "3" and keys["platelet"] == "8"
    assert_keys_compact(project)
    assert job is not None and job.kind == Job.Kind.RETRAIN
    change = TaxonomyChange.objects.get(project=project, action="retire")
    assert change.after["labels_kept"] == 2
    assert change.after["keys"]["eosinophil"] == ["4", "3"] and change.after["keys"]["monocyte"] == ["3", ""]

    restored, _ = taxonomy_restore(label_class=monocyte, actor=lead)
    assert restored.retired_at is None and restored.key == "3"
    assert keys_of(project)["eosinophil"] == "4"
    assert_keys_compact(project)
    assert list(TaxonomyChange.objects.filter(project=project).values_list("action", flat=True)) == [
        "restore",
        "retire",
    ]


def test_a_merged_class_cannot_be_restored_nor_merged_again(project: Project, lead: User) -> None:
    blast = cls(project, "blast")
    taxonomy_merge(source=blast, target=cls(project, "monocyte"), actor=lead)
    with pytest.raises(TaxonomyConflict):
        taxonomy_restore(label_class=blast, actor=lead)
    with pytest.raises(TaxonomyConflict):
        taxonomy_merge(source=blast, target=cls(project, "neutrophil"), actor=lead)
    with pytest.raises(TaxonomyConflict):
        taxonomy_merge(source=cls(project, "neutrophil"), target=blast, actor=lead)
    with pytest.raises(TaxonomyError):
        taxonomy_merge(source=cls(project, "neutrophil"), target=cls(project, "neutrophil"), actor=lead)


def test_a_project_keeps_two_active_classes(lead: User) -> None:
    project = project_create(name="tiny", lead=lead)
    for name in ["basophil", "ig", "blast", "erythroblast", "platelet", "eosinophil", "monocyte"]:
        taxonomy_retire(label_class=cls(project, name), actor=lead)
    with pytest.raises(TaxonomyConflict):
        taxonomy_retire(label_class=cls(project, "lymphocyte"), actor=lead)
    with pytest.raises(TaxonomyConflict):
        taxonomy_merge(source=cls(project, "lymphocyte"), target=cls(project, "neutrophil"), actor=lead)
    assert len(active_classes(project=project)) == 2


def test_added_classes_take_letters_after_nine_and_never_a_page_command(project: Project, lead: User) -> None:
    added, job = taxonomy_add_presets(project=project, actor=lead)
    assert job is None  # the loop has not started: nothing to retrain
    assert [c.name for c in added] == [spec["name"] for spec in PRESET_CLASSES]
    for i in range(20):
        class_add(project=project, actor=lead, display_name=f"Extra {i}")
    assert_keys_compact(project)
    letters = {k for k in keys_of(project).values() if k.isalpha()}
    assert letters and not letters & (PAGE_COMMAND_LETTERS | REVIEW_COMMAND_LETTERS)
    assert keys_of(project)["band_neutrophil"] == "q"
    # More classes than keys: the rest are buttons without a key.
    assert "" in [c.key for c in active_classes(project=project)]
    # Presets already there are left alone.
    assert taxonomy_add_presets(project=project, actor=lead) == ([], None)
    assert TaxonomyChange.objects.filter(project=project, action="add").count() == 25


def test_add_checks_its_input_and_queues_a_retrain(project: Project, lead: User) -> None:
    with_index(project)
    smudge, job = taxonomy_add(project=project, actor=lead, display_name="  Smudge\n cell ")
    assert smudge.name == "smudge_cell" and smudge.display_name == "Smudge cell" and smudge.key == "q"
    assert job is not None and job.kind == Job.Kind.RETRAIN
    # A second change while the retrain is queued joins it.
    _, again = taxonomy_add(project=project, actor=lead, display_name="Artefact")
    assert again == job
    with pytest.raises(TaxonomyConflict):
        class_add(project=project, actor=lead, display_name="Smudge cell")
    with pytest.raises(TaxonomyError):
        class_add(project=project, actor=lead, display_name="x", name="Bad Name!")
    with pytest.raises(TaxonomyError):
        class_add(project=project, actor=lead, display_name="x", colour="red")
    with pytest.raises(TaxonomyError):
        class_add(project=project, actor=lead, display_name="   ")


def test_rename_changes_the_display_name_only_and_is_recorded(project: Project, lead: User) -> None:
    ig = class_rename(label_class=cls(project, "ig"), actor=lead, display_name="Metamyelocyte")
    assert ig.name == "ig" and ig.display_name == "Metamyelocyte" and ig.key == "6"
    change = TaxonomyChange.objects.get(project=project)
    assert change.action == "rename" and change.actor == lead
    assert change.before["display_name"] == "Immature granulocyte"
    assert change.after["display_name"] == "Metamyelocyte"
    class_rename(label_class=ig, actor=lead, display_name="Metamyelocyte")  # no change: no row
    assert TaxonomyChange.objects.filter(project=project).count() == 1


def test_keys_reassign_repairs_clashing_custom_keys(lead: User) -> None:
    project = project_create(
        name="custom",
        lead=lead,
        classes=[
            {"name": "a", "display_name": "A", "colour": "#000000", "key": "x"},
            {"name": "b", "display_name": "B", "colour": "#000000", "key": "1"},
        ],
    )
    changed = keys_reassign(project)
    assert keys_of(project) == {"a": "1", "b": "2"}
    assert changed == {"a": ["x", "1"], "b": ["1", "2"]}


def test_page_command_letters_match_the_labelling_page() -> None:
    """A letter the labelling page reads as a command is never a class key (state.js keyAction)."""
    source = STATE_JS.read_text()
    used = set(re.findall(r'lower === "([a-z])"', source))
    assert used, "state.js no longer names its command letters this way: update this test"
    assert used <= PAGE_COMMAND_LETTERS, used - PAGE_COMMAND_LETTERS


def test_review_command_letters_match_the_review_queue() -> None:
    """The review queue's movement letters (review.js) are never class keys: a 21st class once got "j"."""
    used = set(re.findall(r'key === "([a-z])"', REVIEW_JS.read_text()))
    assert used, "review.js no longer names its command letters this way: update this test"
    assert used <= REVIEW_COMMAND_LETTERS, used - REVIEW_COMMAND_LETTERS
    assert not set(class_keys(40)) & used
