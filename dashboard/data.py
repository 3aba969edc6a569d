"""What the dashboard shows, read from the database: budget, labels per class, learning curve, current model,
stopping signal and annotators. All plain JSON-able values."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from annotation.labels import LabelCounts, LabelStatus, cell_labels
from annotation.models import Annotation, Membership, Project
from annotation.selectors import timed_labels
from dashboard.stats import (
    ANNOTATOR_RULES,
    CurvePoint,
    LabelEvent,
    annotator_speed,
    mean_agreement_per_annotator,
    mean_kappa_per_annotator,
    pairwise_kappa,
    stopping_signal,
)
from loop.models import ModelVersion, QueryItem
from loop.selectors import label_budget, latest_version


def _classes(project: Project) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "display_name": c.display_name, "colour": c.colour} for c in project.classes.all()
    ]


def budget_and_classes(project: Project) -> dict[str, Any]:
    """Labels used (cells with a resolved label), waiting for review, asked for in open batches, and left
    (what the loop may still ask for: ``loop.selectors.LabelBudget``), and the count of each class."""
    states = cell_labels(project=project)
    labelled = [s for s in states.values() if s.status is LabelStatus.LABELLED]
    counts = Counter(s.label for s in labelled)
    used = len(labelled)
    in_review = sum(1 for s in states.values() if s.status is LabelStatus.REVIEW)
    budget = label_budget(project, LabelCounts(labelled=used, review=in_review))
    return {
        "budget": {
            "total": project.label_budget,
            "used": used,
            "left": max(budget.left, 0),
            "in_review": in_review,
            "in_batches": budget.waiting,
        },
        "class_counts": [{**c, "count": counts.get(c["name"], 0)} for c in _classes(project)],
    }


def _interval(metrics: dict[str, Any]) -> list[float] | None:
    bootstrap = metrics.get("bootstrap") or {}
    interval = bootstrap.get("macro_f1")
    return [float(interval[0]), float(interval[1])] if interval else None


def learning_curve(project: Project) -> list[dict[str, Any]]:
    """One point per classifier version, oldest first: labels used, validation macro-F1 and its bootstrap
    interval (None where the version had no validation cells)."""
    versions = (
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.CLASSIFIER)
        .select_related("parent")
        .order_by("version")
    )
    points = []
    for v in versions:
        metrics = v.metrics or {}
        points.append(
            {
                "version": v.version,
                "labels": v.label_count,
                "macro_f1": metrics.get("macro_f1"),
                "interval": _interval(metrics),
                "confidence": (metrics.get("bootstrap") or {}).get("confidence"),
                "n_validation": metrics.get("n"),
                "index_version": v.parent.version if v.parent else None,
                "created_at": v.created_at.isoformat(),
            }
        )
    return points


def current_model(project: Project) -> dict[str, Any] | None:
    """The latest classifier's validation report: per-class F1, confusion matrix, interval, ECE."""
    version = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    if version is None:
        return None
    metrics = version.metrics or {}
    return {
        "version": version.version,
        "labels": version.label_count,
        "macro_f1": metrics.get("macro_f1"),
        "accuracy": metrics.get("accuracy"),
        "interval": _interval(metrics),
        "ece": metrics.get("ece"),
        "n_validation": metrics.get("n"),
        "per_class_f1": metrics.get("per_class_f1") or {},
        "confusion": metrics.get("confusion"),
        "per_source": metrics.get("per_source") or {},
    }


# A member with a queue but no label yet.
NO_LABELS: dict[str, Any] = {
    "labels": 0,
    "active_hours": 0.0,
    "labels_per_hour": None,
    "median_seconds": None,
}


def annotators(project: Project) -> dict[str, Any]:
    """Speed of each person who labelled in leukoloop and their agreement on cells labelled by several.

    Speed counts every label given in leukoloop that was not undone (a changed label counts again: it
    was work); agreement compares current labels only."""
    rows = (
        Annotation.objects.filter(
            cell__project=project,
            origin=Annotation.Origin.MANUAL,
            annotator__isnull=False,
            withdrawn_at__isnull=True,
        )
        .values(
            "cell_id",
            "annotator__username",
            "created_at",
            "seconds_spent",
            "label__name",
            "unsure",
            "superseded_by_id",
        )
        .order_by("id")
    )
    events: list[LabelEvent] = []
    current: dict[int, dict[str, str]] = defaultdict(dict)
    for row in rows:
        person = str(row["annotator__username"])
        events.append(LabelEvent(person, row["created_at"], row["seconds_spent"]))
        if row["superseded_by_id"] is None and not row["unsure"] and row["label__name"]:
            current[int(row["cell_id"])][person] = str(row["label__name"])
    speed = annotator_speed(events)
    multi = {cell: people for cell, people in current.items() if len(people) > 1}
    # Raw agreement counts every shared cell; kappa and the pair table need two per pair to mean much.
    every_pair = pairwise_kappa(multi, min_shared=1)
    pairs = [pair for pair in every_pair if pair["shared"] >= 2]
    kappas = mean_kappa_per_annotator(pairs)
    agreement = mean_agreement_per_annotator(every_pair)
    gold = gold_accuracy(project)
    queues = queue_status(project)
    names = sorted(set(speed) | set(queues))
    people = [
        {
            "annotator": person,
            **speed.get(person, NO_LABELS),
            "kappa": kappas.get(person),
            "agreement": agreement.get(person),
            "gold": gold.get(person, {"answered": 0, "correct": 0, "accuracy": None}),
            **queues.get(person, {"paused": False, "open_batch": None, "open_left": 0}),
        }
        for person in names
    ]
    return {
        "people": people,
        "pairs": pairs,
        "cells_labelled_twice": len(multi),
        "rules": ANNOTATOR_RULES,
        "seconds_by_class": seconds_by_class(project),
    }


def seconds_by_class(project: Project) -> dict[str, Any]:
    """Median seconds per label by class, for the whole project (what the cost-aware strategy uses,
    ``loop.handlers.querying.class_seconds``) and per annotator, with how many timed labels each rests on."""
    rows = (
        timed_labels(project=project)
        .filter(annotator__isnull=False)
        .values_list("annotator__username", "label__name", "seconds_spent")
    )
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for person, label, seconds in rows:
        times[(str(person), str(label))].append(float(seconds or 0.0))
        times[("", str(label))].append(float(seconds or 0.0))
    classes = sorted({label for _, label in times})
    people = sorted({person for person, _ in times if person})

    def cells(person: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in classes:
            timed = times.get((person, c))
            if timed:
                out[c] = {"median": round(float(statistics.median(timed)), 2), "n": len(timed)}
        return out

    return {
        "classes": classes,
        "project": cells(""),
        "annotators": [{"annotator": p, "by_class": cells(p)} for p in people],
    }


def gold_accuracy(project: Project) -> dict[str, dict[str, Any]]:
    """{annotator: {"answered", "correct", "accuracy"}} over the gold cells of their own batches that
    they labelled: correct when their current label is the reviewer's current decision."""
    gold = QueryItem.objects.filter(
        batch__project=project, batch__assignee__isnull=False, purpose=QueryItem.Purpose.GOLD
    ).values_list("cell_id", "batch__assignee_id")
    pairs = {(int(cell), int(user)) for cell, user in gold}
    if not pairs:
        return {}
    cells = {cell for cell, _ in pairs}
    current = Annotation.objects.filter(cell_id__in=cells, superseded_by__isnull=True)
    decided = dict(current.filter(origin=Annotation.Origin.REVIEW).values_list("cell_id", "label_id"))
    given = {
        (int(cell), int(user)): (label, unsure)
        for cell, user, label, unsure in current.filter(origin=Annotation.Origin.MANUAL).values_list(
            "cell_id", "annotator_id", "label_id", "unsure"
        )
    }
    names = dict(Membership.objects.filter(project=project).values_list("user_id", "user__username"))
    out: dict[str, dict[str, Any]] = {}
    for cell, user in sorted(pairs):
        if (cell, user) not in given or cell not in decided:
            continue
        label, unsure = given[(cell, user)]
        row = out.setdefault(str(names.get(user, user)), {"answered": 0, "correct": 0, "accuracy": None})
        row["answered"] += 1
        row["correct"] += int(not unsure and label == decided[cell])
    for row in out.values():
        row["accuracy"] = round(row["correct"] / row["answered"], 6)
    return out


def queue_status(project: Project) -> dict[str, dict[str, Any]]:
    """With split work, each member's queue: paused or not, their open batch and its cells they have not
    labelled yet. Members without a batch are listed too, so a lead sees who is idle."""
    from loop.models import QueryBatch

    members = Membership.objects.filter(project=project).select_related("user")
    if not project.split_work:
        return {m.user.username: {"paused": m.labelling_paused} for m in members if m.labelling_paused}
    out: dict[str, dict[str, Any]] = {}
    for member in members:
        batch = (
            QueryBatch.objects.filter(project=project, assignee=member.user, submitted_at__isnull=True)
            .order_by("-number")
            .first()
        )
        left = 0
        if batch is not None:
            items = batch.items.filter(skipped_at__isnull=True)
            labelled = Annotation.objects.filter(
                cell_id__in=items.values("cell_id"), annotator=member.user, superseded_by__isnull=True
            )
            left = items.count() - labelled.count()
        out[member.user.username] = {
            "paused": member.labelling_paused,
            "open_batch": batch.number if batch is not None else None,
            "open_left": left,
        }
    return out


def dashboard_data(project: Project) -> dict[str, Any]:
    base = budget_and_classes(project)
    curve = learning_curve(project)
    signal = stopping_signal(
        [
            CurvePoint(
                p["version"], p["labels"], p["macro_f1"], tuple(p["interval"]) if p["interval"] else None
            )
            for p in curve
        ],
        batch_size=project.query_batch_size,
        budget_left=base["budget"]["left"],
    )
    return {
        "project": {"id": project.pk, "name": project.name, "batch_size": project.query_batch_size},
        **base,
        "classes": _classes(project),
        "learning_curve": curve,
        "current_model": current_model(project),
        "stopping": signal,
        "annotators": annotators(project),
    }
