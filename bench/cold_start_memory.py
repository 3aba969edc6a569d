"""The cold-start query's peak memory at a million cells: TypiClust over the whole pool against a 200k-row
sample (``learning.query.typiclust.MAX_ROWS``), each in a fresh process, on an earlier
``bench/million.py`` run's database and memory-mapped embeddings (nothing is re-embedded):

    .venv/bin/python bench/cold_start_memory.py \
        --database-url postgres://postgres@127.0.0.1:5432/leukoloop_bench \
        --var-dir var/bench-million/run --project 2 --out bench/results/cold_start_memory.json

Per setting: the seconds of the selection (48 cells, the product's batch, no labels: what the loop's first
query runs), and the peak VmRSS / RssAnon / RssFile of the process (sampled every 20 ms; the file-backed
part is the memory map's pages, which the kernel may drop and share).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def measure(args: argparse.Namespace, max_rows: int | None) -> dict[str, Any]:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LEUKOLOOP_VAR_DIR=str(args.var_dir.resolve()),
        DATABASE_URL=args.database_url,
    )
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + "x" * 50)
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import django

    django.setup()
    import numpy as np
    from million import MemorySampler  # bench/ is not a package: on the path above

    from annotation.models import Cell, Project
    from learning.query.base import PoolRows
    from learning.query.typiclust import typiclust
    from loop.handlers.artifacts import index_embeddings
    from loop.models import ModelVersion
    from loop.selectors import latest_version

    project = Project.objects.get(pk=args.project)
    index = latest_version(project, ModelVersion.Kind.INDEX)
    assert index is not None, "no index: run bench/million.py first"
    sampler = MemorySampler(os.getpid())
    ids, emb = index_embeddings(index)
    pool = np.array(
        sorted(Cell.objects.filter(project=project, role=Cell.Role.POOL).values_list("pk", flat=True))
    )
    rows = np.searchsorted(ids, pool)
    t = time.perf_counter()
    picks = typiclust(PoolRows(emb, rows), 48, labelled=None, rng=0, max_rows=max_rows)
    seconds = time.perf_counter() - t
    return {
        "max_rows": max_rows,
        "pool": len(rows),
        "picked": len(picks),
        "select_seconds": round(seconds, 1),
        **sampler.stop(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--var-dir", type=Path, required=True)
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args, None if args.child == "none" else int(args.child))))
        return
    from learning.query.typiclust import MAX_ROWS

    result: dict[str, Any] = {"command": "python bench/cold_start_memory.py " + " ".join(sys.argv[1:])}
    result["settings"] = []
    for setting in ("none", str(MAX_ROWS)):  # each in its own process: peaks do not carry over
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child", setting],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        entry = json.loads(out.strip().splitlines()[-1])
        result["settings"].append(entry)
        print(json.dumps(entry), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
