"""Who may see what. Outsiders get 404, not 403, so project ids do not leak."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from annotation.models import Cell, Project
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


def require_role(*, user: AnyUser, project: Project, roles: tuple[str, ...]) -> str:
    """The user's role if it is one of ``roles``; outsiders get 404, members without the role 403."""
    role = project_role(user=user, project=project)
    if role is None:
        raise Http404("No such project")
    if role not in roles:
        raise PermissionDenied(f"this needs one of the roles {', '.join(roles)}; you are {role}")
    return role
