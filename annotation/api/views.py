"""REST API: thin views over the same selectors and access rules as the pages.

Who may do what (outsiders get 404 on every object of a project, never 403, so ids do not leak):
- every member (annotator and up): the project, its cells (never their reference labels), jobs, the loop's
  state, query batches with their provenance, model versions with their metrics, labelling;
- annotators see only their own annotations; reviewers, leads and admins see everyone's;
- where cells come from (import paths, patient and slide ids) and jobs' params and results: leads and
  admins; jobs' tracebacks: admins (``annotation.roles``: the serializers leave the rest out).
The loop's own endpoints (labelling, review, start, fine-tune) are in ``annotation.api.loop``.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.access import project_for_user, require_role
from annotation.api.serializers import (
    MAX_ID,
    CellSerializer,
    ErrorSerializer,
    JobSerializer,
    ProjectSerializer,
    ProjectSettingsSerializer,
    reader_context,
)
from annotation.models import Cell, Project
from annotation.roles import LEADS
from jobs.models import Job
from jobs.selectors import job_list

NOT_FOUND = {404: ErrorSerializer}


def errors(*codes: int) -> dict[int, Any]:
    """Error responses for the schema (every error has the shape of ``ErrorSerializer``)."""
    return dict.fromkeys(codes, ErrorSerializer)


def schema_only(view: APIView) -> bool:
    """True while drf-spectacular inspects the view without a real request."""
    return bool(getattr(view, "swagger_fake_view", False))


def int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise ValidationError({name: f"must be an integer, not {value!r}"}) from exc
    if abs(number) > MAX_ID:  # the database could not compare it (see MAX_ID)
        raise ValidationError({name: f"must be at most {MAX_ID} in size"})
    return number


def str_param(request: Request, name: str) -> str | None:
    """A text query parameter; one with a NUL character is refused (PostgreSQL cannot even compare it)."""
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    assert value is not None
    if "\x00" in value:
        raise ValidationError({name: "must not contain NUL characters"})
    return value


def bool_param(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    assert value is not None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValidationError({name: f"must be true or false, not {value!r}"})


@extend_schema(responses={200: ProjectSerializer(many=True), 404: ErrorSerializer})
class ProjectListApi(generics.ListAPIView[Project]):
    """The projects the caller is a member of (every project for a superuser). A page beyond the last is
    404, as on every list."""

    serializer_class = ProjectSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]  # DRF's generic signature
        return selectors.project_list_for_user(user=self.request.user).prefetch_related("classes")


class ProjectDetailApi(APIView):
    @extend_schema(responses={200: ProjectSerializer, **NOT_FOUND})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        annotated = selectors.project_list_for_user(user=request.user).get(pk=project.pk)
        return Response(ProjectSerializer(annotated).data)

    @extend_schema(
        request=ProjectSettingsSerializer, responses={200: ProjectSerializer, **errors(400, 403, 404)}
    )
    def patch(self, request: Request, project_id: int) -> Response:
        """Change the project's settings (leads and admins); encoder settings apply at the next pretrain."""
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        data = ProjectSettingsSerializer(project, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        data.save()
        annotated = selectors.project_list_for_user(user=request.user).get(pk=project.pk)
        return Response(ProjectSerializer(annotated).data)


class CellKeysetPagination(CursorPagination):
    """Pages of cells in id order, found by the last id seen rather than counted and skipped: the last
    page of a million cells took 0.5 s with page numbers (a count and an OFFSET) and costs what the first
    does this way (bench/million.py). Follow ``next``; there is no total."""

    ordering = "id"
    page_size = 100


@extend_schema(
    parameters=[OpenApiParameter("role", str, enum=Cell.Role.values, description="Only cells of this role.")],
    responses={200: CellSerializer(many=True), **NOT_FOUND},
)
class CellListApi(generics.ListAPIView[Cell]):
    """The project's cells in id order, without their reference labels; where they come from (import path,
    patient, slide) for leads and admins only. Paged by ``cursor`` (follow ``next``)."""

    serializer_class = CellSerializer
    pagination_class = CellKeysetPagination

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if schema_only(self):
            return Cell.objects.none()
        project = project_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        role = self.request.query_params.get("role")
        return selectors.cell_list(project=project, role=role if role in Cell.Role.values else None)

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), **_reader(self)}


def _reader(view: generics.GenericAPIView[Any]) -> dict[str, Any]:
    """Whose eyes the answer of a project's list view is for (outsiders never get this far)."""
    if schema_only(view):
        return reader_context(None)
    project = project_for_user(user=view.request.user, project_id=view.kwargs["project_id"])
    return reader_context(selectors.project_role(user=view.request.user, project=project))


@extend_schema(
    parameters=[
        OpenApiParameter("kind", str, enum=Job.Kind.values),
        OpenApiParameter("status", str, enum=Job.Status.values),
    ],
    responses={200: JobSerializer(many=True), **errors(400, 404)},
)
class JobListApi(generics.ListAPIView[Job]):
    serializer_class = JobSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if schema_only(self):
            return Job.objects.none()
        project = project_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        jobs = job_list(project_id=project.pk)
        for name, choices in (("kind", Job.Kind.values), ("status", Job.Status.values)):
            value = self.request.query_params.get(name)
            if value:
                if value not in choices:
                    raise ValidationError({name: f"must be one of {', '.join(choices)}"})
                jobs = jobs.filter(**{name: value})
        return jobs

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), **_reader(self)}


class JobDetailApi(APIView):
    @extend_schema(responses={200: JobSerializer, **NOT_FOUND})
    def get(self, request: Request, job_id: int) -> Response:
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.project is None:
            raise Http404("No such job")
        project = project_for_user(user=request.user, project_id=job.project.pk)
        role = selectors.project_role(user=request.user, project=project)
        return Response(JobSerializer(job, context=reader_context(role)).data)
