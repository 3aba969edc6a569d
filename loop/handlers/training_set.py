"""Which rows of an index version train, validate and may be queried, from the annotations."""

from __future__ import annotations

from collections.abc import Collection, Sequence
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
    train_attributes: list[dict[str, str]]  # their attributes (attribute -> value; empty when none)
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


def among(cell_ids: np.ndarray, wanted: Collection[int]) -> np.ndarray:
    """Bool mask over ``cell_ids``: which are in ``wanted`` (a set or dict of ids, small beside them)."""
    return np.isin(cell_ids, np.fromiter(wanted, dtype=np.int64, count=len(wanted)))


def project_cells(project: Project) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids int64, roles, sources) of every cell of the project, as columns (a million cells are a
    million tuples: kept out of Python objects per cell beyond the fetch itself)."""
    rows = Cell.objects.filter(project=project).order_by("pk").values_list("pk", "role", "source")
    ids, roles, sources = [], [], []
    for pk, role, source in rows.iterator(chunk_size=20_000):
        ids.append(pk)
        roles.append(role)
        sources.append(source or "")
    return (
        np.asarray(ids, dtype=np.int64),
        np.asarray(roles, dtype=object),
        np.asarray(sources, dtype=object),
    )


def build_training_set(project: Project, ids: np.ndarray, classes: Sequence[str]) -> TrainingSet:
    """``classes``: the classes the model learns (the active taxonomy). A label of another class (a
    retired one) trains and validates nothing; its pool cell still counts as annotated, so it is not
    queried again.

    Array operations over the cells, and Python only over the annotated, skipped, reserved and
    validation ones: the pool may hold a million cells (bench/million.py)."""
    learnt = set(classes)
    states = cell_labels(project=project)
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
    cell_ids, roles, sources = project_cells(project)
    rows, found = rows_of(ids, cell_ids)
    cell_ids, roles, sources = cell_ids[found], roles[found], sources[found]

    is_pool = roles == Cell.Role.POOL
    annotated = among(cell_ids, states)
    skipped_only = among(cell_ids, skipped) & ~annotated
    in_pool = is_pool & ~skipped_only  # a skipped cell nobody labelled leaves the pool
    reserved = among(cell_ids, in_open_batch)

    train_rows: list[int] = []
    train_labels: list[str] = []
    train_attributes: list[dict[str, str]] = []
    annotation_ids: list[int] = []
    for position in np.flatnonzero(is_pool & annotated):  # ascending rows, as the cells' ids
        labelled = states[int(cell_ids[position])]
        if labelled.status is LabelStatus.LABELLED and labelled.label in learnt:
            train_rows.append(int(rows[position]))
            train_labels.append(labelled.label)
            train_attributes.append(dict(labelled.attributes))
            annotation_ids.extend(labelled.annotation_ids)

    val_rows, val_labels, val_sources = [], [], []
    for position in np.flatnonzero(roles == Cell.Role.VALIDATION):
        cell_id = int(cell_ids[position])
        state = states.get(cell_id)
        label = state.label if state is not None and state.status is LabelStatus.LABELLED else None
        label = label or refs.get(cell_id)
        if label in learnt:
            val_rows.append(int(rows[position]))
            val_labels.append(label)
            val_sources.append(sources[position] or "unknown")
    return TrainingSet(
        train_rows=np.asarray(train_rows, dtype=np.int64),
        train_labels=np.asarray(train_labels, dtype=str),
        train_attributes=train_attributes,
        annotation_ids=sorted(annotation_ids),
        val_rows=np.asarray(val_rows, dtype=np.int64),
        val_labels=np.asarray(val_labels, dtype=str),
        val_sources=np.asarray(val_sources, dtype=str),
        pool_rows=rows[in_pool].astype(np.int64),
        pool_annotated=(annotated | reserved)[in_pool],
        missing_from_index=int((~found).sum()),
        pool_sources=sources[in_pool].astype(str),
    )
