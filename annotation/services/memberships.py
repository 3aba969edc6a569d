"""Who belongs to a project, in which role; a project that has an admin keeps one."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import Membership, Project


def membership_set(*, project: Project, user: User, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


class LastAdminError(ValueError):
    """Refused: the change would leave a project that has an admin without one."""


def _keep_an_admin(membership: Membership, new_role: str | None) -> None:
    if membership.role != Membership.Role.ADMIN or new_role == Membership.Role.ADMIN:
        return
    # The admins' rows are locked (a list, not COUNT: an aggregate takes no row locks), so two admins
    # demoting each other at once cannot both succeed.
    admins = list(
        Membership.objects.select_for_update()
        .filter(project_id=membership.project_id, role=Membership.Role.ADMIN)
        .values_list("pk", flat=True)
    )
    if len(admins) <= 1:
        raise LastAdminError(f"{membership.user} is the project's only admin: make someone else admin first")


def _check_role(role: str) -> None:
    if role not in Membership.Role.values:
        raise ValueError(f"unknown role {role!r} (use one of {', '.join(Membership.Role.values)})")


@transaction.atomic
def membership_add(*, project: Project, user: User, role: str) -> Membership:
    """A new member; raises ValueError if ``user`` is already one (change the role instead)."""
    _check_role(role)
    if Membership.objects.filter(project=project, user=user).exists():
        raise ValueError(f"{user} is already a member of this project")
    return Membership.objects.create(project=project, user=user, role=role)


@transaction.atomic
def membership_change(*, membership: Membership, role: str) -> Membership:
    _check_role(role)
    _keep_an_admin(membership, role)
    Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.refresh_from_db()
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Take someone out of the project. Their annotations stay: labels are history, not membership."""
    _keep_an_admin(membership, None)
    membership.delete()


def membership_pause(*, membership: Membership, paused: bool) -> Membership:
    """Pause or resume one member's labelling in the project (their labels stay either way)."""
    membership.labelling_paused = paused
    membership.save(update_fields=["labelling_paused"])
    return membership
