"""Which project roles may do what; each tuple lists the roles that pass a check."""

from __future__ import annotations

from typing import Final

from annotation.models import Membership

REVIEWERS: Final = (Membership.Role.REVIEWER, Membership.Role.LEAD, Membership.Role.ADMIN)
LEADS: Final = (Membership.Role.LEAD, Membership.Role.ADMIN)
ADMINS: Final = (Membership.Role.ADMIN,)  # project admins (superusers count as admins everywhere)
