"""Where cells come from: an ImageFolder tree, a manifest CSV, or a zip holding either.

Each source is listed up front into ``SourceEntry`` rows (cheap: no image is read yet), so the import can
show a real progress bar. Problems found while listing (a malformed CSV row, a missing file, a path that
leaves the import's folder) become ``SourceProblem`` rows that the import reports per file.

Every path is confined to the import's root, the folder (or the manifest's folder, or the zip): absolute
paths and paths with ``..`` are refused as written, and a symbolic link is followed only while it stays
inside the root (what is kept is where it leads, so repointing the link later changes nothing). Every
file is read with a size cap, zip members and the manifest included, and never through a link.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import posixpath
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from learning.manifest import ManifestError, check_header, parse_row

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
# Files (and zip entries, by their uncompressed size) larger than this are refused before they are read.
MAX_ZIP_ENTRY_BYTES = 256 * 1024 * 1024
# A manifest is read whole and parsed in memory: 64 MiB holds some 400,000 rows.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

ABSOLUTE = "refused: absolute path (paths must be relative to the manifest's folder)"
PARENT = "refused: '..' in the path (paths must stay inside the manifest's folder)"
LINK_OUT = "refused: symbolic link that leads outside the import folder"
ZIP_LINK = "refused: zip entry is a symbolic link"
ZIP_ESCAPE = "refused: zip entry escapes the archive folder"
MISSING = "missing file"


class SourceError(Exception):
    """The source as a whole cannot be read (no such path, not a zip, a CSV without a path column)."""


class MemberTooLarge(OSError):
    """A file or zip entry above its size cap; nothing of it was read."""


@dataclass(slots=True)
class SourceEntry:
    name: str
    read: Callable[[], bytes]
    # Where the file lies on this machine, links resolved, if it is a plain file (zip members have none),
    # and the import's root it lies in (resolved too): a cell registered in place keeps the path between.
    path: Path | None = None
    root: Path | None = None
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


@dataclass(frozen=True, slots=True)
class _Found:
    """Where a manifest row's file is: how to read it and, for a plain file, its resolved path and root."""

    read: Callable[[], bytes]
    path: Path | None = None
    root: Path | None = None


# A manifest row's path -> the file, or why it cannot be used (one of the messages above).
Locate = Callable[[str], _Found | str]


def list_source(source: Path) -> Listing:
    """List every cell a folder, manifest CSV or zip offers, with the problems found on the way."""
    if not source.exists():
        raise SourceError(f"{source} does not exist")
    if source.is_dir():
        return sorted(_list_image_folder(source), key=lambda item: item.name)
    if source.suffix.lower() == ".zip":
        return _list_zip(source)
    if source.suffix.lower() == ".csv":
        size = source.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise SourceError(
                f"{source.name} is {size:,} bytes, above the limit of {MAX_MANIFEST_BYTES:,} for a manifest"
            )
        raw = read_file_capped(source, limit=MAX_MANIFEST_BYTES)
        return list(_list_manifest(raw, source.name, _LocalRoot(source.parent).locate))
    raise SourceError(f"{source} is neither a folder, a .csv manifest nor a .zip archive")


# --- Plain files ----------------------------------------------------------------------------------


def read_file_capped(path: Path, *, limit: int = MAX_ZIP_ENTRY_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (a link there is refused: paths come resolved), at most
    ``limit`` of them. Non-blocking open, so a FIFO placed in the folder cannot hang the import."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise MemberTooLarge(f"file is {info.st_size:,} bytes, above the limit of {limit:,}")
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise MemberTooLarge(f"file is over {limit:,} bytes, above the limit")
    return data


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _written_problem(rel: str) -> str | None:
    """Why a path as written in a manifest cannot be used (absolute or with '..'), or None."""
    if rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return ABSOLUTE
    if ".." in rel.replace("\\", "/").split("/"):
        return PARENT
    return None


class _LocalRoot:
    """Resolves manifest paths under one folder: each folder on the way once (cached), then the file,
    so a manifest of 16k rows costs one ``lstat`` per row, plus a ``realpath`` per link."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.root_text = str(self.root)
        self._folders: dict[str, str | None] = {}

    def _folder(self, rel_folder: str) -> str | None:
        """The resolved folder, or None when it (through a link) leads outside the root."""
        if rel_folder not in self._folders:
            real = os.path.realpath(os.path.join(self.root_text, rel_folder))
            self._folders[rel_folder] = real if _inside(real, self.root_text) else None
        return self._folders[rel_folder]

    def resolve(self, rel: str) -> Path | str:
        """The resolved path of ``rel`` inside the root (it may not exist), or why it is refused."""
        problem = _written_problem(rel)
        if problem is not None:
            return problem
        folder, name = posixpath.split(posixpath.normpath(rel))
        real_folder = self._folder(folder)
        if real_folder is None:
            return LINK_OUT
        path = os.path.join(real_folder, name)
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            return Path(path)  # missing: reported when it is read
        if is_link:
            path = os.path.realpath(path)
            if not _inside(path, self.root_text):
                return LINK_OUT
        return Path(path)

    def locate(self, rel: str) -> _Found | str:
        resolved = self.resolve(rel)
        if isinstance(resolved, str):
            return resolved
        return _Found(read=functools.partial(read_file_capped, resolved), path=resolved, root=self.root)


def _list_image_folder(source: Path) -> Iterator[SourceEntry | SourceProblem]:
    """Every image under ``source`` (``<label>/<image>``); links to folders are not followed, links to
    files only while they stay inside; hidden files and folders are left out."""
    root = _LocalRoot(source)
    for folder, folders, files in os.walk(root.root):
        rel_folder = os.path.relpath(folder, root.root)
        rel_folder = "" if rel_folder == "." else rel_folder
        for name in list(folders):
            if name.startswith("."):
                folders.remove(name)
                continue
            path = os.path.join(folder, name)
            if os.path.islink(path):
                folders.remove(name)
                rel = posixpath.join(rel_folder, name)
                if not _inside(os.path.realpath(path), root.root_text):
                    yield SourceProblem(rel, LINK_OUT)
                else:
                    yield SourceProblem(rel, "skipped: link to a folder inside the import (not followed)")
        for name in files:
            if name.startswith("."):
                continue
            rel = posixpath.join(rel_folder, name)
            if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
                suffix = PurePosixPath(name).suffix or "no"
                yield SourceProblem(rel, f"skipped: {suffix} extension is not an image type")
                continue
            found = root.locate(rel)
            if isinstance(found, str):
                yield SourceProblem(rel, found)
                continue
            parts = PurePosixPath(rel).parts
            yield SourceEntry(
                name=rel,
                read=found.read,
                path=found.path,
                root=found.root,
                label=parts[0] if len(parts) > 1 else "",
            )


# --- Zips -----------------------------------------------------------------------------------------


def read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, limit: int) -> bytes:
    """A zip member's bytes, refused before any decompression when its size is above ``limit``.

    ``zipfile`` never returns more than the size the archive declares (it stops there, then checks the
    CRC), so the declared size bounds the work; the read is capped as well, in case it ever does not.
    """
    if info.file_size > limit:
        raise MemberTooLarge(
            f"zip entry is {info.file_size:,} bytes uncompressed, above the limit of {limit:,}"
        )
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise MemberTooLarge(f"zip entry is over {limit:,} bytes uncompressed, above the limit")
    return data


def _safe_member_name(name: str) -> str | None:
    """The normalised posix path of a zip member, or None if it would escape the archive root."""
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return None
    normalised = posixpath.normpath(name)
    if normalised == ".." or normalised.startswith("../"):
        return None
    return normalised


def _is_link(info: zipfile.ZipInfo) -> bool:
    """A member stored as a symbolic link (``zip -y``): its data is the link's target, not an image."""
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _list_zip(path: Path) -> Listing:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path} is not a readable zip archive: {exc}") from None
    problems: list[SourceEntry | SourceProblem] = []
    members: dict[str, zipfile.ZipInfo] = {}
    links: set[str] = set()
    for info in archive.infolist():
        if info.is_dir():
            continue
        safe = _safe_member_name(info.filename)
        if safe is None:
            problems.append(SourceProblem(info.filename, ZIP_ESCAPE))
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(safe).parts):
            continue
        if _is_link(info):
            links.add(safe)
            continue
        members[safe] = info

    def read_member(name: str) -> Callable[[], bytes]:
        return functools.partial(read_capped, archive, members[name], limit=MAX_ZIP_ENTRY_BYTES)

    manifests = sorted((n for n in members if n.lower().endswith(".csv")), key=lambda n: (n.count("/"), n))
    if manifests:
        manifest = manifests[0]
        base = posixpath.dirname(manifest)

        def locate(rel: str) -> _Found | str:
            problem = _written_problem(rel)
            if problem is not None:
                return problem
            resolved = _safe_member_name(posixpath.join(base, rel))
            if resolved is None:
                return ZIP_ESCAPE
            if resolved in links:
                return ZIP_LINK
            if resolved not in members:
                return MISSING
            return _Found(read=read_member(resolved))

        try:
            raw = read_capped(archive, members[manifest], limit=MAX_MANIFEST_BYTES)
        except MemberTooLarge as exc:
            raise SourceError(f"{manifest} refused as a manifest: {exc}") from None
        return problems + list(_list_manifest(raw, manifest, locate))

    problems.extend(SourceProblem(name, ZIP_LINK) for name in sorted(links))
    for name in sorted(members):
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(SourceProblem(name, "skipped: extension is not an image type"))
            continue
        parts = PurePosixPath(name).parts
        problems.append(
            SourceEntry(name=name, read=read_member(name), label=parts[0] if len(parts) > 1 else "")
        )
    return problems


# --- Manifests ------------------------------------------------------------------------------------


def _list_manifest(raw: bytes, manifest_name: str, locate: Locate) -> Iterator[SourceEntry | SourceProblem]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{manifest_name} is not UTF-8 text: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    quoted = "'" in text  # else no field can carry a spreadsheet-safe quote to take off
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
                row = parse_row(raw_row, attribute_columns=None, unquote=quoted)
            except ManifestError as exc:
                yield SourceProblem(f"{manifest_name}:{line}", str(exc))
                continue
            found = locate(row.path)
            if isinstance(found, str):
                yield SourceProblem(row.path, f"{found} (listed on line {line} of {manifest_name})")
                continue
            yield SourceEntry(
                name=row.path,
                read=found.read,
                path=found.path,
                root=found.root,
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
