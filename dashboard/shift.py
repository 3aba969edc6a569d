"""The dashboard's per-source shift report (``learning.shift``) on the project's own cells: for each
source (scanner, site or dataset a cell was imported with), how far its unlabelled cells lie from the
labelled ones, what the newest classifier calls them against the labelled class mix, and how confident it
is against the validation cells, with a plain-language warning.

Computed when the page asks, from the newest classifier and the index it was trained on (like the
per-slide differential's predictions): one FAISS search of the unlabelled cells against the labelled
ones and one pass of the classifier."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Project
from learning.index import EmbeddingIndex
from learning.shift import (
    CONFIDENCE_DROP,
    DISTANCE_RATIO,
    MIX_DISTANCE,
    ShiftReference,
    reference_median_distance,
    source_shift,
    warning_text,
)
from loop.models import ModelVersion
from loop.selectors import latest_version

NO_SOURCE = "(no source)"
# Fewer labelled cells than this and there is no reference to compare with.
MIN_LABELLED = 10


def thresholds() -> dict[str, Any]:
    """The levels' thresholds, shown on the page beside the table."""
    return {
        "distance_ratio": list(DISTANCE_RATIO),
        "mix_distance": MIX_DISTANCE[0],
        "confidence_drop": list(CONFIDENCE_DROP),
    }


def shift_report(project: Project) -> dict[str, Any]:
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
    row_of = {int(cell_id): row for row, cell_id in enumerate(ids.tolist())}
    states = cell_labels(project=project)
    labelled = {
        cell_id: str(state.label)
        for cell_id, state in states.items()
        if state.status is LabelStatus.LABELLED and state.label and cell_id in row_of
    }
    if len(labelled) < MIN_LABELLED:
        return {
            "sources": [],
            "note": f"{len(labelled)} labelled cells in the index: the report needs {MIN_LABELLED}.",
        }
    classes = list(model.classes)
    cells = Cell.objects.filter(project=project).values_list("pk", "source", "role")
    by_source: dict[str, list[int]] = defaultdict(list)
    labelled_per_source: dict[str, int] = defaultdict(int)
    validation: list[int] = []
    for pk, source, role in cells:
        if pk not in row_of:
            continue
        name = source or NO_SOURCE
        if role == Cell.Role.VALIDATION:
            validation.append(pk)
        elif pk in labelled:
            labelled_per_source[name] += 1
        else:
            by_source[name].append(pk)
    ref_ids = np.asarray(sorted(labelled), dtype=np.int64)
    ref_rows = np.asarray([row_of[pk] for pk in ref_ids.tolist()])
    with threadpool_limits(limits=1):  # a web request: do not fan out over every core
        val_rows = np.asarray([row_of[pk] for pk in validation], dtype=np.int64)
        val_conf = (
            float(np.asarray(model.predict_proba(emb[val_rows])).max(axis=1).mean()) if len(val_rows) else 0.0
        )
        reference = ShiftReference(
            emb[ref_rows], [labelled[pk] for pk in ref_ids.tolist()], val_conf, classes
        )
        index = EmbeddingIndex.build(emb[ref_rows], ref_ids)
        ref_distance = reference_median_distance(index, emb[ref_rows], ref_ids)
        rows = []
        for source in sorted(set(by_source) | set(labelled_per_source)):
            pks = by_source.get(source, [])
            if not pks:
                rows.append({"source": source, "cells": 0, "labelled": labelled_per_source[source]})
                continue
            src_rows = np.asarray([row_of[pk] for pk in pks], dtype=np.int64)
            shift = source_shift(
                reference=reference,
                reference_index=index,
                reference_distance=ref_distance,
                source=source,
                embeddings=emb[src_rows],
                cell_ids=np.asarray(pks, dtype=np.int64),
                probabilities=np.asarray(model.predict_proba(emb[src_rows])),
                labelled=labelled_per_source[source],
            )
            top = sorted(shift.predicted_mix.items(), key=lambda kv: -kv[1])[:3]
            rows.append(
                {
                    **shift.to_dict(),
                    "top_predicted": [{"name": n, "share": v} for n, v in top if v > 0],
                    "warning": warning_text(shift),
                }
            )
    return {
        "model": {"version": version.version, "labels": version.label_count},
        "labelled": len(labelled),
        "validation_cells": len(validation),
        "validation_confidence": round(val_conf, 4) if len(validation) else None,
        "reference_median_distance": round(ref_distance, 4),
        "reference_mix": {k: round(v, 4) for k, v in reference.mix().items()},
        "sources": rows,
        "thresholds": thresholds(),
        "note": "" if len(validation) else "No validation cells: the confidence drop is not measured.",
    }
