"""Project admins manage members; a project keeps an admin; leads change the settings, with clear errors
for anything they may not or cannot change. Taking someone out keeps their labels."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Membership
from tests.api.conftest import World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def call(user: User, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    client = client_for(user)
    if method == "GET":
        return client.get(url)
    send: Any = {"POST": client.post, "PATCH": client.patch, "DELETE": client.delete}[method]
    return send(url, json.dumps(body or {}), content_type="application/json")


def error_of(response: Any) -> str:
    return str(response.json()["error"]["detail"])


def test_an_admin_adds_changes_and_removes_a_member_whose_labels_stay(world: World) -> None:
    admin, project = world.users["admin"], world.project
    base = f"/api/projects/{project.pk}/members/"
    newcomer = User.objects.get(username="newcomer")
    assert call(newcomer, "GET", f"/api/projects/{project.pk}/").status_code == 404

    added = call(admin, "POST", base, {"username": "newcomer"})
    assert added.status_code == 201 and added.json()["role"] == "annotator"  # the default role
    assert call(newcomer, "GET", f"/api/projects/{project.pk}/").status_code == 200
    changed = call(admin, "PATCH", f"{base}{newcomer.pk}/", {"role": "reviewer"})
    assert changed.status_code == 200 and changed.json()["role"] == "reviewer"

    listed = {m["username"]: m for m in call(world.users["lead"], "GET", base).json()}
    assert listed["newcomer"]["role"] == "reviewer"
    assert listed["annotator"]["labels"] == 1 and listed["lead"]["role"] == "lead"

    annotator = world.users["annotator"]
    assert call(admin, "DELETE", f"{base}{annotator.pk}/").status_code == 204
    assert not Membership.objects.filter(project=project, user=annotator).exists()
    assert Annotation.objects.filter(pk=world.annotator_label.pk, superseded_by__isnull=True).exists()
    assert call(annotator, "GET", f"/api/projects/{project.pk}/").status_code == 404
    assert call(admin, "DELETE", f"{base}{annotator.pk}/").status_code == 404  # not a member any more


def test_clear_errors_for_unknown_users_roles_and_existing_members(world: World) -> None:
    admin, base = world.users["admin"], f"/api/projects/{world.project.pk}/members/"
    unknown = call(admin, "POST", base, {"username": "nobody"})
    assert unknown.status_code == 400 and "no active user 'nobody'" in error_of(unknown)
    assert unknown.json()["error"]["fields"]["username"]
    bad_role = call(admin, "POST", base, {"username": "newcomer", "role": "boss"})
    assert bad_role.status_code == 400 and "role" in bad_role.json()["error"]["fields"]
    again = call(admin, "POST", base, {"username": "annotator", "role": "lead"})
    assert again.status_code == 409 and "already a member" in error_of(again)
    assert Membership.objects.get(project=world.project, user=world.users["annotator"]).role == "annotator"
    outsider = world.users["outsider"]
    assert call(admin, "PATCH", f"{base}{outsider.pk}/", {"role": "lead"}).status_code == 404


def test_the_last_admin_stays_until_someone_else_is_admin(world: World) -> None:
    admin, base = world.users["admin"], f"/api/projects/{world.project.pk}/members/"
    demoted = call(admin, "PATCH", f"{base}{admin.pk}/", {"role": "lead"})
    assert demoted.status_code == 409 and "only admin" in error_of(demoted)
    assert call(admin, "DELETE", f"{base}{admin.pk}/").status_code == 409
    assert Membership.objects.get(project=world.project, user=admin).role == "admin"

    lead = world.users["lead"]
    assert call(admin, "PATCH", f"{base}{lead.pk}/", {"role": "admin"}).status_code == 200
    assert call(admin, "DELETE", f"{base}{admin.pk}/").status_code == 204
    # The former admin is out; the new one cannot leave the project without an admin either.
    assert call(lead, "PATCH", f"{base}{lead.pk}/", {"role": "annotator"}).status_code == 409


def test_leads_change_settings_and_get_clear_errors(world: World) -> None:
    lead, url = world.users["lead"], f"/api/projects/{world.project.pk}/"
    ok = call(lead, "PATCH", url, {"label_budget": 900, "query_strategy": "margin", "finetune_every": 3})
    assert ok.status_code == 200 and ok.json()["label_budget"] == 900
    world.project.refresh_from_db()
    assert (world.project.query_strategy, world.project.finetune_every) == ("margin", 3)

    for body, field in (
        ({"encoder_backbone": "vit_huge"}, "encoder_backbone"),
        ({"query_batch_size": 0}, "query_batch_size"),
        ({"query_strategy": "guess"}, "query_strategy"),
        ({"pretrain_minutes": -1}, "pretrain_minutes"),
    ):
        refused = call(lead, "PATCH", url, body)
        assert refused.status_code == 400 and field in refused.json()["error"]["fields"], refused.json()
    renamed = call(lead, "PATCH", url, {"name": "stolen", "label_budget": 5})
    assert renamed.status_code == 400 and "cannot be changed here: name" in error_of(renamed)
    world.project.refresh_from_db()
    assert world.project.label_budget == 900 and world.project.name != "stolen"  # nothing half-applied
    assert "vit_huge" in error_of(call(lead, "PATCH", url, {"encoder_backbone": "vit_huge"}))
