"""The evaluation report page of a classifier version and its JSON. Leads and admins only: other members
get 403, outsiders 404; a version of another project, or one that is not a classifier, 404."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from annotation.access import project_for_user, require_role
from annotation.roles import LEADS
from evaluation_report.report import (
    DIFFERENTIAL_METHOD,
    NOT_SCORED_REASON,
    IndexPruned,
    evaluation_cells,
    evaluation_report,
    source_comparison,
)
from loop.handlers.retention import is_pruned
from loop.models import ModelVersion


def _version(request: HttpRequest, project_id: int, version: int) -> ModelVersion:
    project = project_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, roles=LEADS)
    found = (
        ModelVersion.objects.select_related("project", "parent")
        .filter(version=version, project=project, kind=ModelVersion.Kind.CLASSIFIER)
        .first()
    )
    if found is None:
        raise Http404("No such classifier version")
    if found.parent is None:  # its index was deleted: there are no embeddings to score cells with
        raise Http404(f"classifier version {found.version} has no index any more; nothing to report on")
    return found


def _tables(report: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Rows for the page's tables (templates cannot look up a dict by a variable key), classes by their
    display names, in the report's order (the project's)."""
    metrics = report["metrics"]
    if metrics is None:
        return {}

    def shown(lab: str) -> str:
        return names.get(lab, lab)

    per_class = [
        {"label": shown(lab), "f1": metrics["per_class_f1"][lab], "support": metrics["support"][lab]}
        for lab in metrics["labels"]
    ]
    confusion = metrics["confusion"]
    confusion_rows = [
        {
            "label": shown(lab),
            "cells": [{"n": n, "diag": lab == col} for n, col in zip(row, confusion["labels"], strict=True)],
        }
        for lab, row in zip(confusion["labels"], confusion["matrix"], strict=True)
    ]
    differential = report["differential"]
    classes = differential["classes"]
    slides = [
        {
            "slide": s["slide"],
            "n": s["n"],
            "values": [
                {"true": s["true"][c], "predicted": s["predicted"][c], "abs_diff": s["abs_diff"][c]}
                for c in classes
            ],
        }
        for s in differential["slides"]
    ]
    return {
        "per_class": per_class,
        "confusion_labels": [shown(lab) for lab in confusion["labels"]],
        "confusion_rows": confusion_rows,
        "per_source": [{"source": k, **v} for k, v in metrics.get("per_source", {}).items()],
        "differential_classes": [shown(c) for c in classes],
        "differential_slides": slides,
        "mean_abs_diff": [differential["mean_abs_diff"][c] for c in classes],
    }


def _source(request: HttpRequest) -> str | None:
    value = request.GET.get("source", "")
    return value or None


def _compared(request: HttpRequest, found: ModelVersion) -> ModelVersion | None:
    """The earlier classifier version ``?compare=N`` names (before adapting), or None."""
    value = request.GET.get("compare", "")
    if not value:
        return None
    if not value.isdigit():
        raise Http404("compare must be a classifier version number")
    earlier = (
        ModelVersion.objects.select_related("project", "parent")
        .filter(version=int(value), project=found.project, kind=ModelVersion.Kind.CLASSIFIER)
        .first()
    )
    if earlier is None or earlier.parent is None:
        raise Http404(f"no classifier version {value} with an index to compare with")
    return earlier


def _comparison(request: HttpRequest, found: ModelVersion) -> dict[str, Any] | None:
    earlier = _compared(request, found)
    return source_comparison(earlier, found) if earlier is not None else None


@login_required
@require_GET
def report_page(request: HttpRequest, project_id: int, version: int) -> HttpResponse:
    try:
        return _report_page(request, project_id, version)
    except IndexPruned as gone:
        return HttpResponse(str(gone), status=410, content_type="text/plain; charset=utf-8")


def _report_page(request: HttpRequest, project_id: int, version: int) -> HttpResponse:
    found = _version(request, project_id, version)
    source = _source(request)
    sources = sorted(set(evaluation_cells(project_id).values_list("source", flat=True)) - {""})
    data_url = reverse("evaluation-report-data", args=[project_id, found.version])
    if source:
        data_url += "?" + urlencode({"source": source})
    report = evaluation_report(found, source=source)
    names = dict(found.project.classes.values_list("name", "display_name"))
    earlier_versions = [
        (earlier.version, earlier.label_count)
        for earlier in ModelVersion.objects.filter(
            project=found.project, kind=ModelVersion.Kind.CLASSIFIER, parent__isnull=False
        )
        .exclude(pk=found.pk)
        .select_related("parent")
        .order_by("-version")
        # In Python: a JSON key lookup excludes the rows without the key too (SQL NULL).
        if not is_pruned(earlier.parent)  # nothing left to score them with
    ]
    context = {
        "comparison": _comparison(request, found),
        "earlier_versions": earlier_versions,
        "compare": request.GET.get("compare", ""),
        "project": found.project,
        "version": found,
        "sources": sources,
        "source": source or "",
        "not_scored_reason": NOT_SCORED_REASON,
        "differential_method": DIFFERENTIAL_METHOD,
        "report": report,
        "tables": _tables(report, names),
        "data_url": data_url,
        "chart_data": {
            "reliability": report["reliability"],
            "differential": report["differential"],
            "per_class_f1": (report["metrics"] or {}).get("per_class_f1", {}),
        },
    }
    return render(request, "annotation/evaluation_report.html", context)


@login_required
@require_GET
def report_json(request: HttpRequest, project_id: int, version: int) -> JsonResponse:
    found = _version(request, project_id, version)
    try:  # the report functions say when an index was pruned (IndexPruned)
        report = evaluation_report(found, source=_source(request))
        comparison = _comparison(request, found)
    except IndexPruned as gone:
        return JsonResponse({"detail": str(gone)}, status=410)
    if comparison is not None:
        report["comparison"] = comparison
    return JsonResponse(report)
