"""REST API: thin views over the same selectors and access rules as the pages."""

from __future__ import annotations

from django.http import Http404
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.access import project_for_user
from annotation.api.serializers import CellSerializer, JobSerializer, ProjectSerializer
from annotation.models import Cell, Job, Project


class ProjectListApi(generics.ListAPIView[Project]):
    serializer_class = ProjectSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]  # DRF's generic signature
        return selectors.project_list_for_user(user=self.request.user).prefetch_related("classes")


class ProjectDetailApi(APIView):
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_user(user=request.user, project_id=project_id)
        annotated = selectors.project_list_for_user(user=request.user).get(pk=project.pk)
        return Response(ProjectSerializer(annotated).data)


class CellListApi(generics.ListAPIView[Cell]):
    serializer_class = CellSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        project = project_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        role = self.request.query_params.get("role")
        return selectors.cell_list(project=project, role=role if role in Cell.Role.values else None)


class JobListApi(generics.ListAPIView[Job]):
    serializer_class = JobSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        project = project_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        return selectors.job_list(project=project)


class JobDetailApi(APIView):
    def get(self, request: Request, job_id: int) -> Response:
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.project is None:
            raise Http404("No such job")
        project_for_user(user=request.user, project_id=job.project.pk)
        return Response(JobSerializer(job).data)
