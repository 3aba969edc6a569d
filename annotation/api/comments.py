"""Comments on a cell: every member of the cell's project reads them and adds one (outsiders get 404).
Text is stored and answered as typed; pages show it as text (``textContent``, Django's escaping)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.access import cell_for_user
from annotation.api.views import NOT_FOUND, errors
from annotation.models import COMMENT_MAX_CHARS
from annotation.services.comments import CommentError, comment_add

Shape = serializers.Serializer[dict[str, Any]]


class CommentSerializer(Shape):
    id = serializers.IntegerField()
    cell = serializers.IntegerField()
    author = serializers.CharField(allow_null=True)
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


class CommentAddSerializer(Shape):
    text = serializers.CharField(max_length=COMMENT_MAX_CHARS, trim_whitespace=True)


class CellCommentsApi(APIView):
    parser_classes = [JSONParser]  # the pages and clients send JSON; one request shape to check

    @extend_schema(responses={200: CommentSerializer(many=True), **NOT_FOUND})
    def get(self, request: Request, cell_id: int) -> Response:
        """The cell's comments, oldest first (members of its project)."""
        cell = cell_for_user(user=request.user, cell_id=cell_id)
        return Response(selectors.comment_list(cell_ids=[cell.pk]).get(cell.pk, []))

    @extend_schema(request=CommentAddSerializer, responses={201: CommentSerializer, **errors(400, 404)})
    def post(self, request: Request, cell_id: int) -> Response:
        """Leave a comment on the cell: plain text, at most 2000 characters (members of its project)."""
        cell = cell_for_user(user=request.user, cell_id=cell_id)
        data = CommentAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            comment = comment_add(cell=cell, author=request.user, text=data.validated_data["text"])  # type: ignore[arg-type]
        except CommentError as error:
            raise ValidationError({"text": str(error)}) from None
        return Response(selectors.comment_summary(comment), status=status.HTTP_201_CREATED)
