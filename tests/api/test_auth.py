"""Authentication as an attacker would try it: password guessing on the login page and the token
endpoint, Basic auth, weak passwords, stolen or old tokens, request floods."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone
from rest_framework.throttling import SimpleRateThrottle

from tests.api.conftest import PASSWORD, World
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

GUESSES = 30


def token_for(client: Client, username: str, password: str, **extra: Any) -> Any:
    return client.post(
        "/api/auth/token/",
        json.dumps({"username": username, "password": password}),
        content_type="application/json",
        **extra,
    )


def log_in(client: Client, username: str, password: str, **extra: Any) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


# --- Lockout (django-axes) ------------------------------------------------------------------------


def test_login_page_locks_out_after_wrong_passwords(world: World) -> None:
    attacker = Client()
    for _ in range(GUESSES):
        wrong = log_in(attacker, "lead", "not-the-password")
        assert wrong.status_code in (200, 429)  # the form again, then the lock-out page
        assert "_auth_user_id" not in attacker.session
    locked = log_in(attacker, "lead", PASSWORD)
    assert locked.status_code == 429, locked.status_code
    assert "_auth_user_id" not in attacker.session
    assert "locked" in locked.content.decode().lower()
    # Another user behind the same address (a hospital's one NAT address) still gets in: the lock is on
    # the pair of username and address, so one attacker cannot lock everybody out.
    colleague = Client()
    assert log_in(colleague, "annotator", PASSWORD).status_code == 302
    assert colleague.session["_auth_user_id"] == str(world.users["annotator"].pk)


def test_token_endpoint_locks_out_after_wrong_passwords(world: World) -> None:
    attacker = Client()
    for i in range(GUESSES):
        # A forged X-Forwarded-For (no proxy is configured) does not make each guess a new address.
        wrong = token_for(attacker, "lead", "not-the-password", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
        assert wrong.status_code in (400, 429), wrong.content[:300]
        assert "token" not in wrong.json()
    locked = token_for(attacker, "lead", PASSWORD)
    assert locked.status_code == 429, locked.content[:300]
    body = locked.json()
    assert set(body) == {"error"} and body["error"]["code"] == "locked_out", body
    assert "token" not in json.dumps(body)
    # The lock holds on the login page too (one record of failures per username and address).
    assert log_in(Client(), "lead", PASSWORD).status_code == 429


def test_lockout_ends_after_the_cool_off(world: World, settings: Any) -> None:
    from axes.models import AccessAttempt

    attacker = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        token_for(attacker, "lead", "not-the-password")
    assert token_for(attacker, "lead", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(1))
    assert token_for(attacker, "lead", PASSWORD).status_code == 200


# --- Basic auth, password rules -------------------------------------------------------------------


def test_basic_auth_is_not_accepted(world: World) -> None:
    credentials = base64.b64encode(f"lead:{PASSWORD}".encode()).decode()
    response = Client().get("/api/projects/", HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_the_full_set_of_password_validators() -> None:
    validators: list[Any] = list(settings.AUTH_PASSWORD_VALIDATORS)
    names = {v["NAME"].rsplit(".", 1)[1] for v in validators}
    assert names == {
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    }
    user = User(username="margarethe", email="margarethe@example.org")
    for weak in ("margarethe1", "2716394857203", "password123", "short"):
        with pytest.raises(ValidationError):
            password_validation.validate_password(weak, user)
    password_validation.validate_password("violet-anvil-harbour", user)


# --- Tokens (django-rest-knox) --------------------------------------------------------------------


def test_tokens_are_stored_hashed_expire_and_can_be_revoked(world: World, settings: Any) -> None:
    from knox.models import AuthToken

    client = Client()
    first = token_for(client, "lead", PASSWORD)
    assert first.status_code == 200, first.content[:300]
    token = first.json()["token"]
    assert first.json()["expiry"]
    use: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Token {token}"}
    assert client.get("/api/projects/", **use).status_code == 200
    # Only a digest is stored: a copy of the database gives no usable token.
    stored = AuthToken.objects.get(user=world.users["lead"])
    assert token not in {stored.digest, stored.token_key}
    assert stored.digest == hashlib.sha512(token.encode()).hexdigest()
    # It expires after the configured lifetime.
    lifetime = stored.expiry - stored.created
    assert abs(lifetime - settings.REST_KNOX["TOKEN_TTL"]) < timedelta(minutes=1)
    AuthToken.objects.filter(pk=stored.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    expired = client.get("/api/projects/", **use)
    assert expired.status_code == 401 and expired.json()["error"]["status"] == 401

    # A new token per log-in (one per script or machine), each revocable on its own.
    one = token_for(client, "lead", PASSWORD).json()["token"]
    two = token_for(client, "lead", PASSWORD).json()["token"]
    assert one != two
    assert Client().post("/api/auth/token/logout/", HTTP_AUTHORIZATION=f"Token {one}").status_code == 204
    assert client.get("/api/projects/", HTTP_AUTHORIZATION=f"Token {one}").status_code == 401
    assert client.get("/api/projects/", HTTP_AUTHORIZATION=f"Token {two}").status_code == 200
    # Logging out everywhere (also from the page's own session) revokes every token of the user.
    assert client_for(world.users["lead"]).post("/api/auth/token/logoutall/").status_code == 204
    assert client.get("/api/projects/", HTTP_AUTHORIZATION=f"Token {two}").status_code == 401
    assert not AuthToken.objects.filter(user=world.users["lead"]).exists()


# --- Throttling ---------------------------------------------------------------------------------


def test_throttles_are_on_with_rates_from_the_environment() -> None:
    rest: dict[str, Any] = settings.REST_FRAMEWORK
    assert set(rest["DEFAULT_THROTTLE_CLASSES"]) >= {
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    }
    assert set(rest["DEFAULT_THROTTLE_RATES"]) >= {"anon", "user"}


def test_too_many_requests_are_answered_429(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rate table DRF read at import time, made small enough to reach here.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "5/minute", "anon": "3/minute"})
    lead = client_for(world.users["lead"])
    answers = [lead.get("/api/projects/").status_code for _ in range(6)]
    assert answers == [200] * 5 + [429]
    throttled = lead.get("/api/projects/")
    assert throttled.json()["error"]["status"] == 429 and int(throttled["Retry-After"]) > 0
    # Per user: another user is not slowed down by the first.
    assert client_for(world.users["annotator"]).get("/api/projects/").status_code == 200
    # Anonymous callers (the token endpoint) per address.
    anonymous = Client()
    answers = [token_for(anonymous, f"nobody-{i}", "x").status_code for i in range(4)]
    assert answers == [400, 400, 400, 429]
