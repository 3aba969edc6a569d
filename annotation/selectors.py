"""Reads. Querysets scoped to what a user may see; views and the API never filter by hand."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Q, QuerySet

from annotation.models import Annotation, Cell, Job, Membership, Project

AnyUser = AbstractBaseUser | AnonymousUser


def project_list_for_user(*, user: AnyUser) -> QuerySet[Project]:
    """Projects the user is a member of (every project for a superuser), with cell and label counts."""
    projects = Project.objects.all()
    if not getattr(user, "is_superuser", False):
        projects = projects.filter(memberships__user_id=int(user.pk or 0))
    return projects.annotate(
        cell_count=Count("cells", distinct=True),
        labelled_count=Count(
            "cells",
            filter=Q(cells__annotations__superseded_by__isnull=True, cells__annotations__label__isnull=False),
            distinct=True,
        ),
    ).order_by("name")


def project_role(*, user: AnyUser, project: Project) -> str | None:
    """The user's role in the project, ``admin`` for superusers, None for outsiders."""
    if getattr(user, "is_superuser", False):
        return Membership.Role.ADMIN
    if user.pk is None:
        return None
    return Membership.objects.filter(user_id=user.pk, project=project).values_list("role", flat=True).first()


def cell_list(*, project: Project, role: str | None = None) -> QuerySet[Cell]:
    cells = Cell.objects.filter(project=project).order_by("id")
    if role:
        cells = cells.filter(role=role)
    return cells


def current_annotations(*, project: Project) -> QuerySet[Annotation]:
    return Annotation.objects.filter(cell__project=project, superseded_by__isnull=True)


def job_list(*, project: Project) -> QuerySet[Job]:
    return Job.objects.filter(project=project).order_by("-created_at", "-id")


def label_counts(*, project: Project) -> dict[str, int]:
    rows = (
        current_annotations(project=project)
        .filter(label__isnull=False)
        .values("label__name")
        .annotate(n=Count("cell", distinct=True))
    )
    return {row["label__name"]: row["n"] for row in rows}


def member_list(*, project: Project) -> QuerySet[Membership]:
    """The project's members by username, each with ``labels``: how many current labels they gave here."""
    current = Q(user__annotations__cell__project=project, user__annotations__superseded_by__isnull=True)
    return (
        Membership.objects.filter(project=project)
        .select_related("user")
        .annotate(labels=Count("user__annotations", filter=current))
        .order_by("user__username")
    )
