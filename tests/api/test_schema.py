"""The OpenAPI schema generates without warnings, validates as OpenAPI 3 and lists the main paths; Swagger
UI is served with its assets from this server, not from a CDN."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

MAIN_PATHS = [
    "/api/auth/token/",
    "/api/projects/",
    "/api/projects/{project_id}/",
    "/api/projects/{project_id}/cells/",
    "/api/projects/{project_id}/annotations/",
    "/api/projects/{project_id}/batches/",
    "/api/projects/{project_id}/batches/{batch_id}/",
    "/api/projects/{project_id}/models/",
    "/api/projects/{project_id}/models/{version_id}/",
    "/api/projects/{project_id}/jobs/",
    "/api/jobs/{job_id}/",
    "/api/projects/{project_id}/loop/",
    "/api/projects/{project_id}/review/",
]


# Views outside this module's care that do not carry schema hints yet: their warnings are reported by
# the generator but do not fail this test. Remove an entry once its views have serializer hints.
# The dashboard's views are plain Django views (HTML and JSON for its own page), not part of the API schema.
NOT_YET_HINTED = ("annotation/dashboard/",)


def test_schema_generates_without_warnings_and_validates() -> None:
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    messages = [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]
    GENERATOR_STATS.reset()
    ours = [m for m in messages if not any(folder in m for folder in NOT_YET_HINTED)]
    assert ours == []
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    for path in MAIN_PATHS:
        assert path in schema["paths"], path


def test_schema_endpoint_serves_openapi_3_json() -> None:
    from drf_spectacular.validation import validate_schema

    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    assert set(MAIN_PATHS) <= set(schema["paths"])
    annotations = schema["paths"]["/api/projects/{project_id}/annotations/"]
    assert {"get", "post"} <= set(annotations)
    assert {p["name"] for p in annotations["get"]["parameters"]} >= {"cell", "annotator", "label", "current"}
    assert "knoxApiToken" in schema["components"]["securitySchemes"]
    assert "basicAuth" not in schema["components"]["securitySchemes"]
    assert "Error" in schema["components"]["schemas"]


def test_swagger_ui_uses_local_assets() -> None:
    page = Client().get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    bundle = Client().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200


def test_every_answer_has_a_described_shape() -> None:
    """No operation answers a free-form object: each JSON answer names its fields (a component or a list
    of them), so that clients and the schemathesis run (test_fuzz.py) can hold the views to it; and every
    operation that needs credentials documents the 401."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    loose = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if {} not in operation.get("security", [{}]):
                assert "401" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                body = response.get("content", {}).get("application/json", {}).get("schema")
                if body is None:
                    continue
                described = "$ref" in body or "$ref" in body.get("items", {}) or "properties" in body
                if not described:
                    loose.append(f"{method.upper()} {path} {status}: {body}")
    assert loose == []
