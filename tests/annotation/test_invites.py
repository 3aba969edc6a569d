"""Invitations and password resets without the Django admin: the e-mail, its link, the password it sets,
the log-in and the project with the invited role; who may invite."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

from annotation.models import Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a-long-new-password-42"


@pytest.fixture(autouse=True)
def _mail(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def project(lead: User) -> Project:
    return project_create(name="invited", lead=lead)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def log_in(username: str, password: str) -> Client | None:
    """Through the log-in form (django-axes wants a request, which Client.login does not give it)."""
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": password})
    return client if response.status_code == 302 else None


def only_link(message: Any) -> str:
    links = re.findall(r"http://testserver(/\S+)", message.body)
    assert len(links) == 1, message.body
    return str(links[0])


def set_password_through(link: str) -> Client:
    client = Client()
    # Django's confirmation view moves the token into the session and redirects to a URL without it.
    form = client.get(link, follow=True)
    assert form.status_code == 200 and 'id="set-password"' in form.content.decode(), form.content[:500]
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    return client


def test_an_invitation_sets_a_password_and_opens_the_project_with_the_role(
    project: Project, lead: User
) -> None:
    response = logged_in(lead).post(
        f"/projects/{project.pk}/invite/", {"email": "Dr.Ada@example.org", "role": "reviewer"}
    )
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/settings/"

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["Dr.Ada@example.org"] and project.name in message.subject
    invitee = User.objects.get(email="Dr.Ada@example.org")
    assert not invitee.has_usable_password()
    assert Membership.objects.get(project=project, user=invitee).role == "reviewer"
    assert invitee.username in message.body

    link = only_link(message)
    set_password_through(link)
    # The link works once.
    assert 'id="invalid-link"' in Client().get(link, follow=True).content.decode()

    client = log_in(invitee.username, NEW_PASSWORD)
    assert client is not None
    assert client.get(f"/projects/{project.pk}/").status_code == 200
    assert client.get(f"/projects/{project.pk}/review/").status_code == 200  # a reviewer's page
    assert client.get(f"/projects/{project.pk}/settings/").status_code == 403  # not a lead's


def test_inviting_an_existing_account_adds_it_and_tells_it(project: Project, lead: User) -> None:
    known = User.objects.create_user("known", email="known@example.org", password="pw-known-1234")
    url = f"/projects/{project.pk}/invite/"
    logged_in(lead).post(url, {"email": "known@example.org", "role": "annotator"})
    assert Membership.objects.get(project=project, user=known).role == "annotator"
    assert len(mail.outbox) == 1 and "/accounts/login/" in mail.outbox[0].body
    assert "/accounts/reset/" not in mail.outbox[0].body
    known.refresh_from_db()
    assert known.check_password("pw-known-1234")
    # Twice: refused, nothing sent.
    logged_in(lead).post(f"/projects/{project.pk}/invite/", {"email": "known@example.org", "role": "lead"})
    assert len(mail.outbox) == 1
    assert Membership.objects.get(project=project, user=known).role == "annotator"


def test_who_may_invite_and_to_what_role(project: Project, lead: User, annotator: User) -> None:
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    reviewer = User.objects.create_user("rev", password="pw-reviewer-123")
    membership_set(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    outsider = User.objects.create_user("stranger", password="pw-stranger-123")
    url = f"/projects/{project.pk}/invite/"
    body = {"email": "x@example.org", "role": "annotator"}
    assert logged_in(annotator).post(url, body).status_code == 403
    assert logged_in(reviewer).post(url, body).status_code == 403
    assert logged_in(outsider).post(url, body).status_code == 404
    assert Client().post(url, body).status_code == 302  # to log in
    # A lead cannot make an admin; a project admin can.
    assert logged_in(lead).post(url, {**body, "role": "admin"}).status_code == 400
    assert not mail.outbox and not User.objects.filter(email="x@example.org").exists()
    admin = User.objects.create_user("padmin", password="pw-padmin-123")
    membership_set(project=project, user=admin, role=Membership.Role.ADMIN)
    assert logged_in(admin).post(url, {**body, "role": "admin"}).status_code == 302
    assert Membership.objects.get(project=project, user__email="x@example.org").role == "admin"
    assert len(mail.outbox) == 1


def test_password_reset_by_email(lead: User) -> None:
    lead.email = "lead@example.org"
    lead.save()
    client = Client()
    assert 'id="forgot-password"' in client.get("/accounts/login/").content.decode()
    sent = client.post("/accounts/password-reset/", {"email": "lead@example.org"})
    assert sent.status_code == 302 and sent["Location"] == "/accounts/password-reset/sent/"
    # An unknown address is answered the same way and sends nothing.
    assert client.post("/accounts/password-reset/", {"email": "nobody@example.org"}).status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["lead@example.org"]
    set_password_through(only_link(mail.outbox[0]))
    assert log_in("lead", NEW_PASSWORD) is not None
    assert log_in("lead", "pw-lead-123") is None
