"""Create the admin user and a demo project, so `make run` opens on something to look at.

With no data, the demo project holds synthetic cells drawn by leukoloop (clearly marked). With
``--data <folder | manifest.csv | zip>`` it imports real cells instead, labels kept as hidden references.
The loop starts at once (``loop.services.start``): the first batch comes from the encoder's ImageNet
weights, and label-free pretraining follows in the background.
Safe to run repeatedly: the admin keeps its password and re-imports add nothing.
"""

from __future__ import annotations

import secrets
import tempfile
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from annotation.demo import write_demo_folder
from annotation.importing.service import LabelMode, StoreMode, import_cells
from annotation.models import Membership, Project
from annotation.services.cells import hold_out_validation
from annotation.services.memberships import membership_set
from annotation.services.projects import project_get_or_create
from annotation.taxonomy import BLOOD_SMEAR_CLASSES
from jobs.models import Job
from loop.models import ModelVersion
from loop.services.start import loop_start

SYNTHETIC_PROJECT = "Demo (synthetic cells)"
REAL_PROJECT = "Leukocytes demo"


class Command(BaseCommand):
    help = "Create the admin user and a demo project (synthetic cells, or real ones with --data)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--data", type=Path, default=None)
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--pretrain-minutes",
            type=float,
            default=3.0,
            help="Label-free pretraining in the background once the first batch (from the ImageNet "
            "weights) is there; its encoder then indexes the cells again and the next batch uses it "
            "(0: none; a lead can pretrain longer later).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username, password = self._ensure_admin(options["username"])
        data: Path | None = options["data"]
        if data is not None:
            project, _ = project_get_or_create(
                name=REAL_PROJECT, description=f"Real cells imported from {data.name}."
            )
            call_command("import_cells", str(data), project=project.name, labels=LabelMode.REFERENCE.value)
        else:
            project, created = project_get_or_create(
                name=SYNTHETIC_PROJECT,
                description="SYNTHETIC cells drawn by leukoloop for a first look; not microscopy. "
                "Start with `make run DATA=<folder, manifest or zip>` for real cells.",
                is_synthetic_demo=True,
            )
            if created:
                with tempfile.TemporaryDirectory() as tmp:
                    folder = write_demo_folder(Path(tmp), classes=[c["name"] for c in BLOOD_SMEAR_CLASSES])
                    report = import_cells(
                        project=project,
                        source=folder,
                        labels=LabelMode.REFERENCE,
                        store=StoreMode.COPY,  # the drawing folder is temporary
                        default_source="synthetic",
                    )
                self.stdout.write(f"drew {report.imported} synthetic cells into {project.name!r}")
        admin = get_user_model().objects.get(username=username)
        membership_set(project=project, user=admin, role=Membership.Role.ADMIN)
        self._start_loop(project, minutes=options["pretrain_minutes"])
        self.stdout.write(self.style.SUCCESS(f"admin login: {username} / {password}"))

    def _start_loop(self, project: Project, *, minutes: float) -> None:
        """Hold out validation cells and start the loop (first batch from the initial weights, then
        pretraining in the background), unless it already started."""
        moved = hold_out_validation(project=project)
        if moved:
            self.stdout.write(f"held out {moved} reference-labelled cells for validation")
        started = (
            ModelVersion.objects.filter(project=project).exists()
            or Job.objects.filter(project=project, kind__in=[Job.Kind.PRETRAIN, Job.Kind.EMBED]).exists()
        )
        if not started:
            Project.objects.filter(pk=project.pk).update(pretrain_minutes=minutes)
            project.refresh_from_db()
            loop_start(project=project)
            self.stdout.write(
                "queued the first batch, from the encoder's initial weights"
                + (
                    f"; {minutes:g} minutes of label-free pretraining follow in the background"
                    if minutes > 0
                    else ""
                )
            )

    def _ensure_admin(self, username: str) -> tuple[str, str]:
        secret_file = Path(settings.VAR_DIR) / "admin-password.txt"
        users = get_user_model().objects
        if users.filter(username=username).exists():
            stored = (
                secret_file.read_text().strip()
                if secret_file.exists()
                else "(unchanged; see createsuperuser)"
            )
            return username, stored
        password = secrets.token_urlsafe(9)
        users.create_superuser(username=username, email="", password=password)
        secret_file.write_text(password + "\n")
        secret_file.chmod(0o600)
        return username, password
