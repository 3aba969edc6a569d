"""Creating projects with their taxonomy and attribute schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import LabelClass, Membership, Project
from annotation.services.memberships import membership_set
from annotation.taxonomy import BLOOD_SMEAR_CLASSES, WBCATT_ATTRIBUTES, ClassSpec, validate_attribute_schema


@transaction.atomic
def project_create(
    *,
    name: str,
    description: str = "",
    classes: Sequence[ClassSpec] = BLOOD_SMEAR_CLASSES,
    attribute_schema: list[Any] | None = None,
    label_budget: int = 2000,
    is_synthetic_demo: bool = False,
    lead: User | None = None,
) -> Project:
    schema = validate_attribute_schema(
        attribute_schema if attribute_schema is not None else [dict(a) for a in WBCATT_ATTRIBUTES]
    )
    project = Project.objects.create(
        name=name,
        description=description,
        attribute_schema=schema,
        label_budget=label_budget,
        is_synthetic_demo=is_synthetic_demo,
    )
    LabelClass.objects.bulk_create(
        LabelClass(project=project, order=i, **spec) for i, spec in enumerate(classes)
    )
    if lead is not None:
        membership_set(project=project, user=lead, role=Membership.Role.LEAD)
    return project


def project_get_or_create(*, name: str, **kwargs: Any) -> tuple[Project, bool]:
    existing = Project.objects.filter(name=name).first()
    if existing is not None:
        return existing, False
    return project_create(name=name, **kwargs), True
