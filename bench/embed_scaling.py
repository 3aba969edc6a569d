"""Sharded embedding: throughput of one train worker against two, through the product's own jobs.

    .venv/bin/python bench/embed_scaling.py --cells 8192 --out bench/results/embed_scaling.json

A fresh scratch project (SQLite and the filesystem broker, var/bench-scaling) holds ``--cells`` real
cells of the shared set (the first of each class by import order, as many per class as fit). Its encoder
is the loop's start encoder (ImageNet
EfficientNet-Lite0, 64 px, cell crop). Then, one setup after the other, one ``embed`` job of every cell,
with shards of ``--shard`` cells (``LEUKOLOOP_EMBED_SHARD_CELLS``), run by real Celery worker processes
reading the train queue:

- ``1 worker x 2 threads``: what ``make run`` starts (one train worker, torch on both cores);
- ``1 worker x 1 thread``: the per-worker figure;
- ``2 workers x 1 thread``: a second worker added (``LEUKOLOOP_TORCH_THREADS=1`` each), as a lab adds a
  machine; the embed job's worker and the other one share the shards.

Reported per setup: wall time from the job's creation to its index, cells per second, and which worker
embedded how many shards. The images are decoded from JPEG in each run (no cache), as in the product.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / "var" / "bench-scaling"

SETUPS = (("1 worker x 2 threads", 1, 2), ("1 worker x 1 thread", 1, 1), ("2 workers x 1 thread", 2, 1))


def configure() -> None:
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    os.environ["LEUKOLOOP_VAR_DIR"] = str(SCRATCH)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_workers(count: int, threads: int, shard: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "LEUKOLOOP_TORCH_THREADS": str(threads), "LEUKOLOOP_EMBED_SHARD_CELLS": str(shard)}
    return [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "config", "worker", f"--hostname=train{k}@%h"),
                *("--pool=solo", "--queues=train", "--loglevel=WARNING"),
            ],
            cwd=REPO,
            env=env,
            stdout=(SCRATCH / f"worker-{count}x{threads}-{k}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for k in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/leukocytes/manifest.csv")
    parser.add_argument("--cells", type=int, default=8192)
    parser.add_argument("--shard", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configure()

    from django.contrib.auth.models import User

    from annotation.importing.service import LabelMode, import_cells
    from annotation.models import Cell
    from annotation.services.projects import project_create
    from jobs.models import Job
    from jobs.services import job_create
    from loop.models import ModelVersion
    from loop.services.start import initial_encoder_artifacts
    from loop.services.versions import create_version

    user = User.objects.create_user("bench", password="x")
    project = project_create(name="scaling", lead=user)
    # The whole set is imported (a manifest's paths must lie under its folder), then all but a stratified
    # ``--cells`` of it are deleted.
    report = import_cells(project=project, source=args.data, labels=LabelMode.REFERENCE)
    per_class = -(-args.cells // project.classes.count())
    keep: list[int] = []
    for label_class in project.classes.all():
        keep += list(
            Cell.objects.filter(project=project, reference_label=label_class)
            .order_by("pk")
            .values_list("pk", flat=True)[:per_class]
        )
    keep = sorted(keep)[: args.cells]
    Cell.objects.filter(project=project).exclude(pk__in=keep).delete()
    cells = Cell.objects.filter(project=project).count()
    encoder = create_version(
        project=project,
        kind=ModelVersion.Kind.ENCODER,
        job=None,
        artifacts=initial_encoder_artifacts(project),
        metrics={"method": "none"},
    )
    print(f"imported {report.imported} cells, kept {cells}", flush=True)
    result: dict[str, Any] = {
        "command": "python bench/embed_scaling.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cells": cells,
        "shard_cells": args.shard,
        "encoder": f"{project.encoder_backbone} ImageNet, {project.image_size} px, {project.input_crop} crop",
        "setups": [],
    }
    for name, count, threads in SETUPS:
        workers = start_workers(count, threads, args.shard)
        time.sleep(15)  # the workers' start-up (imports) is not part of the embedding
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        job = job_create(kind=Job.Kind.EMBED, project=project, params={"encoder_version": encoder.pk})
        while True:
            job.refresh_from_db()
            if job.status in Job.FINISHED:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        if job.status != Job.Status.SUCCEEDED:
            raise RuntimeError(f"{name}: embed job {job.status}: {job.error[:500]}")
        index = ModelVersion.objects.get(job=job, kind=ModelVersion.Kind.INDEX)
        entry = {
            "setup": name,
            "workers": count,
            "torch_threads_per_worker": threads,
            "wall_seconds": round(wall, 1),
            "cells_per_second": round(cells / wall, 1),
            "shards": index.metrics.get("shards"),
            "shards_embedded_by_the_embed_job": index.metrics.get("shards_embedded_by_this_job"),
            "load_average_before": round(load_before, 2),
        }
        result["setups"].append(entry)
        print(json.dumps(entry), flush=True)
    base = result["setups"][0]["cells_per_second"]
    single = result["setups"][1]["cells_per_second"]
    two = result["setups"][2]["cells_per_second"]
    result["two_workers_over_one_worker_2_threads"] = round(two / base, 2)
    result["two_workers_over_one_worker_1_thread"] = round(two / single, 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
