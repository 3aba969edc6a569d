"""The exports page: start exports and download them (the page talks to the export API)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from annotation.access import project_for_user, require_role
from annotation.roles import LEADS
from exports.service import ExportFormat


@login_required
@require_GET
@ensure_csrf_cookie
def exports_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Start exports and download them; the page talks to the export API (session auth)."""
    project = project_for_user(user=request.user, project_id=project_id)
    role = require_role(user=request.user, project=project, roles=LEADS)
    formats = [
        (ExportFormat.CSV, "CSV: one row per cell, history and predictions (re-importable)"),
        (ExportFormat.JSONL, "JSON Lines: one object per cell, history and predictions"),
        (ExportFormat.IMAGEFOLDER, "ImageFolder zip: <label>/<cell> images plus manifest.csv"),
        (ExportFormat.COCO, "COCO-style JSON for classification"),
        (ExportFormat.TORCHSCRIPT, "Trained model: TorchScript with its label map and preprocessing"),
    ]
    context = {"project": project, "my_role": role, "formats": formats}
    return render(request, "annotation/exports.html", context)
