"""`make serve`'s web server for real: gunicorn with the production settings (DEBUG off, a secret key,
allowed hosts, DJANGO_HTTPS=1 behind a proxy that says so, static files collected and served by
WhiteNoise) on the test database, on a free port. A page, a log-in and a static file over HTTP."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.services.projects import project_create
from tests.conftest import REPO, _worker_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GUNICORN = Path(sys.executable).with_name("gunicorn")
PASSWORD = "pw-serve-test-123"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def makefile_gunicorn_flags(port: int) -> list[str]:
    """The flags `make serve` gives gunicorn, read from the Makefile (so this test runs what it runs)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    line = re.search(r"^GUNICORN = \$\(BIN\)/gunicorn (.*)$", text, flags=re.M)
    assert line, "no GUNICORN command in the Makefile"
    values = {"$(HOST)": "127.0.0.1", "$(PORT)": str(port), "$(WEB_WORKERS)": "2", "$(WEB_THREADS)": "2"}
    command = line.group(1)
    for name, value in values.items():
        command = command.replace(name, value)
    assert "$(" not in command, command
    return command.split()


class Served:
    def __init__(self, port: int, log: Path | None = None) -> None:
        self.port = port
        self.log = log

    def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> http.client.HTTPResponse:
        return self.request("GET", path, headers=headers, **kw)

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: str | None = None
    ) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        # Behind the TLS proxy DJANGO_HTTPS=1 expects; the Host is one of DJANGO_ALLOWED_HOSTS.
        sent = {"Host": "leukoloop.example.org", "X-Forwarded-Proto": "https", **(headers or {})}
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        response.body = response.read()  # type: ignore[attr-defined]
        connection.close()
        return response


@pytest.fixture
def served(tmp_path: Path, settings: Any) -> Iterator[Served]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "leukoloop.example.org",
        "DJANGO_HTTPS": "1",
        "LEUKOLOOP_COLLECTSTATIC": "1",
        "LEUKOLOOP_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": _worker_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "LEUKOLOOP_MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stderr[-3000:]
    assert (tmp_path / "var" / "static" / "staticfiles.json").is_file()
    port = free_port()
    flags = makefile_gunicorn_flags(port)
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(GUNICORN), *flags],
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
                if Served(port).get("/healthz").status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield Served(port, log)
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        shutil.rmtree(tmp_path / "var" / "static", ignore_errors=True)


def cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    found = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0]
        assert "Secure" in header and "SameSite=Lax" in header, header
    return found


def test_gunicorn_serves_pages_and_static_files_with_production_settings(served: Served) -> None:
    User.objects.create_user("served", password=PASSWORD)

    # Plain HTTP (no proxy header) is sent to HTTPS.
    plain = served.get("/accounts/login/", headers={"X-Forwarded-Proto": "http"})
    assert (
        plain.status == 301 and plain.headers["Location"] == "https://leukoloop.example.org/accounts/login/"
    )

    login = served.get("/accounts/login/")
    assert login.status == 200
    assert "max-age=31536000" in login.headers["Strict-Transport-Security"]
    assert "script-src 'self'" in login.headers["Content-Security-Policy"]
    html = login.body.decode()  # type: ignore[attr-defined]
    # Static files under content-hashed names (collected into var/static)...
    stylesheet = re.search(r'href="(/static/css/leukoloop\.[0-9a-f]{12}\.css)"', html)
    assert stylesheet, html[:1000]
    css = served.get(stylesheet.group(1), headers={"Accept-Encoding": "gzip"})
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    # ...compressed, and cacheable for good since the name changes with the content.
    assert css.headers["Content-Encoding"] == "gzip"
    assert b".swatch" in gzip.decompress(css.body)  # type: ignore[attr-defined]
    assert "immutable" in css.headers["Cache-Control"]
    script = served.get("/static/js/page.js")
    assert script.status == 200 and b"data-colour" in script.body  # type: ignore[attr-defined]
    assert served.get("/static/no-such-file.js").status == 404

    # A log-in through the form, then a page that reads the database.
    jar = cookies(login)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token
    form = f"username=served&password={PASSWORD}&csrfmiddlewaretoken={token.group(1)}&next=/"
    posted = served.request(
        "POST",
        "/accounts/login/",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={jar['csrftoken']}",
            "Referer": "https://leukoloop.example.org/accounts/login/",
        },
    )
    assert posted.status == 302, posted.body[:2000]  # type: ignore[attr-defined]
    session = cookies(posted)["sessionid"]
    projects = served.get("/", headers={"Cookie": f"sessionid={session}"})
    assert projects.status == 200
    assert "Log out served" in projects.body.decode()  # type: ignore[attr-defined]

    # The labelling page's poll answers but leaves no access-log line (config/gunicorn_log.py); the
    # project list above left one.
    project = project_create(name="served", lead=User.objects.get(username="served"))
    poll = f"/api/projects/{project.pk}/loop/"
    assert served.get(poll, headers={"Cookie": f"sessionid={session}"}).status == 200
    assert served.get("/healthz").status == 200
    assert served.log is not None
    deadline = time.monotonic() + 10
    while "GET /healthz" not in served.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    access = served.log.read_text()
    assert '"GET / HTTP/1.1" 200' in access and "GET /healthz" in access, access[-3000:]
    assert poll not in access, access[-3000:]
