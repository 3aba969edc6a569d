"""A retrain's attribute suggestions for the cells of the batches it writes, given after the write.

The suggestions need the attribute heads fitted on the labelled cells (11 logistic regressions on the
embedding beside the stored measurement heads: 0.4 s at 48 labels, 2 s at 816 while a fine-tune holds the
cores) and each batch cell's measurements (:mod:`learning.morphometry`: about 22 ms a cell on a quiet
core, 80-100 ms beside a fine-tune). Done before the write, they put the loop at 6.2 s from submit to
next batch with a fine-tune beside, and the fit alone at 5.1 s by 816 labels (bench/README.md "Measuring
after the write"). So the retrain writes its batch flagged ``attribute_suggestions_pending`` and only then
fits the heads, stores the suggestions of the cells measured already, and measures the others in rank
order a few at a time, storing theirs after each chunk. The labelling page refreshes them until the flag
clears.

A failure here costs suggestions, never the batch, and always clears the flag.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import numpy as np

from annotation.models import Project
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


class AttributeSuggester:
    """The attribute suggestions of one retrain: whether its batches will get any (:meth:`plan`, before
    the write) and the suggestions themselves (:meth:`fill`, after it)."""

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

    def plan(self, batch_rows: Sequence[np.ndarray]) -> np.ndarray | None:
        """The index rows of the batches' cells (``batch_rows``: each batch's rows in rank order), each
        once in rank order, to suggest for after the write; None when the project has too few labelled
        cells with attributes. Fits nothing and reads no cell file."""
        rows = np.asarray(list(dict.fromkeys(int(r) for b in batch_rows for r in b)), dtype=np.int64)
        if not len(rows) or attribute_rows(self.project.learnable_attributes(), self.data) is None:
            return None
        return rows

    def fill(self, batches: Sequence[QueryBatch], rows: np.ndarray) -> int:
        """Fit the heads, store the suggestions of the cells measured already, then measure the others a
        chunk of :data:`FILL_CHUNK` at a time in rank order and store theirs; clear the batches' flag.
        Returns how many cells got suggestions."""
        filled = 0
        try:
            stored = stored_measurement_heads(self.project, self.project.learnable_attributes())
            heads = fit_attribute_heads(
                self.project,
                self.emb,
                self.ids,
                self.data,
                seed=self.seed,
                weights=self.weights,
                measurement_heads=stored,
            )
            if heads is None:
                return 0
            measured = np.isin(self.ids[rows], list(measured_cell_ids(self.ids[rows].tolist())))
            chunks = [rows[measured]] if measured.any() else []
            later = rows[~measured]
            chunks += [later[start : start + FILL_CHUNK] for start in range(0, len(later), FILL_CHUNK)]
            for chunk in chunks:
                filled += _store(batches, predict_attributes(heads, self.emb, self.ids, chunk))
        except Exception:  # see the module docstring; logged with its traceback
            logger.exception("batches %s: attribute suggestions not completed", [b.pk for b in batches])
        finally:
            QueryBatch.objects.filter(pk__in=[b.pk for b in batches]).update(
                attribute_suggestions_pending=False
            )
        return filled


def _store(batches: Sequence[QueryBatch], suggestions: Suggestions) -> int:
    items = list(QueryItem.objects.filter(batch__in=list(batches), cell_id__in=list(suggestions)))
    for item in items:
        item.attribute_suggestions = suggestions[item.cell_id]
    QueryItem.objects.bulk_update(items, ["attribute_suggestions"])
    return len({item.cell_id for item in items})


__all__ = ["FILL_CHUNK", "AttributeSuggester"]
