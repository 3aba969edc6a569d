"""How long `make run DATA=...` takes to show the first batch, and what happens after it.

    .venv/bin/python bench/demo_start.py --data ../shared/data/leukocytes/manifest.csv --cells 300 \
        --out bench/results/demo_start_300.json
    .venv/bin/python bench/demo_start.py --data ../shared/data/leukocytes/manifest.csv \
        --out bench/results/demo_start_full.json

On a fresh database in a scratch folder (var/bench-demo), as `make run` does: migrate, `bootstrap_demo
--data` (import, validation hold-out, loop start; timed apart), then the three workers of `make run` (the
loop's with the beat, `train`, `side`; same command lines). From the moment the workers are started, it
records when the first batch is in the database (the labelling page shows it on its next poll), when the
background pretraining starts and ends, and when the next batch comes from the pretrained encoder's index.
Meanwhile a perfect annotator (the hidden reference labels) labels batch 1 and submits it as soon as the
train worker is busy (indexing every cell, or pretraining): the time from submit to the next batch is
measured while that runs on the other worker.
``--cells N`` imports a random N-cell subset of the manifest (seeded; the chosen images are copied
into the scratch folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import secrets
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

# A throwaway key for the scratch database (the settings refuse to load with DEBUG off and no key);
# nothing it signs outlives the run. Child processes inherit it.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / "var" / "bench-demo"


def subset(manifest: Path, n: int, seed: int, scratch: Path = SCRATCH) -> Path:
    """A manifest of ``n`` random rows next to copies of their images, in ``scratch``/data."""
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    chosen = random.Random(seed).sample(rows, min(n, len(rows)))
    folder = scratch / "data"
    folder.mkdir(parents=True, exist_ok=True)
    # Copied, not linked: import refuses symlinks that leave the import's root (issue 11).
    for row in chosen:
        target = folder / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest.parent / row["path"], target)
    out = folder / "manifest.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(chosen)
    return out


def manage(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t, 1)


# The workers of `make run` (Makefile, target run), with this interpreter.
CELERY_WORKER = (sys.executable, "-m", "celery", "-A", "config", "worker")
WORKERS = {
    "loop": ["-B", "-n", "loop@%h", "--queues=celery"],
    "train": ["-n", "train@%h", "--queues=train"],
    "side": ["-n", "side@%h", "--queues=side"],
}


def start_workers(scratch: Path = SCRATCH) -> dict[str, subprocess.Popen[bytes]]:
    procs = {}
    for name, extra in WORKERS.items():
        log = (scratch / f"worker-{name}.log").open("wb")
        procs[name] = subprocess.Popen(
            [*CELERY_WORKER, *extra, "--loglevel=INFO", "--concurrency=1", "--pool=solo"],
            cwd=REPO,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return procs


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a demo run (this script and bench/demo_batches.py)."""
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=None, help="a random subset of this many cells")
    parser.add_argument("--pretrain-minutes", type=float, default=3.0, help="bootstrap_demo's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=None)


def fresh_scratch(args: argparse.Namespace) -> Path:
    """An empty scratch folder as this process's var/ (its database, media and logs), and the manifest
    to import: ``--data``, or a ``--cells`` subset copied into the scratch folder."""
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    os.environ["LEUKOLOOP_VAR_DIR"] = str(SCRATCH)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    return subset(args.data, args.cells, args.seed) if args.cells else args.data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_demo_arguments(parser)
    args = parser.parse_args()

    data = fresh_scratch(args)
    result: dict[str, Any] = {
        "command": "python bench/demo_start.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "measured": datetime.now().isoformat(timespec="seconds"),
        "migrate_seconds": manage("migrate", "--no-input"),
        "bootstrap_seconds": manage(
            "bootstrap_demo", "--data", str(data), "--pretrain-minutes", str(args.pretrain_minutes)
        ),
    }
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.utils import timezone

    from annotation.models import Cell, Project
    from annotation.services.annotations import annotation_create
    from jobs.models import Job
    from loop.models import ModelVersion, QueryBatch
    from loop.services.batches import batch_submit

    project = Project.objects.get(is_synthetic_demo=False)
    result["cells"] = Cell.objects.filter(project=project).count()
    result["validation_cells"] = Cell.objects.filter(project=project, role=Cell.Role.VALIDATION).count()
    settings_used = ("encoder_backbone", "image_size", "ssl_method", "pretrain_minutes", "query_batch_size")
    result["project"] = {k: getattr(project, k) for k in settings_used}
    print(f"{result['cells']} cells in {result['bootstrap_seconds']} s; starting the workers", flush=True)

    t0 = timezone.now()
    procs = start_workers()
    timeline: dict[str, float] = {}

    def mark(name: str, when: datetime | None = None) -> None:
        if name not in timeline:
            timeline[name] = round(((when or timezone.now()) - t0).total_seconds(), 1)
            print(f"{timeline[name]:7.1f} s  {name}", flush=True)

    admin = User.objects.get(username="admin")
    submitted_at: datetime | None = None
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited; see {SCRATCH}/worker-{name}.log")
                log = (SCRATCH / f"worker-{name}.log").read_text(errors="replace")
                if " ready." in log:
                    mark(f"worker {name} ready")
            failed = Job.objects.filter(project=project, status=Job.Status.FAILED).first()
            if failed is not None:
                raise RuntimeError(f"{failed.kind} job failed: {failed.error[:2000]}")
            batches = list(
                QueryBatch.objects.filter(project=project).select_related("index__parent").order_by("number")
            )
            if batches:
                mark("first batch", batches[0].created_at)
            pretrain = Job.objects.filter(project=project, kind=Job.Kind.PRETRAIN).first()
            if pretrain is not None and pretrain.started_at:
                mark("pretraining starts", pretrain.started_at)
            if pretrain is not None and pretrain.finished_at:
                mark("pretraining ends", pretrain.finished_at)
            # The annotator labels batch 1 and submits it while the train worker is busy.
            training = Job.objects.filter(
                project=project, kind__in=[Job.Kind.EMBED, Job.Kind.PRETRAIN], status=Job.Status.RUNNING
            ).first()
            if batches and submitted_at is None and training is not None:
                for item in batches[0].items.select_related("cell__reference_label"):
                    annotation_create(cell=item.cell, annotator=admin, label=item.cell.reference_label)
                batch_submit(batch=batches[0], user=admin)
                submitted_at = timezone.now()
                result["train_worker_busy_with_at_submit"] = training.kind
                mark(f"batch 1 submitted ({training.kind} running on the train worker)", submitted_at)
            retrained = [b for b in batches if b.classifier_id is not None]
            if submitted_at is not None and retrained:
                mark(f"batch {retrained[0].number} from the retrain", retrained[0].created_at)
                result["submit_to_next_batch_seconds"] = round(
                    (retrained[0].created_at - submitted_at).total_seconds(), 2
                )
                retrain = Job.objects.filter(project=project, kind=Job.Kind.RETRAIN).order_by("pk").first()
                if retrain is not None:
                    result["retrain_stage_seconds"] = retrain.result.get("seconds")
            for index in ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.INDEX):
                assert index.parent is not None
                what = "pretrained" if index.parent.version >= 2 else "initial"
                extent = "a sample of" if index.artifacts.get("sampled") else "every cell:"
                mark(
                    f"index v{index.version}, {what} encoder, {extent} {index.artifacts['n_cells']} cells",
                    index.created_at,
                )
            for batch in batches:
                if batch.index is not None:
                    mark(f"batch {batch.number} on index v{batch.index.version}", batch.created_at)
            new_index = [b for b in batches if b.index and b.index.parent and b.index.parent.version >= 2]
            if new_index:
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"not done in {args.timeout} s; see {SCRATCH}/worker-*.log")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
    result["seconds_after_starting_the_workers"] = timeline
    result["indexes"] = {
        f"v{v.version}": {"n_cells": v.artifacts.get("n_cells"), **v.metrics}
        for v in ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.INDEX).order_by(
            "version"
        )
    }
    encoder = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.ENCODER, version=2).first()
    if encoder is not None:
        result["pretrained_encoder"] = encoder.metrics
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
