"""python manage.py import_cells SOURCE --project NAME [--labels annotations|reference|none]"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.importing.service import ImportReport, LabelMode, StoreMode, import_cells
from annotation.importing.sources import SourceError
from annotation.models import Cell
from annotation.services.projects import project_get_or_create


class Command(BaseCommand):
    help = (
        "Import cell images from an ImageFolder tree (<label>/<image>), a manifest CSV (paths relative to "
        "the CSV; optional label, source, patient_id, slide_id, role and attribute columns) or a zip of "
        "either. Creates the project with the blood-smear taxonomy if it does not exist."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("source", type=Path)
        parser.add_argument("--project", required=True, help="project name (created if missing)")
        parser.add_argument(
            "--labels",
            choices=[m.value for m in LabelMode],
            default=LabelMode.REFERENCE.value,
            help="import labels as annotations, as hidden reference labels (default), or ignore them",
        )
        parser.add_argument(
            "--store",
            choices=[m.value for m in StoreMode],
            default=StoreMode.REFERENCE.value,
            help="register local files where they lie (default) or copy them into the media folder; "
            "zip members are always copied",
        )
        parser.add_argument("--role", choices=Cell.Role.values, default=Cell.Role.POOL)
        parser.add_argument("--source-name", default="", help="source recorded for cells that name none")
        parser.add_argument("--max-pixels", type=int, default=None, help="refuse images above this size")
        parser.add_argument("--json", action="store_true", help="print the full report as JSON")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        project, created = project_get_or_create(name=options["project"])
        if created:
            self.stdout.write(f"created project {project.name!r} with the blood-smear taxonomy")
        bar = tqdm(total=0, unit="file", disable=options["no_progress"], desc="importing")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = import_cells(
                project=project,
                source=options["source"],
                labels=LabelMode(options["labels"]),
                store=StoreMode(options["store"]),
                default_role=options["role"],
                default_source=options["source_name"],
                max_pixels=options["max_pixels"],
                progress=progress,
            )
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self._print_report(report, as_json=options["json"])

    def _print_report(self, report: ImportReport, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
            return
        for error in report.errors:
            self.stderr.write(f"error: {error.name}: {error.message}")
        for skipped in report.skipped:
            self.stdout.write(f"{skipped.name}: {skipped.message}")
        for dup in report.duplicates:
            kind = "CONFLICT" if dup.is_conflict else "duplicate"
            labels = f" (labels {dup.labels[0]!r} vs {dup.labels[1]!r})" if dup.is_conflict else ""
            self.stdout.write(f"{kind}: {dup.name} is the same image as {dup.same_as}{labels}")
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {report.imported} cells ({report.annotations_created} annotations); "
                f"{report.already_present} already in the project; {len(report.duplicates)} duplicates "
                f"({len(report.conflicts)} with conflicting labels); {len(report.errors)} errors; "
                f"{len(report.skipped)} skipped"
            )
        )
