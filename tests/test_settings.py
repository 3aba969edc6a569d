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


def read_settings(tmp_path: Path, **env: str) -> dict[str, object]:
    clean = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_DEBUG"}
    }
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", LEUKOLOOP_VAR_DIR=str(tmp_path), **env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=clean, capture_output=True, text=True, check=True
    )
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
