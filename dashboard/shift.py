"""The dashboard's per-source shift report (``learning.shift``) on the project's own cells: for each
source (scanner, site or dataset a cell was imported with), how far its unlabelled cells lie from the
labelled ones, what the newest classifier calls them against the labelled class mix, and how confident it
is against the validation cells, with a plain-language warning.

Computed from the newest classifier and the index it was trained on: one FAISS search of the unlabelled
cells against the labelled ones and one pass of the classifier, over a sample of each source's cells in a
large project. The figures belong to a classifier version, so each version's report is computed once and
kept as JSON beside the project's artefacts: by a ``shift`` job on the side queue that every retrain
starts, or by the page itself when it finds none and the index is small. At a million cells the
computation reads every cell's id, role and source (2.2-2.7 s per page view, bench/million.py); the page
now reads the kept report, and while the job is on its way it says so."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Project
from jobs.models import Job
from jobs.selectors import error_summary
from jobs.services import job_create
from learning.shift import (
    CONFIDENCE_DROP,
    DISTANCE_RATIO,
    MIX_DISTANCE,
    UNLIKE_SHARE,
    LabelledNeighbourhood,
    ShiftReference,
    nearest_other_distance,
    source_shift,
    warning_text,
)
from loop.handlers.training_set import among, project_cells, rows_of
from loop.models import ModelVersion
from loop.selectors import latest_version

NO_SOURCE = "(no source)"
# The figures are a median, shares and a mean, so a random sample of this many unlabelled cells per
# source (and of the validation cells) pins them to about a percent, and the page's cost stays flat in
# the pool's size: over every cell of a million-cell project the report took 50 s and 18 GB of the web
# process (bench/million.py).
SAMPLE_CELLS = 5_000
# Fewer labelled cells than this and there is no reference to compare with.
MIN_LABELLED = 10
# Up to this many cells in the model's index the page computes a missing report itself (well under a
# second at 16k cells); above it, only the ``shift`` job does, so a page view never takes seconds.
INLINE_CELLS = 100_000


def sample(positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """At most ``SAMPLE_CELLS`` of ``positions``, in ascending order (the embeddings are read in order)."""
    if len(positions) <= SAMPLE_CELLS:
        return positions
    return np.sort(rng.choice(positions, SAMPLE_CELLS, replace=False))


def thresholds() -> dict[str, Any]:
    """The levels' thresholds, shown on the page beside the table."""
    return {
        "distance_ratio": list(DISTANCE_RATIO),
        "mix_distance": MIX_DISTANCE[0],
        "confidence_drop": list(CONFIDENCE_DROP),
        "unlike_share": list(UNLIKE_SHARE),
    }


def report_path(version: ModelVersion) -> Path:
    """Where the report of classifier ``version`` is kept."""
    return (
        Path(settings.LEUKOLOOP_ARTIFACTS_DIR)
        / f"project-{version.project_id}"
        / "reports"
        / f"shift-classifier-v{version.version}.json"
    )


def saved_report(version: ModelVersion) -> dict[str, Any] | None:
    """The kept report of ``version``, or None when there is none (or it cannot be read: computed again)."""
    try:
        with report_path(version).open(encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_report(version: ModelVersion, report: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file; two writers of one version write the same)."""
    path = report_path(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".shift-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(report, file, default=float)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_request(project: Project) -> Job:
    """The ``shift`` job that will compute the newest classifier's report: one on its way, or a new one."""
    active = (
        Job.objects.filter(
            project=project, kind=Job.Kind.SHIFT, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)
        )
        .order_by("pk")
        .first()
    )
    return active if active is not None else job_create(kind=Job.Kind.SHIFT, project=project)


def _failed_since(project: Project, version: ModelVersion) -> Job | None:
    """The latest ``shift`` job if it failed after ``version`` was made."""
    latest = Job.objects.filter(project=project, kind=Job.Kind.SHIFT).order_by("-pk").first()
    if latest is None or latest.status != Job.Status.FAILED or latest.finished_at is None:
        return None
    return latest if latest.finished_at >= version.created_at else None


def _index_cells(version: ModelVersion) -> int:
    index = version.parent
    return int((index.artifacts or {}).get("n_cells") or 0) if index is not None else 0


def shift_report(project: Project) -> dict[str, Any]:
    """The page's report: the newest classifier's kept report; computed here when there is none and the
    index is small, else asked of a ``shift`` job (the page says it is on its way)."""
    version = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    if version is None or version.parent is None:
        return compute_shift_report(project)  # says why there is none, without reading any cell
    saved = saved_report(version)
    if saved is not None:
        return saved
    if _index_cells(version) <= INLINE_CELLS:
        return refresh_report(project)
    failed = _failed_since(project, version)
    if failed is not None:  # not started again on every view: a new classifier gets a new attempt
        return {
            "sources": [],
            "failed": True,
            "note": f"The shift report failed (job {failed.pk}): {error_summary(failed.error)}",
        }
    report_request(project)
    return {
        "sources": [],
        "pending": True,
        "note": (
            f"The report for model v{version.version} is being computed in the background "
            "(a few seconds at a million cells); reload the page in a moment."
        ),
    }


def refresh_report(project: Project) -> dict[str, Any]:
    """Compute the newest classifier's report and keep it (the ``shift`` job's work)."""
    report = compute_shift_report(project)
    version_number = (report.get("model") or {}).get("version")
    if version_number is not None:
        version = ModelVersion.objects.get(
            project=project, kind=ModelVersion.Kind.CLASSIFIER, version=version_number
        )
        save_report(version, report)
    return report


def compute_shift_report(project: Project) -> dict[str, Any]:
    """The report of the newest classifier, computed now (see the module's docstring)."""
    from threadpoolctl import threadpool_limits

    from loop.handlers.artifacts import classifier, index_embeddings

    version = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    if version is None or version.parent is None:
        return {"sources": [], "note": "No model yet: the report needs a trained classifier."}
    try:
        ids, emb = index_embeddings(version.parent)
        model = classifier(version)
    except OSError as error:
        return {"sources": [], "note": f"The model files cannot be read ({type(error).__name__})."}
    states = cell_labels(project=project)
    cell_ids, roles, sources = project_cells(project)
    rows, found = rows_of(ids, cell_ids)
    cell_ids, roles, sources = cell_ids[found], roles[found], sources[found]
    labelled_of = {
        cell_id: str(state.label)
        for cell_id, state in states.items()
        if state.status is LabelStatus.LABELLED and state.label
    }
    is_validation = roles == Cell.Role.VALIDATION
    # Labelled validation cells join the reference, as labelled cells; they count for no source.
    is_labelled = among(cell_ids, labelled_of)
    if int(is_labelled.sum()) < MIN_LABELLED:
        return {
            "sources": [],
            "note": f"{int(is_labelled.sum())} labelled cells in the index: the report needs {MIN_LABELLED}.",
        }
    classes = list(model.classes)
    names = np.where(sources == "", NO_SOURCE, sources)
    rng = np.random.default_rng(0)  # the same sample on every load of the page
    ref_positions = np.flatnonzero(is_labelled)
    ref_ids, ref_rows = cell_ids[ref_positions], rows[ref_positions]
    validation = sample(np.flatnonzero(is_validation), rng)
    with threadpool_limits(limits=1):  # a web request: do not fan out over every core
        val_rows = rows[validation]
        val_conf = (
            float(np.asarray(model.predict_proba(emb[val_rows])).max(axis=1).mean()) if len(val_rows) else 0.0
        )
        ref_labels = [labelled_of[int(pk)] for pk in ref_ids]
        reference = ShiftReference(emb[ref_rows], ref_labels, val_conf, classes)
        # The labelled cells with their classes: the unlike share counts the cells the labelling page
        # would withhold a suggestion on (MIN_LABELLED >= 2 cells, so never None).
        labelled_cells = LabelledNeighbourhood.build(emb[ref_rows], ref_ids, np.asarray(ref_labels))
        assert labelled_cells is not None
        index = labelled_cells.index
        ref_distance = float(np.median(nearest_other_distance(index, emb[ref_rows], ref_ids)))
        report_rows = []
        for source in sorted(set(names[~is_validation].tolist())):
            in_source = names == source
            labelled_here = int((in_source & is_labelled & ~is_validation).sum())
            unlabelled = np.flatnonzero(in_source & ~is_labelled & ~is_validation)
            if not len(unlabelled):
                report_rows.append({"source": source, "cells": 0, "labelled": labelled_here})
                continue
            picked = sample(unlabelled, rng)
            shift = source_shift(
                reference=reference,
                reference_index=index,
                reference_distance=ref_distance,
                source=source,
                embeddings=emb[rows[picked]],
                cell_ids=cell_ids[picked],
                probabilities=np.asarray(model.predict_proba(emb[rows[picked]])),
                labelled=labelled_here,
                labelled_cells=labelled_cells,
            )
            top = sorted(shift.predicted_mix.items(), key=lambda kv: -kv[1])[:3]
            report_rows.append(
                {
                    **shift.to_dict(),
                    "cells": len(unlabelled),  # the figures are the sample's (``sampled`` cells)
                    "sampled": len(picked),
                    "top_predicted": [{"name": n, "share": v} for n, v in top if v > 0],
                    "warning": warning_text(shift),
                }
            )
    return {
        "model": {"version": version.version, "labels": version.label_count},
        "labelled": len(ref_positions),
        "validation_cells": int(is_validation.sum()),
        "validation_confidence": round(val_conf, 4) if len(val_rows) else None,
        "reference_median_distance": round(ref_distance, 4),
        "reference_mix": {k: round(v, 4) for k, v in reference.mix().items()},
        "sources": report_rows,
        "thresholds": thresholds(),
        "note": "" if len(val_rows) else "No validation cells: the confidence drop is not measured.",
    }
