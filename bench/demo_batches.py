"""The demo as shipped, labelled for N batches: what validation macro-F1 a new user sees.

    .venv/bin/python bench/demo_batches.py --data ../shared/data/leukocytes/manifest.csv --batches 5 \
        --out bench/results/demo_batches.json

The same start as `make run DATA=...` (`bench/demo_start.py`: fresh database in var/bench-demo,
`bootstrap_demo --data`, the three workers of `make run`) with the project's default settings. A perfect
annotator (the hidden reference labels) labels each batch as soon as it is in the database and submits
it; after each submission the script waits for the batch the retrain builds. Per batch it records the
labels so far, the retrained classifier's macro-F1 and ECE on the validation cells (the figures the
dashboard shows) and the encoder version it stood on, and the seconds since the workers started.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_start import REPO, SCRATCH, add_demo_arguments, fresh_scratch, manage, start_workers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_demo_arguments(parser)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()

    data = fresh_scratch(args)
    manage("migrate", "--no-input")
    manage("bootstrap_demo", "--data", str(data), "--pretrain-minutes", str(args.pretrain_minutes))
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.utils import timezone

    from annotation.models import Cell, Project
    from annotation.services.annotations import annotation_create
    from jobs.models import Job
    from loop.models import QueryBatch
    from loop.services.batches import batch_submit

    project = Project.objects.get(is_synthetic_demo=False)
    settings_used = (
        "encoder_backbone",
        "image_size",
        "input_crop",
        "ssl_method",
        "pretrain_minutes",
        "query_strategy",
        "query_batch_size",
        "finetune_every",
    )
    result: dict[str, Any] = {
        "command": "python bench/demo_batches.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "measured": datetime.now().isoformat(timespec="seconds"),
        "cells": Cell.objects.filter(project=project).count(),
        "validation_cells": Cell.objects.filter(project=project, role=Cell.Role.VALIDATION).count(),
        "project": {k: getattr(project, k) for k in settings_used},
        "batches": [],
    }
    admin = User.objects.get(username="admin")
    t0 = timezone.now()
    procs = start_workers()
    deadline = time.monotonic() + args.timeout
    try:
        for number in range(1, args.batches + 1):
            batch = None
            while batch is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batch {number} not there in {args.timeout} s; see {SCRATCH}")
                failed = Job.objects.filter(project=project, status=Job.Status.FAILED).first()
                if failed is not None:
                    raise RuntimeError(f"{failed.kind} job failed: {failed.error[:2000]}")
                batch = QueryBatch.objects.filter(project=project, number=number).first()
                time.sleep(0.5)
            if number > 1:  # the classifier this batch came from: trained on batches 1..number-1
                record_classifier(result, batch, t0)
            for item in batch.items.select_related("cell__reference_label"):
                annotation_create(cell=item.cell, annotator=admin, label=item.cell.reference_label)
            batch_submit(batch=batch, user=admin)
        while True:  # the retrain after the last batch writes batch N+1
            nxt = QueryBatch.objects.filter(project=project, number=args.batches + 1).first()
            if nxt is not None:
                record_classifier(result, nxt, t0)
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the last retrain did not end in time")
            time.sleep(0.5)
    finally:
        stop_workers(procs)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def stop_workers(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL after 30 s: a solo worker finishes its job before it stops (the train
    worker may be minutes into indexing every cell), and what it would write is not measured here."""
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def record_classifier(result: dict[str, Any], batch: Any, t0: datetime) -> None:
    """The classifier that chose ``batch`` (trained on every batch before it), as the dashboard shows it."""
    clf = batch.classifier
    if clf is None:
        raise RuntimeError(f"batch {batch.number} was not chosen by a retrained classifier")
    encoder = clf.parent.parent if clf.parent is not None else None
    entry = {
        "after_batches": batch.number - 1,
        "labels": clf.label_count,
        "validation_macro_f1": clf.metrics.get("macro_f1"),
        "validation_ece": clf.metrics.get("ece"),
        "encoder_version": encoder.version if encoder is not None else None,
        "encoder_method": encoder.artifacts.get("method") if encoder is not None else None,
        "seconds_after_starting_the_workers": round((batch.created_at - t0).total_seconds(), 1),
    }
    result["batches"].append(entry)
    print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
