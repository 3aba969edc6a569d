"""Label-mistake finding in the loop: rank the project's current labels by how likely each is wrong
(``learning.label_issues``: out-of-fold logistic regression on the latest index's embeddings, cleanlab's
confident learning) and send the most likely ones to the reviewer queue (``SuspectedLabel``).

Runs on the ``side`` queue after a retrain once the project has ``MIN_LABELLED`` labels, so the next
batch never waits for it. Left out of the ranking: labels a reviewer decided (already checked by a
person), cells not in the index yet, and classes with fewer than two labelled cells (they cannot be
split over the folds).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import numpy as np

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Project
from annotation.services.suspects import Suspect, suspects_replace
from jobs.models import Job
from jobs.registry import JobProgress
from learning.label_issues import MIN_PER_CLASS, rank_label_issues
from loop.handlers.artifacts import index_embeddings
from loop.handlers.training_set import rows_of
from loop.models import ModelVersion
from loop.selectors import latest_version

# Below this many labels the folds are too thin for the ranking to mean much: the check does not run.
MIN_LABELLED: Final = 50
# At most this many flags per run: a reviewer's sitting, most likely mistakes first.
MAX_SUSPECTS: Final = 25


def labelled_for_check(project: Project) -> list[tuple[int, str, int]]:
    """(cell id, class name, id of the cell's newest current annotation) for every labelled cell whose
    label no reviewer has decided."""
    states = {
        cell_id: state
        for cell_id, state in cell_labels(project=project).items()
        if state.status is LabelStatus.LABELLED and state.label
    }
    all_ids = [pk for state in states.values() for pk in state.annotation_ids]
    reviewed = set(
        Annotation.objects.filter(pk__in=all_ids, origin=Annotation.Origin.REVIEW).values_list(
            "cell_id", flat=True
        )
    )
    return [
        (cell_id, str(state.label), max(state.annotation_ids))
        for cell_id, state in sorted(states.items())
        if cell_id not in reviewed
    ]


def check_labels(job: Job, progress: JobProgress) -> dict[str, Any]:
    project = job.project
    assert project is not None
    index = latest_version(project, ModelVersion.Kind.INDEX)
    if index is None:
        return {"checked": 0, "flagged": 0, "message": "no index yet: nothing to check"}
    labelled = labelled_for_check(project)
    ids, emb = index_embeddings(index)
    cells = np.array([c for c, _, _ in labelled], dtype=np.int64)
    rows, found = rows_of(ids, cells) if len(cells) else (np.array([], dtype=np.int64), np.array([], bool))
    kept = [item for item, ok in zip(labelled, found, strict=True) if ok]
    counts = Counter(name for _, name, _ in kept)
    usable = np.array([counts[name] >= MIN_PER_CLASS for _, name, _ in kept], dtype=bool)
    kept = [item for item, ok in zip(kept, usable, strict=True) if ok]
    rows = rows[usable] if len(rows) else rows
    classes = sorted({name for _, name, _ in kept})
    if len(kept) < MIN_LABELLED or len(classes) < 2:
        return {
            "checked": len(kept),
            "flagged": 0,
            "message": f"{len(kept)} labels to check: the check needs {MIN_LABELLED} of two classes or more",
        }
    progress(0.2, f"ranking {len(kept)} labels")
    labels = np.array([classes.index(name) for _, name, _ in kept])
    ranking = rank_label_issues(emb[rows], labels, n_classes=len(classes), seed=job.pk)
    chosen = [int(i) for i in ranking.order if ranking.flagged[i]][:MAX_SUSPECTS]
    suspects = [
        Suspect(
            cell_id=kept[i][0],
            annotation_id=kept[i][2],
            label=kept[i][1],
            suggested=classes[int(ranking.suggested[i])],
            quality=float(ranking.quality[i]),
            suggested_confidence=float(ranking.suggested_confidence[i]),
        )
        for i in chosen
    ]
    written = suspects_replace(project=project, suspects=suspects, index_version=index.version)
    return {
        "checked": len(kept),
        "flagged_by_filter": ranking.n_flagged,
        "flagged": len(written),
        "index_version": index.version,
        "folds": ranking.folds,
        "message": f"{len(written)} of {len(kept)} labels sent to review as likely mistakes",
    }
