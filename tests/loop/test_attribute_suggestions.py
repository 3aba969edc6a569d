"""The loop suggests each batch cell's attributes once labelled cells carry some, on real cells: what
the heads may say, what is stored, and who is sent what."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from learning import attribute_heads
from learning.attribute_heads import FusedAttributeHeads
from learning.morphometry import MEASUREMENT_DEFINITION, MEASUREMENT_NAMES
from loop.handlers import attribute_suggestions, batch_attributes
from loop.models import CellMeasurement, ModelVersion, QueryBatch, QueryItem
from loop.selectors import latest_version
from loop.services.batches import batch_submit
from tests.conftest import client_for, run_queued_jobs
from tests.loop.test_pipeline import start_loop

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def label_with_attributes(batch: QueryBatch, annotator: User) -> dict[str, set[str]]:
    """Label every cell with its reference class and attributes; returns attribute -> values given."""
    given: dict[str, set[str]] = {}
    for item in batch.items.select_related("cell__reference_label"):
        attributes = dict(item.cell.reference_attributes or {})
        annotation_create(
            cell=item.cell, annotator=annotator, label=item.cell.reference_label, attributes=attributes
        )
        for name, value in attributes.items():
            given.setdefault(name, set()).add(value)
    return given


def second_batch(
    project: Project, annotator: User, first_batch: int = 12
) -> tuple[QueryBatch, dict[str, set[str]], int]:
    """Label the loop's first batch (``first_batch`` cells) with reference classes and attributes, submit
    it and return the next batch. 37 of the subset's 72 cells carry attributes (5 of its 9 classes); a
    first batch of 12 chosen for diversity on untrained features held as few as 2 of them in one run, so
    the tests that need attribute heads ask for 24."""
    Project.objects.filter(pk=project.pk).update(query_batch_size=first_batch)
    project.refresh_from_db()
    start_loop(project)
    first = QueryBatch.objects.get(project=project)
    given = label_with_attributes(first, annotator)
    with_attributes = sum(1 for i in first.items.select_related("cell") if i.cell.reference_attributes)
    batch_submit(batch=first, user=annotator)
    run_queued_jobs()
    return QueryBatch.objects.get(project=project, number=2), given, with_attributes


def test_batch_cells_get_suggestions_from_the_labelled_cells_attributes(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    batch, given, with_attributes = second_batch(loop_project, annotator, first_batch=24)
    assert with_attributes >= 4, "the subset should hold cells with WBCAtt attributes"
    items = list(batch.items.all())
    assert items and all(item.attribute_suggestions for item in items)
    for item in items:
        # One suggestion per attribute the labelled cells gave, with a value they used (a head only
        # knows the values it saw) and a probability.
        assert set(item.attribute_suggestions) == set(given)
        for name, suggestion in item.attribute_suggestions.items():
            assert suggestion["value"] in given[name]
            assert 0.0 < suggestion["confidence"] <= 1.0
    # Single-valued attributes are certain; the others are not all certain.
    confidences = [
        s["confidence"] for i in items for n, s in i.attribute_suggestions.items() if len(given[n]) > 1
    ]
    assert confidences and min(confidences) < 1.0
    # Every labelled and every batch cell was measured once, under the current definition.
    measured = set(CellMeasurement.objects.values_list("cell_id", flat=True))
    labelled = set(QueryItem.objects.filter(batch__number=1).values_list("cell_id", flat=True))
    assert {i.cell_id for i in items} <= measured
    assert {i.cell_id for i in batch.items.filter(cell__reference_attributes__isnull=False)} <= measured
    assert CellMeasurement.objects.filter(cell_id__in=labelled).count() >= with_attributes
    one = CellMeasurement.objects.first()
    assert one is not None and one.definition == MEASUREMENT_DEFINITION
    assert len(one.values) == len(MEASUREMENT_NAMES)


def test_the_page_gets_them_except_in_blind_mode(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    batch, _given, _ = second_batch(loop_project, annotator, first_batch=24)
    client = client_for(annotator)

    def sent() -> list[dict[str, Any]]:
        current = client.get(f"/api/projects/{loop_project.pk}/batches/current/").json()["batch"]
        assert current["id"] == batch.pk
        return [item["attribute_suggestions"] for item in current["items"]]

    stored = {i.cell_id: i.attribute_suggestions for i in batch.items.all()}
    near = {i.cell_id for i in batch.items.all() if (i.labelled_distance_ratio or 0) <= 2.5}
    threshold = loop_project.suggestion_min_confidence
    assert threshold > 0  # the default: some suggestions fall below it
    page = client.get(f"/api/projects/{loop_project.pk}/batches/current/").json()["batch"]["items"]
    for item in page:
        # Sent as stored down to the lead's threshold, and none for a cell unlike every labelled one
        # (the model abstains there).
        confident = {n: s for n, s in stored[item["cell"]].items() if s["confidence"] >= threshold}
        assert item["attribute_suggestions"] == (confident if item["cell"] in near else {})
    below = [s for item in stored.values() for s in item.values() if s["confidence"] < threshold]
    assert below, "some attribute should be unsure after one batch"
    assert any(sent())
    client.patch("/api/me/page-settings/", {"blind_mode": True}, content_type="application/json")
    assert not any(sent())
    # The batch endpoint answers under the same rule.
    items = client.get(f"/api/projects/{loop_project.pk}/batches/{batch.pk}/").json()["items"]
    assert items and not any(item["attribute_suggestions"] for item in items)


def test_too_few_cells_with_attributes_suggest_nothing(loop_project: Project, annotator: User) -> None:
    batch, _, with_attributes = second_batch(loop_project, annotator)
    assert with_attributes < attribute_suggestions.MIN_ATTRIBUTE_CELLS
    assert not any(item.attribute_suggestions for item in batch.items.all())
    assert not CellMeasurement.objects.exists()


def test_a_new_embedding_chooses_each_attributes_weight_and_the_retrains_use_it(
    loop_project: Project, annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The subset's 24-cell first batch holds a dozen or more cells with attributes: few enough that the
    # thresholds are lowered, enough for 5 folds to score each weight.
    monkeypatch.setattr(attribute_suggestions, "MIN_ATTRIBUTE_CELLS", 4)
    monkeypatch.setattr(attribute_heads, "MIN_CELLS_TO_CHOOSE", 8)
    batch, given, with_attributes = second_batch(loop_project, annotator, first_batch=24)
    assert with_attributes >= 8
    before = latest_version(loop_project, ModelVersion.Kind.INDEX)
    # The first retrain found no weights with the index and chose them itself, after writing its batch.
    assert before is not None
    assert before.metrics[attribute_suggestions.ATTRIBUTE_WEIGHTS_CELLS_METRIC] == with_attributes
    assert set(before.metrics[attribute_suggestions.ATTRIBUTE_WEIGHTS_METRIC]) == set(given)
    passed: list[object] = []
    real_fit = batch_attributes.fit_attribute_heads

    def recording(*args: Any, **kwargs: Any) -> FusedAttributeHeads | None:
        passed.append(kwargs.get("weights"))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(batch_attributes, "fit_attribute_heads", recording)
    # A re-embed (as after a fine-tune): the embed job chooses on the labelled cells' new embedding.
    job_create(kind=Job.Kind.EMBED, project=loop_project, params={})
    run_queued_jobs()
    after = latest_version(loop_project, ModelVersion.Kind.INDEX)
    assert after is not None and after.pk != before.pk
    weights = after.metrics[attribute_suggestions.ATTRIBUTE_WEIGHTS_METRIC]
    # One weight per attribute the labelled cells carry.
    assert set(weights) == set(given) and set(given) <= set(loop_project.learnable_attributes())
    assert set(weights.values()) <= set(attribute_heads.WEIGHT_CHOICES)
    # The next retrain's suggestions are fitted with those weights, not the default.
    for item in batch.items.all():
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    batch_submit(batch=batch, user=annotator)
    run_queued_jobs()
    assert passed and passed[-1] == weights
    # No new cells with attributes: the retrain kept the embed job's choice.
    after.refresh_from_db()
    assert after.metrics[attribute_suggestions.ATTRIBUTE_WEIGHTS_METRIC] == weights
    assert after.metrics[attribute_suggestions.ATTRIBUTE_WEIGHTS_CELLS_METRIC] == with_attributes


@pytest.mark.parametrize(
    ("metrics", "cells", "stale"),
    [
        ({}, 7, False),  # under MIN_CELLS_TO_CHOOSE (8 here): every weight would stay the default
        ({}, 8, True),  # none chosen yet
        ({"attribute_weights": {"cell_size": 0.5}}, 30, True),  # chosen by an older embed job: count unknown
        ({"attribute_weights": {"cell_size": 0.5}, "attribute_weights_cells": 16}, 31, False),
        ({"attribute_weights": {"cell_size": 0.5}, "attribute_weights_cells": 16}, 32, True),  # doubled
    ],
)
def test_weights_are_chosen_again_once_the_cells_with_attributes_doubled(
    metrics: dict[str, Any], cells: int, stale: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attribute_heads, "MIN_CELLS_TO_CHOOSE", 8)
    assert attribute_suggestions.weights_are_stale(metrics, cells) is stale
