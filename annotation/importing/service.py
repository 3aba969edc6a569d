"""Importing cells into a project: one service used by the management command, jobs and web uploads.

Every file is read, hashed and fully decoded before anything is written; a file that fails any check
is reported and nothing of it lands. Valid cells are inserted in chunks, each chunk in one transaction
together with its annotations, so there are never half-written rows. Cells are deduplicated by content
hash within the project, so re-running an import adds nothing.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotation.importing.images import Examined, examine_file, examine_read
from annotation.importing.sources import SourceEntry, SourceProblem, list_source
from annotation.models import Annotation, Cell, LabelClass, Project
from annotation.storage import cell_image_name, store_cell_image

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
CHUNK_SIZE = 1000
CHECK_THREADS = 4
# An in-place import of at least this many files examines them in helper processes (measured to pay off at
# 100,000 and 1,000,000 files; small imports, web uploads among them, stay in one process). Files go to the
# helpers in chunks, so that paths and results do not cross one by one.
PROCESS_THRESHOLD = 5000
# An import that adds at least this many rows to a table refreshes the planner's statistics of it
# (ANALYZE). Without them PostgreSQL planned the export's keyset page of a million-cell project as a scan
# of every cell of the project (0.64 s a page of 2,000, the export 4.4k cells/s) instead of a walk of the
# primary key (1 ms); autovacuum may be off, as on this machine, or not have got to it yet.
ANALYZE_AFTER_ROWS = 10_000
CHECK_PROCESSES = 2
PROCESS_CHUNK = 256


class StoreMode(StrEnum):
    COPY = "copy"  # leukoloop keeps its own content-addressed copy under MEDIA_ROOT
    REFERENCE = "reference"  # the file is registered where it lies (local folders and manifests only)


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
    image: str  # relative to image_root ("": MEDIA_ROOT)
    image_root: str
    size: int
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


@dataclass(frozen=True, slots=True)
class _AlreadyStored:
    """A file whose bytes are already a cell of the project: nothing was decoded or written for it."""

    entry: SourceEntry
    content_hash: str


_Checked = _Prepared | _AlreadyStored | FileError


@dataclass(frozen=True, slots=True)
class _FileChecker:
    """Everything needed to check one file, read-only so that several threads can share it."""

    labels: LabelMode
    classes: dict[str, LabelClass]
    allowed_attributes: dict[str, list[str]]
    max_pixels: int
    existing_hashes: frozenset[str]
    store: StoreMode

    def check(self, entry: SourceEntry) -> _Checked:
        """Read, hash, decode-check, validate labels and store one file; never raises for a bad file."""
        examined, data = examine_read(entry.read, max_pixels=self.max_pixels, known=self.existing_hashes)
        return self.finish(entry, examined, data)

    def finish(self, entry: SourceEntry, examined: Examined, data: bytes | None) -> _Checked:
        """Validate an examined file's role and labels and store it (``data``: its bytes, for a copy)."""
        if not examined.content_hash:
            return FileError(entry.name, examined.problem)
        content_hash = examined.content_hash
        if content_hash in self.existing_hashes:
            return _AlreadyStored(entry, content_hash)
        info = examined.info
        if info is None:
            return FileError(entry.name, examined.problem)
        if entry.role and entry.role not in Cell.Role.values:
            return FileError(entry.name, f"unknown role {entry.role!r} (use {Cell.Role.values})")
        label: LabelClass | None = None
        attributes: dict[str, str] = {}
        if self.labels is not LabelMode.NONE:
            if entry.label:
                label = self.classes.get(entry.label)
                if label is None:
                    known = ", ".join(sorted(self.classes)) or "none defined"
                    return FileError(entry.name, f"unknown label {entry.label!r} (project classes: {known})")
            for name, value in entry.attributes.items():
                allowed = self.allowed_attributes.get(name)
                if allowed is None:
                    continue  # a manifest column that is not one of the project's attributes
                if value not in allowed:
                    return FileError(entry.name, f"attribute {name}={value!r} is not one of {allowed}")
                attributes[name] = value
        if self.store is StoreMode.REFERENCE and entry.path is not None and entry.root is not None:
            # Where the file lies, links resolved (sources confined it to the root), relative to the
            # root: a restore or a moved collection needs one root changed, not every cell.
            image, root = entry.path.relative_to(entry.root).as_posix(), str(entry.root)
        else:
            image, root = cell_image_name(content_hash, info.format), ""
            if data is None:
                raise ValueError(f"{entry.name}: a copy into the media folder needs the file's bytes")
            try:
                store_cell_image(image, data)
            except OSError as exc:
                return FileError(entry.name, f"could not be stored: {exc}")
        return _Prepared(
            entry, content_hash, image, root, examined.size, info.width, info.height, label, attributes
        )


def import_cells(
    *,
    project: Project,
    source: Path,
    labels: LabelMode = LabelMode.REFERENCE,
    store: StoreMode = StoreMode.REFERENCE,
    default_role: str = Cell.Role.POOL,
    default_source: str = "",
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import every valid cell from ``source`` (folder, manifest CSV or zip) into ``project``.

    ``store=REFERENCE`` registers local files where they lie (no copy: large collections are not
    duplicated; a moved collection needs its root changed, see ``manage.py restore --move-root``),
    relative to the import's root, links resolved; zip members are always copied, since an upload is
    transient. ``default_role`` and ``default_source`` apply where the source names none.
    Raises ``SourceError`` only if the source as a whole is unreadable; per-file problems go to the report.

    Files are checked by a few threads (copies) or helper processes (a large import in place), see
    ``_checked_files``; deduplication and database writes stay in this thread, in order.
    """
    defaults = _Defaults(role=default_role, source=default_source)
    listing = list_source(source)
    report = ImportReport(listed=len(listing))
    existing = frozenset(Cell.objects.filter(project=project).values_list("content_hash", flat=True))
    checker = _FileChecker(
        labels=labels,
        classes={c.name: c for c in project.classes.all()},
        allowed_attributes=project.attribute_values(),
        max_pixels=max_pixels or settings.LEUKOLOOP_MAX_IMAGE_PIXELS,
        existing_hashes=existing,
        store=store,
    )
    seen: dict[str, _Seen] = {}
    pending: list[_Prepared] = []
    entries = [item for item in listing if isinstance(item, SourceEntry)]
    for problem in (item for item in listing if isinstance(item, SourceProblem)):
        bucket = report.skipped if problem.message.startswith("skipped") else report.errors
        bucket.append(FileError(problem.name, problem.message))
    done = len(listing) - len(entries)

    with _checked_files(checker, entries, store) as results:
        for checked in results:
            done += 1
            if isinstance(checked, FileError):
                report.errors.append(checked)
            elif isinstance(checked, _AlreadyStored):
                report.already_present += 1
            else:
                earlier = seen.get(checked.content_hash)
                if earlier is not None:
                    report.duplicates.append(
                        Duplicate(checked.entry.name, earlier.name, (earlier.label, checked.entry.label))
                    )
                else:
                    seen[checked.content_hash] = _Seen(checked.entry.name, checked.entry.label)
                    pending.append(checked)
                    if len(pending) >= CHUNK_SIZE:
                        _write_chunk(project, pending, labels, defaults, report)
                        pending = []
            if progress is not None:
                progress(done, len(listing))
    if pending:
        _write_chunk(project, pending, labels, defaults, report)
    _refresh_statistics(report)
    return report


ANALYZE_STATEMENT = "ANALYZE {table}"


def _refresh_statistics(report: ImportReport) -> None:
    """ANALYZE the tables this import added many rows to (both backends know the statement). A refusal is
    logged and undone on its own (a savepoint): the rows are in, and only the plans would be worse."""
    tables = [
        model._meta.db_table
        for model, added in ((Cell, report.imported), (Annotation, report.annotations_created))
        if added >= ANALYZE_AFTER_ROWS
    ]
    for table in tables:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(ANALYZE_STATEMENT.format(table=connection.ops.quote_name(table)))
        except DatabaseError:
            logger.warning("could not refresh the planner's statistics of %s", table, exc_info=True)


@contextmanager
def _checked_files(
    checker: _FileChecker, entries: list[SourceEntry], store: StoreMode
) -> Iterator[Iterator[_Checked]]:
    """Each entry checked, in order, by whichever way suits the import.

    Copies (and zip members) are disk-bound and overlap well in threads. Registering files in place is
    CPU-bound (hashing, JPEG header parsing), where threads only add GIL contention (measured: 1 thread
    faster than 2 or 4 on 2 cores); a large one examines its files in other processes, beside the
    listing, the validation and the inserts that stay here in order."""
    in_place = store is StoreMode.REFERENCE and all(e.path is not None for e in entries)
    if in_place and len(entries) >= PROCESS_THRESHOLD:
        yield _checked_in_processes(checker, entries)
    elif in_place:
        yield map(checker.check, entries)
    else:
        with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="import-check") as pool:
            yield pool.map(checker.check, entries)


def _checked_in_processes(checker: _FileChecker, entries: list[SourceEntry]) -> Iterator[_Checked]:
    """Files read, hashed and header-checked by ``CHECK_PROCESSES`` helper processes, then validated here.

    The helpers are forked, not spawned: a spawned process imports the caller's ``__main__`` again, which
    re-ran a script without a ``__main__`` guard (it wiped the database of a profiling script). They are
    forked before any thread of the pool starts, run only ``examine_file`` (files, hashlib, PIL) and leave
    by ``os._exit``, so the database connection they inherit is never used or closed. If they cannot
    start or die, the remaining files are checked in this process: the import slows, loses nothing."""
    done = 0
    try:
        fork = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(max_workers=CHECK_PROCESSES, mp_context=fork)
        try:
            paths = [str(entry.path) for entry in entries]
            examine = functools.partial(examine_file, max_pixels=checker.max_pixels)
            for examined in pool.map(examine, paths, chunksize=PROCESS_CHUNK):
                # The bytes are not needed: files registered in place are never copied.
                yield checker.finish(entries[done], examined, None)
                done += 1
        finally:
            # An import stopped half-way (a database error, say) must not wait for every queued file.
            pool.shutdown(wait=True, cancel_futures=True)
    except (OSError, BrokenProcessPool, AssertionError) as exc:  # AssertionError: a daemonic process
        logger.warning("import helper processes failed (%s); checking the other files here", exc)
        yield from map(checker.check, entries[done:])


def _cell_values(
    project: Project, item: _Prepared, labels: LabelMode, defaults: _Defaults
) -> dict[str, object]:
    """Column values of the cell a prepared file becomes (keys are ``_CELL_COLUMNS`` but created_at)."""
    entry = item.entry
    is_reference = labels is LabelMode.REFERENCE
    return {
        "project_id": project.pk,
        "image": item.image,
        "image_root": item.image_root,
        "file_size": item.size,
        "content_hash": item.content_hash,
        "width": item.width,
        "height": item.height,
        "original_name": entry.name[:500],
        "source": (entry.source or defaults.source)[:64],
        "patient_id": entry.patient_id[:64],
        "slide_id": entry.slide_id[:64],
        "role": entry.role or defaults.role,
        "reference_label_id": item.label.pk if is_reference and item.label is not None else None,
        "reference_attributes": item.attributes if is_reference and item.attributes else None,
    }


_CELL_COLUMNS = (
    "project_id",
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
    "reference_label_id",
    "reference_attributes",
    "created_at",
)


def _insert_cells(
    project: Project, chunk: list[_Prepared], labels: LabelMode, defaults: _Defaults
) -> list[int]:
    """Insert new cells with multi-row INSERT ... RETURNING statements; return their ids in order.

    This is the import's hot path: ``bulk_create`` spends ~70 us of Python per row (model instances,
    per-field preparation), which for 16k cells costs more than reading every file. Values here are
    plain strings and ints; the two that need adapting (JSON, the timestamp) go through Django's own
    field and backend adapters, so the rows are exactly what the ORM would write.
    """
    attributes_field = Cell._meta.get_field("reference_attributes")
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    rows: list[tuple[Any, ...]] = []
    for item in chunk:
        values = _cell_values(project, item, labels, defaults)
        values["reference_attributes"] = attributes_field.get_db_prep_save(
            values["reference_attributes"], connection
        )
        values["created_at"] = created_at
        rows.append(tuple(values[column] for column in _CELL_COLUMNS))
    table = connection.ops.quote_name(Cell._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _CELL_COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(_CELL_COLUMNS)) + ")"
    ids: list[int] = []
    with connection.cursor() as cursor:
        # Batches keep each statement under SQLite's 32,766-parameter limit. Rows come back in VALUES
        # order on both backends (Django's own bulk_create relies on the same).
        for start in range(0, len(rows), 2000):
            batch = rows[start : start + 2000]
            tuples = ", ".join([placeholders] * len(batch))
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {tuples} RETURNING id",
                [value for row in batch for value in row],
            )
            ids.extend(pk for (pk,) in cursor.fetchall())
    return ids


def _write_chunk(
    project: Project, chunk: list[_Prepared], labels: LabelMode, defaults: _Defaults, report: ImportReport
) -> None:
    try:
        with transaction.atomic():
            ids = _insert_cells(project, chunk, labels, defaults)
            # The INSERT bypasses ``Cell.save``, which keeps the count of a cell saved one by one.
            Project.objects.filter(pk=project.pk).update(cell_count=F("cell_count") + len(ids))
            created = _create_annotations(ids, chunk, labels)
        report.imported += len(ids)
        report.annotations_created += created
        return
    except IntegrityError:
        # Someone else imported some of these cells meanwhile: fall back to one transaction per cell so
        # that every other cell still lands and the clash is counted for the one file it concerns.
        logger.info("bulk insert clashed; inserting %d cells one by one", len(chunk))
    for item in chunk:
        try:
            with transaction.atomic():
                cell = Cell(**_cell_values(project, item, labels, defaults))
                cell.save()
                created = _create_annotations([cell.pk], [item], labels)
            report.imported += 1
            report.annotations_created += created
        except IntegrityError:
            report.already_present += 1


def _create_annotations(cell_ids: list[int], chunk: list[_Prepared], labels: LabelMode) -> int:
    if labels is not LabelMode.ANNOTATIONS:
        return 0
    rows = [
        Annotation(
            cell_id=cell_id, origin=Annotation.Origin.IMPORT, label=item.label, attributes=item.attributes
        )
        for cell_id, item in zip(cell_ids, chunk, strict=True)
        # An imported annotation needs a label (attributes alone would be an "unsure" that nobody raised).
        if item.label is not None
    ]
    Annotation.objects.bulk_create(rows)
    return len(rows)
