"""Writing a project's exports: tables (CSV, JSON Lines), an ImageFolder zip, COCO-style JSON and the
trained model as TorchScript. Every writer streams: cells come in chunks (``rows.iter_rows``), each row
or file is written as it comes, and the output lands atomically (a temporary file renamed into place,
so a retried job overwrites its own half-written file and a download never sees a partial one).

Files lie under ``<artifacts>/project-<id>/exports/``. Every CSV is spreadsheet-safe (a value beginning
with = + - @, a tab or a carriage return gets a leading quote; the importer takes it off again), and
images copied into a zip are the imported bytes, checked against each cell's hash.
"""

from __future__ import annotations

import csv
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User

from annotation.cell_files import CellFileChanged, read_verified
from annotation.models import Project
from exports.rows import ExportRow, Predictor, count_cells, iter_rows, safe_file_name
from jobs.failpoints import failpoint
from jobs.models import Job
from jobs.services import job_create
from learning.manifest import spreadsheet_safe
from loop.models import ModelVersion

Progress = Callable[[float, str], None]


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    IMAGEFOLDER = "imagefolder"
    COCO = "coco"
    TORCHSCRIPT = "torchscript"


EXTENSIONS: dict[ExportFormat, str] = {
    ExportFormat.CSV: "csv",
    ExportFormat.JSONL: "jsonl",
    ExportFormat.IMAGEFOLDER: "zip",
    ExportFormat.COCO: "json",
    ExportFormat.TORCHSCRIPT: "zip",
}
# The manifest columns the importer reads (annotation.importing.sources), before the attribute columns.
MANIFEST_COLUMNS = ("path", "label", "source", "patient_id", "slide_id", "role")


def exports_dir(project: Project | int) -> Path:
    project_id = project if isinstance(project, int) else project.pk
    return Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{project_id}" / "exports"


def export_path(job: Job) -> Path:
    fmt = ExportFormat(job.params["format"])
    assert job.project_id is not None
    return exports_dir(job.project_id) / f"export-{job.pk}-{fmt.value}.{EXTENSIONS[fmt]}"


def export_request(*, project: Project, fmt: str, created_by: User | None = None) -> Job:
    """Queue an export job; raises ValueError for an unknown format."""
    try:
        value = ExportFormat(fmt)
    except ValueError:
        known = ", ".join(f.value for f in ExportFormat)
        raise ValueError(f"unknown export format {fmt!r} (use one of {known})") from None
    return job_create(
        kind=Job.Kind.EXPORT, project=project, params={"format": value.value}, created_by=created_by
    )


@contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A worker killed mid-export left its partial file (named by its pid); only one attempt owns the job
    # (jobs.services.job_claim), so whatever partial file is there is a dead attempt's.
    for stale in path.parent.glob(path.name + ".tmp*"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        yield tmp
        failpoint("export.before_rename")  # crash tests: the file is written, not yet in place
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _attribute_names(project: Project) -> list[str]:
    return [str(spec["name"]) for spec in project.attribute_schema]


class _Counter:
    """Progress over the project's cells, reported once per chunk."""

    def __init__(self, total: int, progress: Progress, *, start: float = 0.0, span: float = 1.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.progress = progress
        self.start = start
        self.span = span

    def add(self, n: int, what: str = "cells") -> None:
        self.done += n
        self.progress(self.start + self.span * min(self.done / self.total, 1.0), f"{what}: {self.done}")


# --- Tables -----------------------------------------------------------------------------------------


def _table_columns(attributes: list[str]) -> list[str]:
    return [
        *MANIFEST_COLUMNS,
        *attributes,
        "cell_id",
        "file_name",
        "content_hash",
        "width",
        "height",
        "original_name",
        "label_status",
        "review_reason",
        "annotations",
        "predicted_label",
        "confidence",
        "model_version",
        "labelled_distance_ratio",
        "abstained",
        "abstain_reason",
    ]


def _safe(values: dict[str, Any]) -> dict[str, Any]:
    return {key: spreadsheet_safe(value) for key, value in values.items()}


def _table_row(row: ExportRow, attributes: list[str]) -> dict[str, Any]:
    prediction = row.prediction
    return {
        "path": row.image,
        "label": row.label or "",
        "source": row.source,
        "patient_id": row.patient_id,
        "slide_id": row.slide_id,
        "role": row.role,
        **{name: row.attributes.get(name, "") for name in attributes},
        "cell_id": row.cell_id,
        "file_name": row.file_name,
        "content_hash": row.content_hash,
        "width": row.width,
        "height": row.height,
        "original_name": row.original_name,
        "label_status": row.label_status,
        "review_reason": row.review_reason,
        "annotations": json.dumps(row.annotations, separators=(",", ":")),
        "predicted_label": prediction.label if prediction else "",
        "confidence": prediction.confidence if prediction else "",
        "model_version": prediction.model_version if prediction else "",
        "labelled_distance_ratio": prediction.labelled_distance_ratio
        if prediction and prediction.labelled_distance_ratio is not None
        else "",
        "abstained": ("yes" if prediction.abstained else "no") if prediction else "",
        "abstain_reason": prediction.abstain_reason if prediction else "",
    }


def write_csv(project: Project, out: Path, progress: Progress) -> dict[str, Any]:
    """One row per cell. Its first columns are the import manifest's (``path`` is the image's path
    relative to the folder it was imported from, ``label`` the current resolved label, then one column
    per attribute), so the file imports as it is from that folder; the annotation history is a JSON list
    in the ``annotations`` column."""
    attributes = _attribute_names(project)
    predictor = Predictor(project)
    counter = _Counter(count_cells(project), progress)
    n = 0
    with _atomic_output(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        columns = _table_columns(attributes)
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writerow({column: spreadsheet_safe(column) for column in columns})
        for chunk in iter_rows(project, predictor=predictor):
            for row in chunk:
                writer.writerow(_safe(_table_row(row, attributes)))
            n += len(chunk)
            counter.add(len(chunk))
    return {"cells": n, "model_version": predictor.version.version if predictor.version else None}


def _json_row(row: ExportRow) -> dict[str, Any]:
    return {
        "cell_id": row.cell_id,
        "file_name": row.file_name,
        "path": row.image,
        "content_hash": row.content_hash,
        "width": row.width,
        "height": row.height,
        "original_name": row.original_name,
        "role": row.role,
        "source": row.source,
        "patient_id": row.patient_id,
        "slide_id": row.slide_id,
        "label": row.label,
        "label_status": row.label_status or None,
        "review_reason": row.review_reason or None,
        "attributes": row.attributes,
        "annotations": row.annotations,
        "prediction": row.prediction_dict(),
    }


def write_jsonl(project: Project, out: Path, progress: Progress) -> dict[str, Any]:
    """JSON Lines: one object per cell (see ``_json_row``)."""
    predictor = Predictor(project)
    counter = _Counter(count_cells(project), progress)
    n = 0
    with _atomic_output(out) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for chunk in iter_rows(project, predictor=predictor):
            for row in chunk:
                handle.write(json.dumps(_json_row(row), separators=(",", ":")) + "\n")
            n += len(chunk)
            counter.add(len(chunk))
    return {"cells": n, "model_version": predictor.version.version if predictor.version else None}


# --- ImageFolder zip --------------------------------------------------------------------------------


def write_imagefolder(project: Project, out: Path, progress: Progress) -> dict[str, Any]:
    """``<label>/<cell id>-<file>`` for every cell with a current label, plus ``manifest.csv`` at the
    root in the import format (so importing the zip with labels as annotations gives them back).
    Images are stored as they are (already compressed), and only while they are the imported bytes (a
    changed file is left out and counted); the manifest is spooled to disk meanwhile."""
    attributes = _attribute_names(project)
    columns = [*MANIFEST_COLUMNS, *attributes, "cell_id", "content_hash"]
    counter = _Counter(count_cells(project), progress)
    n = 0
    missing: list[int] = []
    changed: list[int] = []
    now = time.localtime()[:6]
    with _atomic_output(out) as tmp:
        manifest = tmp.with_name(tmp.name + ".manifest.csv")
        try:
            with (
                zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
                manifest.open("w", newline="", encoding="utf-8") as handle,
            ):
                writer = csv.writer(handle)
                writer.writerow([spreadsheet_safe(column) for column in columns])
                for chunk in iter_rows(project, history=False):
                    for row in chunk:
                        if row.label is None:
                            continue
                        member = f"{row.label}/{safe_file_name(row.cell_id, row.file_name)}"
                        try:
                            data = read_verified(row.cell_file)
                        except FileNotFoundError:
                            missing.append(row.cell_id)
                            continue
                        except CellFileChanged:
                            changed.append(row.cell_id)
                            continue
                        info = zipfile.ZipInfo(member, date_time=now)
                        info.external_attr = 0o644 << 16  # a plain readable file once unpacked
                        archive.writestr(info, data)
                        values = row.attributes
                        writer.writerow(
                            spreadsheet_safe(value)
                            for value in [
                                member,
                                row.label,
                                row.source,
                                row.patient_id,
                                row.slide_id,
                                row.role,
                                *[values.get(name, "") for name in attributes],
                                row.cell_id,
                                row.content_hash,
                            ]
                        )
                        n += 1
                    counter.add(len(chunk))
                handle.flush()
                archive.write(manifest, "manifest.csv", compress_type=zipfile.ZIP_DEFLATED)
        finally:
            manifest.unlink(missing_ok=True)
    return {
        "cells": n,
        "missing_images": missing[:100],
        "missing_count": len(missing),
        "changed_images": changed[:100],
        "changed_count": len(changed),
    }


# --- COCO -------------------------------------------------------------------------------------------


def _write_json_array(handle: IO[str], items: Iterator[dict[str, Any]]) -> int:
    handle.write("[")
    n = 0
    for item in items:
        handle.write(("," if n else "") + "\n" + json.dumps(item, separators=(",", ":")))
        n += 1
    handle.write("\n]")
    return n


def write_coco(project: Project, out: Path, progress: Progress) -> dict[str, Any]:
    """COCO-style classification: ``images`` (every cell), ``categories`` (the project's classes, ids
    from 1 in display order) and one ``annotation`` per cell with a current label (``category_id``;
    the bounding box is the whole crop). Two streaming passes over the cells, one per array."""
    classes = list(project.classes.order_by("order", "id").values_list("name", "display_name"))
    category_ids = {name: i + 1 for i, (name, _) in enumerate(classes)}
    total = count_cells(project)
    images = _Counter(total, progress, span=0.5)
    labels = _Counter(total, progress, start=0.5, span=0.5)

    def image_items() -> Iterator[dict[str, Any]]:
        for chunk in iter_rows(project, history=False):
            for row in chunk:
                yield {
                    "id": row.cell_id,
                    "file_name": row.file_name,
                    "path": row.image,
                    "width": row.width,
                    "height": row.height,
                    "content_hash": row.content_hash,
                    "role": row.role,
                    "source": row.source,
                    "patient_id": row.patient_id,
                    "slide_id": row.slide_id,
                }
            images.add(len(chunk), "images")

    def annotation_items() -> Iterator[dict[str, Any]]:
        for chunk in iter_rows(project, history=False):
            for row in chunk:
                if row.label is None or row.label not in category_ids:
                    continue
                yield {
                    "id": row.cell_id,
                    "image_id": row.cell_id,
                    "category_id": category_ids[row.label],
                    "bbox": [0, 0, row.width, row.height],
                    "area": row.width * row.height,
                    "iscrowd": 0,
                    "attributes": row.attributes,
                }
            labels.add(len(chunk), "labels")

    info = {"description": f"leukoloop project {project.name}", "project_id": project.pk}
    categories = [
        {"id": category_ids[name], "name": name, "display_name": display, "supercategory": "leukocyte"}
        for name, display in classes
    ]
    with _atomic_output(out) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.write('{"info":' + json.dumps(info) + ',\n"categories":' + json.dumps(categories))
        handle.write(',\n"images":')
        n_images = _write_json_array(handle, image_items())
        handle.write(',\n"annotations":')
        n_labels = _write_json_array(handle, annotation_items())
        handle.write("}\n")
    return {"cells": n_images, "annotations": n_labels}


# --- TorchScript ------------------------------------------------------------------------------------


def write_torchscript(project: Project, out: Path, progress: Progress) -> dict[str, Any]:
    """The latest classifier version with its encoder as one TorchScript bundle (see learning.export)."""
    from learning.export import classifier_to_torchscript, exported_attributes, write_bundle
    from loop.handlers.artifacts import classifier, index_embeddings
    from loop.handlers.attribute_suggestions import attribute_cells, fit_embedding_attribute_heads
    from loop.handlers.encoders import encoder_crop, load_backbone
    from loop.handlers.retraining import class_names
    from loop.handlers.training_set import build_training_set
    from loop.selectors import latest_version

    version = latest_version(project, ModelVersion.Kind.CLASSIFIER)
    if version is None or version.parent is None or version.parent.parent is None:
        raise ValueError("the project has no trained classifier yet: label a batch and retrain first")
    index = version.parent
    encoder = version.parent.parent
    progress(0.1, f"loading classifier v{version.version} and encoder v{encoder.version}")
    backbone, size = load_backbone(encoder)
    ids, emb = index_embeddings(index)
    clf = classifier(version)
    progress(0.2, "fitting the attribute heads on the labelled cells")
    data = build_training_set(project, ids, class_names(project))
    fitted = fit_embedding_attribute_heads(project, emb, ids, data, seed=version.version)
    attribute_heads = {n: fitted.embedding_heads_[n] for n in fitted.trained_} if fitted else {}
    progress(0.3, "tracing the model")
    module = classifier_to_torchscript(
        backbone, clf, int(emb.shape[1]), size, attribute_heads=attribute_heads
    )
    exported = exported_attributes(module)
    attributes = {name: list(attribute_heads[name].classes) for name in exported}
    progress(0.8, "writing the bundle")
    meta = {
        "project": project.name,
        "classifier_version": version.version,
        "index_version": index.version,
        "encoder_version": encoder.version,
        "label_count": version.label_count,
        "metrics": version.metrics,
        # Fitted here on the labels as they are now, as a retrain fits them for its suggestions.
        "attribute_cells": attribute_cells(project, data),
    }
    crop = encoder_crop(encoder)
    write_bundle(out, module, list(clf.classes), size, crop=crop, metadata=meta, attributes=attributes)
    return {
        "model_version": version.version,
        "classes": list(clf.classes),
        "attributes": sorted(attributes),
        "image_size": size,
        "crop": crop,
    }


WRITERS: dict[ExportFormat, Callable[[Project, Path, Progress], dict[str, Any]]] = {
    ExportFormat.CSV: write_csv,
    ExportFormat.JSONL: write_jsonl,
    ExportFormat.IMAGEFOLDER: write_imagefolder,
    ExportFormat.COCO: write_coco,
    ExportFormat.TORCHSCRIPT: write_torchscript,
}


def run_export(job: Job, progress: Progress) -> dict[str, Any]:
    """The export job: write the file of ``job.params["format"]``; returns the job's result."""
    if job.project is None:
        raise ValueError("an export job needs a project")
    fmt = ExportFormat(job.params.get("format", ""))
    out = export_path(job)
    result = WRITERS[fmt](job.project, out, progress)
    return {
        **result,
        "format": fmt.value,
        "file_name": out.name,
        "size_bytes": out.stat().st_size,
        "message": f"{fmt.value} export ready ({out.stat().st_size:,} bytes)",
    }
