"""A user's labelling-page preferences (tile size, blind mode): one row per user, created on first change."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation.models import PagePreferences

EDITABLE = ("tile_size", "blind_mode")


@transaction.atomic
def page_preferences_update(*, user: AbstractBaseUser, changes: dict[str, Any]) -> PagePreferences:
    """Change the caller's own preferences; the model's validators check the values (ValidationError)."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValueError(f"not a page setting: {', '.join(unknown)}")
    prefs, _ = PagePreferences.objects.select_for_update().get_or_create(user_id=user.pk)
    for name, value in changes.items():
        setattr(prefs, name, value)
    prefs.full_clean()
    prefs.save()
    return prefs
