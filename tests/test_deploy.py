"""Production settings: DEBUG off, a secret key, allowed hosts and DJANGO_HTTPS=1 pass Django's deployment
checks with no warning, and DJANGO_HTTPS=1 really sends browsers to HTTPS and keeps them there."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.test_settings import settings_process

REPO = Path(__file__).resolve().parent.parent


def production_env(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "leukoloop.example.org,testserver",
        "DJANGO_HTTPS": "1",
        **extra,
    }


CHECK_DEPLOY = (
    "import sys; from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])"
)


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    out = settings_process(tmp_path, CHECK_DEPLOY, **production_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "System check identified no issues" in out.stdout


def test_check_deploy_fails_without_https_settings(tmp_path: Path) -> None:
    """The check above can fail: over plain HTTP the same deployment gets the warnings it should."""
    env = production_env()
    del env["DJANGO_HTTPS"]
    out = settings_process(tmp_path, CHECK_DEPLOY, **env)
    assert out.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in out.stderr, out.stderr[-3000:]


PROBE_HTTPS = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
plain = Client().get("/accounts/login/")
secure = Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "redirect": [plain.status_code, plain.get("Location", "")],
    "status": secure.status_code,
    "hsts": secure.get("Strict-Transport-Security", ""),
    "csrf_cookie": secure.cookies["csrftoken"].output() if "csrftoken" in secure.cookies else "",
    "session_secure": settings.SESSION_COOKIE_SECURE,
}))
"""


def test_https_turns_on_redirect_hsts_and_secure_cookies(tmp_path: Path) -> None:
    out = settings_process(tmp_path, PROBE_HTTPS, **production_env())
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["redirect"] == [301, "https://testserver/accounts/login/"]
    # The proxy's X-Forwarded-Proto says the browser's request was HTTPS.
    assert found["status"] == 200
    assert "max-age=31536000" in found["hsts"] and "includeSubDomains" in found["hsts"]
    assert "Secure" in found["csrf_cookie"] and found["session_secure"] is True


def test_without_https_nothing_is_forced(tmp_path: Path) -> None:
    """`make run` on http://127.0.0.1 must keep working: no redirect, no HSTS, cookies over HTTP."""
    env = production_env()
    del env["DJANGO_HTTPS"]
    out = settings_process(tmp_path, PROBE_HTTPS, **env)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["redirect"][0] == 200 and found["hsts"] == ""
    assert "Secure" not in found["csrf_cookie"] and found["session_secure"] is False
