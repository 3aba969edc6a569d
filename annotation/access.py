"""Who may see what. Outsiders get 404, not 403, so project ids do not leak."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from annotation.models import Cell, Membership, Project
from annotation.selectors import AnyUser, project_role


def project_for_user(*, user: AnyUser, project_id: int) -> Project:
    project = Project.objects.filter(pk=project_id).first()
    if project is None or project_role(user=user, project=project) is None:
        raise Http404("No such project")
    return project


def cell_for_user(*, user: AnyUser, cell_id: int) -> Cell:
    cell = Cell.objects.select_related("project").filter(pk=cell_id).first()
    if cell is None or project_role(user=user, project=cell.project) is None:
        raise Http404("No such cell")
    return cell


def labelling_paused(*, user: AnyUser, project: Project) -> bool:
    """Whether a lead paused this member's labelling in the project."""
    if user.pk is None:
        return False
    return Membership.objects.filter(user_id=user.pk, project=project, labelling_paused=True).exists()


def require_labelling(*, user: AnyUser, project: Project) -> None:
    """Refuse a label, a submitted batch or a skip from a member whose labelling a lead paused (403,
    code ``labelling_paused``); everything they saved before stays."""
    if labelling_paused(user=user, project=project):
        from rest_framework.exceptions import PermissionDenied as ApiPermissionDenied

        raise ApiPermissionDenied(
            "a lead of this project paused your labelling here; your earlier labels are kept",
            code="labelling_paused",
        )


def require_role(*, user: AnyUser, project: Project, roles: tuple[str, ...]) -> str:
    """The user's role if it is one of ``roles``; outsiders get 404, members without the role 403."""
    role = project_role(user=user, project=project)
    if role is None:
        raise Http404("No such project")
    if role not in roles:
        raise PermissionDenied(f"this needs one of the roles {', '.join(roles)}; you are {role}")
    return role
