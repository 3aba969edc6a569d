"""The labelling page's per-user preferences (tile size, blind mode) and the lead's suggestion threshold:
each user reads and changes only their own preferences, values are validated, and the current batch sends
no suggestion the user should not see (below the project's threshold, or any in blind mode)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from annotation.models import PagePreferences, Project
from loop.models import QueryItem
from tests.api.conftest import World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

URL = "/api/me/page-settings/"


def patch(world: World, role: str, body: dict[str, Any]) -> Any:
    return client_for(world.users[role]).patch(URL, json.dumps(body), content_type="application/json")


def test_each_user_reads_and_changes_only_their_own_preferences(world: World) -> None:
    assert client_for(world.users["annotator"]).get(URL).json() == {"tile_size": 160, "blind_mode": False}
    assert not PagePreferences.objects.exists()  # reading creates nothing

    changed = patch(world, "annotator", {"tile_size": 224})
    assert changed.status_code == 200 and changed.json() == {"tile_size": 224, "blind_mode": False}
    assert patch(world, "annotator", {"blind_mode": True}).json() == {"tile_size": 224, "blind_mode": True}
    # The lead's are their own: untouched by the annotator's, and theirs leave the annotator's alone.
    assert client_for(world.users["lead"]).get(URL).json() == {"tile_size": 160, "blind_mode": False}
    assert patch(world, "lead", {"tile_size": 96}).status_code == 200
    assert client_for(world.users["annotator"]).get(URL).json() == {"tile_size": 224, "blind_mode": True}
    assert PagePreferences.objects.get(user=world.users["lead"]).tile_size == 96

    # There is no way to name somebody else: a "user" field is refused, not ignored.
    lead = world.users["lead"]
    refused = patch(world, "annotator", {"user": lead.pk, "tile_size": 300})
    assert refused.status_code == 400
    assert "not a page setting: user" in refused.json()["error"]["detail"]
    assert PagePreferences.objects.get(user=lead).tile_size == 96
    assert PagePreferences.objects.get(user=world.users["annotator"]).tile_size == 224

    # Whoever is not logged in has none.
    assert client_for(None).get(URL).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tile_size": 71}, "tile_size"),
        ({"tile_size": 449}, "tile_size"),
        ({"tile_size": "big"}, "tile_size"),
        ({"blind_mode": "perhaps"}, "blind_mode"),
    ],
)
def test_bad_preferences_are_refused_and_change_nothing(
    world: World, body: dict[str, Any], field: str
) -> None:
    response = patch(world, "annotator", body)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not PagePreferences.objects.exists()


def test_the_tile_size_range_reaches_twice_the_native_size_of_the_cells(world: World) -> None:
    assert patch(world, "annotator", {"tile_size": 448}).json()["tile_size"] == 448
    assert patch(world, "annotator", {"tile_size": 72}).json()["tile_size"] == 72


@pytest.mark.parametrize("value", [-0.1, 1.01, "high"])
def test_the_suggestion_threshold_is_validated(world: World, value: Any) -> None:
    project, lead = world.project, world.users["lead"]
    url = f"/api/projects/{project.pk}/"
    before = project.suggestion_min_confidence
    response = client_for(lead).patch(
        url, json.dumps({"suggestion_min_confidence": value}), content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert "suggestion_min_confidence" in response.json()["error"]["fields"]
    project.refresh_from_db()
    assert project.suggestion_min_confidence == before


def test_a_lead_sets_the_threshold_through_the_api_and_the_settings_page(world: World) -> None:
    project, lead = world.project, world.users["lead"]
    assert project.suggestion_min_confidence == 0.6  # the default
    ok = client_for(lead).patch(
        f"/api/projects/{project.pk}/",
        json.dumps({"suggestion_min_confidence": 0.35}),
        content_type="application/json",
    )
    assert ok.status_code == 200
    project.refresh_from_db()
    assert project.suggestion_min_confidence == 0.35
    # An annotator may not.
    refused = client_for(world.users["annotator"]).patch(
        f"/api/projects/{project.pk}/",
        json.dumps({"suggestion_min_confidence": 0.0}),
        content_type="application/json",
    )
    assert refused.status_code == 403

    # The settings page: the field is there, a bad value is shown by the field and nothing is saved.
    url = f"/projects/{project.pk}/settings/"
    assert 'name="suggestion_min_confidence"' in client_for(lead).get(url).content.decode()
    values = {name: getattr(project, name) for name in Project.EDITABLE_SETTINGS}
    values = {k: ("on" if v is True else v) for k, v in values.items() if v is not False}
    bad = client_for(lead).post(url, {**values, "suggestion_min_confidence": "1.5"})
    assert bad.status_code == 400 and 'data-field="suggestion_min_confidence"' in bad.content.decode()
    project.refresh_from_db()
    assert project.suggestion_min_confidence == 0.35
    good = client_for(lead).post(url, {**values, "suggestion_min_confidence": "0.8"}, follow=True)
    assert "suggestion_min_confidence" in good.content.decode()
    project.refresh_from_db()
    assert project.suggestion_min_confidence == 0.8


def current_items(world: World, role: str) -> list[dict[str, Any]]:
    response = client_for(world.users[role]).get(f"/api/projects/{world.project.pk}/batches/current/")
    assert response.status_code == 200
    return list(response.json()["batch"]["items"])


def test_the_current_batch_withholds_suggestions_below_the_threshold_and_in_blind_mode(world: World) -> None:
    # The world's batch: four cells suggested "neutrophil" at 40%; make them 40%, 59%, 60% and 90%.
    items = list(QueryItem.objects.filter(batch=world.batch).order_by("rank"))
    for item, confidence in zip(items, [0.4, 0.59, 0.6, 0.9], strict=True):
        item.confidence = confidence
        item.save()
    shown = current_items(world, "annotator")
    assert [i["suggestion"] for i in shown] == [None, None, "neutrophil", "neutrophil"]
    assert [i["confidence"] for i in shown] == [None, None, 0.6, 0.9]
    assert [i["suggestion_withheld"] for i in shown] == ["low_confidence", "low_confidence", None, None]

    # Threshold 0 shows every suggestion.
    Project.objects.filter(pk=world.project.pk).update(suggestion_min_confidence=0.0)
    assert [i["suggestion"] for i in current_items(world, "annotator")] == ["neutrophil"] * 4

    # Blind mode is the annotator's own: nothing is sent to them, the lead still gets the suggestions.
    assert patch(world, "annotator", {"blind_mode": True}).status_code == 200
    blind = current_items(world, "annotator")
    assert all(i["suggestion"] is None and i["confidence"] is None for i in blind)
    assert {i["suggestion_withheld"] for i in blind} == {"blind"}
    assert "neutrophil" not in json.dumps([{k: v for k, v in i.items() if k != "mine"} for i in blind])
    assert [i["suggestion"] for i in current_items(world, "lead")] == ["neutrophil"] * 4
    # Nor does the why panel of a blind user carry the suggestion.
    why = client_for(world.users["annotator"]).get(f"/api/cells/{items[3].cell_id}/why/").json()
    assert why["queried"] and all(q["suggestion"] is None for q in why["queried"])


def test_the_batch_detail_endpoint_follows_the_same_rule(world: World) -> None:
    # The batch by id (what scripts and the history read) must not leak what the current batch withholds.
    items = list(QueryItem.objects.filter(batch=world.batch).order_by("rank"))
    for item, confidence in zip(items, [0.4, 0.59, 0.6, 0.9], strict=True):
        item.confidence = confidence
        item.save()
    url = f"/api/projects/{world.project.pk}/batches/{world.batch.pk}/"

    def detail(role: str) -> list[dict[str, Any]]:
        response = client_for(world.users[role]).get(url)
        assert response.status_code == 200
        return list(response.json()["items"])

    shown = detail("annotator")
    assert [i["suggestion"] for i in shown] == [None, None, "neutrophil", "neutrophil"]
    assert [i["confidence"] for i in shown] == [None, None, 0.6, 0.9]
    assert [i["suggestion_withheld"] for i in shown] == ["low_confidence", "low_confidence", None, None]
    assert patch(world, "annotator", {"blind_mode": True}).status_code == 200
    blind = detail("annotator")
    assert {i["suggestion_withheld"] for i in blind} == {"blind"}
    assert all(i["suggestion"] is None and i["confidence"] is None for i in blind)
    assert [i["suggestion"] for i in detail("lead")] == [None, None, "neutrophil", "neutrophil"]


def test_a_reviewer_in_blind_mode_gets_the_review_queue_without_suggestions(world: World) -> None:
    from annotation.services.annotations import annotation_create

    # The annotator disagrees with the reviewer's label of cell 1: it waits for review, suggested.
    cell = world.cells[1]
    annotation_create(
        cell=cell, annotator=world.users["annotator"], label=world.project.classes.get(name="neutrophil")
    )
    api = f"/api/projects/{world.project.pk}/review/"
    page = f"/projects/{world.project.pk}/review/"

    def entry(role: str) -> dict[str, Any]:
        queue = client_for(world.users[role]).get(api).json()["queue"]
        return next(e for e in queue if e["cell"] == cell.pk)

    seen = entry("reviewer")
    assert seen["suggestion"]["label"] == "neutrophil" and seen["suggestion_withheld"] is None
    assert "Model suggests" in client_for(world.users["reviewer"]).get(page).content.decode()

    assert patch(world, "reviewer", {"blind_mode": True}).status_code == 200
    hidden = entry("reviewer")
    assert hidden["suggestion"] is None and hidden["suggestion_withheld"] == "blind"
    html = client_for(world.users["reviewer"]).get(page).content.decode()
    assert "Suggestion hidden (blind mode)" in html and "Model suggests" not in html
    assert 'data-suggestion="neutrophil"' not in html  # Enter has nothing to accept
    # The lead's own view is unchanged.
    assert entry("lead")["suggestion"]["label"] == "neutrophil"
