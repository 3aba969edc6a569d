"""A retrain's attribute suggestions for the cells of the batches it writes, without measuring on the
batch's path.

The suggestions need each cell's measurements (:mod:`learning.morphometry`): about 22 ms a cell on a
quiet core and 80-100 ms while a fine-tune holds the other one, so measuring a batch of 48 before writing
it put the loop at 6.2 s from submit to next batch (bench/README.md "With attribute labels, the loop is
over 5 s while a fine-tune runs"). So the retrain suggests, before the write, only for the cells already
measured (by an earlier batch or by the ``measure`` job), and marks the batch
``attribute_suggestions_pending``; just after the write it measures the others, in rank order a few at a
time, and stores their suggestions; the labelling page refreshes them until the flag clears. Where the
labelled cells themselves are not all measured (the first retrain with attributes), the heads are fitted
after the write too.

A failure here costs suggestions, never the batch, and always clears the flag.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from annotation.models import Project
from learning.attribute_heads import FusedAttributeHeads
from loop.handlers.attribute_suggestions import (
    ATTRIBUTE_WEIGHTS_METRIC,
    Suggestions,
    attribute_rows,
    fit_attribute_heads,
    measured_cell_ids,
    predict_attributes,
)
from loop.handlers.measurement_heads import stored_measurement_heads
from loop.handlers.training_set import TrainingSet
from loop.models import ModelVersion, QueryBatch, QueryItem

logger = logging.getLogger(__name__)

# Cells measured, suggested and stored at a time after the write (about 1 s of measuring beside a
# fine-tune), so that the first cells of the batch get theirs first.
FILL_CHUNK: Final = 12


@dataclass(frozen=True)
class PendingAttributes:
    """What is left to suggest once the batch is written."""

    rows: np.ndarray  # index rows of the batch cells still without suggestions, in rank order
    heads: FusedAttributeHeads | None  # None: fit them after the write (labelled cells to measure)


class AttributeSuggester:
    """The attribute suggestions of one retrain: what it can give before the write (:meth:`before_write`)
    and the rest after it (:meth:`fill`)."""

    def __init__(
        self,
        project: Project,
        emb: np.ndarray,
        ids: np.ndarray,
        data: TrainingSet,
        index: ModelVersion,
        *,
        seed: int,
    ) -> None:
        self.project, self.emb, self.ids, self.data, self.seed = project, emb, ids, data, seed
        self.weights = index.metrics.get(ATTRIBUTE_WEIGHTS_METRIC) or None

    def _fit(self) -> FusedAttributeHeads | None:
        stored = stored_measurement_heads(self.project, self.project.learnable_attributes())
        return fit_attribute_heads(
            self.project,
            self.emb,
            self.ids,
            self.data,
            seed=self.seed,
            weights=self.weights,
            measurement_heads=stored,
        )

    def before_write(self, batch_rows: Sequence[np.ndarray]) -> tuple[Suggestions, PendingAttributes | None]:
        """The suggestions for the already-measured cells of the batches (``batch_rows``: each batch's
        index rows in rank order), and what is left for :meth:`fill`; ``({}, None)`` when the project has
        too few cells with attributes. Reads no cell file."""
        rows = _first_occurrences(batch_rows)
        found = attribute_rows(self.project.learnable_attributes(), self.data) if len(rows) else None
        if found is None:
            return {}, None
        train_rows = found[1]
        measured = measured_cell_ids([*self.ids[train_rows].tolist(), *self.ids[rows].tolist()])
        if not set(self.ids[train_rows].tolist()) <= measured:
            return {}, PendingAttributes(rows=rows, heads=None)
        heads = self._fit()
        if heads is None:
            return {}, None
        ready = np.isin(self.ids[rows], list(measured))
        suggestions = predict_attributes(heads, self.emb, self.ids, rows[ready])
        pending = PendingAttributes(rows=rows[~ready], heads=heads) if (~ready).any() else None
        return suggestions, pending

    def fill(self, batches: Sequence[QueryBatch], pending: PendingAttributes) -> int:
        """Measure the cells ``pending`` lists, store their suggestions on the items of ``batches`` a
        chunk at a time and clear the batches' flag. Returns how many cells got suggestions."""
        filled = 0
        try:
            heads = pending.heads or self._fit()
            for start in range(0, len(pending.rows) if heads is not None else 0, FILL_CHUNK):
                chunk = pending.rows[start : start + FILL_CHUNK]
                assert heads is not None
                filled += _store(batches, predict_attributes(heads, self.emb, self.ids, chunk))
        except Exception:  # see the module docstring; logged with its traceback
            logger.exception("batches %s: attribute suggestions not completed", [b.pk for b in batches])
        finally:
            QueryBatch.objects.filter(pk__in=[b.pk for b in batches]).update(
                attribute_suggestions_pending=False
            )
        return filled


def _first_occurrences(batch_rows: Sequence[np.ndarray]) -> np.ndarray:
    """The rows of every batch, each once, in the order they first appear (rank order within a batch)."""
    seen: dict[int, None] = {}
    for rows in batch_rows:
        for row in np.asarray(rows, dtype=np.int64).tolist():
            seen.setdefault(int(row), None)
    return np.asarray(list(seen), dtype=np.int64)


def _store(batches: Sequence[QueryBatch], suggestions: Suggestions) -> int:
    items = list(QueryItem.objects.filter(batch__in=list(batches), cell_id__in=list(suggestions)))
    for item in items:
        item.attribute_suggestions = suggestions[item.cell_id]
    QueryItem.objects.bulk_update(items, ["attribute_suggestions"])
    return len({item.cell_id for item in items})


__all__ = ["FILL_CHUNK", "AttributeSuggester", "PendingAttributes"]
