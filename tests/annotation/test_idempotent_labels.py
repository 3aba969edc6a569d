"""Label writes are idempotent and safe under concurrency (issue 11): a label POST may carry a
``client_key``; a repeat of it (the page retrying after a lost answer) answers like the first and writes
nothing new. Concurrent labels of one cell by one annotator answer 200/201/409, never 500, and leave
exactly one current annotation (on PostgreSQL, where the audit saw IntegrityError in over half of 30
tries)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell, Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from tests.conftest import ManifestWriter

pytestmark = pytest.mark.realdata


@pytest.fixture
def project(make_manifest: ManifestWriter, lead: User, annotator: User) -> Project:
    project = project_create(name="idempotent", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=4), labels=LabelMode.NONE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    return project


def _client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    client.raise_request_exception = False  # a server error is a 500 answer, as a browser would see it
    return client


def _url(project: Project) -> str:
    return f"/api/projects/{project.pk}/annotations/"


def _cells(project: Project, n: int) -> list[int]:
    return list(Cell.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)[:n])


@pytest.mark.django_db
def test_a_repeated_label_post_answers_like_the_first_and_writes_nothing_new(
    project: Project, annotator: User
) -> None:
    client = _client(annotator)
    cells = _cells(project, 2)
    body = {"cells": cells, "label": "neutrophil", "client_key": str(uuid.uuid4()), "seconds_spent": 3.0}
    first = client.post(_url(project), body, format="json")
    assert first.status_code == 201, first.content
    assert Annotation.objects.count() == 2
    again = client.post(_url(project), body, format="json")
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert Annotation.objects.count() == 2
    # A new key is a new label, as before (it supersedes the first).
    other = client.post(_url(project), {**body, "client_key": str(uuid.uuid4())}, format="json")
    assert other.status_code == 201
    assert Annotation.objects.count() == 4
    assert Annotation.objects.filter(superseded_by__isnull=True).count() == 2


@pytest.mark.django_db
def test_a_client_key_reused_for_another_request_is_refused(project: Project, annotator: User) -> None:
    client = _client(annotator)
    cells = _cells(project, 2)
    key = str(uuid.uuid4())
    assert (
        client.post(_url(project), {"cells": cells[:1], "label": "neutrophil", "client_key": key}).status_code
        == 201
    )
    for changed in ({"cells": cells[1:]}, {"label": "eosinophil"}, {"unsure": True}):
        body = {"cells": cells[:1], "label": "neutrophil", "client_key": key, **changed}
        answer = client.post(_url(project), body, format="json")
        assert answer.status_code == 409, (changed, answer.content)
        assert answer.json()["error"]["code"] == "client_key_reused"
    assert Annotation.objects.count() == 1
    # Keys are per annotator: another annotator's same key is theirs.
    other = User.objects.create_user("other", password="pw-other-123")
    membership_set(project=project, user=other, role=Membership.Role.ANNOTATOR)
    body = {"cells": cells[:1], "label": "neutrophil", "client_key": key}
    assert _client(other).post(_url(project), body, format="json").status_code == 201


@pytest.mark.django_db
def test_a_client_key_is_checked(project: Project, annotator: User) -> None:
    body = {"cells": _cells(project, 1), "label": "neutrophil", "client_key": "x" * 65}
    answer = _client(annotator).post(_url(project), body, format="json")
    assert answer.status_code == 400 and "client_key" in answer.json()["error"]["fields"]


def test_the_api_schema_documents_the_client_key() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)
    field = schema["components"]["schemas"]["LabelRequest"]["properties"]["client_key"]
    assert field["maxLength"] == 64 and "repeat" in field["description"]


TRIES = 30
THREADS = 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "same-key"])
def test_concurrent_labels_of_one_cell_answer_without_server_errors_and_leave_one_current(
    project: Project, annotator: User, keyed: bool
) -> None:
    """``THREADS`` requests at once for the same cell by the same annotator, ``TRIES`` times: with no
    key each is a label (the last one current); with one key they are one label."""
    cells = _cells(project, TRIES)
    statuses: list[int] = []
    lock = threading.Lock()
    for cell in cells:
        start = threading.Barrier(THREADS)
        key = str(uuid.uuid4())

        def post(cell: int = cell, key: str = key, start: threading.Barrier = start) -> None:
            client = _client(annotator)
            body: dict[str, Any] = {"cells": [cell], "label": "lymphocyte"}
            if keyed:
                body["client_key"] = key
            try:
                start.wait()
                answer = client.post(_url(project), body, format="json")
                with lock:
                    statuses.append(answer.status_code)
            finally:
                connection.close()

        threads = [threading.Thread(target=post) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(statuses) == TRIES * THREADS
    assert set(statuses) <= {200, 201, 409}, sorted(statuses)
    for cell in cells:
        mine = Annotation.objects.filter(cell_id=cell, annotator=annotator)
        assert mine.filter(superseded_by__isnull=True).count() == 1
        if keyed:
            assert mine.count() == 1
    print(f"{connection.vendor}: {TRIES}x{THREADS} concurrent label POSTs, answers {sorted(set(statuses))}")
