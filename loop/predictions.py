"""The latest classifier's predicted class for given cells, read for pages (the per-slide differential).

Predictions are not stored per cell: like the exports and the embedding map, they come from the newest
classifier version applied to the embeddings of the index it was trained on. Cells that index does not
hold (imported after it was built) get none."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotation.models import Project
from loop.models import ModelVersion
from loop.selectors import latest_version


@dataclass(frozen=True)
class LatestPredictions:
    version: ModelVersion | None  # the newest classifier, None: no model yet
    labels: dict[int, str] = field(default_factory=dict)  # cell id -> predicted class name
    problem: str = ""  # why a classifier that exists predicted nothing (its files are missing, say)


def latest_predictions(project: Project, cell_ids: list[int]) -> LatestPredictions:
    """The newest classifier's predicted class of each of ``cell_ids`` that its index holds."""
    from threadpoolctl import threadpool_limits

    from loop.handlers.artifacts import classifier, index_embeddings
    from loop.handlers.training_set import rows_of

    version = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    if version is None:
        return LatestPredictions(None)
    if version.parent is None:
        return LatestPredictions(version, problem="the classifier has no index of embeddings to predict from")
    if not cell_ids:
        return LatestPredictions(version)
    try:
        all_ids, emb = index_embeddings(version.parent)
        model = classifier(version)
    except OSError as error:  # a model file removed or unreadable: the page says so instead of failing
        return LatestPredictions(version, problem=f"the model files cannot be read ({type(error).__name__})")
    wanted = np.asarray(sorted(cell_ids), dtype=np.int64)
    if not len(all_ids):
        return LatestPredictions(version)
    rows, found = rows_of(all_ids, wanted)
    if not len(rows):
        return LatestPredictions(version)
    with threadpool_limits(limits=1):  # a web request: do not fan out over every core
        probs = np.asarray(model.predict_proba(emb[rows]))
    names = np.asarray(model.classes)[probs.argmax(axis=1)]
    return LatestPredictions(
        version, {int(c): str(n) for c, n in zip(wanted[found].tolist(), names.tolist(), strict=True)}
    )
