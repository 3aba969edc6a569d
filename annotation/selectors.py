"""Reads. Querysets scoped to what a user may see; views and the API never filter by hand."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from annotation.labels import cell_labels, review_queue_ids
from annotation.models import (
    Annotation,
    Cell,
    Comment,
    LabelClass,
    Membership,
    PagePreferences,
    Project,
    SuspectedLabel,
    TaxonomyChange,
)
from annotation.roles import REVIEWERS

AnyUser = AbstractBaseUser | AnonymousUser


def project_list_for_user(*, user: AnyUser) -> QuerySet[Project]:
    """Projects the user is a member of (every project for a superuser), with cell and label counts.

    The cell count is the project's kept ``cell_count`` (counting a million cells took 0.35 s a view); the
    labelled count is a subquery per project (one grouped join of cells with their annotations read every
    cell's annotation rows and sorted a million cells for the distinct count; bench/million.py)."""
    projects = Project.objects.all()
    if not getattr(user, "is_superuser", False):
        projects = projects.filter(memberships__user_id=int(user.pk or 0))
    labelled = (
        Annotation.objects.filter(
            cell__project=OuterRef("pk"), superseded_by__isnull=True, label__isnull=False
        )
        .order_by()
        .values("cell__project")
        .annotate(n=Count("cell_id", distinct=True))
        .values("n")
    )
    return projects.annotate(
        labelled_count=Coalesce(Subquery(labelled, output_field=IntegerField()), 0),
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


def annotation_list(
    *,
    project: Project,
    user: AnyUser,
    cell_id: int | None = None,
    annotator: str | None = None,
    label: LabelClass | None = None,
    origin: str | None = None,
    unsure: bool | None = None,
    current_only: bool = False,
) -> QuerySet[Annotation]:
    """The project's annotations, history included, oldest first. Annotators see only their own;
    reviewers, leads and admins see everyone's."""
    annotations = (
        Annotation.objects.filter(cell__project=project).select_related("label", "annotator").order_by("id")
    )
    if project_role(user=user, project=project) not in REVIEWERS:
        annotations = annotations.filter(annotator_id=user.pk)
    if cell_id is not None:
        annotations = annotations.filter(cell_id=cell_id)
    if annotator:
        annotations = annotations.filter(annotator__username=annotator)
    if label is not None:
        annotations = annotations.filter(label=label)
    if origin:
        annotations = annotations.filter(origin=origin)
    if unsure is not None:
        annotations = annotations.filter(unsure=unsure)
    if current_only:
        annotations = annotations.filter(superseded_by__isnull=True)
    return annotations


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


def annotation_summary(annotation: Annotation) -> dict[str, Any]:
    return {
        "id": annotation.pk,
        "cell": annotation.cell_id,
        "label": annotation.label.name if annotation.label else None,
        "unsure": annotation.unsure,
        "attributes": annotation.attributes,
        "origin": annotation.origin,
        "annotator": annotation.annotator.get_username() if annotation.annotator else None,
        "created_at": annotation.created_at.isoformat(),
    }


def current_annotations_by_cell(*, cell_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each cell's current annotations (oldest first), as the review queue shows them."""
    found: dict[int, list[dict[str, Any]]] = {}
    for a in (
        Annotation.objects.filter(cell_id__in=cell_ids, superseded_by__isnull=True)
        .select_related("label", "annotator")
        .order_by("pk")
    ):
        found.setdefault(a.cell_id, []).append(annotation_summary(a))
    return found


def review_queue(*, project: Project, limit: int = 100, blind: bool = False) -> list[dict[str, Any]]:
    """The cells waiting for a reviewer's decision with their current labels and the model's suggestion,
    which is withheld (``suggestion_withheld: "blind"``) for a reviewer in blind mode."""
    ids = review_queue_ids(project=project)[:limit]
    states = cell_labels(project=project, cell_ids=ids)
    annotations = current_annotations_by_cell(cell_ids=ids)
    suggestions = {} if blind else latest_suggestions(cell_ids=ids)
    queue = [
        {
            "cell": cell_id,
            "image_url": f"/cells/{cell_id}/image",
            "reason": states[cell_id].reason,
            "annotations": annotations.get(cell_id, []),
            "suggestion": suggestions.get(cell_id),
            "suggestion_withheld": "blind" if blind else None,
            "suspect": None,
        }
        for cell_id in ids
    ]
    return queue + suspected_entries(project=project, limit=limit - len(queue), blind=blind, skip=set(ids))


def _open_suspects(project: Project) -> QuerySet[SuspectedLabel]:
    """Flags no reviewer has settled, on labels that are still current."""
    return SuspectedLabel.objects.filter(
        cell__project=project,
        resolved_at__isnull=True,
        annotation__superseded_by__isnull=True,
        annotation__withdrawn_at__isnull=True,
    )


def suspected_count(*, project: Project) -> int:
    """How many likely label mistakes wait in the reviewer queue (the labelling page polls this)."""
    return _open_suspects(project).count()


def suspected_entries(
    *, project: Project, limit: int, blind: bool = False, skip: set[int] | None = None
) -> list[dict[str, Any]]:
    """Review-queue entries for labels that label-mistake finding doubts (open flags on labels still
    current), most likely mistake first; the suggestion is the class the out-of-fold model prefers."""
    if limit <= 0:
        return []
    flags = list(
        _open_suspects(project)
        .exclude(cell_id__in=skip or set())
        .select_related("label", "suggested")
        .order_by("rank", "pk")[:limit]
    )
    ids = [f.cell_id for f in flags]
    annotations = current_annotations_by_cell(cell_ids=ids)
    entries = []
    for flag in flags:
        suggestion = {
            "label": flag.suggested.name,
            "display_name": flag.suggested.display_name,
            "confidence": flag.suggested_confidence,
        }
        entries.append(
            {
                "cell": flag.cell_id,
                "image_url": f"/cells/{flag.cell_id}/image",
                "reason": "suspected_mistake",
                "annotations": annotations.get(flag.cell_id, []),
                "suggestion": None if blind else suggestion,
                "suggestion_withheld": "blind" if blind else None,
                "suspect": {
                    "label": flag.label.name,
                    "display_name": flag.label.display_name,
                    "label_probability": flag.quality,
                    "rank": flag.rank,
                    "index_version": flag.index_version,
                },
            }
        )
    return entries


def latest_suggestions(*, cell_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The model's suggestion for each cell as the labelling page showed it (its newest batch's), with
    the model's confidence. Read through the reverse relation the loop's QueryItem declares on Cell, so
    this layer imports nothing from the loop."""
    rows = (
        Cell.objects.filter(pk__in=cell_ids, query_items__suggestion__isnull=False)
        .order_by("pk", "-query_items__batch__number")
        .values(
            "pk",
            "query_items__suggestion__name",
            "query_items__suggestion__display_name",
            "query_items__confidence",
        )
    )
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        found.setdefault(
            row["pk"],
            {
                "label": row["query_items__suggestion__name"],
                "display_name": row["query_items__suggestion__display_name"],
                "confidence": row["query_items__confidence"],
            },
        )
    return found


def cell_history(*, cell: Cell) -> list[dict[str, Any]]:
    """Every annotation ever given to the cell, withdrawn and superseded ones included."""
    rows = Annotation.objects.filter(cell=cell).select_related("label", "annotator").order_by("pk")
    return [
        {
            **annotation_summary(a),
            "current": a.superseded_by_id is None,
            "withdrawn": a.withdrawn_at is not None,
        }
        for a in rows
    ]


def active_classes(*, project: Project) -> list[LabelClass]:
    """The classes people label with and the classifier learns, in display order (retired ones left out)."""
    return list(LabelClass.objects.filter(project=project, retired_at__isnull=True).order_by("order", "pk"))


def class_list(*, project: Project) -> QuerySet[LabelClass]:
    """Every class of the project, retired and merged ones included, in display order."""
    return LabelClass.objects.filter(project=project).select_related("merged_into").order_by("order", "pk")


def taxonomy_history(*, project: Project, limit: int = 200) -> QuerySet[TaxonomyChange]:
    """The project's taxonomy changes, newest first."""
    return (
        TaxonomyChange.objects.filter(project=project)
        .select_related("actor", "label_class")
        .order_by("-created_at", "-id")[:limit]
    )


def comment_summary(comment: Comment) -> dict[str, Any]:
    return {
        "id": comment.pk,
        "cell": comment.cell_id,
        "author": comment.author.get_username() if comment.author else None,
        "text": comment.text,
        "created_at": comment.created_at.isoformat(),
    }


def comment_list(*, cell_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The comments on each of ``cell_ids``, oldest first. Every member of the cell's project reads them
    (callers check access to the cells)."""
    by_cell: dict[int, list[dict[str, Any]]] = {}
    for comment in Comment.objects.filter(cell_id__in=cell_ids).select_related("author").order_by("id"):
        by_cell.setdefault(comment.cell_id, []).append(comment_summary(comment))
    return by_cell


def page_preferences(*, user: AnyUser) -> dict[str, Any]:
    """The user's labelling-page preferences; the model's defaults for a user who never changed one."""
    stored = PagePreferences.objects.filter(user_id=int(user.pk or 0)).first()
    prefs = stored or PagePreferences()
    return {"tile_size": prefs.tile_size, "blind_mode": prefs.blind_mode}


def project_sources(project: Project) -> list[str]:
    """The sources the project's cells were imported with (empty ones left out), sorted."""
    values = Cell.objects.filter(project=project).exclude(source="").values_list("source", flat=True)
    return sorted(set(values))


def check_query_source(project: Project | None, value: str) -> str:
    """``value`` when it is empty or a source the project's cells carry; else ValueError naming them."""
    if not value or project is None:
        return value
    sources = project_sources(project)
    if value not in sources:
        raise ValueError(
            f"no cell of this project has the source {value!r} (sources: {', '.join(sources) or 'none'})"
        )
    return value


def check_class_weights(project: Project | None, value: dict[str, float]) -> dict[str, float]:
    """``value`` when every key names a class of the project; else ValueError naming them (a misspelt class
    would be weighted 1 without a word)."""
    if not value or project is None or project.pk is None:
        return value
    names = set(LabelClass.objects.filter(project=project).values_list("name", flat=True))
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"no class named {', '.join(unknown)} (classes: {', '.join(sorted(names))})")
    return value


def timed_labels(*, project: Project) -> QuerySet[Annotation]:
    """Labels given in leukoloop with the seconds the page measured (undone ones left out): what the
    cost-aware strategy and the dashboard's seconds-per-class table read."""
    return Annotation.objects.filter(
        cell__project=project,
        origin=Annotation.Origin.MANUAL,
        withdrawn_at__isnull=True,
        seconds_spent__gt=0,
        label__isnull=False,
    )
