"""One JSON shape for every API error (400, 401, 403, 404, 405, 409, 415, 429):

    {"error": {"status": 400, "code": "invalid", "detail": "label: 'x' is not a class of this project",
               "fields": {"label": ["'x' is not a class of this project"]}}}

``detail`` is always one readable sentence; ``fields`` (validation errors only) maps each bad field of
the request to its messages. Django's ``Http404`` and ``PermissionDenied`` (raised by
``annotation.access``) keep their messages. Server errors (500) are not turned into JSON here: they
propagate to Django, which logs them.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

# Keys of a validation error that describe the request as a whole rather than one field.
_GENERAL = ("detail", "non_field_errors")


class Conflict(APIException):
    """The request is valid but the object's state forbids it (e.g. undoing a label that is not current)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "the request conflicts with the current state"
    default_code = "conflict"


def _messages(value: Any) -> list[str]:
    """Flatten DRF's nested error details into a list of strings."""
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, inner in value.items() for message in _messages(inner)]
    if isinstance(value, list | tuple):
        return [message for inner in value for message in _messages(inner)]
    return [str(value)]


def _code(exc: APIException, default: str) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return default


def error_body(
    *, status_code: int, detail: str, code: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status_code, "code": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return {"error": body}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:  # not an API error: let Django handle (and log) it
        return None
    if isinstance(exc, ValidationError):
        data = exc.detail
        fields: dict[str, list[str]] = {}
        general: list[str] = []
        if isinstance(data, dict):
            for key, value in data.items():
                if key in _GENERAL:
                    general += _messages(value)
                else:
                    fields[str(key)] = _messages(value)
        else:
            general += _messages(data)
        parts = general + [f"{key}: {'; '.join(messages)}" for key, messages in fields.items()]
        response.data = error_body(
            status_code=response.status_code,
            detail="; ".join(parts) or "invalid request",
            code="invalid",
            fields=fields,
        )
        return response
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    code = _code(exc, "error") if isinstance(exc, APIException) else _default_code(response.status_code)
    response.data = error_body(
        status_code=response.status_code,
        detail=str(detail) if detail is not None else "; ".join(_messages(response.data)),
        code=code,
    )
    return response


def _default_code(status_code: int) -> str:
    return {
        status.HTTP_403_FORBIDDEN: "permission_denied",
        status.HTTP_404_NOT_FOUND: "not_found",
    }.get(status_code, "error")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 handler: unknown URLs under /api/ answer in the API's error shape, pages in HTML."""
    if request.path.startswith("/api/"):
        body = {"error": {"status": 404, "code": "not_found", "detail": f"no API endpoint at {request.path}"}}
        return JsonResponse(body, status=404)
    return page_not_found(request, exception)
