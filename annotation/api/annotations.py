"""API of labels: list and create annotations (one cell or many), undo, and the reviewer queue."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.access import project_for_user, require_labelling, require_role
from annotation.api.errors import Conflict
from annotation.api.responses import (
    AnnotationsCreatedSerializer,
    AnnotationSummarySerializer,
    ReviewQueueSerializer,
    UndoneSerializer,
)
from annotation.api.serializers import AnnotationSerializer, IdField
from annotation.api.views import bool_param, errors, int_param, schema_only, str_param
from annotation.models import Annotation, Cell, LabelClass, Project
from annotation.roles import REVIEWERS
from annotation.selectors import annotation_list, annotation_summary, page_preferences, review_queue
from annotation.services.annotations import (
    ClientKeyReusedError,
    UnknownCellsError,
    annotation_withdraw,
    annotations_create,
)
from annotation.services.review import review_decide


def _label(project: Project, name: str | None, *, writing: bool = False) -> LabelClass | None:
    """The class named ``name``; to label with (``writing``), it must be active, not retired."""
    if name in (None, ""):
        return None
    label = LabelClass.objects.filter(project=project, name=name).select_related("merged_into").first()
    if label is None:
        raise ValidationError({"label": f"{name!r} is not a class of this project"})
    if writing and not label.is_active:
        merged = f": it was merged into {label.merged_into.name!r}" if label.merged_into else ""
        raise ValidationError({"label": f"{name!r} is a retired class{merged}"})
    return label


class LabelSerializer(serializers.Serializer[dict[str, Any]]):
    cells = serializers.ListField(child=IdField(), min_length=1, max_length=500)
    label = serializers.CharField(required=False, allow_null=True, allow_blank=True)  # type: ignore[assignment]
    unsure = serializers.BooleanField(default=False)
    attributes = serializers.DictField(child=serializers.CharField(), required=False)
    seconds_spent = serializers.FloatField(required=False, allow_null=True, min_value=0.0)
    client_key = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text=(
            "Optional idempotency key, unique per label request of this user (a UUID, say). A repeat of "
            "the request with the same key (a retry after a lost answer) writes nothing and answers like "
            "the first, with the header `Idempotent-Replayed: true`; the same key with other cells, "
            "label, flags or attributes is refused (409, `client_key_reused`)."
        ),
    )


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("cell", int, description="Only annotations of this cell."),
            OpenApiParameter("annotator", str, description="Only annotations by this username."),
            OpenApiParameter("label", str, description="Only annotations giving this class (its name)."),
            OpenApiParameter("origin", str, enum=Annotation.Origin.values),
            OpenApiParameter("unsure", bool),
            OpenApiParameter("current", bool, description="true: only current annotations (no history)."),
        ],
        responses={200: AnnotationSerializer(many=True), **errors(400, 404)},
    )
)
class AnnotationListCreateApi(generics.ListAPIView[Annotation]):
    """GET: annotations of the project, history included, oldest first. Annotators see only their own;
    reviewers, leads and admins see everyone's.
    POST: label one cell or many at once (multi-select). All or nothing: one bad cell labels none. Give a
    ``client_key`` so that a retried request labels once. Two labels of one cell by one annotator at once
    both land, one after the other (the later one is current); 409 only if they still collide."""

    serializer_class = AnnotationSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]  # DRF's generic signature
        if schema_only(self):
            return Annotation.objects.none()
        request = self.request
        project = project_for_user(user=request.user, project_id=self.kwargs["project_id"])
        origin = request.query_params.get("origin") or None
        if origin is not None and origin not in Annotation.Origin.values:
            raise ValidationError({"origin": f"must be one of {', '.join(Annotation.Origin.values)}"})
        return annotation_list(
            project=project,
            user=request.user,
            cell_id=int_param(request, "cell"),
            annotator=str_param(request, "annotator"),
            label=_label(project, str_param(request, "label")),
            origin=origin,
            unsure=bool_param(request, "unsure"),
            current_only=bool(bool_param(request, "current")),
        )

    @extend_schema(
        request=LabelSerializer, responses={201: AnnotationsCreatedSerializer, **errors(400, 403, 404, 409)}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_labelling(user=request.user, project=project)
        data = LabelSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        label = _label(project, values.get("label"), writing=True)
        if label is None and not values["unsure"]:
            raise ValidationError({"label": "give a label, or flag the cell unsure"})
        try:
            written = annotations_create(
                project=project,
                cell_ids=values["cells"],
                annotator=request.user,  # type: ignore[arg-type]  # IsAuthenticated: never anonymous here
                label=label,
                attributes=values.get("attributes") or {},
                unsure=values["unsure"],
                seconds_spent=values.get("seconds_spent"),
                client_key=values.get("client_key") or "",
            )
        except ClientKeyReusedError as exc:
            raise Conflict(str(exc), code="client_key_reused") from exc
        except IntegrityError as exc:
            # The cell lock serializes labels of a cell; this is the constraint's last word if two still met.
            raise Conflict("another label of this cell was saved at the same moment: try again") from exc
        except ValueError as exc:
            raise ValidationError(
                {"cells" if isinstance(exc, UnknownCellsError) else "detail": str(exc)}
            ) from exc
        headers = {"Idempotent-Replayed": "true"} if written.replayed else None
        return Response(
            {"annotations": [annotation_summary(a) for a in written.annotations]},
            status=status.HTTP_201_CREATED,
            headers=headers,
        )


class AnnotationUndoApi(APIView):
    @extend_schema(request=None, responses={200: UndoneSerializer, **errors(403, 404, 409)})
    def post(self, request: Request, annotation_id: int) -> Response:
        annotation = get_object_or_404(Annotation.objects.select_related("cell"), pk=annotation_id)
        project_for_user(user=request.user, project_id=annotation.cell.project_id)
        try:
            restored = annotation_withdraw(annotation=annotation, user=request.user)  # type: ignore[arg-type]
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        return Response(
            {
                "withdrawn": annotation.pk,
                "restored": annotation_summary(restored) if restored is not None else None,
            }
        )


class ReviewSerializer(serializers.Serializer[dict[str, Any]]):
    cell = IdField()
    label = serializers.CharField()  # type: ignore[assignment]  # DRF's stubs think Field.label is a str
    attributes = serializers.DictField(child=serializers.CharField(), required=False)


class ReviewQueueApi(APIView):
    """The reviewer queue (cells flagged unsure or labelled differently) and final decisions. Reviewers,
    leads and admins."""

    @extend_schema(responses={200: ReviewQueueSerializer, **errors(403, 404)})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=REVIEWERS)
        blind = bool(page_preferences(user=request.user)["blind_mode"])
        return Response({"queue": review_queue(project=project, blind=blind)})

    @extend_schema(
        request=ReviewSerializer, responses={201: AnnotationSummarySerializer, **errors(400, 403, 404)}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=REVIEWERS)
        data = ReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cell = get_object_or_404(Cell, pk=data.validated_data["cell"], project=project)
        label = _label(project, data.validated_data["label"], writing=True)
        assert label is not None
        try:
            decision = review_decide(
                cell=cell,
                reviewer=request.user,  # type: ignore[arg-type]
                label=label,
                attributes=data.validated_data.get("attributes") or {},
            )
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(annotation_summary(decision), status=status.HTTP_201_CREATED)
