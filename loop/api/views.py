"""API of the loop: its state, starting pretraining and fine-tuning, batches (current, submit, skip), model
versions, similar cells and why a cell was chosen. Every view checks project membership first (outsiders
get 404)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.access import (
    cell_for_user,
    labelling_paused,
    project_for_user,
    require_labelling,
    require_role,
)
from annotation.api.errors import Conflict
from annotation.api.serializers import IdField
from annotation.api.views import NOT_FOUND, bool_param, errors, int_param, schema_only
from annotation.models import Project
from annotation.roles import LEADS, REVIEWERS
from annotation.selectors import AnyUser, cell_history
from jobs.selectors import job_summary
from learning.transforms import AUGMENT_PRESETS
from loop.api.responses import (
    BatchItemSerializer,
    CurrentBatchSerializer,
    JobSummarySerializer,
    LoopStateSerializer,
    SimilarSerializer,
    SkippedSerializer,
    SubmittedSerializer,
    WhySerializer,
)
from loop.api.serializers import (
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    QueryBatchDetailSerializer,
    QueryBatchSerializer,
)
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.selectors import batch_list
from loop.services.batches import EmptyBatchError, batch_submit, query_item_skip, query_item_unskip
from loop.services.requests import finetune_request, own_batch_request
from loop.services.start import loop_start
from loop.state import (
    SuggestionRule,
    batch_for_annotator,
    cell_provenance,
    current_batch,
    current_labels_of,
    item_for_annotator,
    loop_state,
)


class LoopStateApi(APIView):
    @extend_schema(responses={200: LoopStateSerializer, **NOT_FOUND})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        return Response(loop_state(project=project, user=request.user))


class StartSerializer(serializers.Serializer[dict[str, Any]]):
    minutes = serializers.FloatField(required=False, min_value=0.0, max_value=24 * 60)


class LoopStartApi(APIView):
    """Start the loop: a project without an encoder gets its first batch from the initial (ImageNet)
    weights at once and pretrains in the background after it; one with an encoder pretrains a new one in
    the background (which then re-indexes the cells and retrains on the labels so far). Leads."""

    @extend_schema(
        request=StartSerializer,
        responses={200: JobSummarySerializer, 202: JobSummarySerializer, **errors(400, 403, 404)},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        data = StartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job, created = loop_start(
            project=project,
            created_by=request.user,  # type: ignore[arg-type]  # IsAuthenticated: never anonymous here
            minutes=data.validated_data.get("minutes"),
        )
        if not created:
            return Response(job_summary(job), status=status.HTTP_200_OK)
        return Response(job_summary(job), status=status.HTTP_202_ACCEPTED)


class FinetuneSerializer(serializers.Serializer[dict[str, Any]]):
    minutes = serializers.FloatField(required=False, min_value=0.1, max_value=24 * 60)
    epochs = serializers.FloatField(required=False, min_value=0.1, max_value=1000)
    image_size = serializers.IntegerField(
        required=False, min_value=16, max_value=512, help_text="default: the project's finetune_image_size"
    )
    augment = serializers.ChoiceField(
        choices=sorted(AUGMENT_PRESETS),
        required=False,
        help_text="augmentation preset; travel adds stain jitter, blur and a wider zoom",
    )


class LoopFinetuneApi(APIView):
    """Fine-tune the whole encoder on the labels so far (then re-embed, re-index and retrain). Leads."""

    @extend_schema(request=FinetuneSerializer, responses={202: JobSummarySerializer, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        data = FinetuneSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = finetune_request(
            project=project,
            created_by=request.user,  # type: ignore[arg-type]
            **data.validated_data,
        )
        return Response(job_summary(job), status=status.HTTP_202_ACCEPTED)


class CurrentBatchApi(APIView):
    @extend_schema(responses={200: CurrentBatchSerializer, **NOT_FOUND})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        batch = current_batch(project, request.user)
        no_open_batch = batch is None or batch.submitted_at is not None
        if no_open_batch and not labelling_paused(user=request.user, project=project):
            # No open batch (of their own, with split work): one is built in the background where the
            # label budget allows it (the page polls for it).
            own_batch_request(project=project, user=request.user)  # type: ignore[arg-type]
        if batch is None:
            return Response({"batch": None})
        return Response({"batch": batch_for_annotator(batch=batch, user=request.user)})


class BatchSubmitApi(APIView):
    """Submit the batch: retrain, then build the next one. An untouched batch is refused (409,
    ``empty_batch``)."""

    @extend_schema(request=None, responses={202: SubmittedSerializer, **errors(403, 404, 409)})
    def post(self, request: Request, project_id: int, batch_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        require_labelling(user=request.user, project=project)
        batch = get_object_or_404(QueryBatch, pk=batch_id, project=project)
        require_own_batch(user=request.user, batch=batch)
        try:
            job = batch_submit(batch=batch, user=request.user)  # type: ignore[arg-type]
        except EmptyBatchError as exc:
            raise Conflict(str(exc), code="empty_batch") from exc
        return Response({"retrain_job": job_summary(job)}, status=status.HTTP_202_ACCEPTED)


class SkipSerializer(serializers.Serializer[dict[str, Any]]):
    cell = IdField()


def visible_batches(*, project: Project, user: AnyUser) -> QuerySet[QueryBatch]:
    """``batch_list`` as this member may read it: an annotator sees the shared batches and their own, not
    another annotator's (whose cells would give their agreement sample away); reviewers and up see all."""
    batches = batch_list(project=project)
    if selectors.project_role(user=user, project=project) in REVIEWERS:
        return batches
    return batches.filter(Q(assignee__isnull=True) | Q(assignee_id=user.pk))


def require_own_batch(*, user: AnyUser, batch: QueryBatch) -> None:
    """An annotator's batch is theirs to skip in and submit (leads and admins may too: someone left)."""
    if batch.assignee_id is None or batch.assignee_id == user.pk:
        return
    if selectors.project_role(user=user, project=batch.project) in LEADS:
        return
    raise PermissionDenied("this batch is another annotator's", code="not_your_batch")


def _requested_item(request: Request, project_id: int, batch_id: int) -> QueryItem:
    """The batch item named by the request's ``{"cell": id}``; outsiders and other batches get 404."""
    project = project_for_user(user=request.user, project_id=project_id)
    data = SkipSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    return get_object_or_404(
        QueryItem, batch_id=batch_id, batch__project=project, cell_id=data.validated_data["cell"]
    )


class BatchSkipApi(APIView):
    @extend_schema(request=SkipSerializer, responses={200: SkippedSerializer, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int, batch_id: int) -> Response:
        item = _requested_item(request, project_id, batch_id)
        require_labelling(user=request.user, project=item.batch.project)
        require_own_batch(user=request.user, batch=item.batch)
        query_item_skip(item=item, user=request.user)  # type: ignore[arg-type]
        return Response({"cell": item.cell_id, "skipped": True})


class BatchUnskipApi(APIView):
    """Undo a skip: the cell is back in the batch."""

    @extend_schema(request=SkipSerializer, responses={200: BatchItemSerializer, **errors(400, 403, 404)})
    def post(self, request: Request, project_id: int, batch_id: int) -> Response:
        item = _requested_item(request, project_id, batch_id)
        require_own_batch(user=request.user, batch=item.batch)
        query_item_unskip(item=item)
        return Response(item_for_annotator(item=item, user=request.user))


class CellWhyApi(APIView):
    @extend_schema(responses={200: WhySerializer, **NOT_FOUND})
    def get(self, request: Request, cell_id: int) -> Response:
        """Why the cell was queried (every batch that chose it) and its label history. Annotators see
        only their own labels in the history, so that nobody else's label sways theirs."""
        cell = cell_for_user(user=request.user, cell_id=cell_id)
        history = cell_history(cell=cell)
        reader: AnyUser | None = None
        if selectors.project_role(user=request.user, project=cell.project) not in REVIEWERS:
            username = request.user.get_username()
            history = [entry for entry in history if entry["annotator"] == username]
            reader = request.user  # and only the batches they could open (shared or their own)
        rule = SuggestionRule.for_user(project=cell.project, user=request.user)
        queried = cell_provenance(cell=cell, rule=rule, reader=reader)
        return Response({"cell": cell.pk, "queried": queried, "history": history})


class CellSimilarApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("k", int, description="How many neighbours (1 to 50, default 8).")],
        responses={200: SimilarSerializer, **errors(400, 404)},
    )
    def get(self, request: Request, cell_id: int) -> Response:
        """The cell's nearest neighbours in the latest index, each with its label: the resolved label for
        reviewers, leads and admins; for annotators their own label only, as in the cell's history, so
        that nobody else's label sways theirs."""
        from loop.handlers.inference import similar_cells

        cell = cell_for_user(user=request.user, cell_id=cell_id)
        k = int_param(request, "k")
        k = 8 if k is None else max(1, min(k, 50))
        similar = similar_cells(cell=cell, k=k)
        if selectors.project_role(user=request.user, project=cell.project) in REVIEWERS:
            return Response({**similar, "labels": "resolved"})
        neighbours = similar["neighbours"]
        mine = current_labels_of(user=request.user, cell_ids=[n["cell"] for n in neighbours])
        for neighbour in neighbours:
            own = mine.get(neighbour["cell"])
            neighbour["label"] = own.label.name if own is not None and own.label is not None else None
        return Response({**similar, "labels": "yours"})


# --- Query batches --------------------------------------------------------------------------------


@extend_schema(
    parameters=[OpenApiParameter("submitted", bool, description="Only submitted (true) or open (false).")],
    responses={200: QueryBatchSerializer(many=True), **errors(400, 404)},
)
class BatchListApi(generics.ListAPIView[QueryBatch]):
    """Every query batch of the project, newest first, with the provenance of its choice."""

    serializer_class = QueryBatchSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if schema_only(self):
            return QueryBatch.objects.none()
        project = project_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        batches = visible_batches(project=project, user=self.request.user)
        submitted = bool_param(self.request, "submitted")
        if submitted is not None:
            batches = batches.filter(submitted_at__isnull=not submitted)
        return batches


class BatchDetailApi(APIView):
    @extend_schema(responses={200: QueryBatchDetailSerializer, **NOT_FOUND})
    def get(self, request: Request, project_id: int, batch_id: int) -> Response:
        """One batch with its cells in query order: score, rank, the model's suggestion, and the caller's
        own current label of each cell."""
        project = project_for_user(user=request.user, project_id=project_id)
        batch = visible_batches(project=project, user=request.user).filter(pk=batch_id).first()
        if batch is None:
            raise Http404("No such batch in this project")
        mine = current_labels_of(
            user=request.user, cell_ids=list(batch.items.values_list("cell_id", flat=True))
        )
        rule = SuggestionRule.for_user(project=project, user=request.user)
        sees_purpose = selectors.project_role(user=request.user, project=project) in REVIEWERS
        context = {"mine": mine, "rule": rule, "sees_purpose": sees_purpose}
        return Response(QueryBatchDetailSerializer(batch, context=context).data)


# --- Model versions -------------------------------------------------------------------------------


@extend_schema(
    parameters=[OpenApiParameter("kind", str, enum=ModelVersion.Kind.values)],
    responses={200: ModelVersionSerializer(many=True), **errors(400, 404)},
)
class ModelVersionListApi(generics.ListAPIView[ModelVersion]):
    """The project's encoders, indexes and classifiers, newest first, with metrics and label counts."""

    serializer_class = ModelVersionSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if schema_only(self):
            return ModelVersion.objects.none()
        project = project_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        versions = ModelVersion.objects.filter(project=project).order_by("-created_at", "-id")
        kind = self.request.query_params.get("kind")
        if kind:
            if kind not in ModelVersion.Kind.values:
                raise ValidationError({"kind": f"must be one of {', '.join(ModelVersion.Kind.values)}"})
            versions = versions.filter(kind=kind)
        return versions


class ModelVersionDetailApi(APIView):
    @extend_schema(responses={200: ModelVersionDetailSerializer, **NOT_FOUND})
    def get(self, request: Request, project_id: int, version_id: int) -> Response:
        """One model version, with the ids of the annotations it was trained on."""
        project = project_for_user(user=request.user, project_id=project_id)
        version = ModelVersion.objects.filter(project=project, pk=version_id).first()
        if version is None:
            raise Http404("No such model version in this project")
        return Response(ModelVersionDetailSerializer(version).data)
