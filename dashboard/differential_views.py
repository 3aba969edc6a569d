"""The per-slide differential: its page, its CSV download and its API twin. Leads and admins only (slide
ids are provenance, which annotators and reviewers never read): other members get 403, outsiders 404."""

from __future__ import annotations

import csv
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.access import project_for_user, require_role
from annotation.api.views import errors
from annotation.models import Project
from annotation.roles import LEADS
from dashboard.differential import FIRST_N, csv_rows, slide_differential
from dashboard.differential_serializers import DifferentialSerializer

VIEWS = {"all": None, f"first{FIRST_N}": FIRST_N}


def _lead_project(request: HttpRequest, project_id: int) -> Project:
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=LEADS)
    return project


def _first(view: str | None) -> int | None:
    """How many labelled cells per slide ``?view=`` asks for; anything unknown reads as every cell."""
    return VIEWS.get(view or "all")


@login_required
@require_GET
def differential_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _lead_project(request, project_id)
    data = slide_differential(project, first=_first(request.GET.get("view")))
    names = [c["name"] for c in data["classes"]]
    table = [
        {
            "row": row,
            "cells": [
                {
                    "n": row["counts"][n],
                    "percent": row["percent"][n],
                    "blast": c["blast"] and row["counts"][n] > 0,
                }
                for n, c in zip(names, data["classes"], strict=True)
            ],
            "predicted": (
                [
                    {"n": row["predicted"][n], "blast": c["blast"] and row["predicted"][n] > 0}
                    for n, c in zip(names, data["classes"], strict=True)
                ]
                if row["predicted"] is not None
                else None
            ),
        }
        for row in data["slides"]
    ]
    total = data["total"]
    context: dict[str, Any] = {
        "project": project,
        "data": data,
        "table": table,
        "total_cells": [{"n": total["counts"][n], "percent": total["percent"][n]} for n in names],
        "total_predicted": [total["predicted"][n] for n in names] if total["predicted"] is not None else None,
        "first_n": FIRST_N,
        "first_view": f"first{FIRST_N}",
        "csv_query": f"?view={data['view']}",
    }
    return render(request, "annotation/differential.html", context)


@login_required
@require_GET
def differential_csv(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _lead_project(request, project_id)
    data = slide_differential(project, first=_first(request.GET.get("view")))
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="project-{project.pk}-differential-{data["view"]}.csv"'
    )
    csv.writer(response).writerows(csv_rows(data))
    return response


class DifferentialApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "view",
                str,
                enum=list(VIEWS),
                description=f"all labelled cells of each slide, or the first {FIRST_N} in labelling order",
            )
        ],
        responses={200: DifferentialSerializer, **errors(400, 403, 404)},
    )
    def get(self, request: Request, project_id: int) -> Response:
        """Per slide: expert counts and percentages per class, and the latest model's predicted counts
        for the slide's cells without an expert label (leads and admins)."""
        project = project_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, roles=LEADS)
        view = request.query_params.get("view", "all")
        if view not in VIEWS:
            raise ValidationError({"view": f"one of {', '.join(VIEWS)}"})
        return Response(slide_differential(project, first=VIEWS[view]))
