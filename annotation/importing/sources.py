"""Where cells come from: an ImageFolder tree, a manifest CSV, or a zip holding either.

Each source is listed up front into ``SourceEntry`` rows (cheap: no image is read yet), so the import can
show a real progress bar. Problems found while listing (a malformed CSV row, a missing file, a zip entry
that escapes the archive) become ``SourceProblem`` rows that the import reports per file.
"""

from __future__ import annotations

import csv
import io
import posixpath
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from learning.manifest import ManifestError, check_header, parse_row

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
# Zip entries larger than this are refused before they are decompressed (a zip bomb defence).
MAX_ZIP_ENTRY_BYTES = 256 * 1024 * 1024


class SourceError(Exception):
    """The source as a whole cannot be read (no such path, not a zip, a CSV without a path column)."""


@dataclass(slots=True)
class SourceEntry:
    name: str
    read: Callable[[], bytes]
    # Where the file lies on this machine, if it is a plain file (zip members have none).
    path: Path | None = None
    label: str = ""
    subtype: str = ""
    source: str = ""
    patient_id: str = ""
    slide_id: str = ""
    role: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceProblem:
    name: str
    message: str


Listing = list[SourceEntry | SourceProblem]


def list_source(source: Path) -> Listing:
    """List every cell a folder, manifest CSV or zip offers, with the problems found on the way."""
    if not source.exists():
        raise SourceError(f"{source} does not exist")
    if source.is_dir():
        return list(_list_image_folder(source))
    if source.suffix.lower() == ".zip":
        return _list_zip(source)
    if source.suffix.lower() == ".csv":
        with source.open("rb") as handle:
            raw = handle.read()
        base = source.parent

        def read_file(rel: str) -> Callable[[], bytes]:
            path = base / rel
            return path.read_bytes

        def file_path(rel: str) -> Path:
            return base / rel

        # Existence is not checked while listing: a missing file fails when read and is reported then,
        # which spares a system call per row on large manifests.
        return list(_list_manifest(raw, source.name, read_file, None, file_path))
    raise SourceError(f"{source} is neither a folder, a .csv manifest nor a .zip archive")


def _list_image_folder(root: Path) -> Iterator[SourceEntry | SourceProblem]:
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            yield SourceProblem(rel, f"skipped: {path.suffix or 'no'} extension is not an image type")
            continue
        parts = PurePosixPath(rel).parts
        yield SourceEntry(name=rel, read=path.read_bytes, path=path, label=parts[0] if len(parts) > 1 else "")


def _safe_member_name(name: str) -> str | None:
    """The normalised posix path of a zip member, or None if it would escape the archive root."""
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return None
    normalised = posixpath.normpath(name)
    if normalised == ".." or normalised.startswith("../"):
        return None
    return normalised


def _list_zip(path: Path) -> Listing:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path} is not a readable zip archive: {exc}") from None
    problems: list[SourceEntry | SourceProblem] = []
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        safe = _safe_member_name(info.filename)
        if safe is None:
            problems.append(SourceProblem(info.filename, "refused: zip entry escapes the archive folder"))
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(safe).parts):
            continue
        members[safe] = info

    def read_member(name: str) -> Callable[[], bytes]:
        info = members[name]

        def read() -> bytes:
            if info.file_size > MAX_ZIP_ENTRY_BYTES:
                raise OSError(f"zip entry is {info.file_size:,} bytes uncompressed, above the limit")
            return archive.read(info)

        return read

    manifests = sorted((n for n in members if n.lower().endswith(".csv")), key=lambda n: (n.count("/"), n))
    if manifests:
        manifest = manifests[0]
        base = posixpath.dirname(manifest)

        def resolve(rel: str) -> str | None:
            safe = _safe_member_name(posixpath.join(base, rel)) if not rel.startswith("/") else None
            return safe

        def read_rel(rel: str) -> Callable[[], bytes]:
            resolved = resolve(rel)
            assert resolved is not None
            return read_member(resolved)

        def exists_rel(rel: str) -> bool:
            resolved = resolve(rel)
            return resolved is not None and resolved in members

        listed = _list_manifest(archive.read(members[manifest]), manifest, read_rel, exists_rel)
        return problems + list(listed)

    for name in sorted(members):
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(SourceProblem(name, "skipped: extension is not an image type"))
            continue
        parts = PurePosixPath(name).parts
        problems.append(
            SourceEntry(name=name, read=read_member(name), label=parts[0] if len(parts) > 1 else "")
        )
    return problems


def _list_manifest(
    raw: bytes,
    manifest_name: str,
    read_file: Callable[[str], Callable[[], bytes]],
    file_exists: Callable[[str], bool] | None,
    file_path: Callable[[str], Path] | None = None,
) -> Iterator[SourceEntry | SourceProblem]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{manifest_name} is not UTF-8 text: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        check_header(reader.fieldnames)
    except ManifestError as exc:
        raise SourceError(f"{manifest_name} {exc}") from None
    try:
        for raw_row in reader:
            line = reader.line_num
            try:
                # Every column without a fixed meaning may be one of the project's attributes; the
                # import keeps those the project has (the column rules are learning.manifest's).
                row = parse_row(raw_row, attribute_columns=None)
            except ManifestError as exc:
                yield SourceProblem(f"{manifest_name}:{line}", str(exc))
                continue
            if file_exists is not None and not file_exists(row.path):
                yield SourceProblem(row.path, f"missing file (listed on line {line} of {manifest_name})")
                continue
            yield SourceEntry(
                name=row.path,
                read=read_file(row.path),
                path=file_path(row.path) if file_path is not None else None,
                label=row.label,
                subtype=row.subtype,
                source=row.source,
                patient_id=row.patient_id,
                slide_id=row.slide_id,
                role=row.role,
                attributes=dict(row.attributes),
            )
    except csv.Error as exc:
        yield SourceProblem(f"{manifest_name}:{reader.line_num}", f"CSV cannot be parsed past here: {exc}")
