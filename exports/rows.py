"""A project's cells as export rows, read in chunks (keyset pagination), so memory stays flat however
many cells a project has: each chunk brings its cells, their resolved labels, their whole annotation
history and the latest classifier's predictions, and is dropped once written."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from annotation.cell_files import CellFile
from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Cell, Project, image_path
from loop.models import ModelVersion

if TYPE_CHECKING:
    from learning.shift import LabelledNeighbourhood

CHUNK = 2000
# The order ``iter_rows`` unpacks them in (tuples: a dict per row cost more than the rest of the row).
_CELL_FIELDS = (
    "id",
    "image",
    "image_root",
    "file_size",
    "content_hash",
    "width",
    "height",
    "original_name",
    "source",
    "patient_id",
    "slide_id",
    "role",
)
_ANNOTATION_FIELDS = (
    "id",
    "cell_id",
    "annotator__username",
    "origin",
    "label__name",
    "unsure",
    "attributes",
    "seconds_spent",
    "created_at",
    "superseded_by_id",
    "withdrawn_at",
)


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    model_version: int
    # Distance to the nearest cell the classifier was trained on (other than itself), in the unit of
    # learning.shift.LabelledNeighbourhood, or to those of the predicted class when larger; None when it
    # was trained on fewer than two cells.
    labelled_distance_ratio: float | None = None
    # The project's suggestion_min_confidence when predicted: below it the labelling page shows no
    # suggestion, and the export says the model abstained, for the same reason.
    min_confidence: float = 0.0

    @property
    def abstain_reason(self) -> str:
        """Why the model does not answer for this cell, in the labelling page's words (its
        ``suggestion_withheld``): ``"unlike_labelled"`` (the class would be a guess, however confident),
        ``"low_confidence"`` (below the project's ``suggestion_min_confidence``), or ``""`` (it answers)."""
        from learning.shift import ABSTAIN_RATIO

        if self.labelled_distance_ratio is not None and self.labelled_distance_ratio > ABSTAIN_RATIO:
            return "unlike_labelled"
        if self.min_confidence > 0 and self.confidence < self.min_confidence:
            return "low_confidence"
        return ""

    @property
    def abstained(self) -> bool:
        """The model says "not sure" here, as the labelling page does by withholding its suggestion."""
        return bool(self.abstain_reason)


@dataclass(slots=True)
class ExportRow:
    """One cell with everything the tabular exports write about it."""

    cell_id: int
    image: str  # as stored: relative to its root (the import folder, or the media folder for copies)
    image_path: str  # absolute (a str, not a Path: 16k Path objects cost a noticeable share of an export)
    file_name: str
    content_hash: str
    file_size: int | None
    width: int
    height: int
    original_name: str
    source: str
    patient_id: str
    slide_id: str
    role: str
    label: str | None  # the current resolved label (None: unlabelled or waiting for review)
    label_status: str  # "labelled", "review" or "" (no annotation)
    review_reason: str
    attributes: dict[str, str]
    annotations: list[dict[str, Any]] = field(default_factory=list)
    prediction: Prediction | None = None

    @property
    def cell_file(self) -> CellFile:
        return CellFile(self.cell_id, self.image_path, self.content_hash, self.file_size)

    def prediction_dict(self) -> dict[str, Any] | None:
        if self.prediction is None:
            return None
        return {
            "label": self.prediction.label,
            "confidence": self.prediction.confidence,
            "model_version": self.prediction.model_version,
            "labelled_distance_ratio": self.prediction.labelled_distance_ratio,
            "abstained": self.prediction.abstained,
            "abstain_reason": self.prediction.abstain_reason,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _annotation_dict(row: dict[str, Any]) -> dict[str, Any]:
    if row["withdrawn_at"] is not None:
        state = "withdrawn"
    elif row["superseded_by_id"] is not None:
        state = "superseded"
    else:
        state = "current"
    return {
        "id": row["id"],
        "annotator": row["annotator__username"],
        "origin": row["origin"],
        "label": row["label__name"],
        "unsure": row["unsure"],
        "attributes": row["attributes"] or {},
        "seconds_spent": row["seconds_spent"],
        "created_at": _iso(row["created_at"]),
        "state": state,
        "superseded_by": row["superseded_by_id"] if state == "superseded" else None,
        "withdrawn_at": _iso(row["withdrawn_at"]),
    }


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(cell_id: int, name: str) -> str:
    """``<cell id>-<base name>`` with anything but letters, digits, dot, dash and underscore replaced:
    unique within a project and safe as a zip member or folder entry on every system."""
    base = _UNSAFE.sub("_", os.path.basename(name)).strip("._") or "image"
    return f"{cell_id}-{base}"


class Predictor:
    """The latest classifier version's predictions for cells of its index (others get none)."""

    def __init__(self, project: Project) -> None:
        from loop.handlers.artifacts import classifier, index_embeddings
        from loop.selectors import latest_version

        self.version: ModelVersion | None = latest_version(project, ModelVersion.Kind.CLASSIFIER)
        self._min_confidence = float(project.suggestion_min_confidence)
        self._ids = np.zeros(0, dtype=np.int64)
        self._emb: np.ndarray | None = None
        self._clf: Any = None
        self._labelled: LabelledNeighbourhood | None = None  # the cells the classifier was trained on
        if self.version is not None and self.version.parent is not None:
            self._ids, self._emb = index_embeddings(self.version.parent)
            self._clf = classifier(self.version)
            self._labelled = self._training_cells(self.version)

    def _training_cells(self, version: ModelVersion) -> LabelledNeighbourhood | None:
        """The cells the classifier was trained on, under their cell ids and with the class each was
        labelled; None with fewer than two."""
        from learning.shift import LabelledNeighbourhood
        from loop.handlers.training_set import rows_of

        assert self._emb is not None
        trained = Annotation.objects.filter(pk__in=version.trained_on).values_list("cell_id", "label__name")
        label_of = dict(trained)  # one annotation per cell in a training set
        wanted = np.asarray(sorted(label_of), dtype=np.int64)
        rows, found = rows_of(self._ids, wanted)
        labels = np.asarray([label_of[int(c)] for c in wanted[found]], dtype=object)
        return LabelledNeighbourhood.build(self._emb[rows], wanted[found], labels)

    def predict(self, cell_ids: list[int]) -> dict[int, Prediction]:
        if self._clf is None or self._emb is None or self.version is None or not len(self._ids):
            return {}
        from loop.handlers.training_set import rows_of

        wanted = np.asarray(cell_ids, dtype=np.int64)
        rows, found = rows_of(self._ids, wanted)
        if not len(rows):
            return {}
        probs = np.asarray(self._clf.predict_proba(self._emb[rows]))
        classes = list(self._clf.classes)
        best = probs.argmax(axis=1)
        ratios: list[float | None] = [None] * len(rows)
        if self._labelled is not None:
            suggested = [classes[int(k)] for k in best]
            measured = self._labelled.ratios(self._emb[rows], wanted[found], predicted=suggested)
            ratios = [round(float(r), 4) for r in measured]
        return {
            int(cell_id): Prediction(
                classes[int(k)], round(float(p[k]), 6), self.version.version, ratio, self._min_confidence
            )
            for cell_id, p, k, ratio in zip(wanted[found], probs, best, ratios, strict=True)
        }


def count_cells(project: Project) -> int:
    return Cell.objects.filter(project=project).count()


def iter_rows(
    project: Project,
    *,
    predictor: Predictor | None = None,
    history: bool = True,
    chunk: int = CHUNK,
) -> Iterator[list[ExportRow]]:
    """The project's cells in id order, ``chunk`` at a time."""
    last = 0
    while True:
        cells = list(
            Cell.objects.filter(project=project, pk__gt=last)
            .order_by("pk")
            .values_list(*_CELL_FIELDS)[:chunk]
        )
        if not cells:
            return
        first, last = int(cells[0][0]), int(cells[-1][0])
        states = cell_labels(project=project, id_range=(first, last))
        by_cell: dict[int, list[dict[str, Any]]] = defaultdict(list)
        if history:
            rows = (
                Annotation.objects.filter(cell__project=project, cell_id__gte=first, cell_id__lte=last)
                .order_by("id")
                .values(*_ANNOTATION_FIELDS)
            )
            for row in rows:
                by_cell[int(row["cell_id"])].append(_annotation_dict(row))
        predictions = predictor.predict([int(c[0]) for c in cells]) if predictor is not None else {}
        out: list[ExportRow] = []
        for cell_id, image, root, size, digest, width, height, name, source, patient, slide, role in cells:
            state = states.get(cell_id)
            labelled = state is not None and state.status is LabelStatus.LABELLED
            out.append(
                ExportRow(
                    cell_id=cell_id,
                    image=image,
                    image_path=image_path(image, root),
                    file_name=os.path.basename(name or image),
                    content_hash=digest,
                    file_size=size,
                    width=width,
                    height=height,
                    original_name=name,
                    source=source,
                    patient_id=patient,
                    slide_id=slide,
                    role=role,
                    label=state.label if labelled and state is not None else None,
                    label_status=str(state.status) if state is not None else "",
                    review_reason=state.reason if state is not None else "",
                    attributes=dict(state.attributes) if labelled and state is not None else {},
                    annotations=by_cell.get(cell_id, []),
                    prediction=predictions.get(cell_id),
                )
            )
        yield out
