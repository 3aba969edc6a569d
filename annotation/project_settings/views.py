"""The project's settings page (leads and admins: settings; admins: members).

Member changes go through ``annotation.services.memberships`` like the API's, so the same rules hold:
a project that has an admin keeps one, and taking someone out keeps their labels.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotation import selectors
from annotation.access import project_for_user, require_role
from annotation.models import Membership, Project
from annotation.project_settings.forms import (
    InviteForm,
    MemberAddForm,
    MemberChangeForm,
    ProjectSettingsForm,
)
from annotation.project_settings.taxonomy import taxonomy_context
from annotation.roles import ADMINS, LEADS
from annotation.services.invites import invite_user
from annotation.services.memberships import (
    LastAdminError,
    membership_add,
    membership_change,
    membership_pause,
    membership_remove,
)


def _render(
    request: HttpRequest,
    project: Project,
    role: str,
    *,
    form: ProjectSettingsForm | None = None,
    add_form: MemberAddForm | None = None,
    invite_form: InviteForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "my_role": role,
        "is_admin": role == Membership.Role.ADMIN,
        "form": form or ProjectSettingsForm(instance=project),
        "add_form": add_form or MemberAddForm(),
        "invite_form": invite_form or InviteForm(inviter_role=role),
        "members": selectors.member_list(project=project),
        "roles": Membership.Role.choices,
        **taxonomy_context(project),
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
        membership_add(project=project, user=user, role=form.cleaned_data["role"])
    except ValueError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{user} joined as {form.cleaned_data['role']}.")
    return redirect("project-settings", project.pk)


@login_required
@require_POST
def member_change(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=LEADS)
    form = MemberChangeForm(request.POST)
    action = form.cleaned_data["action"] if form.is_valid() else None
    if action not in ("pause", "resume"):  # roles and removal stay with the project's admins
        require_role(user=request.user, project=project, roles=ADMINS)
    membership = Membership.objects.select_related("user").filter(project=project, user_id=user_id).first()
    if membership is None:
        raise Http404("No such member")
    if not form.is_valid():
        messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("project-settings", project.pk)
    if action in ("pause", "resume"):
        membership_pause(membership=membership, paused=action == "pause")
        done = "paused: they keep their labels but cannot label" if action == "pause" else "can label again"
        messages.success(request, f"{membership.user}'s labelling here is {done}.")
        return redirect("project-settings", project.pk)
    try:
        if action == "remove":
            membership_remove(membership=membership)
            messages.success(request, f"{membership.user} left the project; their labels stay.")
        else:
            membership_change(membership=membership, role=form.cleaned_data["role"])
            messages.success(request, f"{membership.user} is now {form.cleaned_data['role']}.")
    except LastAdminError as error:
        messages.error(request, str(error))
    return redirect("project-settings", project.pk)


@login_required
@require_POST
def member_invite(request: HttpRequest, project_id: int) -> HttpResponse:
    """Invite by e-mail (leads and admins): a new address gets an account and a link to set its password."""
    project = project_for_user(user=request.user, project_id=project_id)
    role = require_role(user=request.user, project=project, roles=LEADS)
    form = InviteForm(request.POST, inviter_role=role)
    if not form.is_valid():
        return _render(request, project, role, invite_form=form, status=400)
    email = form.cleaned_data["email"]
    try:
        invitation = invite_user(
            project=project,
            email=email,
            role=form.cleaned_data["role"],
            invited_by=request.user,  # type: ignore[arg-type]
            site_url=f"{request.scheme}://{request.get_host()}",
        )
    except ValueError as error:
        messages.error(request, str(error))
    except OSError as error:  # smtplib's errors too
        messages.error(request, f"No invitation: the e-mail to {email} could not be sent ({error}).")
    else:
        how = "with a link to set a password" if invitation.new_account else "to say so"
        joined = f"{invitation.user} joined as {form.cleaned_data['role']}"
        messages.success(request, f"{joined}; an e-mail went to {email} {how}.")
    return redirect("project-settings", project.pk)
