"""python manage.py backup DIR: the database, media and artefacts of this installation into DIR."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from exports.backup import BackupError, backup


class Command(BaseCommand):
    help = (
        "Back up the database (as portable fixtures, one consistent snapshot), the media folder and the "
        "artefacts folder into DIR (new or empty). Restore with `manage.py restore DIR`."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("folder", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            manifest = backup(options["folder"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        counts = manifest["counts"]
        self.stdout.write(
            self.style.SUCCESS(
                f"backed up {counts.get('annotation.cell', 0)} cells, "
                f"{counts.get('annotation.annotation', 0)} annotations, "
                f"{counts.get('loop.modelversion', 0)} model versions, {manifest['media']['files']} media "
                f"and {manifest['artifacts']['files']} artefact files into {options['folder']}"
            )
        )
        for root in manifest["image_roots"]:
            self.stdout.write(
                f"not in the backup: {root['cells']} cells reference images under {root['root']} "
                "(keep that folder, or restore with --move-root OLD=NEW)"
            )
        for kind in ("media", "artifacts"):
            for name in manifest[kind]["skipped"]:
                self.stderr.write(f"skipped (a link or special file, not followed): {kind}/{name}")
