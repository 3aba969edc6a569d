"""Which project roles may do what; each tuple lists the roles that pass a check."""

from __future__ import annotations

from typing import Final

from annotation.models import Membership

REVIEWERS: Final = (Membership.Role.REVIEWER, Membership.Role.LEAD, Membership.Role.ADMIN)
LEADS: Final = (Membership.Role.LEAD, Membership.Role.ADMIN)
ADMINS: Final = (Membership.Role.ADMIN,)  # project admins (superusers count as admins everywhere)

# Who reads what (annotation/api/serializers.py drops the rest from every answer):
# - where a cell comes from: its import path (``original_name``, which names the hidden reference label
#   for a folder import), patient and slide ids; and a job's params and result (server paths, imported
#   file names): leads and admins;
SEES_PROVENANCE: Final = LEADS
# - a job's full error with its traceback: admins (the worker's log has it too); everyone else reads its
#   first line (``jobs.selectors.error_summary``).
SEES_TRACEBACKS: Final = ADMINS
