"""Input the database cannot take is a 400 with the error shape, never a 500: ids beyond 64 bits (SQLite
raises OverflowError on them) and NUL characters (PostgreSQL refuses them in any string). Found by the
schemathesis run (test_fuzz.py) and by hand; CI runs these on PostgreSQL as well as SQLite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from annotation.models import Annotation
from tests.api.conftest import World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

HUGE = 2**70


def post(world: World, role: str, url: str, body: dict[str, Any]) -> Any:
    return client_for(world.users[role]).post(url, json.dumps(body), content_type="application/json")


def assert_invalid(response: Any, field: str) -> None:
    assert response.status_code == 400, response.content[:500]
    assert field in response.json()["error"]["fields"], response.json()


@pytest.mark.parametrize("query", ["annotator=a%00b", "label=a%00b", f"cell={HUGE}"])
def test_bad_query_parameters_are_refused(world: World, query: str) -> None:
    url = f"/api/projects/{world.project.pk}/annotations/?{query}"
    assert_invalid(client_for(world.users["lead"]).get(url), query.split("=")[0])


def test_ids_beyond_64_bits_in_bodies_are_refused(world: World) -> None:
    project, batch = world.project.pk, world.batch.pk
    unsure = {"cells": [HUGE], "unsure": True}
    assert_invalid(post(world, "annotator", f"/api/projects/{project}/annotations/", unsure), "cells")
    skip = post(world, "annotator", f"/api/projects/{project}/batches/{batch}/skip/", {"cell": HUGE})
    assert_invalid(skip, "cell")
    review = post(world, "reviewer", f"/api/projects/{project}/review/", {"cell": HUGE, "label": "monocyte"})
    assert_invalid(review, "cell")
    assert not Annotation.objects.filter(unsure=True).exists()


def test_nul_characters_in_bodies_are_refused(world: World) -> None:
    url = f"/api/projects/{world.project.pk}/annotations/"
    cell = world.cells[3].pk
    assert_invalid(post(world, "annotator", url, {"cells": [cell], "label": "a\x00b"}), "label")
    bad_value = {"cells": [cell], "label": "neutrophil", "attributes": {"cell_size": "big\x00"}}
    assert_invalid(post(world, "annotator", url, bad_value), "attributes")
    members = f"/api/projects/{world.project.pk}/members/"
    assert_invalid(post(world, "admin", members, {"username": "a\x00b"}), "username")
    assert not Annotation.objects.filter(cell_id=cell).exists()
