"""Shared fixtures: service checks, real cell images from ../shared, users, and a real Celery worker.

Modes (set by the Makefile):
- LEUKOLOOP_TEST_MODE=services (CI): PostgreSQL + Redis must be reachable; a missing service fails the run.
- otherwise: whatever DATABASE_URL / CELERY_BROKER_URL say, by default SQLite + filesystem broker.
Under CI=true, tests that need ../shared/data/leukocytes fail instead of skipping when it is missing.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

IN_CI = os.environ.get("CI", "").lower() == "true"
MODE = os.environ.get("LEUKOLOOP_TEST_MODE", "")
REPO = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    if MODE != "services":
        return
    problems = []
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        problems.append(
            f"LEUKOLOOP_TEST_MODE=services needs PostgreSQL, DATABASE_URL gives {database['ENGINE']}"
        )
    else:
        import psycopg2

        try:
            psycopg2.connect(
                host=database["HOST"], port=database["PORT"] or 5432, user=database["USER"], dbname="postgres"
            ).close()
        except psycopg2.OperationalError as exc:
            problems.append(f"PostgreSQL is not reachable: {exc}")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        problems.append(f"LEUKOLOOP_TEST_MODE=services needs Redis, broker is {settings.CELERY_BROKER_URL}")
    else:
        import redis

        try:
            redis.Redis.from_url(settings.CELERY_BROKER_URL).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis is not reachable: {exc}")
    if problems:
        pytest.exit("required services missing:\n  " + "\n  ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Throttle counters live in the cache, keyed by user id and address: ids come again in every test
    # database, so counts must not carry over from one test to the next.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Each test writes images to its own folder; nothing lands in the developer's var/.
    settings.MEDIA_ROOT = str(tmp_path_factory.mktemp("media"))
    # And model artefacts: job folders are named by ids, which every test database hands out again, so a
    # shared folder would let a pretraining resume from another test's checkpoint.
    settings.LEUKOLOOP_ARTIFACTS_DIR = tmp_path_factory.mktemp("artifacts")


# --- Real data ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(settings.LEUKOLOOP_DATA_DIR)
    if not (path / "manifest.csv").is_file():
        message = f"real leukocyte images not found at {path} (set LEUKOLOOP_DATA_DIR)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def manifest_rows(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


ManifestWriter = Callable[..., Path]


@pytest.fixture
def make_manifest(data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path) -> ManifestWriter:
    """Write a manifest of a small real subset (``per_class`` images of each class, plus ``extra`` paths)
    whose images are copied next to it, as a user's own folder would be."""

    def write(per_class: int = 3, extra: tuple[str, ...] = (), folder: str = "subset") -> Path:
        root = tmp_path / folder
        chosen: list[dict[str, str]] = []
        taken: dict[str, int] = {}
        for row in manifest_rows:
            if taken.get(row["label"], 0) < per_class:
                taken[row["label"]] = taken.get(row["label"], 0) + 1
                chosen.append(row)
        by_path = {row["path"]: row for row in manifest_rows}
        chosen += [by_path[p] for p in extra if p not in {r["path"] for r in chosen}]
        for row in chosen:
            target = root / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_dir / row["path"], target)
        manifest = root / "manifest.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(manifest_rows[0].keys()))
            writer.writeheader()
            writer.writerows(chosen)
        return manifest

    return write


def import_external_cells(project: Any, data_dir: Path, folder: Path, n: int, *, every: int = 20) -> None:
    """Import ``n`` cells of another lab (every ``every``-th of ../shared/data/external_bccd, source
    ``bccd``, reference labels), copied into ``folder`` as a user's own folder would be."""
    import pytest

    from annotation.importing.service import LabelMode, import_cells

    source = data_dir.parent / "external_bccd"
    if not (source / "manifest.csv").is_file():
        pytest.skip("../shared/data/external_bccd is not there")
    with (source / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[::every][:n]
    for row in rows:
        (folder / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["path"], folder / row["path"])
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = import_cells(project=project, source=folder / "manifest.csv", labels=LabelMode.REFERENCE)
    assert report.imported == len(rows) == n, report


# --- Users ----------------------------------------------------------------------------------------


@pytest.fixture
def lead(db: None) -> User:
    return User.objects.create_user("lead", password="pw-lead-123")


@pytest.fixture
def annotator(db: None) -> User:
    return User.objects.create_user("annotator", password="pw-annotator-123")


@pytest.fixture
def outsider(db: None) -> User:
    return User.objects.create_user("outsider", password="pw-outsider-123")


# --- A real Celery worker -------------------------------------------------------------------------


def _worker_database_url() -> str:
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or "postgres"
    return (
        f"postgres://{user}@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/{params['NAME']}"
    )


class WorkerProcess:
    """``celery worker`` as a separate OS process (its own process group, so it can be killed whole)."""

    def __init__(self, log: Path, env: dict[str, str], beat_schedule: Path | None = None) -> None:
        self.log = log
        # With a schedule file the worker also runs the beat (`make run`'s loop worker does): the periodic
        # stale-job sweep.
        beat = ["--beat", f"--schedule={beat_schedule}"] if beat_schedule is not None else []
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--pool=solo",
                    "--concurrency=1",
                    "--queues=celery,train,side",  # the loop, training + indexing, exports + map
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    *beat,
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a pulled plug would: no clean-up runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(transactional_db: None, settings: Any, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start real worker processes on the test database and broker; ``start_worker(NAME=value)`` adds
    environment variables, ``beat=True`` runs the periodic sweep in it too. All are stopped at the end of
    the test."""
    workers: list[WorkerProcess] = []

    def start(*, beat: bool = False, **extra_env: str) -> WorkerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": _worker_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "LEUKOLOOP_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "LEUKOLOOP_ARTIFACTS_DIR": str(settings.LEUKOLOOP_ARTIFACTS_DIR),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **extra_env,
        }
        schedule = tmp_path / f"beat-schedule-{len(workers)}" if beat else None
        worker = WorkerProcess(tmp_path / "worker.log", env, schedule)
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture
def celery_worker_process(start_worker: WorkerFactory) -> Path:
    """One worker process; yields its log."""
    return start_worker().log


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- worker log ---\n{tail}")


# --- The active-learning loop ---------------------------------------------------------------------


def run_queued_jobs(*, limit: int = 20) -> list[int]:
    """Run queued jobs one after another in this process, as a worker would; returns their ids.

    For tests without a worker process: inside a test transaction ``on_commit`` never fires, so nothing
    reaches the broker and the jobs wait in the table."""
    from django.test import override_settings

    from jobs.models import Job
    from jobs.tasks import run_job

    ran: list[int] = []
    # No heartbeat thread: its own connection would wait on the test's open transaction.
    with override_settings(LEUKOLOOP_JOB_HEARTBEAT_SECONDS=3600):
        while len(ran) < limit:
            job = Job.objects.filter(status=Job.Status.QUEUED).order_by("pk").first()
            if job is None:
                break
            run_job(job.pk)
            ran.append(job.pk)
    return ran


def client_for(user: User | None) -> Client:
    """A test client logged in as ``user`` (anonymous with None)."""
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def own_artifacts(settings: Any, tmp_path: Path) -> None:
    """Artefacts (models, maps, exports) in the test's own folder: the loop's caches are keyed by path,
    so a test never reads a map or model an earlier run left in var/."""
    settings.LEUKOLOOP_ARTIFACTS_DIR = tmp_path / "artifacts"


def label_and_submit(batch: Any, annotator: User) -> None:
    """Label every cell of a query batch with its reference label, submit it and run the jobs that
    follow (the retrain and the next batch), as an annotator who agrees with the reference would."""
    from annotation.services.annotations import annotation_create
    from loop.services.batches import batch_submit

    for item in batch.items.select_related("cell__reference_label"):
        annotation_create(cell=item.cell, annotator=annotator, label=item.cell.reference_label)
    batch_submit(batch=batch, user=annotator)
    run_queued_jobs()


LOOP_SETTINGS = {
    "encoder_backbone": "lightcnn",
    "encoder_pretrained": False,
    "image_size": 32,
    "finetune_image_size": 0,  # fine-tunes keep 32 px (test_pipeline.py checks a size change)
    "pretrain_minutes": 0.03,
    "query_batch_size": 12,
}


@pytest.fixture
def loop_project(make_manifest: ManifestWriter, lead: User) -> Any:
    """A project of 72 real cells (8 per class, one per class held out for validation) with a tiny
    encoder configuration, so the whole loop runs in seconds on 2 cores."""
    from annotation.importing.service import LabelMode, import_cells
    from annotation.models import Cell, Project
    from annotation.services.projects import project_create

    project = project_create(name="loop", lead=lead)
    Project.objects.filter(pk=project.pk).update(**LOOP_SETTINGS)
    project.refresh_from_db()
    import_cells(project=project, source=make_manifest(per_class=8), labels=LabelMode.REFERENCE)
    validation = []
    for label_class in project.classes.all():
        first = Cell.objects.filter(project=project, reference_label=label_class).order_by("pk").first()
        if first is not None:
            validation.append(first.pk)
    Cell.objects.filter(pk__in=validation).update(role=Cell.Role.VALIDATION)
    return project
