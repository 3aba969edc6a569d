"""Which rows of an index version train, validate and may be queried, from the annotations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Project
from loop.models import QueryBatch, QueryItem
from loop.selectors import open_assigned_batches


@dataclass(frozen=True)
class TrainingSet:
    train_rows: np.ndarray  # rows of labelled pool cells
    train_labels: np.ndarray  # their class names
    annotation_ids: list[int]  # the current annotations behind those labels
    val_rows: np.ndarray  # validation cells with a label (annotated, else the hidden reference)
    val_labels: np.ndarray
    val_sources: np.ndarray
    pool_rows: np.ndarray  # pool cells that may be queried or count as labelled (skipped ones left out)
    # bool per pool row: annotated by anyone (labelled or in review), or waiting in the open batch: not
    # queried again, and counted as covered by the diversity strategies
    pool_annotated: np.ndarray
    missing_from_index: int  # cells imported after the index was built
    pool_sources: np.ndarray  # the source of each pool row ("" when none was given)


def rows_of(ids: np.ndarray, cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``cell_ids`` in the sorted ``ids``; second value: which ids were found."""
    pos = np.searchsorted(ids, cell_ids)
    pos = np.minimum(pos, len(ids) - 1)
    found = ids[pos] == cell_ids
    return pos[found], found


def open_batch_cells(project: Project) -> set[int]:
    """The cells waiting in open batches (their skipped ones left out), which a batch built meanwhile must
    not ask for a second time:

    - the newest shared batch while it is not submitted; once it is submitted, or a newer one exists, its
      unlabelled cells may be queried again;
    - with split work, every annotator's open batch, except a paused annotator's (a lead paused their
      queue: its unlabelled cells go to the others)."""
    reserved: set[int] = set()
    newest = QueryBatch.objects.filter(project=project, assignee__isnull=True).order_by("-number").first()
    if newest is not None and newest.submitted_at is None:
        reserved.update(newest.items.filter(skipped_at__isnull=True).values_list("cell_id", flat=True))
    if project.split_work:
        reserved.update(
            QueryItem.objects.filter(
                batch__in=open_assigned_batches(project), skipped_at__isnull=True
            ).values_list("cell_id", flat=True)
        )
    return reserved


def build_training_set(project: Project, ids: np.ndarray, classes: Sequence[str]) -> TrainingSet:
    """``classes``: the classes the model learns (the active taxonomy). A label of another class (a
    retired one) trains and validates nothing; its pool cell still counts as annotated, so it is not
    queried again."""
    learnt = set(classes)
    states = cell_labels(project=project)
    cells = np.array(
        list(Cell.objects.filter(project=project).values_list("pk", "role", "source")), dtype=object
    )
    refs = dict(
        Cell.objects.filter(
            project=project, role=Cell.Role.VALIDATION, reference_label__isnull=False
        ).values_list("pk", "reference_label__name")
    )
    skipped = set(
        QueryItem.objects.filter(batch__project=project, skipped_at__isnull=False).values_list(
            "cell_id", flat=True
        )
    )
    in_open_batch = open_batch_cells(project)
    cell_ids = cells[:, 0].astype(np.int64) if len(cells) else np.zeros(0, dtype=np.int64)
    roles = cells[:, 1] if len(cells) else np.zeros(0, dtype=object)
    sources = cells[:, 2] if len(cells) else np.zeros(0, dtype=object)
    rows, found = rows_of(ids, cell_ids)
    cell_ids, roles, sources = cell_ids[found], roles[found], sources[found]

    train_rows: list[int] = []
    train_labels: list[str] = []
    annotation_ids: list[int] = []
    val_rows, val_labels, val_sources = [], [], []
    pool_rows, pool_annotated, pool_sources = [], [], []
    for row, cell_id, role, source in zip(rows, cell_ids, roles, sources, strict=True):
        state = states.get(int(cell_id))
        if role == Cell.Role.POOL:
            if state is not None and state.status is LabelStatus.LABELLED and state.label in learnt:
                train_rows.append(row)
                train_labels.append(state.label)
                annotation_ids.extend(state.annotation_ids)
            if int(cell_id) in skipped and state is None:
                continue
            pool_rows.append(row)
            pool_annotated.append(state is not None or int(cell_id) in in_open_batch)
            pool_sources.append(source or "")
        elif role == Cell.Role.VALIDATION:
            label = state.label if state is not None and state.status is LabelStatus.LABELLED else None
            label = label or refs.get(int(cell_id))
            if label in learnt:
                val_rows.append(row)
                val_labels.append(label)
                val_sources.append(source or "unknown")
    return TrainingSet(
        train_rows=np.asarray(train_rows, dtype=np.int64),
        train_labels=np.asarray(train_labels, dtype=str),
        annotation_ids=sorted(annotation_ids),
        val_rows=np.asarray(val_rows, dtype=np.int64),
        val_labels=np.asarray(val_labels, dtype=str),
        val_sources=np.asarray(val_sources, dtype=str),
        pool_rows=np.asarray(pool_rows, dtype=np.int64),
        pool_annotated=np.asarray(pool_annotated, dtype=bool),
        missing_from_index=int((~found).sum()),
        pool_sources=np.asarray(pool_sources, dtype=str),
    )
