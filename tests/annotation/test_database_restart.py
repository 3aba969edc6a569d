"""The database restarts while annotators label (issue 11): no label the server acknowledged is lost, and
none is written twice. A private PostgreSQL cluster (initdb + pg_ctl in a temporary folder; the machine's
shared server is not touched) behind a real web server process; four annotators log in and label every
cell through the API as the page does (session, CSRF token, a client key per label, retry with backoff on
a server error or a dropped connection); PostgreSQL is stopped as in a crash (pg_ctl -m immediate) and
started again mid-labelling. Then every acknowledged label is looked up in the database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from annotation.models import Annotation, LabelClass
from tests.brokers import free_port
from tests.conftest import REPO, ManifestWriter
from tests.pgcluster import PostgresCluster

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

ANNOTATORS = 4

SETUP = r"""
import json, sys
from pathlib import Path
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from django.contrib.auth.models import User
from annotation.importing.service import LabelMode, import_cells
from annotation.models import Cell, Membership
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
project = project_create(name="restart", lead=User.objects.create_user("lead", password="pw-lead-123"))
import_cells(project=project, source=Path(sys.argv[1]), labels=LabelMode.REFERENCE)
for i in range(int(sys.argv[2])):
    user = User.objects.create_user(f"annotator{i}", password=f"pw-annotator{i}-123")
    membership_set(project=project, user=user, role=Membership.Role.ANNOTATOR)
cells = Cell.objects.filter(project=project).select_related("reference_label").order_by("pk")
print(json.dumps({"project": project.pk, "cells": [[c.pk, c.reference_label.name] for c in cells]}))
"""


class Annotator(threading.Thread):
    """Labels each cell once, as the page does: one client key per label, sent again with backoff until
    the server acknowledges it (201)."""

    def __init__(self, base: str, name: str, project: int, cells: list[list[Any]], log: Counter[str]) -> None:
        super().__init__(name=name, daemon=True)
        self.base, self.project, self.cells, self.log = base, project, cells, log
        self.acked: list[tuple[str, int, str, str, int, float]] = []  # user, cell, label, key, id, when
        self.problem = ""

    def run(self) -> None:
        import requests

        try:
            session = requests.Session()
            login = f"{self.base}/accounts/login/"
            session.get(login, timeout=10)
            form = {"username": self.name, "password": f"pw-{self.name}-123"}
            answer = session.post(
                login, data={**form, "csrfmiddlewaretoken": session.cookies["csrftoken"]}, timeout=10
            )
            assert answer.ok and "sessionid" in session.cookies, answer.status_code
            for cell, label in self.cells:
                self._label(session, cell, label)
                time.sleep(0.05)
        except Exception as exc:  # reported by the test
            self.problem = f"{type(exc).__name__}: {exc}"

    def _label(self, session: Any, cell: int, label: str) -> None:
        import requests

        key = str(uuid.uuid4())
        body = {"cells": [cell], "label": label, "client_key": key}
        url = f"{self.base}/api/projects/{self.project}/annotations/"
        delay, deadline = 0.1, time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answer = session.post(
                    url, json=body, headers={"X-CSRFToken": session.cookies["csrftoken"]}, timeout=10
                )
            except requests.RequestException:
                self.log["connection errors"] += 1
            else:
                if answer.status_code == 201:
                    if answer.headers.get("Idempotent-Replayed") == "true":
                        self.log["replayed"] += 1
                    written = answer.json()["annotations"][0]["id"]
                    self.acked.append((self.name, cell, label, key, written, time.monotonic()))
                    self.log["acknowledged"] += 1
                    return
                if answer.status_code not in (408, 429) and answer.status_code < 500:
                    raise AssertionError(f"label refused: {answer.status_code} {answer.text[:300]}")
                self.log[f"HTTP {answer.status_code}"] += 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError(f"cell {cell} not acknowledged within 120 s")


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


def test_database_restart_mid_labelling_loses_no_acknowledged_label(
    make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    if not PostgresCluster.available():
        pytest.skip("needs PostgreSQL's initdb and pg_ctl")
    cluster = PostgresCluster()
    server: subprocess.Popen[bytes] | None = None
    try:
        cluster.init()
        cluster.start()
        cluster.create_database("leukoloop")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": cluster.url("leukoloop"),
            "DATABASE_CONN_MAX_AGE": "60",  # persistent connections: each one is cut by the restart
            "CELERY_BROKER_URL": "filesystem://",
            "LEUKOLOOP_VAR_DIR": str(tmp_path / "var"),
            "LEUKOLOOP_MEDIA_ROOT": str(tmp_path / "media"),
            "DJANGO_SECRET_KEY": "restart-test-" + uuid.uuid4().hex,
            "DJANGO_DEBUG": "0",
        }
        env.pop("LEUKOLOOP_FAILPOINTS", None)
        made = subprocess.run(
            [sys.executable, "-c", SETUP, str(make_manifest(per_class=4)), str(ANNOTATORS)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 0, made.stderr[-3000:]
        site = json.loads(made.stdout.strip().splitlines()[-1])
        port = free_port()
        with (tmp_path / "server.log").open("ab") as out:
            server = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_port(port)
        log: Counter[str] = Counter()
        annotators = [
            Annotator(f"http://127.0.0.1:{port}", f"annotator{i}", site["project"], site["cells"], log)
            for i in range(ANNOTATORS)
        ]
        for annotator in annotators:
            annotator.start()
        total = ANNOTATORS * len(site["cells"])
        deadline = time.monotonic() + 120
        while log["acknowledged"] < total // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = log["acknowledged"]
        down = time.monotonic()
        cluster.restart("immediate")
        up = time.monotonic()
        for annotator in annotators:
            annotator.join(timeout=240)
        problems = [a.problem for a in annotators if a.problem or a.is_alive()]
        assert not problems, (problems, (tmp_path / "server.log").read_text()[-3000:])

        acked = [entry for annotator in annotators for entry in annotator.acked]
        assert len(acked) == total
        assert 0 < before < total and any(when > up for *_, when in acked)  # the restart came mid-labelling
        rows = _annotations(cluster.url("leukoloop"))
        by_id = {row[0]: row for row in rows}
        for user, cell, label, key, written, _ in acked:
            assert by_id.get(written) == (written, cell, user, label, key, None), (user, cell)
        assert len(rows) == len(acked)  # nothing written twice, nothing unacknowledged left behind
        failures = log["connection errors"] + sum(n for k, n in log.items() if k.startswith("HTTP 5"))
        assert failures > 0, log  # requests did meet the restart
        print(
            f"\n{total} labels by {ANNOTATORS} annotators; PostgreSQL down and up in {up - down:.1f} s after "
            f"{before} acknowledged; {dict(log)}; every acknowledged label found, {len(rows)} rows"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        cluster.cleanup()


def _annotations(url: str) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT a.id, a.cell_id, u.username, l.name, a.client_key, a.superseded_by_id "
                f"FROM {Annotation._meta.db_table} a JOIN auth_user u ON u.id = a.annotator_id "
                f"JOIN {LabelClass._meta.db_table} l ON l.id = a.label_id ORDER BY a.id"
            )
            return list(cursor.fetchall())
    finally:
        conn.close()
