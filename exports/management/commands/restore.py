"""python manage.py restore DIR [--move-root OLD=NEW ...]: a backup into this (empty) installation."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from exports.backup import BackupError, restore


class Command(BaseCommand):
    help = (
        "Restore a backup made by `manage.py backup` into this installation's database, media and "
        "artefacts folders, which must be empty (it migrates the database first)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument(
            "--move-root",
            action="append",
            default=[],
            metavar="OLD=NEW",
            help="a referenced image folder of the backup now lies at NEW (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = restore(options["folder"], move_roots=options["move_root"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        counts = result["counts"]
        self.stdout.write(
            self.style.SUCCESS(
                f"restored {counts.get('annotation.cell', 0)} cells, "
                f"{counts.get('annotation.annotation', 0)} annotations, "
                f"{counts.get('loop.modelversion', 0)} model versions, {result['media_files']} media "
                f"and {result['artifact_files']} artefact files"
            )
        )
        for root in result["missing_roots"]:
            self.stderr.write(
                f"warning: referenced images are expected under {root}, which does not exist here "
                "(restore again with --move-root OLD=NEW, into an empty database)"
            )
