"""The loop's side of a taxonomy change (``annotation.services.taxonomy`` writes the classes): the model's
suggestions of a merged class move to the class it joined, and the classifier is retrained on the new
taxonomy (the same retrain a submitted batch asks for, ``retrain_request``, which also builds the next
batch, so its suggestions use the new classes at once).

Renaming changes display names only (the classifier knows classes by their stable ``name``): no retrain.
A project whose loop has not started (no index yet) has nothing to retrain."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import LabelClass, Project
from annotation.services.taxonomy import (
    MergeResult,
    class_add,
    class_add_presets,
    class_merge,
    class_restore,
    class_retire,
)
from jobs.models import Job
from loop.models import ModelVersion, QueryItem
from loop.selectors import latest_version
from loop.services.requests import retrain_request


def retrain_on_new_taxonomy(*, project: Project, actor: User | None, reason: str) -> Job | None:
    """Queue a retrain (joining one already queued) when the loop has an index to train on."""
    if latest_version(project, ModelVersion.Kind.INDEX) is None:
        return None
    return retrain_request(project=project, created_by=actor, reason=f"taxonomy: {reason}")


@transaction.atomic
def taxonomy_add(
    *, project: Project, actor: User | None, display_name: str, name: str = "", colour: str = ""
) -> tuple[LabelClass, Job | None]:
    label_class = class_add(project=project, actor=actor, display_name=display_name, name=name, colour=colour)
    return label_class, retrain_on_new_taxonomy(
        project=project, actor=actor, reason=f"{label_class.name} added"
    )


@transaction.atomic
def taxonomy_add_presets(
    *, project: Project, actor: User | None, names: Sequence[str] | None = None
) -> tuple[list[LabelClass], Job | None]:
    added = class_add_presets(project=project, actor=actor, names=names)
    if not added:
        return added, None
    reason = f"{', '.join(c.name for c in added)} added"
    return added, retrain_on_new_taxonomy(project=project, actor=actor, reason=reason)


@transaction.atomic
def taxonomy_merge(
    *, source: LabelClass, target: LabelClass, actor: User | None
) -> tuple[MergeResult, Job | None]:
    result = class_merge(source=source, target=target, actor=actor)
    QueryItem.objects.filter(suggestion=result.source).update(suggestion=result.target)
    reason = f"{result.source.name} merged into {result.target.name}"
    return result, retrain_on_new_taxonomy(project=result.target.project, actor=actor, reason=reason)


@transaction.atomic
def taxonomy_retire(*, label_class: LabelClass, actor: User | None) -> tuple[LabelClass, Job | None]:
    label_class = class_retire(label_class=label_class, actor=actor)
    reason = f"{label_class.name} retired"
    return label_class, retrain_on_new_taxonomy(project=label_class.project, actor=actor, reason=reason)


@transaction.atomic
def taxonomy_restore(*, label_class: LabelClass, actor: User | None) -> tuple[LabelClass, Job | None]:
    label_class = class_restore(label_class=label_class, actor=actor)
    reason = f"{label_class.name} restored"
    return label_class, retrain_on_new_taxonomy(project=label_class.project, actor=actor, reason=reason)
