"""The model's guess at each batch cell's morphological attributes, for the labelling page's panel.

The attribute heads (:class:`learning.attribute_heads.FusedAttributeHeads`) train on the labelled pool
cells that carry attributes: their embedding and their measurements (:mod:`learning.morphometry`),
which are taken from each cell's file once, when first needed, and kept (``loop.models.CellMeasurement``):
about 22 ms a cell on this machine (bench/measurement_heads.py), which the retrain spends after it has
written its batch (``loop.handlers.batch_attributes``). The embedding heads are logistic regressions on
a few hundred rows, fitted here; the measurement heads are boosted trees fitted beside the loop after
each batch (``loop.handlers.measurement_heads``), or logistic regressions fitted here until those exist.

Each attribute's measurement weight (how much the measurements count beside the embedding) is chosen
by cross-validation on the labelled cells when the embedding changes (:func:`choose_attribute_weights`,
called by the embed job, which stores the choice with the index); the retrains that follow use it, so
the choice (4-5 s at about 435 cells beside a benchmark, bench/results/attribute_features_v2.json) never
delays a batch. A project that re-embeds rarely (no fine-tunes) would keep weights chosen on its first
few labels, so a retrain chooses them again, after its batch is written, once the cells that carry
attributes have doubled since the last choice (:func:`weights_are_stale`).

Suggestions are only shown, never saved as a label: the annotator's own attributes are what count.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from threadpoolctl import threadpool_limits

from annotation.models import Cell, Project
from learning import attribute_heads
from learning.attribute_heads import MEASUREMENT_WEIGHT, PRODUCT_WEIGHTS_KIND, FusedAttributeHeads
from learning.classifiers import AlignedClassifier
from learning.morphometry import MEASUREMENT_DEFINITION, MEASUREMENT_NAMES, measure
from loop.handlers.training_set import TrainingSet
from loop.models import CellMeasurement

logger = logging.getLogger(__name__)

# Fewer labelled cells with attributes than this: no suggestions (a head fitted on a handful of cells
# would mostly repeat the commonest value).
MIN_ATTRIBUTE_CELLS: Final = 20

# The index version's metric that holds the chosen weights (attribute -> weight), and the one that says
# how many labelled cells with attributes they were chosen on.
ATTRIBUTE_WEIGHTS_METRIC: Final = "attribute_weights"
ATTRIBUTE_WEIGHTS_CELLS_METRIC: Final = "attribute_weights_cells"

Suggestions = dict[int, dict[str, dict[str, Any]]]  # cell id -> attribute -> {"value", "confidence"}


def measurements_for(cell_ids: Sequence[int]) -> np.ndarray:
    """(len(cell_ids), M) measurements, taken from the files of the cells not measured yet (and stored).
    A file that cannot be read measures as zeros and is not stored (the next batch tries again)."""
    wanted = [int(c) for c in cell_ids]
    stored = CellMeasurement.objects.filter(cell_id__in=set(wanted), definition=MEASUREMENT_DEFINITION)
    known: dict[int, list[float]] = dict(stored.values_list("cell_id", "values"))
    missing = sorted(set(wanted) - known.keys())
    fresh: list[CellMeasurement] = []
    for cell in Cell.objects.filter(pk__in=missing).only("pk", "image", "image_root"):
        try:
            values = [float(v) for v in measure(cell.image_path)]
        except (OSError, ValueError) as exc:  # unreadable or undecodable: embedding would have said so
            logger.warning("cell %s: no measurements (%s)", cell.pk, exc)
            continue
        known[cell.pk] = values
        fresh.append(CellMeasurement(cell=cell, definition=MEASUREMENT_DEFINITION, values=values))
    if fresh:
        # A measurement of an older definition is replaced; two jobs measuring the same cell agree.
        CellMeasurement.objects.filter(pk__in=[m.cell_id for m in fresh]).delete()
        CellMeasurement.objects.bulk_create(fresh, ignore_conflicts=True)
    zeros = [0.0] * len(MEASUREMENT_NAMES)
    return np.asarray([known.get(c, zeros) for c in wanted], dtype=np.float32)


# The learnable schema, the labelled rows that carry it, their targets (attribute_rows).
AttributeRows = tuple[dict[str, list[str]], np.ndarray, dict[str, list[str]]]


def attribute_rows(schema: Mapping[str, list[str]], data: TrainingSet) -> AttributeRows | None:
    """The project's learnable ``schema`` (``Project.learnable_attributes``), the labelled rows that carry
    any of it and their targets (attribute -> values, ``''`` where missing); None when fewer than
    :data:`MIN_ATTRIBUTE_CELLS` do."""
    schema = dict(schema)
    if not schema:
        return None
    carries = np.array(
        [any(a.get(name) in values for name, values in schema.items()) for a in data.train_attributes],
        dtype=bool,
    )
    if carries.sum() < MIN_ATTRIBUTE_CELLS:
        return None
    train_attributes = [a for a, keep in zip(data.train_attributes, carries, strict=True) if keep]
    targets = {name: [a.get(name, "") for a in train_attributes] for name in schema}
    return schema, data.train_rows[carries], targets


def attribute_cells(project: Project, data: TrainingSet) -> int:
    """How many of ``data``'s labelled cells carry attributes the heads train on (0 under
    :data:`MIN_ATTRIBUTE_CELLS`)."""
    found = attribute_rows(project.learnable_attributes(), data)
    return 0 if found is None else len(found[1])


def weights_are_stale(index_metrics: Mapping[str, Any], cells: int) -> bool:
    """Whether the weights stored with an index should be chosen again now that ``cells`` labelled cells
    carry attributes: never under :data:`learning.attribute_heads.MIN_CELLS_TO_CHOOSE` (every weight
    would stay the default), else when none were chosen or they were chosen on at most half as many."""
    if cells < attribute_heads.MIN_CELLS_TO_CHOOSE:
        return False
    chosen_on = int(index_metrics.get(ATTRIBUTE_WEIGHTS_CELLS_METRIC) or 0)
    return ATTRIBUTE_WEIGHTS_METRIC not in index_metrics or 2 * chosen_on <= cells


def choose_attribute_weights(
    project: Project, emb: np.ndarray, ids: np.ndarray, data: TrainingSet, *, seed: int = 0
) -> dict[str, Any]:
    """The index metrics of the measurement weights cross-validation chooses on the labelled cells of
    this embedding (:class:`learning.attribute_heads.FusedAttributeHeads`): attribute -> weight under
    :data:`ATTRIBUTE_WEIGHTS_METRIC`, and how many cells with attributes they were chosen on under
    :data:`ATTRIBUTE_WEIGHTS_CELLS_METRIC`; empty when too few cells carry attributes (the retrains then
    use ``MEASUREMENT_WEIGHT``)."""
    found = attribute_rows(project.learnable_attributes(), data)
    if found is None:
        return {}
    schema, train_rows, targets = found
    measured = measurements_for(ids[train_rows].tolist())
    with threadpool_limits(limits=1):
        # Chosen with logistic measurement heads whatever heads the retrains use: the boosted heads
        # score the same with these weights, and choosing with them costs minutes (learning.attribute_heads).
        heads = FusedAttributeHeads(
            schema, measurement_weight="cross-validated", measurement_kind=PRODUCT_WEIGHTS_KIND, seed=seed
        )
        weights = heads.fit(emb[train_rows], measured, targets).weights_
    return (
        {ATTRIBUTE_WEIGHTS_METRIC: weights, ATTRIBUTE_WEIGHTS_CELLS_METRIC: len(train_rows)}
        if weights
        else {}
    )


def measured_cell_ids(cell_ids: Sequence[int]) -> set[int]:
    """Those of ``cell_ids`` with a stored measurement of the current definition (no file is read)."""
    stored = CellMeasurement.objects.filter(
        cell_id__in={int(c) for c in cell_ids}, definition=MEASUREMENT_DEFINITION
    )
    return set(stored.values_list("cell_id", flat=True))


def fit_attribute_heads(
    project: Project,
    emb: np.ndarray,
    ids: np.ndarray,
    data: TrainingSet,
    *,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    measurement_heads: Mapping[str, AlignedClassifier] | None = None,
) -> FusedAttributeHeads | None:
    """The attribute heads trained on ``data``'s labelled cells of the index (``emb``, ``ids``) with
    ``weights`` (attribute -> measurement weight, chosen by :func:`choose_attribute_weights`;
    ``MEASUREMENT_WEIGHT`` where it has none); None when fewer than :data:`MIN_ATTRIBUTE_CELLS` carry
    attributes of the project's schema. ``measurement_heads``: heads fitted earlier
    (``loop.handlers.measurement_heads``), used instead of fitting logistic ones here."""
    found = attribute_rows(project.learnable_attributes(), data)
    if found is None:
        return None
    schema, train_rows, targets = found
    measured = measurements_for(ids[train_rows].tolist())
    with threadpool_limits(limits=1):
        heads = FusedAttributeHeads(
            schema, measurement_weight=dict(weights) if weights else MEASUREMENT_WEIGHT, seed=seed
        )
        heads.fit(emb[train_rows], measured, targets, measurement_heads=measurement_heads)
    return heads


def fit_embedding_attribute_heads(
    project: Project, emb: np.ndarray, ids: np.ndarray, data: TrainingSet, *, seed: int = 0
) -> FusedAttributeHeads | None:
    """The attribute heads on the embedding alone, trained on ``data``'s labelled cells of the index
    (``emb``, ``ids``): what the TorchScript export folds into the model (a measurement head is not a
    linear function of the image). None when fewer than :data:`MIN_ATTRIBUTE_CELLS` carry attributes.
    No cell is measured."""
    found = attribute_rows(project.learnable_attributes(), data)
    if found is None:
        return None
    schema, train_rows, targets = found
    with threadpool_limits(limits=1):
        return FusedAttributeHeads(schema, seed=seed).fit(emb[train_rows], None, targets)


def predict_attributes(
    heads: FusedAttributeHeads, emb: np.ndarray, ids: np.ndarray, rows: np.ndarray
) -> Suggestions:
    """``heads``' suggestions for the cells at ``rows`` of the index, measuring those not measured yet."""
    if not len(rows):
        return {}
    measured = measurements_for(ids[rows].tolist())
    with threadpool_limits(limits=1):
        probs = heads.predict_proba(emb[rows], measured)
    return _as_suggestions(ids[rows], probs, heads.schema)


def _as_suggestions(
    cell_ids: np.ndarray, probs: Mapping[str, np.ndarray], schema: Mapping[str, Sequence[str]]
) -> Suggestions:
    out: Suggestions = {}
    for i, cell_id in enumerate(cell_ids.tolist()):
        out[int(cell_id)] = {
            name: {
                "value": schema[name][int(p[i].argmax())],
                "confidence": round(float(p[i].max()), 3),
            }
            for name, p in probs.items()
        }
    return out


__all__ = [
    "ATTRIBUTE_WEIGHTS_CELLS_METRIC",
    "ATTRIBUTE_WEIGHTS_METRIC",
    "MIN_ATTRIBUTE_CELLS",
    "AttributeRows",
    "Suggestions",
    "attribute_cells",
    "attribute_rows",
    "choose_attribute_weights",
    "fit_attribute_heads",
    "measured_cell_ids",
    "measurements_for",
    "predict_attributes",
    "weights_are_stale",
]
