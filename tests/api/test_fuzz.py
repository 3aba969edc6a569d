"""The API fuzzed with schemathesis over its own OpenAPI schema (drf-spectacular's, as /api/schema/ serves
it): for a project lead, an annotator and an anonymous caller, every operation gets generated requests,
valid and invalid, and every answer must be no server error (5xx) and conform to the schema: a documented
status code, content type, headers and body.

The project is the permission matrix's (tests/api/conftest.py), built with the services: members of every
role, cells, labels, jobs, model versions, an index and a query batch. Most requests name its real
objects (path ids, and cells, class names and usernames in bodies) so that they get past the 404 and 400
answers into the views' work; the rest keep schemathesis's random ids and invalid values.

Bounded and repeatable: ``LEUKOLOOP_FUZZ_EXAMPLES`` examples per operation and role (default 12; about
25 s per role here), generated from a fixed seed. Raise it for a longer hunt.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.test import Client
from django.test.client import ClientHandler
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from annotation.services.annotations import annotation_create
from tests.api.conftest import World

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES = int(os.environ.get("LEUKOLOOP_FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# How the requests are drawn: mostly with the project's real objects, some with random ids, some invalid
# (with real ids, so that the invalid part is what the view sees).
MODES = ("real", "real", "random", "invalid")


class DjangoTestApp:
    """Django's own test handler as a WSGI application: no CSRF check (as ``django.test.Client``), and the
    test's database connection stays open between requests."""

    def __init__(self) -> None:
        self.handler = ClientHandler(enforce_csrf_checks=False)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        response: Any = self.handler(environ)  # an HttpResponse (Django's stubs type the WSGI one)
        headers = list(response.items())
        headers += [("Set-Cookie", cookie.output(header="").strip()) for cookie in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        if getattr(response, "streaming", False):
            return response.streaming_content
        return [response.content]


def session_cookies(user: User | None) -> dict[str, str]:
    if user is None:
        return {}
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


def the_schema() -> Any:
    """The schema as /api/schema/ serves it."""
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return schemathesis.openapi.from_dict(response.json())


def real_objects(world: World, role: str | None) -> dict[str, Any]:
    own = world.annotator_label
    if role == "lead":  # the lead's own label, so that undo can succeed for them too
        label = world.project.classes.first()
        own = annotation_create(cell=world.cells[2], annotator=world.users["lead"], label=label)
    return {
        "path": {
            "project_id": world.project.pk,
            "job_id": world.failed_job.pk,
            "batch_id": world.batch.pk,
            "version_id": world.classifier.pk,
            "cell_id": world.cells[2].pk,
            "annotation_id": own.pk,
            "user_id": world.users["annotator"].pk,
        },
        "cell": [cell.pk for cell in world.cells],
        "label": list(world.project.classes.values_list("name", flat=True)),
        "username": ["newcomer", "annotator", "reviewer"],
    }


def steer(body: Any, real: dict[str, Any], data: st.DataObject) -> Any:
    """Put the project's real cells, class names and usernames into a generated JSON body."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if "cell" in body:
        body["cell"] = data.draw(st.sampled_from(real["cell"]))
    if "cells" in body:
        body["cells"] = data.draw(st.lists(st.sampled_from(real["cell"]), min_size=1, max_size=3))
    for name in ("label", "username"):
        if name in body:
            body[name] = data.draw(st.sampled_from(real[name]))
    return body


def fuzz(
    operation: Any, *, app: DjangoTestApp, real: dict[str, Any], cookies: dict[str, str], examples: int
) -> None:
    names = {parameter.name for parameter in operation.path_parameters}
    path = {name: value for name, value in real["path"].items() if name in names}
    strategies = {
        "real": operation.as_strategy(path_parameters=path),
        "random": operation.as_strategy(),
        "invalid": operation.as_strategy(schemathesis.GenerationMode.NEGATIVE, path_parameters=path),
    }

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the report shows the first failing case
    )
    @given(mode=st.sampled_from(MODES), data=st.data())
    def run(mode: str, data: st.DataObject) -> None:
        case = data.draw(strategies[mode])
        if mode == "real" and data.draw(st.booleans()):
            case.body = steer(case.body, real, data)
        response = case.call(app=app, cookies=cookies)
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize(("role", "examples"), [("lead", EXAMPLES), ("annotator", EXAMPLES), (None, 3)])
def test_the_api_survives_fuzzing(world: World, role: str | None, examples: int) -> None:
    real = real_objects(world, role)
    cookies = session_cookies(world.users[role] if role else None)
    app = DjangoTestApp()
    failures: list[str] = []
    operations = 0
    for result in the_schema().get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            fuzz(operation, app=app, real=real, cookies=cookies, examples=examples)
        except BaseException as exc:  # schemathesis reports check failures as an exception group
            if isinstance(exc, KeyboardInterrupt):
                raise
            report = "\n".join(str(exc).splitlines()[:16])[:2000]
            failures.append(f"{operation.label} as {role or 'anonymous'}:\n{report}")
    assert operations >= 30, operations  # every operation of the API, not a schema that lost its paths
    assert not failures, "\n\n".join(failures)
