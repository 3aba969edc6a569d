"""The caller's own labelling-page preferences (tile size, blind mode). There is no URL for anybody
else's: every user, whatever their role, reads and changes only their own."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as ModelValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.api.views import errors
from annotation.models import TILE_SIZE_MAX, TILE_SIZE_MIN
from annotation.services.preferences import page_preferences_update


class PagePreferencesSerializer(serializers.Serializer[dict[str, Any]]):
    tile_size = serializers.IntegerField(
        min_value=TILE_SIZE_MIN, max_value=TILE_SIZE_MAX, help_text="Side of a grid tile in CSS pixels."
    )
    blind_mode = serializers.BooleanField(help_text="Hide the model's suggestions on the labelling page.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A misspelt field, or one naming another user, would otherwise be ignored without a word.
        unknown = sorted(set(getattr(self, "initial_data", {}) or {}) - set(self.fields))
        if unknown:
            allowed = ", ".join(self.fields)
            raise ValidationError(f"not a page setting: {', '.join(unknown)} (use {allowed})")
        return attrs


class PagePreferencesApi(APIView):
    @extend_schema(responses={200: PagePreferencesSerializer})
    def get(self, request: Request) -> Response:
        """The caller's preferences (the defaults until they change one)."""
        return Response(selectors.page_preferences(user=request.user))

    @extend_schema(
        request=PagePreferencesSerializer, responses={200: PagePreferencesSerializer, **errors(400)}
    )
    def patch(self, request: Request) -> Response:
        """Change some of the caller's own preferences."""
        data = PagePreferencesSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        try:
            page_preferences_update(user=request.user, changes=dict(data.validated_data))  # type: ignore[arg-type]
        except ModelValidationError as error:
            raise ValidationError(error.message_dict) from error
        return Response(selectors.page_preferences(user=request.user))
