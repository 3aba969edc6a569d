"""Tiny typed helpers for reading settings from the environment (in the spirit of healthchecks' envbool)."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# Django's own prefix for keys that must never serve a deployment: `manage.py check --deploy` flags it.
DEVELOPMENT_KEY = "django-insecure-leukoloop-development-only-never-with-debug-off"


def secret_key(*, debug: bool, kept: Path) -> str:
    """``DJANGO_SECRET_KEY``; else the random key `make run` / `make serve` keep in ``kept``
    (var/secret-key); else, with DEBUG on only, a development key. With DEBUG off and neither, refuse to
    start: a key anyone can read in the source signs sessions, CSRF tokens and password resets."""
    given = os.environ.get("DJANGO_SECRET_KEY", "").strip()
    if given:
        return given
    if kept.is_file() and kept.read_text().strip():
        return kept.read_text().strip()
    if debug:
        return DEVELOPMENT_KEY
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set and DEBUG is off. Set DJANGO_SECRET_KEY to a long random string "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or run `make run` / `make serve`, "
        f"which keep one in {kept}, or set DJANGO_DEBUG=1 for development on this machine only."
    )
