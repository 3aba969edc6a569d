"""The settings page: leads change settings with errors shown next to the field and nothing half-saved;
project admins add, re-role and remove members through the same rules as the API; refused posts change
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Membership, Project
from tests.api.conftest import World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def settings_of(project: Project, **changes: Any) -> dict[str, Any]:
    values = {name: getattr(project, name) for name in Project.EDITABLE_SETTINGS}
    values = {k: ("on" if v is True else v) for k, v in values.items() if v is not False}
    return {**values, **changes}


def test_a_lead_saves_settings_and_sees_errors_by_the_field(world: World) -> None:
    lead, project = world.users["lead"], world.project
    url = f"/projects/{project.pk}/settings/"
    page = client_for(lead).get(url).content.decode()
    assert 'id="settings-form"' in page and 'name="query_strategy"' in page
    assert 'id="member-add"' not in page  # leads see members, admins change them

    bad = client_for(lead).post(url, settings_of(project, label_budget="900", encoder_backbone="vit_huge"))
    assert bad.status_code == 400
    text = bad.content.decode()
    assert "unknown backbone &#x27;vit_huge&#x27;" in text and 'data-field="encoder_backbone"' in text
    project.refresh_from_db()
    assert project.label_budget != 900 and project.encoder_backbone != "vit_huge"  # nothing half-saved

    ok = client_for(lead).post(
        url, settings_of(project, label_budget="900", query_batch_size="24"), follow=True
    )
    assert (
        ok.status_code == 200
        and "Settings saved (label_budget, query_batch_size changed)." in ok.content.decode()
    )
    project.refresh_from_db()
    assert (project.label_budget, project.query_batch_size) == (900, 24)


def test_an_admin_manages_members_on_the_page(world: World) -> None:
    admin, project = world.users["admin"], world.project
    client = client_for(admin)
    settings_url = f"/projects/{project.pk}/settings/"
    assert 'id="member-add"' in client.get(settings_url).content.decode()

    added = client.post(
        f"/projects/{project.pk}/members/", {"username": "newcomer", "role": "reviewer"}, follow=True
    )
    assert "newcomer joined as reviewer." in added.content.decode()
    assert Membership.objects.get(project=project, user__username="newcomer").role == "reviewer"
    unknown = client.post(f"/projects/{project.pk}/members/", {"username": "nobody", "role": "annotator"})
    assert unknown.status_code == 400 and "no active user &#x27;nobody&#x27;" in unknown.content.decode()
    twice = client.post(
        f"/projects/{project.pk}/members/", {"username": "newcomer", "role": "lead"}, follow=True
    )
    assert "already a member" in twice.content.decode()
    assert Membership.objects.get(project=project, user__username="newcomer").role == "reviewer"

    annotator = world.users["annotator"]
    member_url = f"/projects/{project.pk}/members/{annotator.pk}/"
    client.post(member_url, {"action": "role", "role": "lead"})
    assert Membership.objects.get(project=project, user=annotator).role == "lead"
    removed = client.post(member_url, {"action": "remove"}, follow=True)
    assert "left the project; their labels stay." in removed.content.decode()
    assert not Membership.objects.filter(project=project, user=annotator).exists()
    assert Annotation.objects.filter(pk=world.annotator_label.pk).exists()

    last = client.post(
        f"/projects/{project.pk}/members/{admin.pk}/", {"action": "role", "role": "lead"}, follow=True
    )
    assert "only admin" in last.content.decode()
    assert Membership.objects.get(project=project, user=admin).role == "admin"


def test_refused_settings_and_member_posts_change_nothing(world: World) -> None:
    project = world.project
    before = (
        set(Membership.objects.values_list("project", "user", "role")),
        {name: getattr(project, name) for name in Project.EDITABLE_SETTINGS},
    )
    annotator_id = world.users["annotator"].pk
    for role in ("annotator", "reviewer", "lead", "outsider"):
        client = client_for(world.users[role])
        if role != "lead":
            client.post(f"/projects/{project.pk}/settings/", settings_of(project, label_budget="1"))
        client.post(f"/projects/{project.pk}/members/", {"username": "newcomer", "role": "admin"})
        client.post(f"/projects/{project.pk}/members/{annotator_id}/", {"action": "remove"})
        client.post(
            f"/projects/{project.pk}/members/{world.users[role].pk}/", {"action": "role", "role": "admin"}
        )
    project.refresh_from_db()
    after = (
        set(Membership.objects.values_list("project", "user", "role")),
        {name: getattr(project, name) for name in Project.EDITABLE_SETTINGS},
    )
    assert after == before
    assert not User.objects.get(username="newcomer").memberships.exists()
