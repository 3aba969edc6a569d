"""API of the labelling page: loop state, batches, labels (single and many), undo, skip, review,
similar cells and provenance. Every view checks project membership first (outsiders get 404)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import loop_state, selectors, services
from annotation.access import LEADS, REVIEWERS, cell_for_user, project_for_user, require_role
from annotation.api.errors import Conflict
from annotation.api.serializers import AnnotationSerializer
from annotation.api.views import NOT_FOUND, bool_param, errors, int_param, schema_only
from annotation.models import Annotation, Cell, Job, LabelClass, Project, QueryBatch, QueryItem

OBJECT = OpenApiTypes.OBJECT


def _label(project: Project, name: str | None) -> LabelClass | None:
    if name in (None, ""):
        return None
    label = LabelClass.objects.filter(project=project, name=name).first()
    if label is None:
        raise ValidationError({"label": f"{name!r} is not a class of this project"})
    return label


class LoopStateApi(APIView):
    @extend_schema(responses={200: OBJECT, **NOT_FOUND})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        return Response(loop_state.loop_state(project=project))


class StartSerializer(serializers.Serializer[dict[str, Any]]):
    minutes = serializers.FloatField(required=False, min_value=0.0, max_value=24 * 60)


class LoopStartApi(APIView):
    """Pretrain a new encoder (which re-indexes the cells and retrains on the labels so far). Leads."""

    @extend_schema(request=StartSerializer, responses={200: OBJECT, 202: OBJECT, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        data = StartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        active = Job.objects.filter(
            project=project, kind__in=[Job.Kind.PRETRAIN, Job.Kind.EMBED], status__in=loop_state.ACTIVE
        ).first()
        if active is not None:
            return Response(loop_state.job_summary(active), status=status.HTTP_200_OK)
        job = services.job_create(
            kind=Job.Kind.PRETRAIN,
            project=project,
            params=dict(data.validated_data),
            created_by=request.user,  # type: ignore[arg-type]  # IsAuthenticated: never anonymous here
        )
        return Response(loop_state.job_summary(job), status=status.HTTP_202_ACCEPTED)


class FinetuneSerializer(serializers.Serializer[dict[str, Any]]):
    minutes = serializers.FloatField(required=False, min_value=0.1, max_value=24 * 60)
    epochs = serializers.FloatField(required=False, min_value=0.1, max_value=1000)


class LoopFinetuneApi(APIView):
    """Fine-tune the whole encoder on the labels so far (then re-embed, re-index and retrain). Leads."""

    @extend_schema(request=FinetuneSerializer, responses={202: OBJECT, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        data = FinetuneSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.finetune_request(
            project=project,
            created_by=request.user,  # type: ignore[arg-type]
            **data.validated_data,
        )
        return Response(loop_state.job_summary(job), status=status.HTTP_202_ACCEPTED)


class CurrentBatchApi(APIView):
    @extend_schema(responses={200: OBJECT, **NOT_FOUND})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        batch = loop_state.current_batch(project)
        if batch is None:
            return Response({"batch": None})
        return Response({"batch": loop_state.batch_for_annotator(batch=batch, user=request.user)})


class BatchSubmitApi(APIView):
    @extend_schema(request=None, responses={202: OBJECT, **NOT_FOUND})
    def post(self, request: Request, project_id: int, batch_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        batch = get_object_or_404(QueryBatch, pk=batch_id, project=project)
        job = services.batch_submit(batch=batch, user=request.user)  # type: ignore[arg-type]
        return Response({"retrain_job": loop_state.job_summary(job)}, status=status.HTTP_202_ACCEPTED)


class SkipSerializer(serializers.Serializer[dict[str, Any]]):
    cell = serializers.IntegerField()


class BatchSkipApi(APIView):
    @extend_schema(request=SkipSerializer, responses={200: OBJECT, **errors(400, 404)})
    def post(self, request: Request, project_id: int, batch_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        data = SkipSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        item = get_object_or_404(
            QueryItem, batch_id=batch_id, batch__project=project, cell_id=data.validated_data["cell"]
        )
        services.query_item_skip(item=item, user=request.user)  # type: ignore[arg-type]
        return Response({"cell": item.cell_id, "skipped": True})


class LabelSerializer(serializers.Serializer[dict[str, Any]]):
    cells = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=500)
    label = serializers.CharField(required=False, allow_null=True, allow_blank=True)  # type: ignore[assignment]
    unsure = serializers.BooleanField(default=False)
    attributes = serializers.DictField(child=serializers.CharField(), required=False)
    seconds_spent = serializers.FloatField(required=False, allow_null=True, min_value=0.0)


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
    POST: label one cell or many at once (multi-select). All or nothing: one bad cell labels none."""

    serializer_class = AnnotationSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]  # DRF's generic signature
        if schema_only(self):
            return Annotation.objects.none()
        request = self.request
        project = project_for_user(user=request.user, project_id=self.kwargs["project_id"])
        annotations = (
            Annotation.objects.filter(cell__project=project)
            .select_related("label", "annotator")
            .order_by("id")
        )
        if selectors.project_role(user=request.user, project=project) not in REVIEWERS:
            annotations = annotations.filter(annotator_id=request.user.pk)
        cell = int_param(request, "cell")
        if cell is not None:
            annotations = annotations.filter(cell_id=cell)
        annotator = request.query_params.get("annotator")
        if annotator:
            annotations = annotations.filter(annotator__username=annotator)
        label = _label(project, request.query_params.get("label"))
        if label is not None:
            annotations = annotations.filter(label=label)
        origin = request.query_params.get("origin")
        if origin:
            if origin not in Annotation.Origin.values:
                raise ValidationError({"origin": f"must be one of {', '.join(Annotation.Origin.values)}"})
            annotations = annotations.filter(origin=origin)
        unsure = bool_param(request, "unsure")
        if unsure is not None:
            annotations = annotations.filter(unsure=unsure)
        if bool_param(request, "current"):
            annotations = annotations.filter(superseded_by__isnull=True)
        return annotations

    @extend_schema(request=LabelSerializer, responses={201: OBJECT, **errors(400, 404)})
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        data = LabelSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        label = _label(project, values.get("label"))
        if label is None and not values["unsure"]:
            raise ValidationError({"label": "give a label, or flag the cell unsure"})
        cell_ids = list(dict.fromkeys(values["cells"]))
        cells = {
            c.pk: c for c in Cell.objects.filter(project=project, pk__in=cell_ids).select_related("project")
        }
        missing = [c for c in cell_ids if c not in cells]
        if missing:
            raise ValidationError({"cells": f"not cells of this project: {missing}"})
        # Time spent on a multi-select is shared among its cells.
        seconds = values.get("seconds_spent")
        per_cell = seconds / len(cell_ids) if seconds is not None else None
        try:
            with transaction.atomic():
                created = [
                    services.annotation_create(
                        cell=cells[cell_id],
                        annotator=request.user,  # type: ignore[arg-type]
                        label=label,
                        attributes=values.get("attributes") or {},
                        unsure=values["unsure"],
                        seconds_spent=per_cell,
                    )
                    for cell_id in cell_ids
                ]
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(
            {"annotations": [loop_state.annotation_summary(a) for a in created]},
            status=status.HTTP_201_CREATED,
        )


class AnnotationUndoApi(APIView):
    @extend_schema(request=None, responses={200: OBJECT, **errors(403, 404, 409)})
    def post(self, request: Request, annotation_id: int) -> Response:
        annotation = get_object_or_404(Annotation.objects.select_related("cell"), pk=annotation_id)
        project_for_user(user=request.user, project_id=annotation.cell.project_id)
        try:
            restored = services.annotation_withdraw(annotation=annotation, user=request.user)  # type: ignore[arg-type]
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        return Response(
            {
                "withdrawn": annotation.pk,
                "restored": loop_state.annotation_summary(restored) if restored is not None else None,
            }
        )


class ReviewSerializer(serializers.Serializer[dict[str, Any]]):
    cell = serializers.IntegerField()
    label = serializers.CharField()  # type: ignore[assignment]  # DRF's stubs think Field.label is a str
    attributes = serializers.DictField(child=serializers.CharField(), required=False)


class ReviewQueueApi(APIView):
    """The reviewer queue (cells flagged unsure or labelled differently) and final decisions. Reviewers,
    leads and admins."""

    @extend_schema(responses={200: OBJECT, **errors(403, 404)})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=REVIEWERS)
        return Response({"queue": loop_state.review_queue(project=project)})

    @extend_schema(request=ReviewSerializer, responses={201: OBJECT, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=REVIEWERS)
        data = ReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cell = get_object_or_404(Cell, pk=data.validated_data["cell"], project=project)
        label = _label(project, data.validated_data["label"])
        assert label is not None
        try:
            decision = services.review_decide(
                cell=cell,
                reviewer=request.user,  # type: ignore[arg-type]
                label=label,
                attributes=data.validated_data.get("attributes") or {},
            )
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(loop_state.annotation_summary(decision), status=status.HTTP_201_CREATED)


class CellWhyApi(APIView):
    @extend_schema(responses={200: OBJECT, **NOT_FOUND})
    def get(self, request: Request, cell_id: int) -> Response:
        """Why the cell was queried (every batch that chose it) and its label history. Annotators see
        only their own labels in the history, so that nobody else's label sways theirs."""
        cell = cell_for_user(user=request.user, cell_id=cell_id)
        history = loop_state.cell_history(cell=cell)
        if selectors.project_role(user=request.user, project=cell.project) not in REVIEWERS:
            username = request.user.get_username()
            history = [entry for entry in history if entry["annotator"] == username]
        return Response(
            {"cell": cell.pk, "queried": loop_state.cell_provenance(cell=cell), "history": history}
        )


class CellSimilarApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("k", int, description="How many neighbours (1 to 50, default 8).")],
        responses={200: OBJECT, **errors(400, 404)},
    )
    def get(self, request: Request, cell_id: int) -> Response:
        from learning.service.inference import similar_cells

        cell = cell_for_user(user=request.user, cell_id=cell_id)
        k = int_param(request, "k")
        k = 8 if k is None else max(1, min(k, 50))
        return Response(similar_cells(cell=cell, k=k))
