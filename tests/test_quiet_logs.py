"""What `make run` prints: no FAISS build messages and no kombu "No hostname" warning from a management
command, and no line for the labelling page's poll (every 1.5 s per open page) from the web server."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.services.projects import project_create
from tests.conftest import REPO, _worker_database_url
from tests.test_serve import free_port

NOISE = ("Loading faiss", "Could not load library", "Successfully loaded faiss", "No hostname was supplied")


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "LEUKOLOOP_VAR_DIR": str(var_dir),
    }


@pytest.mark.slow
def test_management_commands_print_no_faiss_or_hostname_noise(tmp_path: Path) -> None:
    # bootstrap_demo imports the loop (and so FAISS) and sends the first job to the embedded broker.
    env = embedded_env(tmp_path / "var")
    for command in (["migrate", "--no-input", "-v0"], ["bootstrap_demo"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        printed = done.stdout + done.stderr
        assert not [line for line in printed.splitlines() if line.startswith(NOISE)], printed[-3000:]
    assert "admin login" in printed


def get(port: int, path: str, session: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Cookie": f"sessionid={session}", "Accept": "application/json"})
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runserver_does_not_log_the_labelling_pages_poll(tmp_path: Path, settings: Any) -> None:
    lead = User.objects.create_user("poller", password="pw-poller-123")
    project = project_create(name="polled", lead=lead)
    client = Client()
    client.force_login(lead)
    session = client.cookies["sessionid"].value
    port = free_port()
    env = {
        **embedded_env(tmp_path / "var"),
        "DJANGO_DEBUG": "1",
        # The session's user hash is signed with the secret key: the server must use the tests' own.
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": _worker_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    log = tmp_path / "runserver.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                get(port, "/healthz", session)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        poll = f"/api/projects/{project.pk}/loop/"
        for _ in range(3):
            assert get(port, poll, session) == 200
        assert get(port, f"/api/projects/{project.pk}/", session) == 200
        # A poll that fails is still worth a line.
        assert get(port, "/api/projects/999999/loop/", session) == 404
        deadline = time.monotonic() + 10
        while '999999/loop/ HTTP/1.1" 404' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    printed = log.read_text()
    # Other requests are logged as before (so this test sees the log at all)...
    assert f'"GET /api/projects/{project.pk}/ HTTP/1.1" 200' in printed, printed[-3000:]
    assert '"GET /api/projects/999999/loop/ HTTP/1.1" 404' in printed, printed[-3000:]
    # ...the poll's successful answers are not.
    assert poll not in printed, printed[-3000:]
