"""Settings come from the environment: the default is embedded; URLs switch to PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'],"
    " 'broker': settings.CELERY_BROKER_URL, 'debug': settings.DEBUG,"
    " 'name': str(settings.DATABASES['default']['NAME'])}))"
)


# What the settings read from the environment; the tests below set exactly what they need.
# DJANGO_ALLOW_ASYNC_UNSAFE is set by the browser tests' conftest in the same pytest process; a deployment
# never has it, and `check --deploy` rightly fails when it is inherited.
SETTINGS_ENV = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_HTTPS",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}


def settings_process(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", LEUKOLOOP_VAR_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True)


def read_settings(tmp_path: Path, **env: str) -> dict[str, object]:
    env.setdefault("DJANGO_SECRET_KEY", "a-test-key-" + "x" * 50)
    out = settings_process(tmp_path, PROBE, **env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_is_sqlite_filesystem_broker_and_no_debug(tmp_path: Path) -> None:
    found = read_settings(tmp_path)
    assert found["engine"] == "django.db.backends.sqlite3"
    assert found["broker"] == "filesystem://"
    assert found["debug"] is False
    assert str(found["name"]).startswith(str(tmp_path))
    assert (tmp_path / "broker" / "queue").is_dir()


def test_urls_switch_to_postgres_and_redis(tmp_path: Path) -> None:
    found = read_settings(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/x",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
    )
    assert found["engine"] == "django.db.backends.postgresql"
    assert found["broker"] == "redis://127.0.0.1:6379/0"


def test_refuses_to_start_without_a_secret_key_when_debug_is_off(tmp_path: Path) -> None:
    """No DJANGO_SECRET_KEY and DEBUG off: ImproperlyConfigured that says what to set, never a silent
    start on a key everyone can read in the source."""
    out = settings_process(tmp_path, PROBE)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and "DJANGO_SECRET_KEY" in out.stderr, out.stderr[-2000:]
    # An empty value is no key either.
    assert settings_process(tmp_path, PROBE, DJANGO_SECRET_KEY="  ").returncode != 0


def test_debug_runs_on_a_development_key_and_a_set_key_is_used(tmp_path: Path) -> None:
    key = "print(__import__('django.conf').conf.settings.SECRET_KEY)"
    code = "import django; django.setup(); " + key
    debug = settings_process(tmp_path, code, DJANGO_DEBUG="1")
    assert debug.returncode == 0, debug.stderr[-2000:]
    # Django's own prefix for such keys, which `check --deploy` flags.
    assert debug.stdout.strip().startswith("django-insecure-")
    given = settings_process(tmp_path, code, DJANGO_SECRET_KEY="k" * 60)
    assert given.stdout.strip() == "k" * 60


def test_the_key_make_run_keeps_in_var_is_used(tmp_path: Path) -> None:
    (tmp_path / "secret-key").write_text("kept-" + "k" * 60 + "\n")
    code = "import django; django.setup(); print(__import__('django.conf').conf.settings.SECRET_KEY)"
    kept = settings_process(tmp_path, code)
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert kept.stdout.strip() == "kept-" + "k" * 60


def test_throttle_rates_lockout_and_token_lifetime_come_from_the_environment(tmp_path: Path) -> None:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'], s.AXES_FAILURE_LIMIT, "
        "s.AXES_COOLOFF_TIME.total_seconds(), s.REST_KNOX['TOKEN_TTL'].total_seconds()]))"
    )
    out = settings_process(
        tmp_path,
        code,
        DJANGO_SECRET_KEY="k" * 60,
        LEUKOLOOP_THROTTLE_ANON="7/minute",
        LEUKOLOOP_THROTTLE_USER="70/minute",
        LEUKOLOOP_LOGIN_FAILURE_LIMIT="4",
        LEUKOLOOP_LOGIN_COOLOFF_MINUTES="2",
        LEUKOLOOP_TOKEN_TTL_HOURS="3",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rates, limit, cool_off, ttl = json.loads(out.stdout.strip().splitlines()[-1])
    assert rates == {"anon": "7/minute", "user": "70/minute"}
    assert (limit, cool_off, ttl) == (4, 120, 3 * 3600)
