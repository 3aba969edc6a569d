"""Schema post-processing: the error answers every operation may give, whatever its view declares.

- 401 on every operation that needs credentials (none, wrong or expired ones);
- 403 on every unsafe method: a session-authenticated request without its CSRF token is refused;
- 429 on every operation when DRF throttling is configured.
All of them in the shape of ``annotation.api.errors`` (the ``Error`` component)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

UNSAFE = ("post", "put", "patch", "delete")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def add_common_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    throttled = bool(getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_CLASSES"))
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            if {} not in operation.get("security", [{}]):
                responses.setdefault("401", _error("Not authenticated: no, wrong or expired credentials."))
            if method in UNSAFE:
                responses.setdefault(
                    "403",
                    _error(
                        "Refused: the role does not allow it, or a session "
                        "request came without its CSRF token."
                    ),
                )
            if throttled:
                responses.setdefault("429", _error("Too many requests: wait as long as Retry-After says."))
    return result
