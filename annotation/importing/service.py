"""Importing cells into a project: one service used by the management command, jobs and web uploads.

Every file is read, hashed and fully decoded before anything is written; a file that fails any check
is reported and nothing of it lands. Valid cells are inserted in chunks, each chunk in one transaction
together with its annotations, so there are never half-written rows. Cells are deduplicated by content
hash within the project, so re-running an import adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from annotation.importing.images import InvalidImage, inspect_image
from annotation.importing.sources import SourceEntry, SourceProblem, list_source
from annotation.models import Annotation, Cell, LabelClass, Project
from annotation.storage import cell_image_name, store_cell_image

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
CHUNK_SIZE = 1000
ALREADY_IN_PROJECT = "(already in project)"


class LabelMode(StrEnum):
    ANNOTATIONS = "annotations"  # labels become real annotations (pre-labelled data)
    REFERENCE = "reference"  # labels become hidden reference labels (for an oracle / evaluation)
    NONE = "none"  # labels are ignored


@dataclass(frozen=True, slots=True)
class FileError:
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    name: str
    same_as: str
    labels: tuple[str, str]

    @property
    def is_conflict(self) -> bool:
        return bool(self.labels[0]) and bool(self.labels[1]) and self.labels[0] != self.labels[1]


@dataclass(slots=True)
class ImportReport:
    listed: int = 0
    imported: int = 0
    already_present: int = 0
    annotations_created: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    skipped: list[FileError] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Duplicate]:
        return [d for d in self.duplicates if d.is_conflict]

    def as_dict(self) -> dict[str, object]:
        return {
            "listed": self.listed,
            "imported": self.imported,
            "already_present": self.already_present,
            "annotations_created": self.annotations_created,
            "duplicates": [
                {"name": d.name, "same_as": d.same_as, "labels": list(d.labels)} for d in self.duplicates
            ],
            "conflicts": len(self.conflicts),
            "errors": [{"name": e.name, "message": e.message} for e in self.errors],
            "skipped": [{"name": e.name, "message": e.message} for e in self.skipped],
        }


@dataclass(slots=True)
class _Prepared:
    entry: SourceEntry
    content_hash: str
    storage_name: str
    width: int
    height: int
    label: LabelClass | None
    attributes: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Defaults:
    role: str
    source: str


@dataclass(slots=True)
class _Seen:
    """What an earlier file with the same content hash was called and labelled."""

    name: str
    label: str


def import_cells(
    *,
    project: Project,
    source: Path,
    labels: LabelMode = LabelMode.REFERENCE,
    default_role: str = Cell.Role.POOL,
    default_source: str = "",
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import every valid cell from ``source`` (folder, manifest CSV or zip) into ``project``.

    ``default_role`` and ``default_source`` apply where the source gives no role or source for a cell.
    Raises ``SourceError`` only if the source as a whole is unreadable; per-file problems go to the report.
    """
    defaults = _Defaults(role=default_role, source=default_source)
    max_pixels = max_pixels or settings.LEUKOLOOP_MAX_IMAGE_PIXELS
    listing = list_source(source)
    report = ImportReport(listed=len(listing))
    classes = {c.name: c for c in project.classes.all()}
    allowed_attributes = project.attribute_values()
    seen: dict[str, _Seen] = _existing_cells(project)
    pending: list[_Prepared] = []

    for done, item in enumerate(listing, start=1):
        if isinstance(item, SourceProblem):
            bucket = report.skipped if item.message.startswith("skipped") else report.errors
            bucket.append(FileError(item.name, item.message))
        else:
            data = _read(item, report)
            if data is not None:
                content_hash = hashlib.sha256(data).hexdigest()
                earlier = seen.get(content_hash)
                if earlier is not None:
                    # Same bytes as a cell already taken: no need to decode it again.
                    report.duplicates.append(Duplicate(item.name, earlier.name, (earlier.label, item.label)))
                else:
                    prepared = _prepare(
                        item, data, content_hash, labels, classes, allowed_attributes, max_pixels, report
                    )
                    if prepared is not None:
                        seen[content_hash] = _Seen(item.name, item.label)
                        pending.append(prepared)
            if len(pending) >= CHUNK_SIZE:
                _write_chunk(project, pending, labels, defaults, report)
                pending = []
        if progress is not None:
            progress(done, len(listing))
    if pending:
        _write_chunk(project, pending, labels, defaults, report)
    # Duplicates of cells that were in the project before this run are not news: count them apart.
    report.already_present = sum(1 for d in report.duplicates if d.same_as == ALREADY_IN_PROJECT)
    report.duplicates = [d for d in report.duplicates if d.same_as != ALREADY_IN_PROJECT]
    return report


def _existing_cells(project: Project) -> dict[str, _Seen]:
    hashes = Cell.objects.filter(project=project).values_list("content_hash", flat=True)
    return {h: _Seen(ALREADY_IN_PROJECT, "") for h in hashes}


def _read(entry: SourceEntry, report: ImportReport) -> bytes | None:
    try:
        return entry.read()
    except (OSError, KeyError, RuntimeError) as exc:  # RuntimeError: encrypted zip entry
        report.errors.append(FileError(entry.name, f"cannot be read: {exc}"))
        return None


def _prepare(
    entry: SourceEntry,
    data: bytes,
    content_hash: str,
    labels: LabelMode,
    classes: dict[str, LabelClass],
    allowed_attributes: dict[str, list[str]],
    max_pixels: int,
    report: ImportReport,
) -> _Prepared | None:
    """Check one new file and store its image; report and return None if anything is wrong with it."""
    try:
        info = inspect_image(data, max_pixels=max_pixels)
    except InvalidImage as exc:
        report.errors.append(FileError(entry.name, str(exc)))
        return None
    if entry.role and entry.role not in Cell.Role.values:
        report.errors.append(FileError(entry.name, f"unknown role {entry.role!r} (use {Cell.Role.values})"))
        return None
    label: LabelClass | None = None
    attributes: dict[str, str] = {}
    if labels is not LabelMode.NONE:
        if entry.label:
            label = classes.get(entry.label)
            if label is None:
                known = ", ".join(sorted(classes)) or "none defined"
                report.errors.append(
                    FileError(entry.name, f"unknown label {entry.label!r} (project classes: {known})")
                )
                return None
        for name, value in entry.attributes.items():
            allowed = allowed_attributes.get(name)
            if allowed is None:
                continue  # a manifest column that is not one of the project's attributes
            if value not in allowed:
                report.errors.append(
                    FileError(entry.name, f"attribute {name}={value!r} is not one of {allowed}")
                )
                return None
            attributes[name] = value
    storage_name = cell_image_name(content_hash, info.format)
    try:
        store_cell_image(storage_name, data)
    except OSError as exc:
        report.errors.append(FileError(entry.name, f"could not be stored: {exc}"))
        return None
    return _Prepared(entry, content_hash, storage_name, info.width, info.height, label, attributes)


def _build_cell(project: Project, item: _Prepared, labels: LabelMode, defaults: _Defaults) -> Cell:
    is_reference = labels is LabelMode.REFERENCE
    return Cell(
        project=project,
        image=item.storage_name,
        content_hash=item.content_hash,
        width=item.width,
        height=item.height,
        original_name=item.entry.name[:500],
        source=(item.entry.source or defaults.source)[:64],
        patient_id=item.entry.patient_id[:64],
        slide_id=item.entry.slide_id[:64],
        role=item.entry.role or defaults.role,
        reference_label=item.label if is_reference else None,
        reference_attributes=(item.attributes or None) if is_reference else None,
    )


def _write_chunk(
    project: Project, chunk: list[_Prepared], labels: LabelMode, defaults: _Defaults, report: ImportReport
) -> None:
    try:
        with transaction.atomic():
            cells = Cell.objects.bulk_create([_build_cell(project, p, labels, defaults) for p in chunk])
            created = _create_annotations(cells, chunk, labels)
        report.imported += len(cells)
        report.annotations_created += created
        return
    except IntegrityError:
        # Someone else imported some of these cells meanwhile: fall back to one transaction per cell so
        # that every other cell still lands and the clash is reported for the one file it concerns.
        logger.info("bulk insert clashed; inserting %d cells one by one", len(chunk))
    for item in chunk:
        try:
            with transaction.atomic():
                cell = _build_cell(project, item, labels, defaults)
                cell.save()
                created = _create_annotations([cell], [item], labels)
            report.imported += 1
            report.annotations_created += created
        except IntegrityError:
            report.duplicates.append(Duplicate(item.entry.name, ALREADY_IN_PROJECT, ("", "")))


def _create_annotations(cells: list[Cell], chunk: list[_Prepared], labels: LabelMode) -> int:
    if labels is not LabelMode.ANNOTATIONS:
        return 0
    rows = [
        Annotation(cell=cell, origin=Annotation.Origin.IMPORT, label=item.label, attributes=item.attributes)
        for cell, item in zip(cells, chunk, strict=True)
        # An imported annotation needs a label (attributes alone would be an "unsure" that nobody raised).
        if item.label is not None
    ]
    Annotation.objects.bulk_create(rows)
    return len(rows)
