"""The platform at a million cells beside the 16k shared project, in one run, on PostgreSQL, Redis and real
Celery workers.

    .venv/bin/python bench/million_files.py --data ../shared/data/leukocytes/manifest.csv \
        --cells 1000000 --out var/bench-million/files
    .venv/bin/python bench/million.py --data ../shared/data/leukocytes/manifest.csv \
        --files var/bench-million/files --database-url postgres://postgres@127.0.0.1:5432/leukoloop_bench \
        --broker redis://127.0.0.1:6379/5 --out bench/results/million.json
    .venv/bin/python bench/million.py ... --real-embed --embed-workers 2 --embed-threads 1 \
        --out bench/results/million_real.json    # every million cell embedded for real

What runs, on a fresh schema:

1. **Import.** The 16,230 shared cells into one project, and the million distinct files of
   ``bench/million_files.py`` (the shared cells turned and re-encoded) into another, through
   ``import_cells`` as the import job runs it, in the files' four manifests. Then the floor: reading,
   hashing and PIL-verifying the same million files in one process (``bench/import_speed.py``'s floor),
   timed after the import, so the page cache favours the floor and the ratio is conservative.
2. **Embeddings.** The shared project runs the loop's start as the product does (ImageNet
   EfficientNet-Lite0 at 64 px with the cell crop, every cell embedded for real, FAISS index, cold-start
   batch). With ``--real-embed`` every million cell is embedded for real by the product's sharded embed
   job, run by ``--embed-workers`` Celery workers (train queue, ``--embed-threads`` torch threads each;
   about 50 minutes with two here), which then writes the memory-mapped embeddings and the IVF index.
   Without it the million cells are *not* embedded: each one's embedding is
   its shared cell's real embedding plus Gaussian noise whose size is measured, by embedding
   ``--measured-copies`` of the million files for real (those keep their real embeddings) and taking the
   mean distance to their shared cell's. The million-cell index (IVF) is built from them with the
   product's ``EmbeddingIndex``.
3. **The loop.** For each project in turn, with its own fresh Celery worker (solo pool, every queue):
   ``--seed-labels`` random pool cells labelled through the API, then a retrain job (the first batch
   chosen by the hybrid on a trained model), then ``--rounds`` rounds of: the page's poll (``loop``
   and ``batches/current`` endpoints) and the labelling page, one label POST per cell of the batch with
   the cell's reference label, submit, and the time until the next batch is in the database. A thread
   samples the worker's /proc status every 20 ms for its peak resident memory, anonymous (its own
   arrays) and file-backed (the memory-mapped embeddings, pages the kernel may drop and share).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / "var" / "bench-million" / "run"
sys.path.insert(0, str(REPO / "bench"))

from import_speed import manifest_paths, read_hash_verify  # noqa: E402  (bench/ is not a package)
from loop_latency import summary_ms  # noqa: E402


def configure(database_url: str, broker: str, *, fresh: bool = True) -> None:
    if fresh and SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    os.environ["LEUKOLOOP_VAR_DIR"] = str(SCRATCH)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DATABASE_URL"] = database_url
    os.environ["CELERY_BROKER_URL"] = broker
    import redis

    redis.Redis.from_url(broker).flushdb()  # no message of an earlier run
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    if not fresh:
        return
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)


class MemorySampler:
    """Peak VmRSS, RssAnon and RssFile of a process, sampled every 20 ms from /proc."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = dict.fromkeys(self.FIELDS, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                name, _, value = line.partition(":")
                if name in self.peak:
                    self.peak[name] = max(self.peak[name], int(value.split()[0]))
            time.sleep(0.02)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {f"peak_{k}_gib": round(v / 2**20, 3) for k, v in self.peak.items()}


def start_worker(
    name: str, queues: str = "celery,train,side", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "config", "worker", f"--hostname={name}@%h"),
            *("--pool=solo", f"--queues={queues}", "--loglevel=WARNING"),
        ],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=(SCRATCH / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=30)


def import_project(name: str, manifests: list[Path], user: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
    from annotation.importing.service import LabelMode, import_cells
    from annotation.models import Membership, Project
    from annotation.services.cells import hold_out_validation
    from annotation.services.memberships import membership_set
    from annotation.services.projects import project_create

    project = project_create(name=name, lead=user)
    membership_set(project=project, user=user, role=Membership.Role.LEAD)
    Project.objects.filter(pk=project.pk).update(pretrain_minutes=0, image_size=64, query_batch_size=48)
    project.refresh_from_db()
    parts = []
    same_as: dict[str, str] = {}  # a file left out as a duplicate -> the imported file with its bytes
    start = time.perf_counter()
    for manifest in manifests:
        t = time.perf_counter()
        report = import_cells(project=project, source=manifest, labels=LabelMode.REFERENCE)
        same_as.update({d.name: d.same_as for d in report.duplicates})
        parts.append(
            {
                "manifest": manifest.name,
                "seconds": round(time.perf_counter() - t, 1),
                "imported": report.imported,
                "duplicates": len(report.duplicates),
                "errors": len(report.errors),
            }
        )
        print(f"{name}: {parts[-1]}", flush=True)
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    validation = hold_out_validation(project=project)
    return (
        project,
        same_as,
        {
            "import_seconds": round(seconds, 1),
            "cells": sum(p["imported"] for p in parts),
            "parts": parts,
            "hold_out_seconds": round(time.perf_counter() - t, 2),
            "validation_cells": validation,
            "peak_rss_of_this_process_gib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
            ),
        },
    )


def copy_encoder(project: Any, shared: Any, job: Any) -> Any:
    """The million project's encoder: the shared project's start encoder (the same weights file)."""
    from django.db import transaction

    from loop.models import ModelVersion
    from loop.selectors import latest_version
    from loop.services.versions import create_version

    shared_encoder = latest_version(shared, ModelVersion.Kind.ENCODER)
    assert shared_encoder is not None
    with transaction.atomic():
        return create_version(
            project=project,
            kind=ModelVersion.Kind.ENCODER,
            job=job,
            artifacts=dict(shared_encoder.artifacts),
            metrics={"copied_from_project": shared.pk},
        )


def real_index(project: Any, shared: Any, workers: int, threads: int) -> dict[str, Any]:
    """Every million cell embedded for real: the product's embed job (sharded), run by ``workers`` Celery
    workers reading the train queue with ``threads`` torch threads each, as a lab adds workers; then its
    IVF index. Reports the wall time, cells per second, shards per worker and each worker's peak memory."""
    from annotation.models import Cell
    from jobs.models import Job
    from jobs.services import job_create
    from loop.models import ModelVersion

    encoder = copy_encoder(project, shared, None)
    cells = Cell.objects.filter(project=project).count()
    env = {"LEUKOLOOP_TORCH_THREADS": str(threads)}
    procs = [start_worker(f"embed{k}", queues="train", env=env) for k in range(workers)]
    samplers = [MemorySampler(p.pid) for p in procs]
    time.sleep(15)  # the workers' start-up (imports) is not part of the embedding
    t0 = time.perf_counter()
    job = job_create(kind=Job.Kind.EMBED, project=project, params={"encoder_version": encoder.pk})
    last_report = t0
    while True:
        job.refresh_from_db()
        if job.status in Job.FINISHED:
            break
        if time.perf_counter() - last_report > 300:
            last_report = time.perf_counter()
            print(f"embedding: {time.perf_counter() - t0:.0f} s, progress {job.progress}", flush=True)
        time.sleep(1.0)
    wall = time.perf_counter() - t0
    memory = [sampler.stop() for sampler in samplers]
    for proc in procs:
        stop_worker(proc)
    if job.status != Job.Status.SUCCEEDED:
        raise RuntimeError(f"million embed job {job.status}: {job.error[:500]}")
    index = ModelVersion.objects.get(job=job, kind=ModelVersion.Kind.INDEX)
    return {
        "embedded": "real",
        "cells": cells,
        "workers": workers,
        "torch_threads_per_worker": threads,
        "wall_seconds_job_to_index": round(wall, 1),
        "cells_per_second": round(cells / wall, 1),
        "shards": index.metrics.get("shards"),
        "shards_embedded_by_the_embed_job": index.metrics.get("shards_embedded_by_this_job"),
        "index_metrics": index.metrics,
        "dim": index.artifacts.get("dim"),
        "worker_memory": memory,
    }


def derived_index(
    project: Any, shared: Any, shared_duplicates: dict[str, str], files: Path, measured_copies: int, seed: int
) -> dict[str, Any]:
    """The million project's encoder (the shared project's), embeddings and index, as described above."""
    from django.db import transaction
    from numpy.lib.format import open_memmap

    from annotation.models import Cell
    from jobs.models import Job
    from learning.embeddings import save_ids_and_meta
    from learning.index import EmbeddingIndex
    from loop.handlers.artifacts import EMBEDDINGS_DIR, INDEX_DIR, index_embeddings, job_dir
    from loop.handlers.encoders import encoder_crop, load_backbone
    from loop.handlers.sharding import embed_cells
    from loop.models import ModelVersion, relative_artifact
    from loop.selectors import latest_version
    from loop.services.versions import create_version

    shared_index = latest_version(shared, ModelVersion.Kind.INDEX)
    shared_encoder = latest_version(shared, ModelVersion.Kind.ENCODER)
    assert shared_index is not None and shared_encoder is not None
    shared_ids, shared_emb = index_embeddings(shared_index)
    shared_row = {
        name: int(np.searchsorted(shared_ids, pk))
        for pk, name in Cell.objects.filter(project=shared).values_list("pk", "original_name")
    }
    with (files / "source.csv").open(newline="") as handle:
        source_of = {row["path"]: row["shared_path"] for row in csv.DictReader(handle)}
    cells = list(Cell.objects.filter(project=project).order_by("pk").values_list("pk", "original_name"))
    ids = np.array([pk for pk, _ in cells], dtype=np.int64)
    for name, kept in shared_duplicates.items():  # a copy of a shared duplicate: its twin's embedding
        shared_row.setdefault(name, shared_row[kept])
    rows = np.array([shared_row[source_of[name]] for _, name in cells], dtype=np.int64)

    with_job = Job.objects.create(project=project, kind=Job.Kind.EMBED, status=Job.Status.SUCCEEDED)
    with_job.refresh_from_db()
    encoder = copy_encoder(project, shared, with_job)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(ids), size=measured_copies, replace=False))
    model, size = load_backbone(encoder)
    t = time.perf_counter()
    sample_cells = list(Cell.objects.filter(pk__in=ids[sample].tolist()).order_by("pk"))
    real = embed_cells(model, size, encoder_crop(encoder), sample_cells, lambda done: None)
    real_seconds = time.perf_counter() - t
    distances = np.linalg.norm(real - shared_emb[rows[sample]], axis=1)
    dim = shared_emb.shape[1]
    sigma = float(distances.mean() / np.sqrt(dim))  # E||noise|| ~ sigma * sqrt(D) for D this large

    out = job_dir(with_job)
    (out / EMBEDDINGS_DIR).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    emb = open_memmap(
        out / EMBEDDINGS_DIR / "embeddings.npy", mode="w+", dtype=np.float32, shape=(len(ids), dim)
    )
    for start in range(0, len(ids), 50_000):
        block = shared_emb[rows[start : start + 50_000]] + rng.normal(
            0, sigma, (min(50_000, len(ids) - start), dim)
        )
        emb[start : start + 50_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    emb[sample] = real
    emb.flush()
    save_ids_and_meta(out / EMBEDDINGS_DIR, ids.astype(str), emb, meta={"encoder_version": encoder.version})
    write_seconds = time.perf_counter() - t
    t = time.perf_counter()
    index = EmbeddingIndex.build(emb, ids)
    index.save(out / INDEX_DIR)
    index_seconds = time.perf_counter() - t
    with transaction.atomic():
        create_version(
            project=project,
            kind=ModelVersion.Kind.INDEX,
            job=with_job,
            parent=encoder,
            artifacts={
                "embeddings": relative_artifact(out / EMBEDDINGS_DIR),
                "index": relative_artifact(out / INDEX_DIR),
                "n_cells": len(ids),
                "dim": dim,
                "sampled": False,
            },
            metrics={"derived": True, "index_seconds": round(index_seconds, 1)},
        )
    return {
        "dim": dim,
        "embeddings_gb": round(len(ids) * dim * 4 / 1e9, 2),
        "measured_copies": measured_copies,
        "measured_copies_seconds": round(real_seconds, 1),
        "copy_to_source_distance_mean": round(float(distances.mean()), 4),
        "copy_to_source_distance_p90": round(float(np.percentile(distances, 90)), 4),
        "noise_sigma_per_dim": round(sigma, 6),
        "write_seconds": round(write_seconds, 1),
        "ivf": index.is_ivf,
        "index_build_seconds": round(index_seconds, 1),
        "peak_rss_of_this_process_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def run_loop(project: Any, user: Any, *, seed_labels: int, rounds: int, seed: int) -> dict[str, Any]:
    """The loop on one project with a fresh worker; see the module docstring."""
    from django.test import Client
    from django.urls import reverse

    from annotation.models import Cell
    from jobs.models import Job
    from jobs.services import job_create
    from loop.models import QueryBatch, QueryItem

    client = Client()
    client.force_login(user)
    base = f"/api/projects/{project.pk}"
    post_times: list[float] = []
    poll_loop: list[float] = []
    poll_batch: list[float] = []
    page: list[float] = []

    def label(cell_ids: list[int]) -> None:
        labels = dict(Cell.objects.filter(pk__in=cell_ids).values_list("pk", "reference_label__name"))
        for cell_id in cell_ids:
            body = {"cells": [cell_id], "label": labels[cell_id], "seconds_spent": 2.0}
            t = time.perf_counter()
            response = client.post(f"{base}/annotations/", body, content_type="application/json")
            post_times.append(time.perf_counter() - t)
            assert response.status_code == 201, response.content

    def poll(times: int) -> None:
        for _ in range(times):
            for url, bucket in (
                (reverse("api-loop", args=[project.pk]), poll_loop),
                (reverse("api-batch-current", args=[project.pk]), poll_batch),
                (f"/projects/{project.pk}/label/", page),
            ):
                t = time.perf_counter()
                response = client.get(url)
                bucket.append(time.perf_counter() - t)
                assert response.status_code == 200, (url, response.status_code)

    def wait_batch(number: int, t0: float) -> float:
        while not QueryBatch.objects.filter(project=project, number=number).exists():
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"no batch {number} after 600 s; see {SCRATCH}/*.log")
            time.sleep(0.02)
        return time.perf_counter() - t0

    def finished(job_id: int) -> Job:
        job = Job.objects.get(pk=job_id)
        while job.status not in (Job.Status.SUCCEEDED, Job.Status.FAILED):
            time.sleep(0.05)
            job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error
        return job

    worker = start_worker(f"worker-{project.pk}")
    time.sleep(8)  # its imports, before the first timed job
    sampler = MemorySampler(worker.pid)
    record: list[dict[str, Any]] = []
    try:
        queried = set(QueryItem.objects.filter(batch__project=project).values_list("cell_id", flat=True))
        pool = [
            pk
            for pk in Cell.objects.filter(project=project, role=Cell.Role.POOL).values_list("pk", flat=True)
            if pk not in queried
        ]
        rng = np.random.default_rng(seed)
        label([int(c) for c in rng.choice(pool, size=seed_labels, replace=False)])
        newest = QueryBatch.objects.filter(project=project).order_by("-number").first()
        next_number = (newest.number if newest else 0) + 1
        t0 = time.perf_counter()
        job = job_create(kind=Job.Kind.RETRAIN, project=project, created_by=user)
        first = {"from": "retrain job", "wait_s": round(wait_batch(next_number, t0), 3)}
        first["job_stages_s"] = finished(job.pk).result["seconds"]
        record.append(first)
        print(json.dumps(first), flush=True)
        for _ in range(rounds):
            poll(5)
            batch = QueryBatch.objects.filter(project=project).order_by("-number").first()
            assert batch is not None
            label(list(batch.items.values_list("cell_id", flat=True)))
            poll(5)
            t0 = time.perf_counter()
            response = client.post(f"{base}/batches/{batch.pk}/submit/")
            assert response.status_code == 202, response.content
            wall = wait_batch(batch.number + 1, t0)
            job = finished(response.json()["retrain_job"]["id"])
            stages = job.result["seconds"]
            record.append(
                {
                    "labels": batch.labelled_count + batch.items.count(),
                    "submit_to_next_batch_s": round(wall, 3),
                    "job_stages_s": stages,
                    "job_total_s": round(sum(stages.values()), 3),
                    "validation_macro_f1": job.result.get("validation_macro_f1"),
                }
            )
            print(json.dumps(record[-1]), flush=True)
        time.sleep(2)  # the label check that follows a retrain, on the side queue
    finally:
        memory = sampler.stop()
        stop_worker(worker)
    walls = [r["submit_to_next_batch_s"] for r in record if "submit_to_next_batch_s" in r]
    return {
        "cells": Cell.objects.filter(project=project).count(),
        "label_post": summary_ms(post_times),
        "poll_loop": summary_ms(poll_loop),
        "poll_batch": summary_ms(poll_batch),
        "label_page_html": summary_ms(page),
        "rounds": record,
        "submit_to_next_batch_s": {"median": statistics.median(walls), "max": max(walls)},
        "worker_memory": memory,
    }


def export_csv(project: Any) -> dict[str, Any]:
    """The CSV export (one row per cell, with the model's prediction) as the export job writes it."""
    from exports.service import write_csv

    out = SCRATCH / f"export-{project.pk}.csv"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    written = write_csv(project, out, lambda fraction, message: None)
    seconds = time.perf_counter() - t
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {
        "cells": written["cells"],
        "seconds": round(seconds, 1),
        "cells_per_second": round(written["cells"] / seconds),
        "mb": round(out.stat().st_size / 1e6, 1),
        "peak_rss_growth_mib": round(growth / 1024, 1),
    }


def endpoint_times(project: Any, user: Any, repeat: int = 10) -> dict[str, Any]:
    """Server time of the pages and reads a lead opens, other than the labelling page's poll."""
    from django.test import Client

    from annotation.models import Cell

    client = Client()
    client.force_login(user)
    # The cells API pages by keyset (a cursor holding the last id seen): the last page's cursor names
    # the id before its first cell, as following ``next`` to the end would give.
    ids = list(Cell.objects.filter(project=project).order_by("-id").values_list("id", flat=True)[:101])
    last_cursor = quote(base64.b64encode(urlencode({"p": ids[-1]}).encode()).decode())
    urls = {
        "project_list": "/api/projects/",
        "project_detail": f"/api/projects/{project.pk}/",
        "cells_first_page": f"/api/projects/{project.pk}/cells/",
        "cells_last_page": f"/api/projects/{project.pk}/cells/?cursor={last_cursor}",
        "dashboard_page": f"/projects/{project.pk}/dashboard/",
        "dashboard_data": f"/projects/{project.pk}/dashboard/data.json",
        "review_queue": f"/api/projects/{project.pk}/review/",
    }
    times: dict[str, Any] = {}
    for name, url in urls.items():
        seconds = []
        for _ in range(repeat):
            t = time.perf_counter()
            response = client.get(url)
            seconds.append(time.perf_counter() - t)
            assert response.status_code == 200, (url, response.status_code)
        if name == "cells_last_page":
            assert response.json()["next"] is None and len(response.json()["results"]) == 100
        if name == "dashboard_page":  # the kept shift report, not the page's "being computed" note
            assert b'id="shift-table"' in response.content, "no shift report on the dashboard"
        times[name] = summary_ms(seconds)
    return times


def exports(result: dict[str, Any]) -> None:
    from django.contrib.auth.models import User

    from annotation.models import Project

    user = User.objects.get(username="bench")
    from dashboard.shift import refresh_report

    result["csv_export"], result["endpoints"], result["shift_report_job_s"] = {}, {}, {}
    for name, key in (("shared-16k", "shared_16k"), ("million", "million")):
        project = Project.objects.get(name=name)
        # The ``shift`` job's work (the newest classifier's report, kept for the page), as the side queue
        # runs it after a retrain; the worker of the loop above may have stopped before it ran.
        t = time.perf_counter()
        refresh_report(project)
        result["shift_report_job_s"][key] = round(time.perf_counter() - t, 2)
        result["endpoints"][key] = endpoint_times(project, user)
        print(key, json.dumps(result["endpoints"][key]), flush=True)
        result["csv_export"][key] = export_csv(project)
        print(key, json.dumps(result["csv_export"][key]), flush=True)
    result["endpoints_million_over_16k_p95"] = {
        name: round(result["endpoints"]["million"][name]["p95_ms"] / times["p95_ms"], 2)
        for name, times in result["endpoints"]["shared_16k"].items()
    }


def warm_import(manifests: list[Path]) -> dict[str, Any]:
    """Import and floor with every file in the page cache (10 GB of files fit in this machine's 24 GiB):
    the import of the main run read most files from disk, its floor from the cache."""
    from django.contrib.auth.models import User

    paths = manifest_paths(manifests)
    t = time.perf_counter()
    for path in paths:
        path.read_bytes()
    warm_seconds = time.perf_counter() - t
    user = User.objects.get(username="bench")
    _, _, report = import_project(f"million-warm-{int(time.time())}", manifests, user)
    floor = read_hash_verify(paths)
    report.update(
        {
            "untimed_read_pass_seconds": round(warm_seconds, 1),
            "floor_seconds": round(floor, 1),
            "import_over_floor": round(report["import_seconds"] / floor, 2),
        }
    )
    print(json.dumps(report), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="the shared manifest")
    parser.add_argument("--files", type=Path, required=True, help="bench/million_files.py's --out")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed-labels", type=int, default=96)
    parser.add_argument("--measured-copies", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument(
        "--real-embed",
        action="store_true",
        help="embed every million cell for real with the product's sharded embed job (about an hour here) "
        "instead of deriving the embeddings",
    )
    parser.add_argument("--embed-workers", type=int, default=2, help="train workers for --real-embed")
    parser.add_argument("--embed-threads", type=int, default=1, help="torch threads per --real-embed worker")
    parser.add_argument(
        "--warm-import-only",
        action="store_true",
        help="import the million files again into a new project of an earlier run's database, after an "
        "untimed pass that reads every file, then time the floor: both from the page cache; add to --out",
    )
    parser.add_argument(
        "--extra-only",
        action="store_true",
        help="time the other endpoints and the CSV exports of an earlier run's projects; add to --out",
    )
    args = parser.parse_args()
    configure(args.database_url, args.broker, fresh=not (args.extra_only or args.warm_import_only))
    if args.warm_import_only:
        assert args.out is not None and args.out.is_file(), "--warm-import-only adds to an earlier --out"
        earlier = json.loads(args.out.read_text())
        earlier["million_import_warm"] = warm_import(sorted(args.files.glob("part-*.csv")))
        earlier["warm_import_command"] = "python bench/million.py " + " ".join(sys.argv[1:])
        args.out.write_text(json.dumps(earlier, indent=2) + "\n")
        return
    if args.extra_only:
        assert args.out is not None and args.out.is_file(), "--extra-only adds to an earlier --out"
        earlier = json.loads(args.out.read_text())
        exports(earlier)
        earlier["export_command"] = "python bench/million.py " + " ".join(sys.argv[1:])
        args.out.write_text(json.dumps(earlier, indent=2) + "\n")
        return

    from django.contrib.auth.models import User
    from django.db import connection

    from jobs.models import Job
    from jobs.services import job_create
    from tests.conftest import run_queued_jobs

    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    result: dict[str, Any] = {
        "command": "python bench/million.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB",
        "database": connection.vendor,
        "date": time.strftime("%Y-%m-%d"),
    }
    user = User.objects.create_user("bench", password="x")

    shared, shared_duplicates, result["shared_import"] = import_project("shared-16k", [args.data], user)
    manifests = sorted(args.files.glob("part-*.csv"))
    million, _, result["million_import"] = import_project("million", manifests, user)
    if not args.skip_floor:
        paths = manifest_paths(manifests)
        floor = read_hash_verify(paths)
        result["million_import"]["floor_seconds"] = round(floor, 1)
        result["million_import"]["import_over_floor"] = round(
            result["million_import"]["import_seconds"] / floor, 2
        )
        print(f"floor {floor:.0f} s for {len(paths)} files", flush=True)

    t = time.perf_counter()
    job_create(kind=Job.Kind.PRETRAIN, project=shared, enqueue=False)
    run_queued_jobs()  # encoder, every cell embedded, index, cold-start batch, map: in this process
    result["shared_index_seconds"] = round(time.perf_counter() - t, 1)
    print(f"shared project indexed in {result['shared_index_seconds']} s", flush=True)
    if args.real_embed:
        result["million_index"] = real_index(million, shared, args.embed_workers, args.embed_threads)
    else:
        result["million_index"] = derived_index(
            million, shared, shared_duplicates, args.files, args.measured_copies, args.seed
        )
    print(json.dumps(result["million_index"]), flush=True)

    result["loop"] = {
        "shared_16k": run_loop(
            shared, user, seed_labels=args.seed_labels, rounds=args.rounds, seed=args.seed
        ),
        "million": run_loop(million, user, seed_labels=args.seed_labels, rounds=args.rounds, seed=args.seed),
    }
    small, large = result["loop"]["shared_16k"], result["loop"]["million"]
    result["million_over_16k_p95"] = {
        key: round(large[key]["p95_ms"] / small[key]["p95_ms"], 2)
        for key in ("label_post", "poll_loop", "poll_batch", "label_page_html")
    }
    exports(result)
    result["load_average"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
