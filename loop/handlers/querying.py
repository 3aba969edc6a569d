"""Choose the next batch with the project's strategy and record why each cell was chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import Max

from annotation.models import LabelClass, Project
from annotation.selectors import timed_labels
from jobs.models import Job
from learning.query import PoolRows, informativeness, resolve_strategy, select
from learning.query.cost import annotator_seconds, class_vector, median_seconds
from learning.shift import LabelledNeighbourhood
from loop.models import ModelVersion, QueryBatch, QueryItem

# Per-class seconds need this many timed labels before they stand for the class.
MIN_TIMED = 5


@dataclass(frozen=True)
class Choice:
    strategy: str  # the strategy that ran
    rows: np.ndarray  # chosen rows of the index, in the strategy's order
    scores: np.ndarray | None  # margin uncertainty of each chosen cell (None without a model)
    suggestions: np.ndarray | None  # class index the model predicts
    confidences: np.ndarray | None
    # Each chosen cell's distance to the nearest labelled cell, in the labelled cells' own unit, or to
    # those of its suggested class when larger (learning.shift.LabelledNeighbourhood.ratios; None:
    # fewer than two labelled cells): far away, the model abstains (learning.shift.ABSTAIN_RATIO).
    distance_ratios: np.ndarray | None = None


def choose(
    *,
    project: Project,
    embeddings: np.ndarray,
    pool_rows: np.ndarray,
    pool_annotated: np.ndarray,
    probs: np.ndarray | None,
    seed: int,
    pool_sources: np.ndarray | None = None,
    labelled: LabelledNeighbourhood | None = None,
    columns: Sequence[str] = (),
    n: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Choice:
    """Run the strategy over the pool. ``probs`` are the model's over ``pool_rows`` (None: no model).

    With the project's ``query_source`` set (adapting to a new site), the strategy runs over that
    source's pool cells only, as long as some of them are unlabelled; then over the whole pool again.
    ``labelled``: the cells the classifier was trained on, every source's, and ``columns``: the class
    of each column of ``probs`` (each chosen cell's distance to them, and to those of the class it is
    suggested, is recorded). ``n``: how many cells (default: the project's batch size).
    ``options``: the strategy's own (``strategy_options``)."""
    focus = focus_rows(project, pool_sources, pool_annotated)
    if focus is not None:
        pool_rows, pool_annotated = pool_rows[focus], pool_annotated[focus]
        probs = probs[focus] if probs is not None else None
    pool_emb = PoolRows(embeddings, pool_rows)  # not copied: a strategy reads the rows it needs
    strategy = resolve_strategy(
        project.query_strategy, probs=probs, labelled_mask=pool_annotated, n_pool=len(pool_rows)
    )
    picked = select(
        project.query_strategy,
        n=project.query_batch_size if n is None else n,
        embeddings=pool_emb,
        probs=probs,
        labelled_mask=pool_annotated,
        rng=seed,
        **dict(options or {}),
    )
    if probs is None:
        return Choice(strategy, pool_rows[picked], None, None, None)
    view = model_view(probs[picked])
    ratios = None
    if labelled is not None:  # the chosen cells are unlabelled, so never their own neighbour
        suggested = np.asarray(columns)[view[1]] if len(columns) else None
        ratios = labelled.ratios(pool_emb[picked], predicted=suggested)
    return Choice(strategy, pool_rows[picked], *view, ratios)


def model_view(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a batch records of the model for each cell: its margin uncertainty (the score), the class it
    suggests (column index) and that class's calibrated probability."""
    return informativeness("margin", probs), probs.argmax(axis=1), probs.max(axis=1)


@dataclass(frozen=True)
class TimedSeconds:
    """The seconds the labelling page measured per label, by class and by annotator and class."""

    by_class: dict[str, list[float]]
    by_annotator: dict[int, dict[str, list[float]]]

    @classmethod
    def of(cls, project: Project) -> TimedSeconds:
        by_class: dict[str, list[float]] = {}
        by_annotator: dict[int, dict[str, list[float]]] = {}
        rows = timed_labels(project=project).values_list("annotator_id", "label__name", "seconds_spent")
        for annotator, name, seconds in rows:
            value = float(seconds or 0.0)  # seconds_spent__gt=0: never None
            by_class.setdefault(str(name), []).append(value)
            if annotator is not None:
                by_annotator.setdefault(int(annotator), {}).setdefault(str(name), []).append(value)
        return cls(by_class, by_annotator)

    def per_class(self, columns: Sequence[str]) -> np.ndarray | None:
        """(C,) :func:`learning.query.cost.median_seconds` of ``columns``."""
        return median_seconds(self.by_class, columns, min_timed=MIN_TIMED)

    def per_annotator(self, columns: Sequence[str], people: Sequence[int]) -> np.ndarray | None:
        """(P, C) :func:`learning.query.cost.annotator_seconds` of ``people`` (user ids)."""
        return annotator_seconds(self.by_class, self.by_annotator, columns, people, min_timed=MIN_TIMED)


def class_seconds(project: Project, columns: Sequence[str]) -> np.ndarray | None:
    """(C,) median seconds the labelling page measured per label of each class in ``columns``; a class
    with fewer than ``MIN_TIMED`` timed labels gets the median over all classes. None with fewer than
    ``MIN_TIMED`` timed labels in all: no cost known yet, so cost-aware ranks as the hybrid does."""
    return TimedSeconds.of(project).per_class(columns)


def strategy_options(
    project: Project, columns: Sequence[str], timed: TimedSeconds | None = None
) -> dict[str, Any]:
    """The cost-aware strategy's inputs: each class's measured seconds and the lead's class weights.
    ``timed``: the project's timed labels when the caller has read them already."""
    if project.query_strategy != "cost_aware" or not columns:
        return {}
    weights = class_vector(project.class_weights, columns, default=1.0) if project.class_weights else None
    seconds = (timed or TimedSeconds.of(project)).per_class(columns)
    return {"class_seconds": seconds, "class_weights": weights}


def focus_rows(
    project: Project, pool_sources: np.ndarray | None, pool_annotated: np.ndarray
) -> np.ndarray | None:
    """The positions of the pool the query is limited to (``Project.query_source``), or None for all."""
    if not project.query_source or pool_sources is None:
        return None
    mask = pool_sources == project.query_source
    if not (mask & ~pool_annotated).any():
        return None  # nothing of that source left to label: the whole pool again
    return np.flatnonzero(mask)


def suggestion_classes(project: Project, columns: Sequence[str]) -> list[LabelClass | None]:
    """The class each probability column suggests now: itself while active, the class it was merged into
    since, none when it was retired."""
    by_name = {c.name: c for c in LabelClass.objects.filter(project=project).select_related("merged_into")}
    resolved: list[LabelClass | None] = []
    for name in columns:
        label_class = by_name.get(name)
        while label_class is not None and label_class.merged_into is not None:
            label_class = label_class.merged_into
        resolved.append(label_class if label_class is not None and label_class.is_active else None)
    return resolved


def write_batch(
    *,
    project: Project,
    job: Job,
    choice: Choice,
    cell_ids: np.ndarray,
    index: ModelVersion,
    classifier: ModelVersion | None,
    labelled_count: int,
    columns: Sequence[str] = (),
    assignee_id: int | None = None,
    purposes: Sequence[str] | None = None,
    attribute_suggestions_pending: bool = False,
) -> QueryBatch:
    """Store the batch and its provenance. Call inside the job's final transaction. ``columns``: the class
    names of the probabilities' columns (the classifier's own list, which may predate a taxonomy change).
    ``assignee_id``: the annotator a split-work batch is for; ``purposes``: each row's
    ``QueryItem.Purpose`` (default: all chosen by the strategy); ``attribute_suggestions_pending``: the
    retrain gives the cells their attribute suggestions once the batch is written
    (``loop.handlers.batch_attributes``)."""
    classes = suggestion_classes(project, columns)
    number = (QueryBatch.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
    batch = QueryBatch.objects.create(
        project=project,
        number=number,
        requested_strategy=project.query_strategy,
        strategy=choice.strategy,
        classifier=classifier,
        index=index,
        job=job,
        labelled_count=labelled_count,
        assignee_id=assignee_id,
        attribute_suggestions_pending=attribute_suggestions_pending,
    )
    items = []
    for rank, row in enumerate(choice.rows):
        suggestion = confidence = score = ratio = None
        if choice.suggestions is not None and choice.confidences is not None and choice.scores is not None:
            suggestion = classes[int(choice.suggestions[rank])]  # None: a class retired since
            confidence = float(choice.confidences[rank])
            score = float(choice.scores[rank])
        if choice.distance_ratios is not None:
            ratio = round(float(choice.distance_ratios[rank]), 4)
        items.append(
            QueryItem(
                batch=batch,
                cell_id=int(cell_ids[row]),
                rank=rank,
                score=score,
                suggestion=suggestion,
                confidence=confidence,
                labelled_distance_ratio=ratio,
                purpose=purposes[rank] if purposes is not None else QueryItem.Purpose.QUERY,
            )
        )
    QueryItem.objects.bulk_create(items)
    return batch
