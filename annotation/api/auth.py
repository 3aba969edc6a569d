"""API tokens (django-rest-knox): POST username and password, get a token for ``Authorization: Token
<key>`` that expires (``REST_KNOX["TOKEN_TTL"]``), is stored only as a digest, and is revoked by
``logout/`` (this token) or ``logoutall/`` (every token of the user).

The credentials come in the body, never by Basic auth, and go through ``authenticate`` with the request,
so django-axes counts wrong passwords here as on the login page and refuses a locked-out username even
with the right password.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from knox import views as knox_views
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.api.serializers import ErrorSerializer


def locked_out_detail() -> str:
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return (
        "Too many wrong passwords for this username from this address: log-in is locked for "
        f"{minutes} minutes (each further try starts the wait again)."
    )


class LockedOut(APIException):
    """429 ``locked_out``: the same answer config.lockout gives the login page's callers."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "locked_out"

    def __init__(self) -> None:
        super().__init__(detail=locked_out_detail(), code=self.default_code)


TokenResponse = inline_serializer(
    "TokenResponse",
    {"token": serializers.CharField(), "expiry": serializers.DateTimeField()},
)


class TokenLoginApi(knox_views.LoginView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=AuthTokenSerializer,
        responses={200: TokenResponse, 400: ErrorSerializer, 429: ErrorSerializer},
        auth=[],
    )
    def post(self, request: Request, format: str | None = None) -> Response:
        credentials = AuthTokenSerializer(data=request.data, context={"request": request})
        if not credentials.is_valid():
            if getattr(request, "axes_locked_out", False):  # set by django-axes' failure handler
                raise LockedOut()
            raise ValidationError(credentials.errors)
        request.user = credentials.validated_data["user"]
        return super().post(request, format=format)


class TokenLogoutApi(knox_views.LogoutView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, format: str | None = None) -> Response:
        return super().post(request, format=format)


class TokenLogoutAllApi(knox_views.LogoutAllView):
    # Also from the pages' own session: "log out everywhere" revokes every token of the user.
    authentication_classes = [*knox_views.LogoutAllView.authentication_classes, SessionAuthentication]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, format: str | None = None) -> Response:
        return super().post(request, format=format)
