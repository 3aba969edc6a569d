"""Inviting someone to a project by e-mail, without the Django admin.

A new address gets an account with no usable password and a message with a link to set one (Django's
password-reset confirmation, signed by its PasswordResetTokenGenerator: the link works once, and only
until the password changes or PASSWORD_RESET_TIMEOUT passes). An address that already has an account
is added to the project and told so. Mail goes through Django's EMAIL_BACKEND (the console in
development, a folder with LEUKOLOOP_EMAIL_FILE_PATH).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from annotation.models import Membership, Project
from annotation.services.memberships import membership_add


@dataclass(frozen=True)
class Invitation:
    user: User
    membership: Membership
    new_account: bool


def set_password_path(user: User) -> str:
    """The one-time link's path that lets ``user`` choose a password (Django's reset confirmation)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return reverse("password_reset_confirm", args=[uid, default_token_generator.make_token(user)])


def _free_username(email: str) -> str:
    base = re.sub(r"[^\w.@+-]", "", email.split("@", 1)[0])[:140] or "user"
    name, n = base, 1
    while User.objects.filter(username__iexact=name).exists():
        n += 1
        name = f"{base}{n}"
    return name


@transaction.atomic
def invite_user(*, project: Project, email: str, role: str, invited_by: User, site_url: str) -> Invitation:
    """Make ``email`` a member of ``project`` with ``role`` and send them one message. ``site_url`` is the
    scheme and host the link starts with (from the inviting request). Raises ValueError if that address's
    account is already a member."""
    email = email.strip()
    user = User.objects.filter(email__iexact=email).order_by("pk").first()
    new_account = user is None
    if user is None:
        user = User(username=_free_username(email), email=email)
        user.set_unusable_password()
        user.save()
    membership = membership_add(project=project, user=user, role=role)
    context = {
        "project": project,
        "role": membership.get_role_display(),
        "invited_by": invited_by.get_username(),
        "username": user.get_username(),
        "new_account": new_account,
        "link": site_url + (set_password_path(user) if new_account else reverse("login")),
    }
    subject = render_to_string("registration/invite_subject.txt", context).strip()
    body = render_to_string("registration/invite_email.txt", context)
    # Last, inside the transaction: if the mail cannot be sent (OSError, SMTPException), the account and
    # membership are rolled back with it, and the inviter is told instead of someone waiting for nothing.
    send_mail(subject, body, None, [email])
    return Invitation(user=user, membership=membership, new_account=new_account)
