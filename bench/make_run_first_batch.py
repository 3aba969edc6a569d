"""Time the README's own command, `make run DATA=...`, on a fresh database: from the command to the page
answering and to the first batch a new user can label.

    .venv/bin/python bench/make_run_first_batch.py --data ../shared/data/leukocytes/manifest.csv \
        --out bench/results/make_run_first_batch.json

`bench/demo_start.py` times the same steps one by one (migrate, bootstrap_demo, workers) and what follows
the first batch; this runs the literal `make run` as a new user does, in a scratch folder
(``LEUKOLOOP_VAR_DIR``: its own SQLite database, broker folders, media and secret key), and watches from the
outside: the web page over HTTP, the first batch and its cells in the database (read-only). It stops
`make run` (and the workers it started) when the first batch is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def page_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def first_batch_cells(db: Path) -> int:
    """How many cells the project's first query batch holds (0 while there is none). The loop's tables
    keep the names they had in the annotation app (``loop.models``' ``db_table``)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            row = connection.execute(
                "SELECT COUNT(*) FROM annotation_queryitem JOIN annotation_querybatch "
                "ON annotation_queryitem.batch_id = annotation_querybatch.id "
                "WHERE annotation_querybatch.number = 1"
            ).fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error) or "locked" in str(error):
            return 0  # not migrated yet, or locked for a moment
        raise
    return int(row[0])


def jobs_after(db: Path, start_utc: datetime) -> list[dict[str, Any]]:
    """The jobs `make run` ran, in seconds after the command, from the database's own UTC timestamps."""

    def since(value: str | None) -> float | None:
        if value is None:
            return None
        return round((datetime.fromisoformat(value) - start_utc).total_seconds(), 1)

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
        rows = connection.execute(
            "SELECT kind, status, created_at, started_at, finished_at FROM annotation_job ORDER BY id"
        ).fetchall()
        batches = connection.execute("SELECT number, created_at FROM annotation_querybatch").fetchall()
    return [
        {"kind": k, "status": s, "queued": since(c), "started": since(b), "finished": since(f)}
        for k, s, c, b, f in rows
    ] + [{"kind": f"batch {n}", "created": since(c)} for n, c in batches]


def load_average() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="`make run DATA=`: a manifest, folder or zip")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--scratch", type=Path, default=REPO / "var" / "bench-make-run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the first batch")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    shutil.rmtree(args.scratch, ignore_errors=True)
    args.scratch.mkdir(parents=True)
    env = {**os.environ, "LEUKOLOOP_VAR_DIR": str(args.scratch)}
    env.pop("DJANGO_SECRET_KEY", None)  # as a new user: `make run` makes its own key file
    log_path = args.scratch / "make-run.log"
    command = ["make", "--no-print-directory", "run", f"DATA={args.data}", f"PORT={args.port}"]
    load_before = load_average()
    start_utc = datetime.now(UTC).replace(tzinfo=None)  # the database stores naive UTC
    start = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    times: dict[str, float | None] = {"page_answers": None, "first_batch": None}
    cells = 0
    loads: list[float] = []
    try:
        while time.monotonic() - start < args.timeout and process.poll() is None:
            elapsed = time.monotonic() - start
            loads.append(load_average())
            if times["page_answers"] is None and page_answers(args.port):
                times["page_answers"] = round(elapsed, 1)
            cells = first_batch_cells(args.scratch / "db.sqlite3")
            if cells:
                times["first_batch"] = round(elapsed, 1)
                break
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    output = log_path.read_text()
    result: dict[str, Any] = {
        "command": " ".join(command),
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds_from_make_run": times,
        "first_batch_cells": cells,
        "load_average_1min": {
            "before": round(load_before, 2),
            "mean_during": round(sum(loads) / len(loads), 2) if loads else None,
        },
        "make_run_output_lines": len(output.splitlines()),
        "timeline": jobs_after(args.scratch / "db.sqlite3", start_utc) if times["first_batch"] else [],
        "make_run_exit_before_batch": process.returncode if times["first_batch"] is None else None,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if times["first_batch"] is None:
        print(f"no first batch; the output of make run is in {log_path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
