"""Load test: many annotators labelling at once on the production set-up (`make serve`).

    .venv/bin/python bench/load_test.py --users 50 --duration 180 --cells 3000 \
        --out bench/results/load_test.json

In a scratch folder (var/bench-load) and a scratch PostgreSQL database (dropped at the end, unless
``--keep-db``):
1. migrates, imports ``--cells`` random cells of the shared manifest (seeded; the chosen images are copied
   under the scratch folder: import refuses symlinks that leave its root), creates ``--users`` annotators
   in one project and starts the loop (first batch from the ImageNet weights, no pretraining: the test
   measures serving, and a pretraining would take a core away from it for its whole budget);
2. starts what `make serve` starts: static files collected, gunicorn (3 workers x 4 threads) on PostgreSQL
   + Redis (broker and cache), and the three Celery workers of `make run`, so that a submitted batch is
   really retrained and the next batch really built;
3. waits for the machine to be quiet (1-minute load average at most ``--max-load``, up to ``--max-wait``
   seconds; the load is recorded whatever it is), then runs locust headless (bench/locustfile.py) for
   ``--duration`` seconds, ``--spawn-rate`` users a second, while sampling /proc/loadavg and the database's
   lock waits;
4. checks the database: every label POST acknowledged with a 2xx has exactly one Annotation row with its
   client_key (0 lost, 0 duplicates), and repeats of a request answered as replays;
5. writes one JSON result (latencies seen by the clients and by gunicorn, requests/s, errors by status,
   lost / duplicated labels, load average, machine, command) to ``--out`` and locust's CSV stats beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from demo_start import subset  # the same seeded subset, images copied, as the demo start benchmark

# A throwaway key for the scratch database (the settings refuse to load with DEBUG off and no key), as
# `make serve` keeps a random one; nothing it signs outlives the run. Child processes inherit it.
os.environ["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / "var" / "bench-load"
PG_ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
# Redis databases of their own (the Makefile's defaults are 0 and 1, the loop benchmark's 2), emptied
# before and after the run so that no throttle counter or queued task of another run leaks in.
BROKER_DB, CACHE_DB = 9, 10
REDIS = "redis://127.0.0.1:6379"
PASSWORD = secrets.token_urlsafe(12)
USER_PREFIX = "annotator"

# The server of `make serve` (Makefile: GUNICORN, WEB_WORKERS=3, WEB_THREADS=4), with an access log that
# also gives each request's server time (%(M)s, ms), to tell queueing in the client from time in Django.
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(M)s'
GUNICORN = (
    *("-m", "gunicorn", "config.wsgi", "--workers", "3", "--threads", "4"),
    *("--graceful-timeout", "30", "--no-control-socket", "--access-logformat", ACCESS_FORMAT),
)
# The workers of `make run` (Makefile, target run). `python -m` puts the working directory first on
# sys.path, so a git worktree runs its own code rather than the editable install's.
CELERY_WORKER = (
    "-m",
    "celery",
    "-A",
    "config",
    "worker",
    "--loglevel=INFO",
    "--concurrency=1",
    "--pool=solo",
)
WORKERS = {
    "loop": ("-B", "-n", "loop@%h", "--queues=celery"),
    "train": ("-n", "train@%h", "--queues=train"),
    "side": ("-n", "side@%h", "--queues=side"),
}
# Request names of bench/locustfile.py that the result reports on.
LABEL, POLL, IMAGE = "POST label", "GET loop (poll)", "GET cell image"


# --- set-up ---------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=180, help="seconds of load")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="users started per second")
    parser.add_argument("--cells", type=int, default=3000, help="random cells of the manifest to import")
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "leukocytes" / "manifest.csv"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--database", default="leukoloop_load", help="scratch database, dropped and made anew"
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database for inspection")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-minute load at most this")
    parser.add_argument("--max-wait", type=float, default=900, help="seconds to wait for it, at most")
    return parser.parse_args()


def admin_sql(statement: str) -> None:
    import psycopg2

    connection = psycopg2.connect(PG_ADMIN_DSN)
    connection.autocommit = True  # CREATE / DROP DATABASE refuse to run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def flush_redis() -> None:
    import redis

    for db in (BROKER_DB, CACHE_DB):
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def configure_environment(database: str) -> str:
    """The environment `make serve` gives the server and the workers, pointed at the scratch places."""
    database_url = f"postgres://postgres@127.0.0.1:5432/{database}"
    os.environ.update(
        {
            "LEUKOLOOP_VAR_DIR": str(SCRATCH),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": f"{REDIS}/{BROKER_DB}",
            "LEUKOLOOP_CACHE_URL": f"{REDIS}/{CACHE_DB}",
            "DATABASE_CONN_MAX_AGE": "60",
            "LEUKOLOOP_COLLECTSTATIC": "1",
        }
    )
    return database_url


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def make_project(data: Path, users: int) -> dict[str, Any]:
    """Import the cells, hold out validation cells, add the annotators and start the loop."""
    import django

    sys.path.insert(0, str(REPO))
    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    from annotation.importing.service import LabelMode, import_cells
    from annotation.models import Membership, Project
    from annotation.services.cells import hold_out_validation
    from annotation.services.projects import project_create
    from loop.services.start import loop_start

    lead = User.objects.create_user("lead", password=PASSWORD)
    project = project_create(name="load test", lead=lead)
    # No background pretraining (see the module's docstring); the other settings are the defaults.
    Project.objects.filter(pk=project.pk).update(pretrain_minutes=0)
    project.refresh_from_db()
    started = time.perf_counter()
    report = import_cells(project=project, source=data, labels=LabelMode.REFERENCE)
    import_seconds = time.perf_counter() - started
    validation = hold_out_validation(project=project)
    # One password hash for every annotator: hashing it 50 times would only slow the set-up.
    hashed = make_password(PASSWORD)
    annotators = User.objects.bulk_create(
        [User(username=f"{USER_PREFIX}{n:03d}", password=hashed) for n in range(1, users + 1)]
    )
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.ANNOTATOR) for u in annotators]
    )
    loop_start(project=project, created_by=lead)
    return {
        "project": project.pk,
        "cells": report.imported,
        "validation_cells": validation,
        "import_seconds": round(import_seconds, 1),
        "settings": {
            k: getattr(project, k)
            for k in (
                "encoder_backbone",
                "image_size",
                "query_batch_size",
                "query_strategy",
                "pretrain_minutes",
            )
        },
    }


def start(name: str, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    log = (SCRATCH / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT
    )


def wait_for_loop(project_id: int, procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> float:
    """Until the first batch is there and no job of the loop runs (the test starts on a quiet loop)."""
    from jobs.models import Job
    from jobs.selectors import ACTIVE
    from loop.models import QueryBatch

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        check_alive(procs)
        failed = Job.objects.filter(project_id=project_id, status=Job.Status.FAILED).first()
        if failed is not None:
            raise RuntimeError(f"{failed.kind} job failed: {failed.error[:2000]}")
        busy = Job.objects.filter(project_id=project_id, status__in=ACTIVE).exists()
        if QueryBatch.objects.filter(project_id=project_id).exists() and not busy:
            return round(time.perf_counter() - started, 1)
        time.sleep(1)
    raise TimeoutError(f"no first batch in {timeout} s; see {SCRATCH}/worker-*.log")


def check_alive(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {SCRATCH}/{name}.log")


def wait_for_http(url: str, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(procs)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(max_load: float, max_wait: float) -> dict[str, Any]:
    """Another person's test suites share this machine: wait (every 30 s) for a 1-minute load at most
    ``max_load``, up to ``max_wait`` seconds; go ahead anyway after that, with the load recorded."""
    started = time.monotonic()
    load = load_average()
    while load > max_load and time.monotonic() - started < max_wait:
        print(f"1-minute load {load:.2f} > {max_load}: waiting 30 s", flush=True)
        time.sleep(30)
        load = load_average()
    return {"load_1min_at_start": load, "waited_s": round(time.monotonic() - started), "max_load": max_load}


# --- during the run ---------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Every 5 s: /proc/loadavg, and how many of the scratch database's sessions wait for a lock."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.stop = threading.Event()
        self.load: list[float] = []
        self.lock_waits: list[int] = []
        self.active: list[int] = []

    def run(self) -> None:
        import psycopg2

        connection = psycopg2.connect(PG_ADMIN_DSN)
        connection.autocommit = True
        try:
            while not self.stop.wait(5):
                self.load.append(load_average())
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), "
                        "count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        [self.database],
                    )
                    waits, active = cursor.fetchone() or (0, 0)
                self.lock_waits.append(int(waits))
                self.active.append(int(active))
        finally:
            connection.close()


def run_locust(args: argparse.Namespace, project_id: int, record: Path) -> tuple[list[str], int]:
    command = [
        *(sys.executable, "-m", "locust", "-f", "bench/locustfile.py", "--headless", "--only-summary"),
        *(
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            f"{args.duration}s",
        ),
        *("--host", f"http://127.0.0.1:{args.port}", "--csv", str(SCRATCH / "locust")),
        *("--json-file", str(SCRATCH / "locust"), "--stop-timeout", "5"),
    ]
    env = {
        **os.environ,
        "LOADTEST_PROJECT": str(project_id),
        "LOADTEST_PASSWORD": PASSWORD,
        "LOADTEST_USER_PREFIX": USER_PREFIX,
        "LOADTEST_RECORD": str(record),
    }
    with (SCRATCH / "locust.log").open("wb") as log:
        # locust exits 1 when any request failed; the failures are counted below, not raised.
        code = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    return command, code


# --- figures ------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(max(values), 1),
    }


def client_figures(requests: list[list[Any]], ramp_end: float) -> dict[str, Any]:
    """Latencies as the simulated browsers saw them, per request name: the whole run and the part after
    every user was started (the log-ins' password hashing loads the ramp)."""
    whole: defaultdict[str, list[float]] = defaultdict(list)
    steady: defaultdict[str, list[float]] = defaultdict(list)
    for started, name, ms, _status in requests:
        whole[name].append(ms)
        if started >= ramp_end:
            steady[name].append(ms)
    return {
        "whole_run": {name: summary_ms(values) for name, values in sorted(whole.items())},
        "after_ramp": {name: summary_ms(values) for name, values in sorted(steady.items())},
    }


def status_figures(requests: list[list[Any]]) -> dict[str, Any]:
    by_status = Counter(status for _, _, _, status in requests)
    errors: defaultdict[str, Counter[int]] = defaultdict(Counter)
    for _, name, _, status in requests:
        if not 200 <= status < 400:
            errors[name][status] += 1
    starts = [r[0] for r in requests]
    span = (max(starts) - min(starts)) if starts else 0.0
    return {
        "requests": len(requests),
        "requests_per_s": round(len(requests) / span, 1) if span else None,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "errors_by_request": {name: {str(k): v for k, v in c.items()} for name, c in sorted(errors.items())},
        "status_5xx": sum(v for k, v in by_status.items() if k >= 500),
        "status_429": by_status.get(429, 0),
        "no_answer": by_status.get(0, 0),
    }


_ACCESS = re.compile(r'^\S+ "(\S+) (\S+) [^"]*" (\d{3}) (\d+)$')


def server_figures(access_log: Path) -> dict[str, Any]:
    """Server time (gunicorn's %(M)s: from the request read to the response written) of the three kinds
    of request the result is about."""
    kinds = {
        LABEL: re.compile(r"^POST /api/projects/\d+/annotations/$"),
        POLL: re.compile(r"^GET /api/projects/\d+/loop/$"),
        IMAGE: re.compile(r"^GET /cells/\d+/image$"),
        "GET batch (current)": re.compile(r"^GET /api/projects/\d+/batches/current/$"),
        "POST batch submit": re.compile(r"^POST /api/projects/\d+/batches/\d+/submit/$"),
    }
    times: defaultdict[str, list[float]] = defaultdict(list)
    for line in access_log.read_text(errors="replace").splitlines():
        found = _ACCESS.match(line.strip())
        if found is None:
            continue
        method, path, _status, ms = found.groups()
        for name, pattern in kinds.items():
            if pattern.match(f"{method} {path.split('?')[0]}"):
                times[name].append(float(ms))
    return {name: summary_ms(values) for name, values in times.items()}


def check_database(record: dict[str, Any]) -> dict[str, Any]:
    """Every acknowledged label request against the Annotation rows holding its client_key."""
    from django.db.models import Count

    from annotation.models import Annotation

    rows = Counter(
        {
            (r["annotator__username"], r["client_key"]): r["n"]
            for r in Annotation.objects.exclude(client_key="")
            .values("annotator__username", "client_key")
            .annotate(n=Count("id"))
        }
    )
    acked = {(a["user"], a["key"]) for a in record["acked"]}
    unanswered = {(a["user"], a["key"]) for a in record["unanswered"]}
    replays = record["replays"]
    return {
        "acknowledged_label_posts": len(acked),
        "lost": sum(1 for key in acked if rows[key] == 0),
        "duplicates": sum(1 for key in acked if rows[key] > 1),
        "unanswered_posts": len(unanswered),
        "unanswered_that_landed": sum(1 for key in unanswered if rows[key] > 0),
        "rows_never_acknowledged": sum(1 for key in rows if key not in acked and key not in unanswered),
        "annotation_rows": Annotation.objects.count(),
        "repeats_same_key": len(replays),
        "repeats_answered_as_replay": sum(1 for r in replays if r["replayed_header"] and r["same_ids"]),
    }


def loop_figures(project_id: int, record: dict[str, Any]) -> dict[str, Any]:
    """What the submits set off: retrains by status, batches built, submits by answer."""
    from jobs.models import Job
    from loop.models import QueryBatch

    retrains = Counter(
        Job.objects.filter(project_id=project_id, kind=Job.Kind.RETRAIN).values_list("status", flat=True)
    )
    seconds = [
        (j.finished_at - j.started_at).total_seconds()
        for j in Job.objects.filter(project_id=project_id, kind=Job.Kind.RETRAIN, status=Job.Status.SUCCEEDED)
        if j.finished_at and j.started_at
    ]
    return {
        "submits_by_status": dict(Counter(str(s["status"]) for s in record["submits"])),
        "retrain_jobs_by_status": dict(retrains),
        "retrain_seconds_median": round(statistics.median(seconds), 2) if seconds else None,
        "batches": QueryBatch.objects.filter(project_id=project_id).count(),
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()
    import redis

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg[0] if pg else None,
        "redis": redis.Redis.from_url(f"{REDIS}/{BROKER_DB}").info("server")["redis_version"],
        "locust_on_same_machine": True,
    }


# --- the run ---------------------------------------------------------------------------------------------
def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(args: argparse.Namespace, database: str, result: dict[str, Any]) -> None:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        data = subset(args.data, args.cells, args.seed, scratch=SCRATCH)
        manage("migrate", "--no-input")
        manage("collectstatic", "--no-input", "--verbosity", "0")
        result["setup"] = make_project(data, args.users)
        project_id = result["setup"]["project"]
        print(f"imported {result['setup']['cells']} cells; starting the workers", flush=True)
        for name, extra in WORKERS.items():
            procs[f"worker-{name}"] = start(f"worker-{name}", (*CELERY_WORKER, *extra))
        result["setup"]["first_batch_s"] = wait_for_loop(project_id, procs, timeout=900)
        procs["gunicorn"] = start(
            "gunicorn", (*GUNICORN, "--bind", f"127.0.0.1:{args.port}", "--access-logfile", "-")
        )
        wait_for_http(f"http://127.0.0.1:{args.port}/healthz", procs)
        result["load_before"] = wait_for_quiet(args.max_load, args.max_wait)
        print(
            f"first batch ready; load {result['load_before']['load_1min_at_start']}; starting locust",
            flush=True,
        )
        sampler = Sampler(database)
        sampler.start()
        record_path = SCRATCH / "locust_record.json"
        started = time.time()
        locust_command, code = run_locust(args, project_id, record_path)
        sampler.stop.set()
        sampler.join()
        check_alive(procs)
        time.sleep(2)  # the last requests' rows are committed before the answers; the log lines follow
        record = json.loads(record_path.read_text())
        ramp_end = started + args.users / args.spawn_rate
        result["locust"] = {"command": " ".join(locust_command[1:]), "exit_code": code}
        result["client_latency"] = client_figures(record["requests"], ramp_end)
        result["server_time"] = server_figures(SCRATCH / "gunicorn.log")
        result["status"] = status_figures(record["requests"])
        result["labels"] = check_database(record)
        result["loop"] = loop_figures(project_id, record)
        result["load_average_1min"] = {
            "mean": round(statistics.mean(sampler.load), 2) if sampler.load else None,
            "max": max(sampler.load, default=None),
            "samples": len(sampler.load),
        }
        result["postgres_sessions_sampled"] = {
            "lock_waits_max": max(sampler.lock_waits, default=None),
            "lock_waits_mean": round(statistics.mean(sampler.lock_waits), 2) if sampler.lock_waits else None,
            "active_mean": round(statistics.mean(sampler.active), 2) if sampler.active else None,
        }
        result["machine"] = machine()
    finally:
        stop_all(procs)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue's targets are about, from the whole run."""
    whole = result["client_latency"]["whole_run"]

    def pick(name: str, *keys: str) -> dict[str, float]:
        figures = whole.get(name) or {}
        return {k: figures[k] for k in keys if k in figures}

    return {
        "label_post": pick(LABEL, "n", "p50_ms", "p95_ms", "p99_ms"),
        "poll": pick(POLL, "n", "p50_ms", "p95_ms"),
        "image": pick(IMAGE, "n", "p50_ms", "p95_ms"),
        "requests_per_s": result["status"]["requests_per_s"],
        "errors_by_status": {
            k: v for k, v in result["status"]["by_status"].items() if not k.startswith(("2", "3"))
        },
        "status_5xx": result["status"]["status_5xx"],
        "status_429": result["status"]["status_429"],
        "lost": result["labels"]["lost"],
        "duplicates": result["labels"]["duplicates"],
        "load_average_1min_mean": result["load_average_1min"]["mean"],
        "target": "label POST p95 < 100 ms with 50 users, 0 lost labels, 0 5xx",
    }


def write(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    stats = SCRATCH / "locust_stats.csv"
    if stats.exists():  # locust's own per-request table (its percentiles are rounded above 100 ms)
        shutil.copy(stats, out.with_name(out.stem + "_locust_stats.csv"))


def main() -> None:
    args = parse_args()
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    result: dict[str, Any] = {
        "command": "python bench/load_test.py " + " ".join(sys.argv[1:]),
        "measured": datetime.now().isoformat(timespec="seconds"),
        "users": args.users,
        "duration_s": args.duration,
        "spawn_rate": args.spawn_rate,
    }
    configure_environment(args.database)
    admin_sql(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{args.database}"')
    flush_redis()
    try:
        measure(args, args.database, result)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            admin_sql(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        flush_redis()
    result = {"headline": headline(result), **result}
    write(result, args.out)


if __name__ == "__main__":
    main()
