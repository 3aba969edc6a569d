"""The project's settings page (leads and admins: settings; admins: members) and its exports page.

Member changes go through ``annotation.services`` like the API's, so the same rules hold: a project that
has an admin keeps one, and taking someone out keeps their labels.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation import selectors, services
from annotation.access import ADMINS, LEADS, project_for_user, require_role
from annotation.exports.service import ExportFormat
from annotation.models import Membership, Project
from annotation.project_settings.forms import MemberAddForm, MemberChangeForm, ProjectSettingsForm


def _render(
    request: HttpRequest,
    project: Project,
    role: str,
    *,
    form: ProjectSettingsForm | None = None,
    add_form: MemberAddForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "my_role": role,
        "is_admin": role == Membership.Role.ADMIN,
        "form": form or ProjectSettingsForm(instance=project),
        "add_form": add_form or MemberAddForm(),
        "members": selectors.member_list(project=project),
        "roles": Membership.Role.choices,
    }
    return render(request, "annotation/project_settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    role = require_role(user=request.user, project=project, roles=LEADS)
    if request.method == "GET":
        return _render(request, project, role)
    form = ProjectSettingsForm(request.POST, instance=project)
    if not form.is_valid():
        project.refresh_from_db()  # the form wrote the rejected values onto the instance
        return _render(request, project, role, form=form, status=400)
    form.save()
    changed = ", ".join(form.changed_data) or "nothing"
    messages.success(request, f"Settings saved ({changed} changed).")
    return redirect("project-settings", project.pk)


@login_required
@require_POST
def member_add(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    role = require_role(user=request.user, project=project, roles=ADMINS)
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _render(request, project, role, add_form=form, status=400)
    user = form.cleaned_data["username"]
    try:
        services.membership_add(project=project, user=user, role=form.cleaned_data["role"])
    except ValueError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{user} joined as {form.cleaned_data['role']}.")
    return redirect("project-settings", project.pk)


@login_required
@require_POST
def member_change(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=ADMINS)
    membership = Membership.objects.select_related("user").filter(project=project, user_id=user_id).first()
    if membership is None:
        raise Http404("No such member")
    form = MemberChangeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("project-settings", project.pk)
    try:
        if form.cleaned_data["action"] == "remove":
            services.membership_remove(membership=membership)
            messages.success(request, f"{membership.user} left the project; their labels stay.")
        else:
            services.membership_change(membership=membership, role=form.cleaned_data["role"])
            messages.success(request, f"{membership.user} is now {form.cleaned_data['role']}.")
    except services.LastAdminError as error:
        messages.error(request, str(error))
    return redirect("project-settings", project.pk)


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
