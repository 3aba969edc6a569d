"""Latency of the labelling loop on the 16,230-cell shared project.

    .venv/bin/python bench/loop_latency.py --data ../shared/data/leukocytes/manifest.csv \
        --out bench/results/loop_latency.json [--rounds 5] [--database-url postgres://...]

Measures, on a fresh database in a scratch folder (var/bench-loop):
- label submission: server time of POST /api/projects/<id>/annotations/ (one cell per request), p50/p95;
- next batch page: server time of GET /api/projects/<id>/batches/current/ and of the labelling page, p50/p95;
- submit -> next batch: from POST .../batches/<id>/submit/ of a 48-cell batch until the next batch, chosen
  by the retrained classifier, is in the database, with a real Celery worker process behind the broker;
  the retrain job's own stage timings (load, fit, validate, score, select, write) say what dominates.
With ``--finetune-beside``, one worker per queue (loop, train, side: what ``make run`` starts) and, after
the first round, a
fine-tune of the whole encoder (``Project.finetune_image_size``, 128 px) starts there: the later rounds
are timed while it (and the re-embedding that follows it) runs, and each round records whether it did.
With ``--attributes``, each cell is labelled with its reference attributes too, so the retrains suggest
attributes and, after each batch, an ``attribute_heads`` job fits the measurement heads on the side
worker; each round records whether its batch got suggestions, how many of them came after the write
(cells not measured before it: ``loop.handlers.batch_attributes``) and when the last one did, and how
many head versions and measured cells were stored by then. ``--seconds-per-label`` paces the labels as an
expert would, so that the side jobs a batch starts run while the next batch is labelled;
``--measure-first`` measures every pool cell before the timed rounds (the loop once the measure job is done).
Server times are taken with Django's test client in this process (the WSGI stack without a network).
The encoder is EfficientNet-Lite0's ImageNet weights at 64 px (no pretraining: it does not change the
latencies, only the accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# A throwaway key for the scratch database (the settings refuse to load with DEBUG off and no key);
# nothing it signs outlives the run. Child processes inherit it.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / "var" / "bench-loop"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "max_ms": round(max(ms), 2),
    }


def configure(database_url: str | None) -> None:
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    os.environ["LEUKOLOOP_VAR_DIR"] = str(SCRATCH)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    if database_url:
        from django.db import connection

        with connection.cursor() as cursor:  # a fresh schema
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--finetune-beside",
        action="store_true",
        help="time rounds 2.. while a fine-tune runs on a train worker",
    )
    parser.add_argument(
        "--seconds-per-label",
        type=float,
        default=0.0,
        help="pause this long before each label, as an expert takes time over a cell (the side jobs "
        "that follow a batch run meanwhile); 0: labels as fast as the API answers",
    )
    parser.add_argument(
        "--measure-first",
        action="store_true",
        help="measure every pool cell (what the measure job does) before the timed rounds: the loop "
        "once a project's cells are measured",
    )
    parser.add_argument(
        "--attributes",
        action="store_true",
        help="label each cell's reference attributes too: the retrains suggest attributes, and an "
        "attribute_heads job fits the measurement heads on the side worker after each batch",
    )
    args = parser.parse_args()
    configure(args.database_url)

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    from annotation.importing.service import LabelMode, import_cells
    from annotation.models import Cell, Membership, Project
    from annotation.services.cells import hold_out_validation
    from annotation.services.memberships import membership_set
    from annotation.services.projects import project_create
    from jobs.models import Job
    from jobs.services import job_create
    from loop.models import CellMeasurement, ModelVersion, QueryBatch, QueryItem
    from tests.conftest import run_queued_jobs  # runs the queued jobs in this process

    result: dict[str, Any] = {
        "command": "python bench/loop_latency.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "database": connection.vendor,
    }
    user = User.objects.create_user("bench", password="x")
    project = project_create(name="bench", lead=user)
    membership_set(project=project, user=user, role=Membership.Role.LEAD)
    Project.objects.filter(pk=project.pk).update(pretrain_minutes=0, image_size=64, query_batch_size=48)
    t = time.perf_counter()
    report = import_cells(project=project, source=args.data, labels=LabelMode.REFERENCE)
    result["import_seconds"] = round(time.perf_counter() - t, 2)
    result["cells"] = report.imported
    result["validation_cells"] = hold_out_validation(project=project)
    print(f"imported {report.imported} cells, {result['validation_cells']} for validation", flush=True)

    # The workers start now, so that their start-up (imports) is over before the first timed round. With
    # --finetune-beside the loop's worker leaves the train queue to a second one, as a lab would run them.
    def start_worker(queues: str, log: str, name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "config", "worker", f"--hostname={name}@%h"),
                *("--pool=solo", f"--queues={queues}", "--loglevel=WARNING"),
            ],
            cwd=REPO,
            env={**os.environ},
            stdout=(SCRATCH / log).open("wb"),
            stderr=subprocess.STDOUT,
        )

    if args.finetune_beside:  # one worker per queue, as `make run` starts them
        workers = [
            start_worker("celery", "worker.log", "loop"),
            start_worker("train", "train-worker.log", "train"),
            start_worker("side", "side-worker.log", "side"),
        ]
    else:
        workers = [start_worker("celery,train,side", "worker.log", "loop")]
    result["finetune_beside"] = args.finetune_beside
    result["attributes"] = args.attributes
    result["seconds_per_label"] = args.seconds_per_label
    result["measure_first"] = args.measure_first
    # Encoder + embeddings + FAISS index + cold-start batch, run here (no broker needed).
    job_create(kind=Job.Kind.PRETRAIN, project=project, enqueue=False)
    t = time.perf_counter()
    run_queued_jobs()
    # The follow-up (cold-start query) job may have gone to the worker through the broker instead.
    deadline = time.perf_counter() + 300
    while not QueryBatch.objects.filter(project=project).exists():
        if time.perf_counter() > deadline:
            raise TimeoutError("no cold-start batch; see var/bench-loop/worker.log")
        time.sleep(0.1)
    result["index_build_seconds"] = round(time.perf_counter() - t, 1)
    index_job = Job.objects.get(project=project, kind=Job.Kind.EMBED)
    result["embedding"] = index_job.result.get("metrics", {})
    print(f"indexed in {result['index_build_seconds']} s", flush=True)

    if args.measure_first:
        from loop.handlers.attribute_suggestions import measurements_for
        from loop.handlers.measurement_heads import MEASURE_CHUNK, unmeasured_cells

        t = time.perf_counter()
        wanted = list(unmeasured_cells(project).order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(wanted), MEASURE_CHUNK):
            measurements_for(wanted[start : start + MEASURE_CHUNK])
        result["measure_first_seconds"] = round(time.perf_counter() - t, 1)
        print(f"measured {len(wanted)} cells in {result['measure_first_seconds']} s", flush=True)

    client = Client()
    client.force_login(user)
    label_times: list[float] = []
    batch_api_times: list[float] = []
    page_times: list[float] = []
    rounds: list[dict[str, Any]] = []
    finetune: Job | None = None
    try:
        for round_number in range(args.rounds):
            if args.finetune_beside and round_number == 1:
                finetune = job_create(kind=Job.Kind.FINETUNE, project=project, params={"epochs": 20})
                while Job.objects.get(pk=finetune.pk).status == Job.Status.QUEUED:
                    time.sleep(0.2)  # the train worker has taken it
            batch = QueryBatch.objects.filter(project=project).order_by("-number").first()
            assert batch is not None
            for _ in range(10):
                t = time.perf_counter()
                response = client.get(f"/api/projects/{project.pk}/batches/current/")
                batch_api_times.append(time.perf_counter() - t)
                assert response.status_code == 200
                t = time.perf_counter()
                response = client.get(f"/projects/{project.pk}/label/")
                page_times.append(time.perf_counter() - t)
                assert response.status_code == 200
            items = list(batch.items.select_related("cell__reference_label"))
            for item in items:
                label = item.cell.reference_label
                body = {"cells": [item.cell_id], "label": label.name if label else None, "seconds_spent": 2.0}
                if args.attributes and item.cell.reference_attributes:
                    body["attributes"] = item.cell.reference_attributes
                time.sleep(args.seconds_per_label)
                t = time.perf_counter()
                response = client.post(
                    f"/api/projects/{project.pk}/annotations/", body, content_type="application/json"
                )
                label_times.append(time.perf_counter() - t)
                assert response.status_code == 201, response.content
            t0 = time.perf_counter()
            response = client.post(f"/api/projects/{project.pk}/batches/{batch.pk}/submit/")
            assert response.status_code == 202
            job_id = response.json()["retrain_job"]["id"]
            while not QueryBatch.objects.filter(project=project, number=batch.number + 1).exists():
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError("no next batch after 300 s; see var/bench-loop/worker.log")
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            # The cells the retrain had not measured get their attribute suggestions after the write.
            while QueryBatch.objects.filter(
                project=project, number=batch.number + 1, attribute_suggestions_pending=True
            ).exists():
                time.sleep(0.02)
            suggestions_wall = time.perf_counter() - t0
            job = Job.objects.get(pk=job_id)
            while job.status != Job.Status.SUCCEEDED:
                time.sleep(0.05)
                job.refresh_from_db()
            stages = job.result["seconds"]
            beside = None
            if finetune is not None:
                active = Job.objects.filter(
                    project=project, kind__in=[Job.Kind.FINETUNE, Job.Kind.EMBED], status=Job.Status.RUNNING
                ).values_list("kind", flat=True)
                beside = sorted(active)  # what ran on the train worker when this round ended
            rounds.append(
                {
                    "beside": beside,
                    "labels": batch.labelled_count + len(items),
                    "submit_to_next_batch_s": round(wall, 3),
                    # Until every cell of the next batch has its attribute suggestions (with --attributes).
                    "submit_to_all_attribute_suggestions_s": round(suggestions_wall, 3),
                    "suggested_after_write": job.result.get("attribute_suggestions_after_write", 0),
                    "job_stages_s": stages,
                    "job_total_s": round(sum(stages.values()), 3),
                    "queue_and_overhead_s": round(wall - sum(stages.values()), 3),
                    "validation_macro_f1": job.result.get("validation_macro_f1"),
                    # With --attributes: whether this batch's cells got attribute suggestions, and
                    # how many measurement-head versions the side worker had stored by then.
                    "attribute_suggestions": QueryItem.objects.filter(batch__project=project)
                    .filter(batch__number=batch.number + 1)
                    .exclude(attribute_suggestions={})
                    .count(),
                    "attribute_heads_versions": ModelVersion.objects.filter(
                        project=project, kind=ModelVersion.Kind.ATTRIBUTE_HEADS
                    ).count(),
                    "cells_measured": CellMeasurement.objects.filter(cell__project=project).count(),
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a warm shutdown waits for its job (a fine-tune): stop it
                worker.kill()
                worker.wait(timeout=30)
    result["label_submit"] = summary_ms(label_times)
    result["batch_api"] = summary_ms(batch_api_times)
    result["label_page_html"] = summary_ms(page_times)
    result["rounds"] = rounds
    walls = [r["submit_to_next_batch_s"] for r in rounds]
    result["submit_to_next_batch_s"] = {"median": statistics.median(walls), "max": max(walls)}
    busy = [r["submit_to_next_batch_s"] for r in rounds if r.get("beside")]
    if busy:
        result["submit_to_next_batch_while_training_s"] = {
            "rounds": len(busy),
            "median": statistics.median(busy),
            "max": max(busy),
        }
    complete = [r["submit_to_all_attribute_suggestions_s"] for r in rounds if r.get("beside")]
    if busy and args.attributes:
        result["submit_to_all_attribute_suggestions_while_training_s"] = {
            "median": statistics.median(complete),
            "max": max(complete),
        }
    result["load_average"] = os.getloadavg()
    stage_totals: dict[str, float] = {}
    for r in rounds:
        for name, seconds in r["job_stages_s"].items():
            stage_totals[name] = stage_totals.get(name, 0.0) + seconds
    result["dominant_stage"] = max(stage_totals, key=lambda k: stage_totals[k])
    result["cells_check"] = Cell.objects.filter(project=project).count()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
