"""The per-slide differential, as a hematopathologist reads a 100-cell differential: for each slide, how
many of its cells the experts put in each class (count and percentage), and apart from it what the latest
classifier predicts for the slide's cells that have no expert label yet.

- Expert counts use the resolved label (``annotation.labels``: agreeing annotators, or a reviewer's
  decision); cells waiting for review count as neither labelled nor predicted-only: they are listed in
  their own column and predicted with the unlabelled ones.
- ``first=N`` counts only the first N labelled cells of each slide in labelling order (the cell's first
  current annotation), as a manual differential stops at 100 cells; None counts every labelled cell.
- Columns are the project's active classes in display order, then any retired class that still has labels
  or predictions on a slide, so every count sits in some column and each row sums to its total.
- Cells without a slide id are left out (the page says how many).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Project
from annotation.selectors import active_classes, class_list
from loop.predictions import latest_predictions

FIRST_N = 100
# The class whose presence on a slide a reader must not miss. Matched by name or display name, so a
# lead's renamed or split class ("blast (myeloid)") still counts; "erythroblast" does not.
BLAST_WORD = "blast"
NO_MODEL = "no model yet"
# What a lead needs to import slide ids (annotation.importing.sources reads this manifest column).
SLIDE_COLUMN = "slide_id"


def is_blast(name: str, display_name: str) -> bool:
    return any(word.lower().startswith(BLAST_WORD) for word in (name, display_name))


@dataclass
class SlideRow:
    slide: str
    cells: int = 0
    labelled: int = 0  # cells with a resolved expert label
    counted: int = 0  # the labelled cells this view counts (all, or the first N)
    in_review: int = 0
    unlabelled: int = 0  # no annotation at all
    counts: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    predicted_cells: int = 0  # cells without an expert label that the model predicted


def _percent(n: int, of: int) -> float | None:
    return round(100.0 * n / of, 1) if of else None


def _columns(project: Project, used: set[str]) -> list[dict[str, Any]]:
    active = active_classes(project=project)
    columns: list[dict[str, Any]] = [
        {"name": c.name, "display_name": c.display_name, "retired": False} for c in active
    ]
    known = {c.name for c in active}
    for c in class_list(project=project):
        if c.name in used and c.name not in known:
            columns.append({"name": c.name, "display_name": c.display_name, "retired": True})
            known.add(c.name)
    for name in sorted(used - known):  # a class the classifier knows that the taxonomy no longer has
        columns.append({"name": name, "display_name": name, "retired": True})
    for column in columns:
        column["blast"] = is_blast(column["name"], column["display_name"])
    return columns


def _row_json(row: SlideRow, columns: list[dict[str, Any]], with_predictions: bool) -> dict[str, Any]:
    names = [c["name"] for c in columns]
    blast_names = [c["name"] for c in columns if c["blast"]]
    return {
        "slide": row.slide,
        "cells": row.cells,
        "labelled": row.labelled,
        "counted": row.counted,
        "in_review": row.in_review,
        "unlabelled": row.unlabelled,
        "counts": {n: row.counts.get(n, 0) for n in names},
        "percent": {n: _percent(row.counts.get(n, 0), row.counted) for n in names},
        "blasts": sum(row.counts.get(n, 0) for n in blast_names),
        "predicted_cells": row.predicted_cells if with_predictions else None,
        "predicted": {n: row.predicted.get(n, 0) for n in names} if with_predictions else None,
        "predicted_blasts": sum(row.predicted.get(n, 0) for n in blast_names) if with_predictions else None,
    }


def slide_differential(project: Project, *, first: int | None = None) -> dict[str, Any]:
    """The differential of every slide of ``project`` (see the module docstring); plain JSON-able values."""
    cells = list(
        Cell.objects.filter(project=project).exclude(slide_id="").values_list("pk", "slide_id").order_by("pk")
    )
    without_slide = Cell.objects.filter(project=project, slide_id="").count()
    # Every annotated cell of the project (an IN list of every slide's cells would outgrow SQLite's limit).
    states = cell_labels(project=project) if cells else {}
    rows: dict[str, SlideRow] = {}
    labelled_by_slide: dict[str, list[tuple[int, str]]] = {}  # slide -> (labelling order, class)
    not_labelled: dict[int, str] = {}  # cell -> slide
    for pk, slide in cells:
        row = rows.setdefault(slide, SlideRow(slide))
        row.cells += 1
        state = states.get(pk)
        if state is None:
            row.unlabelled += 1
            not_labelled[pk] = slide
        elif state.status is LabelStatus.REVIEW or state.label is None:
            row.in_review += 1
            not_labelled[pk] = slide
        else:
            row.labelled += 1
            labelled_by_slide.setdefault(slide, []).append((min(state.annotation_ids), state.label))
    for slide, labelled in labelled_by_slide.items():
        labelled.sort()
        taken = labelled if first is None else labelled[:first]
        rows[slide].counts.update(label for _, label in taken)
        rows[slide].counted = len(taken)

    predictions = latest_predictions(project, list(not_labelled))
    for pk, label in predictions.labels.items():
        rows[not_labelled[pk]].predicted[label] += 1
        rows[not_labelled[pk]].predicted_cells += 1

    total = SlideRow("total")
    for row in rows.values():
        total.cells += row.cells
        total.labelled += row.labelled
        total.counted += row.counted
        total.in_review += row.in_review
        total.unlabelled += row.unlabelled
        total.counts.update(row.counts)
        total.predicted.update(row.predicted)
        total.predicted_cells += row.predicted_cells

    columns = _columns(project, set(total.counts) | set(total.predicted))
    version = predictions.version
    with_predictions = version is not None and not predictions.problem
    ordered = sorted(rows.values(), key=lambda r: r.slide)
    return {
        "project": {"id": project.pk, "name": project.name},
        "view": "all" if first is None else f"first{first}",
        "first": first,
        "has_slides": bool(cells),
        "cells_without_slide": without_slide,
        "slide_column": SLIDE_COLUMN,
        "classes": columns,
        "model": {
            "version": version.version if version is not None else None,
            "labels": version.label_count if version is not None else None,
            "note": NO_MODEL if version is None else predictions.problem,
        },
        "slides": [_row_json(row, columns, with_predictions) for row in ordered],
        "total": _row_json(total, columns, with_predictions),
    }


def csv_rows(data: dict[str, Any]) -> list[list[Any]]:
    """The table as CSV rows (header first, the column total last), every value spreadsheet-safe: a slide
    id or class name beginning with = + - @ is written with a leading quote, never run as a formula."""
    from learning.manifest import spreadsheet_safe

    classes = data["classes"]
    counts = ("cells", "labelled", "counted", "in_review", "unlabelled")
    header: list[Any] = ["slide", *counts]
    for c in classes:
        header += [f"{c['display_name']} n", f"{c['display_name']} %"]
    header += ["predicted_cells", *(f"predicted {c['display_name']}" for c in classes), "model_version"]
    version = data["model"]["version"]
    out = [header]
    for row in [*data["slides"], data["total"]]:
        line: list[Any] = [row["slide"], *(row[k] for k in counts)]
        for c in classes:
            percent = row["percent"][c["name"]]
            line += [row["counts"][c["name"]], "" if percent is None else percent]
        predicted = row["predicted"]
        line += [
            "" if predicted is None else row["predicted_cells"],
            *("" if predicted is None else predicted[c["name"]] for c in classes),
            "" if version is None else version,
        ]
        out.append(line)
    return [[spreadsheet_safe(value) for value in line] for line in out]
