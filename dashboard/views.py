"""The project lead's dashboard page and the JSON its script reads. Leads and admins only: other members
get 403, outsiders 404."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from annotation.access import project_for_user, require_role
from annotation.models import Project
from annotation.roles import LEADS
from dashboard.data import dashboard_data
from dashboard.embedding_map import MAX_POINTS, embedding_map
from dashboard.shift import shift_report
from dashboard.stats import ANNOTATOR_RULES, STOPPING_RULE
from loop.models import ModelVersion
from loop.selectors import latest_version


def _lead_project(request: HttpRequest, project_id: int) -> Project:
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=LEADS)
    return project


@login_required
@require_GET
def dashboard_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _lead_project(request, project_id)
    config = {
        "project": project.pk,
        "data_url": reverse("dashboard-data", args=[project.pk]),
        "map_url": reverse("dashboard-map", args=[project.pk]),
        "image_url": "/cells/{id}/image",
        "classes": [
            {"name": c.name, "display_name": c.display_name, "colour": c.colour}
            for c in project.classes.all()
        ],
    }
    latest_classifier = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    context = {
        "project": project,
        "latest_classifier": latest_classifier,
        "page_config": config,
        "stopping_rule": STOPPING_RULE,
        "annotator_rules": ANNOTATOR_RULES,
        "max_points": MAX_POINTS,
        "shift": shift_report(project),
    }
    return render(request, "annotation/dashboard.html", context)


@login_required
@require_GET
def dashboard_data_json(request: HttpRequest, project_id: int) -> JsonResponse:
    project = _lead_project(request, project_id)
    return JsonResponse(dashboard_data(project))


@login_required
@require_GET
def dashboard_map_json(request: HttpRequest, project_id: int) -> JsonResponse:
    """The embedding map of the newest index, or ``pending`` while a background job draws it."""
    project = _lead_project(request, project_id)
    return JsonResponse(embedding_map(project, user=request.user))
