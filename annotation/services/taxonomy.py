"""Leads edit a project's taxonomy: add a class (or the lab presets), rename it, merge one class into
another, retire one and restore it. Every change keeps the active classes' keys 1-9 then letters in display
order without a clash (``keys_reassign``) and writes one ``TaxonomyChange`` row (who, when, what, before
and after).

Classes are never deleted, since labels point at them. Retiring keeps a class's labels (shown as retired)
but takes it off the labelling keys and out of the classifier; merging A into B moves A's annotations
(every one, history included, so that "merged labels count as B" holds for every reader) and A's hidden
reference labels to B, then retires A with ``merged_into`` = B.

These are the annotation layer's writes only; the loop's part (moving the model's suggestions, queueing a
retrain on the new taxonomy) is ``loop.services.taxonomy``, which calls these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Annotation, Cell, LabelClass, Project, TaxonomyChange
from annotation.taxonomy import PRESET_CLASSES, class_keys

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
COLOUR_PATTERN = re.compile(r"^#[0-9a-fA-F]{6}$")
# A classifier needs two classes to tell apart.
MIN_ACTIVE_CLASSES = 2
DEFAULT_COLOUR = "#777777"


class TaxonomyError(ValueError):
    """A taxonomy change that is refused for its input (a bad name or colour); the message says why."""


class TaxonomyConflict(TaxonomyError):
    """A taxonomy change the classes' current state forbids (the class is retired, the name is taken)."""


@dataclass(frozen=True)
class MergeResult:
    source: LabelClass
    target: LabelClass
    annotations_moved: int
    ground_truth_moved: int  # hidden reference labels of cells (never shown to annotators)


def snapshot(label_class: LabelClass) -> dict[str, Any]:
    """What the history keeps of a class: its fields as plain JSON."""
    return {
        "name": label_class.name,
        "display_name": label_class.display_name,
        "colour": label_class.colour,
        "key": label_class.key,
        "retired": label_class.retired_at is not None,
        "merged_into": label_class.merged_into.name if label_class.merged_into else None,
    }


def _lock(project: Project) -> None:
    """One taxonomy change at a time per project (keys are handed out from the current state)."""
    Project.objects.select_for_update().filter(pk=project.pk).first()


def keys_reassign(project: Project) -> dict[str, list[str]]:
    """Give the active classes the keys 1-9 then letters in display order, and retired classes none.
    Returns {class name: [old key, new key]} for every class whose key changed. Keys are first cleared,
    then set, so the unique (project, key) constraint never sees two classes with one key."""
    classes = list(LabelClass.objects.filter(project=project).order_by("order", "pk"))
    active = [c for c in classes if c.retired_at is None]
    wanted = dict(zip((c.pk for c in active), class_keys(len(active)), strict=True))
    changed = {c.name: [c.key, wanted.get(c.pk, "")] for c in classes if c.key != wanted.get(c.pk, "")}
    if changed:
        LabelClass.objects.filter(project=project, name__in=changed).update(key="")
        for c in classes:
            new = wanted.get(c.pk, "")
            if c.name in changed and new:
                LabelClass.objects.filter(pk=c.pk).update(key=new)
    return changed


def _record(
    *,
    label_class: LabelClass,
    actor: User | None,
    action: str,
    summary: str,
    before: dict[str, Any],
    after: dict[str, Any],
) -> TaxonomyChange:
    return TaxonomyChange.objects.create(
        project_id=label_class.project_id,
        label_class=label_class,
        actor=actor,
        action=action,
        summary=summary[:300],
        before=before,
        after=after,
    )


def _clean_display_name(display_name: str) -> str:
    text = " ".join(str(display_name).split())  # no newlines or tabs in a button's text
    if not text:
        raise TaxonomyError("a class needs a display name")
    if len(text) > 120:
        raise TaxonomyError("a display name has at most 120 characters")
    return text


def _clean_colour(colour: str) -> str:
    if not COLOUR_PATTERN.match(colour):
        raise TaxonomyError(f"colour {colour!r} is not of the form #rrggbb")
    return colour.lower()


def name_from(display_name: str) -> str:
    """A class name (the stable id) made from a display name: "Band neutrophil" -> "band_neutrophil"."""
    return re.sub(r"[^a-z0-9]+", "_", display_name.lower()).strip("_")[:64]


@transaction.atomic
def class_add(
    *,
    project: Project,
    actor: User | None,
    display_name: str,
    name: str = "",
    colour: str = "",
) -> LabelClass:
    """Add an active class at the end of the display order; it gets the next free key."""
    _lock(project)
    display_name = _clean_display_name(display_name)
    name = name or name_from(display_name)
    if not NAME_PATTERN.match(name):
        raise TaxonomyError(
            f"class name {name!r} must be lower-case letters, digits, '_' or '-' (at most 64 characters)"
        )
    existing = LabelClass.objects.filter(project=project, name=name).first()
    if existing is not None:
        state = "a retired class (restore it instead)" if existing.retired_at else "a class"
        raise TaxonomyConflict(f"{name!r} is already {state} of this project")
    order = (LabelClass.objects.filter(project=project).aggregate(m=Max("order"))["m"] or 0) + 1
    label_class = LabelClass.objects.create(
        project=project,
        name=name,
        display_name=display_name,
        colour=_clean_colour(colour) if colour else DEFAULT_COLOUR,
        order=order,
    )
    keys = keys_reassign(project)
    label_class.refresh_from_db()
    _record(
        label_class=label_class,
        actor=actor,
        action=TaxonomyChange.Action.ADD,
        summary=f"added {label_class.display_name} ({name}), key {label_class.key or 'none'}",
        before={},
        after={**snapshot(label_class), "keys": keys},
    )
    return label_class


@transaction.atomic
def class_add_presets(
    *, project: Project, actor: User | None, names: Sequence[str] | None = None
) -> list[LabelClass]:
    """Add the lab presets (``annotation.taxonomy.PRESET_CLASSES``) the project does not have yet: all of
    them, or those of ``names``. Returns the classes added (none when all are there already)."""
    presets = {spec["name"]: spec for spec in PRESET_CLASSES}
    wanted = list(names) if names is not None else list(presets)
    unknown = [n for n in wanted if n not in presets]
    if unknown:
        raise TaxonomyError(f"no preset {', '.join(map(repr, unknown))} (presets: {', '.join(presets)})")
    _lock(project)
    have = set(LabelClass.objects.filter(project=project).values_list("name", flat=True))
    return [
        class_add(
            project=project,
            actor=actor,
            name=name,
            display_name=presets[name]["display_name"],
            colour=presets[name]["colour"],
        )
        for name in wanted
        if name not in have
    ]


@transaction.atomic
def class_rename(
    *, label_class: LabelClass, actor: User | None, display_name: str = "", colour: str = ""
) -> LabelClass:
    """Change what a class is called on the pages (and its colour). Its name, the stable id the API,
    exports and trained models use, stays: a rename needs no retrain."""
    _lock(label_class.project)
    label_class.refresh_from_db()
    before = snapshot(label_class)
    if display_name:
        label_class.display_name = _clean_display_name(display_name)
    if colour:
        label_class.colour = _clean_colour(colour)
    after = snapshot(label_class)
    if after == before:
        return label_class
    label_class.save(update_fields=["display_name", "colour"])
    what = (
        f"renamed {before['display_name']} to {after['display_name']}"
        if before["display_name"] != after["display_name"]
        else f"recoloured {after['display_name']}"
    )
    _record(
        label_class=label_class,
        actor=actor,
        action=TaxonomyChange.Action.RENAME,
        summary=f"{what} ({label_class.name})",
        before=before,
        after=after,
    )
    return label_class


def _require_active(label_class: LabelClass) -> None:
    if label_class.retired_at is not None:
        raise TaxonomyConflict(f"{label_class.name!r} is retired")


def _require_enough_left(project: Project, leaving: int = 1) -> None:
    remaining = LabelClass.objects.filter(project=project, retired_at__isnull=True).count() - leaving
    if remaining < MIN_ACTIVE_CLASSES:
        raise TaxonomyConflict(f"a project keeps at least {MIN_ACTIVE_CLASSES} active classes")


@transaction.atomic
def class_merge(*, source: LabelClass, target: LabelClass, actor: User | None) -> MergeResult:
    """Merge ``source`` into ``target``: every annotation of ``source`` and every hidden reference label
    of ``source`` become ``target``'s; ``source`` is retired with ``merged_into`` = ``target``."""
    if source.project_id != target.project_id:
        raise TaxonomyError("classes of two projects cannot be merged")
    if source.pk == target.pk:
        raise TaxonomyError("a class cannot be merged into itself")
    project = source.project
    _lock(project)
    source.refresh_from_db()
    target.refresh_from_db()
    _require_active(source)
    _require_active(target)
    _require_enough_left(project)
    before = snapshot(source)
    moved = Annotation.objects.filter(label=source).update(label=target)
    truths = Cell.objects.filter(project=project, reference_label=source).update(reference_label=target)
    source.retired_at = timezone.now()
    source.merged_into = target
    source.save(update_fields=["retired_at", "merged_into"])
    keys = keys_reassign(project)
    source.refresh_from_db()
    target.refresh_from_db()
    _record(
        label_class=source,
        actor=actor,
        action=TaxonomyChange.Action.MERGE,
        summary=(
            f"merged {source.display_name} ({source.name}) into {target.display_name} ({target.name}): "
            f"{moved} annotation{'s' if moved != 1 else ''} moved"
        ),
        before=before,
        after={
            **snapshot(source),
            "annotations_moved": moved,
            "ground_truth_moved": truths,
            "keys": keys,
        },
    )
    return MergeResult(source, target, moved, truths)


@transaction.atomic
def class_retire(*, label_class: LabelClass, actor: User | None) -> LabelClass:
    """Take a class off the labelling keys and out of the classifier; its labels stay, shown as retired
    (they train nothing while it is retired)."""
    project = label_class.project
    _lock(project)
    label_class.refresh_from_db()
    _require_active(label_class)
    _require_enough_left(project)
    before = snapshot(label_class)
    label_class.retired_at = timezone.now()
    label_class.save(update_fields=["retired_at"])
    keys = keys_reassign(project)
    label_class.refresh_from_db()
    kept = Annotation.objects.filter(label=label_class, superseded_by__isnull=True).count()
    _record(
        label_class=label_class,
        actor=actor,
        action=TaxonomyChange.Action.RETIRE,
        summary=f"retired {label_class.display_name} ({label_class.name}); its {kept} current labels kept",
        before=before,
        after={**snapshot(label_class), "labels_kept": kept, "keys": keys},
    )
    return label_class


@transaction.atomic
def class_restore(*, label_class: LabelClass, actor: User | None) -> LabelClass:
    """Make a retired class active again, in its old place in the order. A merged class cannot come back:
    its labels now belong to the class it was merged into."""
    project = label_class.project
    _lock(project)
    label_class.refresh_from_db()
    if label_class.retired_at is None:
        raise TaxonomyConflict(f"{label_class.name!r} is not retired")
    if label_class.merged_into is not None:
        raise TaxonomyConflict(
            f"{label_class.name!r} was merged into {label_class.merged_into.name!r}: add a new class instead"
        )
    before = snapshot(label_class)
    label_class.retired_at = None
    label_class.save(update_fields=["retired_at"])
    keys = keys_reassign(project)
    label_class.refresh_from_db()
    _record(
        label_class=label_class,
        actor=actor,
        action=TaxonomyChange.Action.RESTORE,
        summary=f"restored {label_class.display_name} ({label_class.name}), key {label_class.key or 'none'}",
        before=before,
        after={**snapshot(label_class), "keys": keys},
    )
    return label_class
