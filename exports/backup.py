"""Backing up a leukoloop installation into a folder, and restoring it into another one.

A backup is the database as Django fixtures (``dumpdata``: portable between SQLite and PostgreSQL, read
in one consistent snapshot), the media folder (leukoloop's own copies of cell images) and the artefacts
folder (encoders, embeddings, indexes, classifiers, exports), plus ``backup.json``, written last, which
says what is in it. Cells and model versions record paths relative to those folders, so the restored
installation may live anywhere. A referenced image collection (cells imported where they lay) is not
copied: its folder is listed in ``backup.json``, and ``--move-root`` points the cells at its new place.

A restore goes only into an empty database and empty media and artefacts folders: nothing is merged, so
nothing is lost or half-mixed. Database rows are loaded in one transaction that also covers copying the
files; if anything fails, the database is rolled back and the copied files are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connection, models, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from annotation.cell_files import forget_verified
from annotation.models import Cell

FORMAT = 1
MANIFEST = "backup.json"
DATABASE = "db.json.gz"
# Rebuilt by `migrate` (content types, permissions) or not worth keeping (sessions, the admin's log).
EXCLUDED = ("contenttypes", "auth.permission", "sessions", "admin.logentry")


class BackupError(Exception):
    """The backup or restore cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Copied:
    files: int
    bytes: int
    skipped: list[str]  # links and special files, never followed


def _dumped_models() -> list[type[models.Model]]:
    """The models ``dumpdata`` writes with ``EXCLUDED`` left out."""
    chosen = []
    for model in apps.get_models():
        meta = model._meta
        if meta.proxy or not meta.managed or meta.app_label in EXCLUDED or meta.label_lower in EXCLUDED:
            continue
        chosen.append(model)
    return chosen


def _counts() -> dict[str, int]:
    return {model._meta.label_lower: model._default_manager.count() for model in _dumped_models()}


@contextmanager
def _snapshot() -> Iterator[None]:
    """Read every table from one consistent state of the database while others keep writing."""
    if connection.in_atomic_block:  # the caller's transaction already is one (tests)
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    # SQLite (WAL): a deferred read transaction sees one snapshot and, unlike Django's atomic blocks
    # (BEGIN IMMEDIATE here), takes no write lock, so labelling goes on during the dump.
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("COMMIT")


def _copy_files(source: Path, target: Path) -> Copied:
    """Copy the regular files under ``source`` to ``target`` (created). Hidden files (half-written
    ``.part`` files) and ``*.tmp*`` files are left out; links and special files are skipped, not
    followed, so nothing outside the folder gets in."""
    files = size = 0
    skipped: list[str] = []
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return Copied(0, 0, [])
    for folder, folders, names in os.walk(source):
        folders[:] = [
            d for d in folders if not d.startswith(".") and not os.path.islink(os.path.join(folder, d))
        ]
        rel = os.path.relpath(folder, source)
        out = target / rel
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name.startswith(".") or ".tmp" in name:
                continue
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                skipped.append(os.path.join(rel, name))
                continue
            shutil.copy2(path, out / name, follow_symlinks=False)
            files += 1
            size += info.st_size
    return Copied(files, size, skipped)


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(names for _, _, names in os.walk(folder))


def _roots() -> list[dict[str, Any]]:
    rows = (
        Cell.objects.exclude(image_root="")
        .values("image_root")
        .annotate(n=models.Count("id"))
        .order_by("image_root")
    )
    return [{"root": row["image_root"], "cells": row["n"]} for row in rows]


def backup(target: Path) -> dict[str, Any]:
    """Write a backup of this installation into ``target`` (new or empty); returns ``backup.json``."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} is not empty: back up into a new or empty folder")
    target.mkdir(parents=True, exist_ok=True)
    # The database first: every file its rows name was written before the row was committed, so it is
    # there when the folders are copied next (images and artefacts are never rewritten in place).
    with _snapshot():
        call_command(
            "dumpdata",
            exclude=list(EXCLUDED),
            natural_foreign=True,
            output=str(target / DATABASE),
            verbosity=0,
        )
        counts = _counts()
        roots = _roots()
    migrations = sorted(f"{app}.{name}" for app, name in MigrationRecorder(connection).applied_migrations())
    media = _copy_files(Path(settings.MEDIA_ROOT), target / "media")
    artifacts = _copy_files(Path(settings.LEUKOLOOP_ARTIFACTS_DIR), target / "artifacts")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "database_vendor": connection.vendor,
        "database": DATABASE,
        "counts": counts,
        "migrations": migrations,
        "media": {"files": media.files, "bytes": media.bytes, "skipped": media.skipped},
        "artifacts": {"files": artifacts.files, "bytes": artifacts.bytes, "skipped": artifacts.skipped},
        # Cells registered where they lay: these folders are not in the backup.
        "image_roots": roots,
    }
    part = target / f".{MANIFEST}.part"
    part.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(part, target / MANIFEST)  # present only once the backup is complete
    return manifest


def _read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"{source} holds no {MANIFEST}: not a complete leukoloop backup")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{path} is backup format {manifest.get('format')!r}; this leukoloop reads {FORMAT}"
        )
    return manifest


def _check_migrations(manifest: dict[str, Any]) -> None:
    known = {f"{app}.{name}" for app, name in MigrationLoader(connection).disk_migrations}
    unknown = sorted(set(manifest["migrations"]) - known)
    if unknown:
        raise BackupError(
            "the backup comes from a newer leukoloop (migrations unknown here: "
            + ", ".join(unknown[:5])
            + "); restore it with that version"
        )


def _check_empty(manifest: dict[str, Any]) -> None:
    filled = []
    for label in manifest["counts"]:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        count = model._default_manager.count()
        if count:
            filled.append(f"{count} {model._meta.verbose_name_plural}")
    if filled:
        raise BackupError(
            "the database is not empty (" + ", ".join(filled[:4]) + "): restore into an empty database"
        )
    for name, folder in (("media", settings.MEDIA_ROOT), ("artefacts", settings.LEUKOLOOP_ARTIFACTS_DIR)):
        if _has_files(Path(folder)):
            raise BackupError(f"the {name} folder {folder} is not empty: restore into empty folders")


def _parse_moves(moves: list[str], manifest: dict[str, Any]) -> dict[str, str]:
    known = {row["root"] for row in manifest["image_roots"]}
    parsed: dict[str, str] = {}
    for move in moves:
        old, sep, new = move.partition("=")
        if not sep or not old or not new:
            raise BackupError(f"--move-root {move!r}: write it as OLD=NEW")
        if old not in known:
            raise BackupError(
                f"--move-root: {old} is not a folder of this backup (its folders: {', '.join(sorted(known))})"
            )
        parsed[old] = os.path.realpath(new)
    return parsed


def _empty_folder(folder: Path) -> None:
    """Remove what a failed restore copied (the folder was empty before)."""
    if folder.is_dir():
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def restore(source: Path, *, move_roots: list[str] | None = None) -> dict[str, Any]:
    """Restore the backup in ``source`` into this installation's (empty) database and folders.

    Returns what was restored, with ``missing_roots``: referenced image folders not found here.
    """
    manifest = _read_manifest(source)
    moves = _parse_moves(move_roots or [], manifest)
    call_command("migrate", interactive=False, verbosity=0)
    _check_migrations(manifest)
    _check_empty(manifest)
    media, artifacts = Path(settings.MEDIA_ROOT), Path(settings.LEUKOLOOP_ARTIFACTS_DIR)
    try:
        with transaction.atomic():
            call_command("loaddata", str(source / manifest["database"]), verbosity=0)
            for old, new in moves.items():
                Cell.objects.filter(image_root=old).update(image_root=new)
            counts = _counts()
            differ = {k: (v, counts.get(k)) for k, v in manifest["counts"].items() if counts.get(k) != v}
            if differ:
                raise BackupError(f"restored row counts differ from the backup's: {differ}")
            copied_media = _copy_files(source / "media", media)
            copied_artifacts = _copy_files(source / "artifacts", artifacts)
    except BaseException:
        _empty_folder(media)
        _empty_folder(artifacts)
        raise
    forget_verified()
    roots = [row["root"] for row in _roots()]
    return {
        "counts": counts,
        "media_files": copied_media.files,
        "artifact_files": copied_artifacts.files,
        "image_roots": roots,
        "missing_roots": [root for root in roots if not os.path.isdir(root)],
    }


__all__ = ["BackupError", "backup", "restore"]
