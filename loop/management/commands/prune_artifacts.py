"""Delete the files of old index versions (embeddings and FAISS index) that the loop no longer reads.

Every embed job does this by itself once its version is stored (``loop.handlers.retention``); this
command applies the same rule on demand: to reclaim disk on an installation from before that rule, or
after lowering ``LEUKOLOOP_KEEP_INDEX_VERSIONS``. ``--dry-run`` lists what would go and how much.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from loop.handlers.retention import MIN_KEPT_INDEX_VERSIONS, prune_index_versions


class Command(BaseCommand):
    help = "Delete the files of index versions the loop no longer reads (the rows stay, marked pruned)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--project", type=int, help="Only this project (its id); default: every project.")
        parser.add_argument(
            "--keep",
            type=int,
            default=None,
            help="Keep the files of the newest N index versions (default LEUKOLOOP_KEEP_INDEX_VERSIONS; "
            f"at least {MIN_KEPT_INDEX_VERSIONS}), besides the newest classifier's.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        keep = settings.LEUKOLOOP_KEEP_INDEX_VERSIONS if options["keep"] is None else options["keep"]
        if keep <= 0:
            raise CommandError("--keep must be at least 1 (LEUKOLOOP_KEEP_INDEX_VERSIONS=0 keeps every file)")
        projects = Project.objects.order_by("pk")
        if options["project"] is not None:
            projects = projects.filter(pk=options["project"])
            if not projects.exists():
                raise CommandError(f"no project {options['project']}")
        verb = "would free" if options["dry_run"] else "freed"
        total = 0
        for project in projects:
            pruned = prune_index_versions(project, keep=keep, dry_run=options["dry_run"])
            total += pruned.bytes
            if pruned.versions:
                listed = ", ".join(f"v{v}" for v in pruned.versions)
                self.stdout.write(
                    f"{project.name} (#{project.pk}): index {listed}: {verb} {pruned.bytes:,} bytes"
                )
        self.stdout.write(f"{verb} {total:,} bytes in all")
