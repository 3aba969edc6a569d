"""A lead pauses one member's labelling: their labels, skips and submissions are refused (403,
``labelling_paused``) and nothing is written; their earlier labels stay; resumed, they label again. Leads
pause and resume, only admins change roles; the settings page and the labelling page say so."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from annotation.models import Annotation, Membership
from tests.api.conftest import World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def patch_member(client: Client, world: World, user: str, body: dict[str, Any]) -> Any:
    url = f"/api/projects/{world.project.pk}/members/{world.users[user].pk}/"
    return client.patch(url, json.dumps(body), content_type="application/json")


def label(world: World, cell: int) -> Any:
    return client_for(world.users["annotator"]).post(
        f"/api/projects/{world.project.pk}/annotations/",
        json.dumps({"cells": [cell], "label": "monocyte"}),
        content_type="application/json",
    )


def test_a_paused_member_cannot_label_skip_or_submit_until_resumed(world: World) -> None:
    lead = client_for(world.users["lead"])
    kept = Annotation.objects.filter(annotator=world.users["annotator"]).count()
    paused = patch_member(lead, world, "annotator", {"labelling_paused": True})
    assert paused.status_code == 200 and paused.json()["labelling_paused"] is True
    members = {m["username"]: m for m in lead.get(f"/api/projects/{world.project.pk}/members/").json()}
    assert members["annotator"]["labelling_paused"] and not members["reviewer"]["labelling_paused"]

    cell = world.cells[2].pk
    refused = label(world, cell)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "labelling_paused"
    annotator = client_for(world.users["annotator"])
    batch = f"/api/projects/{world.project.pk}/batches/{world.batch.pk}/"
    skip = annotator.post(batch + "skip/", {"cell": world.cells[3].pk}, content_type="application/json")
    submit = annotator.post(batch + "submit/")
    for response in (skip, submit):
        assert response.status_code == 403 and response.json()["error"]["code"] == "labelling_paused"
    assert Annotation.objects.filter(annotator=world.users["annotator"]).count() == kept
    assert not world.batch.items.filter(skipped_at__isnull=False).exists()
    world.batch.refresh_from_db()
    assert world.batch.submitted_at is None
    # Somebody else's labelling is not affected.
    other = client_for(world.users["reviewer"]).post(
        f"/api/projects/{world.project.pk}/annotations/",
        json.dumps({"cells": [cell], "label": "monocyte"}),
        content_type="application/json",
    )
    assert other.status_code == 201

    assert patch_member(lead, world, "annotator", {"labelling_paused": False}).status_code == 200
    assert label(world, cell).status_code == 201
    assert Annotation.objects.filter(annotator=world.users["annotator"]).count() == kept + 1


def test_leads_pause_only_admins_change_roles_and_bad_requests_change_nothing(world: World) -> None:
    lead, admin = client_for(world.users["lead"]), client_for(world.users["admin"])
    annotator = client_for(world.users["annotator"])
    assert patch_member(annotator, world, "reviewer", {"labelling_paused": True}).status_code == 403
    both = patch_member(lead, world, "annotator", {"labelling_paused": True, "role": "reviewer"})
    assert both.status_code == 403
    membership = Membership.objects.get(project=world.project, user=world.users["annotator"])
    assert (membership.role, membership.labelling_paused) == ("annotator", False)
    assert patch_member(lead, world, "annotator", {}).status_code == 400
    assert patch_member(lead, world, "annotator", {"paused": True}).status_code == 400
    assert patch_member(admin, world, "annotator", {"role": "reviewer"}).json()["role"] == "reviewer"


def test_the_pages_pause_resume_and_say_so(world: World) -> None:
    lead = client_for(world.users["lead"])
    url = f"/projects/{world.project.pk}/members/{world.users['annotator'].pk}/"
    assert lead.post(url, {"action": "pause"}).status_code == 302
    assert Membership.objects.get(project=world.project, user=world.users["annotator"]).labelling_paused
    settings_page = lead.get(f"/projects/{world.project.pk}/settings/").content.decode()
    row = settings_page[settings_page.index('data-user="annotator"') :]
    assert '<span class="paused">paused</span>' in row[: row.index("</tr>")]
    page = client_for(world.users["annotator"]).get(f"/projects/{world.project.pk}/label/").content.decode()
    assert 'id="labelling-paused"' in page
    # A lead may not remove members or change roles from the page: that stays with admins.
    assert lead.post(url, {"action": "remove"}).status_code == 403
    assert lead.post(url, {"action": "resume"}).status_code == 302
    page = client_for(world.users["annotator"]).get(f"/projects/{world.project.pk}/label/").content.decode()
    assert 'id="labelling-paused"' not in page
