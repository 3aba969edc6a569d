"""Server-rendered pages. Thin: check access, call a selector, render."""

from __future__ import annotations

import mimetypes
from datetime import datetime
from functools import cached_property
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from annotation import selectors
from annotation.access import cell_for_user, project_for_user, require_role
from annotation.cell_files import CellFileChanged, open_verified
from annotation.models import Cell, LabelClass, Project
from annotation.roles import REVIEWERS
from annotation.selectors import review_queue
from annotation.services.review import review_decide
from jobs.selectors import job_list

CELLS_PER_PAGE = 96


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = selectors.project_list_for_user(user=request.user)
    return render(request, "annotation/project_list.html", {"projects": projects})


class CountedPaginator(Paginator):
    """A paginator told its item count instead of counting them again."""

    def __init__(self, *args: Any, known_count: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.known_count = known_count

    @cached_property
    def count(self) -> int:
        return self.known_count


@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    role_filter = request.GET.get("role", "")
    cells = selectors.cell_list(
        project=project, role=role_filter if role_filter in Cell.Role.values else None
    )
    # A role's cells are counted; all of them are the project's kept count (a million-row count per view).
    cell_count = cells.count() if role_filter in Cell.Role.values else project.cell_count
    page = CountedPaginator(cells, CELLS_PER_PAGE, known_count=cell_count).get_page(request.GET.get("page"))
    context = {
        "project": project,
        "my_role": selectors.project_role(user=request.user, project=project),
        "page": page,
        "cell_count": cell_count,
        "role_filter": role_filter,
        "roles": Cell.Role.choices,
        "classes": _classes_with_counts(project),
        "jobs": job_list(project_id=project.pk)[:10],
    }
    return render(request, "annotation/project_detail.html", context)


def _classes_with_counts(project: Project) -> list[tuple[LabelClass, int]]:
    counts = selectors.label_counts(project=project)
    return [(c, counts.get(c.name, 0)) for c in selectors.class_list(project=project)]


@login_required
@require_GET
def cell_image(request: HttpRequest, cell_id: int) -> HttpResponse | FileResponse:
    """The cell's image, only while its file holds the imported bytes (else 410 Gone, and a warning in
    the log: see ``annotation.cell_files``)."""
    cell = cell_for_user(user=request.user, cell_id=cell_id)
    try:
        handle = open_verified(cell.cell_file)
    except FileNotFoundError:
        raise Http404(f"the image file of cell {cell.pk} is missing") from None
    except CellFileChanged:
        return gone_response(cell.pk)
    content_type, _ = mimetypes.guess_type(cell.image)
    response = FileResponse(handle, content_type=content_type or "application/octet-stream")
    # A cell's bytes never change (they are checked against its hash), so browsers may keep them.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


def gone_response(cell_id: int) -> HttpResponse:
    return HttpResponse(
        f"The image file of cell {cell_id} has changed since it was imported; it is not served.\n",
        status=410,
        content_type="text/plain; charset=utf-8",
    )


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})


@login_required
def review_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Cells flagged unsure or labelled differently by two people; the reviewer's decision is final."""
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=REVIEWERS)
    if request.method == "POST":
        cell = get_object_or_404(Cell, pk=request.POST.get("cell"), project=project)
        label = get_object_or_404(
            LabelClass, project=project, name=request.POST.get("label"), retired_at__isnull=True
        )
        review_decide(cell=cell, reviewer=request.user, label=label)  # type: ignore[arg-type]
        messages.success(request, f"Cell {cell.pk} is now {label.display_name} (final).")
        return redirect("review", project_id=project.pk)
    blind = bool(selectors.page_preferences(user=request.user)["blind_mode"])
    queue = review_queue(project=project, blind=blind)
    # Every class's display name (retired ones included, for old labels); keys only for the active ones.
    names = {c.name: c.display_name for c in project.classes.all()}
    for entry in queue:
        for a in entry["annotations"]:
            # Shown as "12 May 2025, 14:32 UTC", not as the API's ISO string.
            a["when"] = datetime.fromisoformat(a["created_at"])
            a["label_display"] = names.get(a["label"], a["label"])
    comments = selectors.comment_list(cell_ids=[entry["cell"] for entry in queue])
    context = {
        "project": project,
        "queue": [{**entry, "comments": comments.get(entry["cell"], [])} for entry in queue],
        "classes": selectors.active_classes(project=project),
        "blind": blind,
    }
    return render(request, "annotation/review.html", context)
