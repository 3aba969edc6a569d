"""Export API: leads and admins start exports, list them and download the files.

Outsiders get 404 (project ids do not leak), annotators and reviewers 403.
"""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.access import project_for_user, require_role
from annotation.api.errors import Conflict
from annotation.api.serializers import JobSerializer, reader_context
from annotation.api.views import errors
from annotation.roles import LEADS
from annotation.selectors import project_role
from exports.service import ExportFormat, export_path, export_request
from jobs.models import Job

LIST_LIMIT = 100


class ExportRequestSerializer(serializers.Serializer[dict[str, Any]]):
    format = serializers.ChoiceField(choices=[f.value for f in ExportFormat])


class ExportJobSerializer(JobSerializer):
    """An export job, with its format and, once it succeeded, where to download the file."""

    format = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "format", "download_url"]

    def get_format(self, job: Job) -> str | None:
        value = job.params.get("format")
        return str(value) if value is not None else None

    def get_download_url(self, job: Job) -> str | None:
        return f"/api/exports/{job.pk}/download" if job.status == Job.Status.SUCCEEDED else None


def _summary(job: Job, role: str | None) -> dict[str, Any]:
    return dict(ExportJobSerializer(job, context=reader_context(role)).data)


class ExportListApi(APIView):
    @extend_schema(
        responses={
            200: inline_serializer("ExportList", {"results": ExportJobSerializer(many=True)}),
            **errors(403, 404),
        }
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        role = require_role(user=request.user, project=project, roles=LEADS)
        jobs = Job.objects.filter(project=project, kind=Job.Kind.EXPORT).order_by("-created_at", "-id")
        return Response({"results": [_summary(job, role) for job in jobs[:LIST_LIMIT]]})

    @extend_schema(
        request=ExportRequestSerializer, responses={202: ExportJobSerializer, **errors(400, 403, 404)}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        role = require_role(user=request.user, project=project, roles=LEADS)
        data = ExportRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = export_request(
            project=project,
            fmt=data.validated_data["format"],
            created_by=request.user,  # type: ignore[arg-type]  # IsAuthenticated: never anonymous here
        )
        return Response(_summary(job, role), status=status.HTTP_202_ACCEPTED)


class ExportDownloadApi(APIView):
    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **errors(403, 404, 409)}
    )
    def get(self, request: Request, job_id: int) -> FileResponse | Response:
        job = Job.objects.select_related("project").filter(pk=job_id, kind=Job.Kind.EXPORT).first()
        if job is None or job.project is None or project_role(user=request.user, project=job.project) is None:
            raise Http404("No such export")  # the same answer whether the id exists or not: ids do not leak
        project = job.project
        require_role(user=request.user, project=project, roles=LEADS)
        if job.status != Job.Status.SUCCEEDED:
            raise Conflict(f"the export is {job.status}, not ready")
        path = export_path(job)
        if not path.is_file():
            raise Http404("The export file is gone; start a new export")
        return FileResponse(path.open("rb"), as_attachment=True, filename=f"project-{project.pk}-{path.name}")
