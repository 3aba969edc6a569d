"""What the dashboard shows, read from the database: budget, labels per class, learning curve, current model,
stopping signal and annotators. All plain JSON-able values."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Project
from dashboard.stats import (
    ANNOTATOR_RULES,
    CurvePoint,
    LabelEvent,
    annotator_speed,
    mean_kappa_per_annotator,
    pairwise_kappa,
    stopping_signal,
)
from loop.models import ModelVersion
from loop.selectors import latest_version


def _classes(project: Project) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "display_name": c.display_name, "colour": c.colour} for c in project.classes.all()
    ]


def budget_and_classes(project: Project) -> dict[str, Any]:
    """Labels used (cells with a resolved label), left, waiting for review, and the count of each class."""
    states = cell_labels(project=project)
    labelled = [s for s in states.values() if s.status is LabelStatus.LABELLED]
    counts = Counter(s.label for s in labelled)
    used = len(labelled)
    return {
        "budget": {
            "total": project.label_budget,
            "used": used,
            "left": max(project.label_budget - used, 0),
            "in_review": sum(1 for s in states.values() if s.status is LabelStatus.REVIEW),
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
    pairs = pairwise_kappa(multi)
    kappas = mean_kappa_per_annotator(pairs)
    people = [{"annotator": person, **stats, "kappa": kappas.get(person)} for person, stats in speed.items()]
    return {"people": people, "pairs": pairs, "cells_labelled_twice": len(multi), "rules": ANNOTATOR_RULES}


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
