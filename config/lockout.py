"""What django-axes answers when a username is locked out, and how it tells clients apart.

A locked-out log-in is a 429: the API's one error shape for /api/ (``code: locked_out``), a page that says
so for the login form. The client's address is the one DRF's throttles use, so both agree on it and
neither trusts an X-Forwarded-For header that no configured proxy wrote.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle

from annotation.api.auth import LockedOut, locked_out_detail
from annotation.api.errors import error_body


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    if request.path.startswith("/api/"):
        body = error_body(status_code=429, detail=locked_out_detail(), code=LockedOut.default_code)
        return JsonResponse(body, status=429)
    return render(request, "registration/locked_out.html", {"detail": locked_out_detail()}, status=429)


def client_ip(request: HttpRequest) -> str:
    # DRF's identification honours REST_FRAMEWORK["NUM_PROXIES"] (LEUKOLOOP_PROXY_COUNT).
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]
