"""Server-rendered pages. Thin: check access, call a selector, render."""

from __future__ import annotations

import mimetypes

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from annotation import loop_state, selectors, services
from annotation.access import LEADS, REVIEWERS, cell_for_user, project_for_user, require_role
from annotation.models import Cell, LabelClass, Project

CELLS_PER_PAGE = 96


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = selectors.project_list_for_user(user=request.user)
    return render(request, "annotation/project_list.html", {"projects": projects})


@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    role_filter = request.GET.get("role", "")
    cells = selectors.cell_list(
        project=project, role=role_filter if role_filter in Cell.Role.values else None
    )
    page = Paginator(cells, CELLS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "project": project,
        "my_role": selectors.project_role(user=request.user, project=project),
        "page": page,
        "cell_count": cells.count(),
        "role_filter": role_filter,
        "roles": Cell.Role.choices,
        "classes": _classes_with_counts(project),
        "jobs": selectors.job_list(project=project)[:10],
    }
    return render(request, "annotation/project_detail.html", context)


def _classes_with_counts(project: Project) -> list[tuple[LabelClass, int]]:
    counts = selectors.label_counts(project=project)
    return [(c, counts.get(c.name, 0)) for c in project.classes.all()]


@login_required
@require_GET
def cell_image(request: HttpRequest, cell_id: int) -> FileResponse:
    cell = cell_for_user(user=request.user, cell_id=cell_id)
    path = cell.image_path
    if not path.is_file():
        raise Http404(f"image file of cell {cell.pk} is missing at {path}")
    content_type, _ = mimetypes.guess_type(path.name)
    response = FileResponse(path.open("rb"), content_type=content_type or "application/octet-stream")
    # Content-addressed files never change, so browsers may keep them.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})


# --- The labelling loop ---------------------------------------------------------------------------

_ID = 999999999  # reversed into URLs, then replaced by "{id}" for the page's script to fill in


def _url_template(name: str, *args: int) -> str:
    return reverse(name, args=[*args, _ID]).replace(str(_ID), "{id}")


@login_required
@ensure_csrf_cookie
def label_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    role = selectors.project_role(user=request.user, project=project)
    classes = list(project.classes.all())
    config = {
        "project": project.pk,
        "classes": [
            {"name": c.name, "display_name": c.display_name, "key": c.key, "colour": c.colour}
            for c in classes
        ],
        "attributes": project.attribute_schema,
        "poll_ms": 1500,
        "api": {
            "loop": reverse("api-loop", args=[project.pk]),
            "start": reverse("api-loop-start", args=[project.pk]),
            "finetune": reverse("api-loop-finetune", args=[project.pk]),
            "batch": reverse("api-batch-current", args=[project.pk]),
            "annotate": reverse("api-annotate", args=[project.pk]),
            "submit": _url_template("api-batch-submit", project.pk),
            "skip": _url_template("api-batch-skip", project.pk),
            "undo": _url_template("api-annotation-undo"),
            "why": _url_template("api-cell-why"),
            "similar": _url_template("api-cell-similar"),
            "saliency": _url_template("cell-saliency"),
        },
    }
    context = {
        "project": project,
        "my_role": role,
        "classes": classes,
        "can_review": role in REVIEWERS,
        "can_lead": role in LEADS,
        "page_config": config,
    }
    return render(request, "annotation/label.html", context)


@login_required
def review_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Cells flagged unsure or labelled differently by two people; the reviewer's decision is final."""
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=REVIEWERS)
    if request.method == "POST":
        cell = get_object_or_404(Cell, pk=request.POST.get("cell"), project=project)
        label = get_object_or_404(LabelClass, project=project, name=request.POST.get("label"))
        services.review_decide(cell=cell, reviewer=request.user, label=label)  # type: ignore[arg-type]
        messages.success(request, f"Cell {cell.pk} is now {label.display_name} (final).")
        return redirect("review", project_id=project.pk)
    context = {
        "project": project,
        "queue": loop_state.review_queue(project=project),
        "classes": list(project.classes.all()),
    }
    return render(request, "annotation/review.html", context)


@login_required
@require_GET
def cell_saliency(request: HttpRequest, cell_id: int) -> HttpResponse:
    from learning.service.inference import saliency_png

    cell = cell_for_user(user=request.user, cell_id=cell_id)
    png = saliency_png(cell=cell)
    if png is None:
        raise Http404("no trained model for this project yet")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response
