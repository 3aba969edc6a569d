"""Pages of the loop: the labelling page and a cell's saliency overlay. Thin: check access, render."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from annotation import selectors
from annotation.access import cell_for_user, labelling_paused, project_for_user
from annotation.cell_files import CellFileChanged
from annotation.models import COMMENT_MAX_CHARS, TILE_SIZE_MAX, TILE_SIZE_MIN
from annotation.roles import LEADS, REVIEWERS
from annotation.views import gone_response
from loop.handlers.inference import saliency_png

_ID = 999999999  # reversed into URLs, then replaced by "{id}" for the page's script to fill in


def _url_template(name: str, *args: int) -> str:
    return reverse(name, args=[*args, _ID]).replace(str(_ID), "{id}")


@login_required
@ensure_csrf_cookie
def label_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    role = selectors.project_role(user=request.user, project=project)
    classes = selectors.active_classes(project=project)  # retired classes have no key and no button
    preferences = selectors.page_preferences(user=request.user)
    config = {
        "project": project.pk,
        "classes": [
            {"name": c.name, "display_name": c.display_name, "key": c.key, "colour": c.colour}
            for c in classes
        ],
        "attributes": project.attribute_schema,
        "poll_ms": 1500,
        "page_settings": preferences,  # the user's own (not "preferences": the word holds "reference")
        "api": {
            "loop": reverse("api-loop", args=[project.pk]),
            "start": reverse("api-loop-start", args=[project.pk]),
            "finetune": reverse("api-loop-finetune", args=[project.pk]),
            "batch": reverse("api-batch-current", args=[project.pk]),
            "annotate": reverse("api-annotate", args=[project.pk]),
            "submit": _url_template("api-batch-submit", project.pk),
            "skip": _url_template("api-batch-skip", project.pk),
            "unskip": _url_template("api-batch-unskip", project.pk),
            "undo": _url_template("api-annotation-undo"),
            "why": _url_template("api-cell-why"),
            "similar": _url_template("api-cell-similar"),
            "saliency": _url_template("cell-saliency"),
            "comments": _url_template("api-cell-comments"),
            "page_settings": reverse("api-page-settings"),
        },
        "comment_max_chars": COMMENT_MAX_CHARS,
    }
    context = {
        "project": project,
        "my_role": role,
        "classes": classes,
        "can_review": role in REVIEWERS,
        "can_lead": role in LEADS,
        "labelling_paused": labelling_paused(user=request.user, project=project),
        "page_config": config,
        "preferences": preferences,
        "tile_min": TILE_SIZE_MIN,
        "tile_max": TILE_SIZE_MAX,
        "suggestion_min_confidence": project.suggestion_min_confidence,
        "suggestion_min_confidence_pct": round(100 * project.suggestion_min_confidence),
    }
    return render(request, "annotation/label.html", context)


@login_required
@require_GET
def cell_saliency(request: HttpRequest, cell_id: int) -> HttpResponse:
    cell = cell_for_user(user=request.user, cell_id=cell_id)
    try:
        png = saliency_png(cell=cell)
    except FileNotFoundError:
        raise Http404(f"the image file of cell {cell.pk} is missing") from None
    except CellFileChanged:
        return gone_response(cell.pk)
    if png is None:
        raise Http404("no trained model for this project yet")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response
