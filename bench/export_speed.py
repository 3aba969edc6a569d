"""Export speed against the floor: zipping the same image files with Python's ``zipfile``.

    .venv/bin/python bench/export_speed.py --data ../shared/data/leukocytes/manifest.csv \
        [--sizes 16230,4000] [--repeat 2] [--profile] [--out bench/results/export_speed.json]

For each size, a fresh project in a scratch folder (``var/bench-export``, or ``$LEUKOLOOP_VAR_DIR``'s
``bench-export``) gets the first N cells of the manifest, imported with ``LabelMode.ANNOTATIONS`` (every
cell gets a real, current label: an ``import`` annotation). Then, after one untimed pass that reads every
image (warming the page cache), each measurement runs in its own fresh process, in turn:

- ``floor``: the labelled cells' image files written into a zip with ``zipfile`` (``ZIP_STORED``, as the
  ImageFolder writer stores images), member names ``<label>/<file>``; the file list is read from the
  database before the clock starts;
- ``imagefolder``, ``csv``, ``jsonl``: ``exports.service.write_<format>`` called directly (no
  broker, no job row), output to a temporary file.

Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process just before the timed call (Django
set up, the export modules imported, one query run) and just after it; the difference is the peak resident
memory the export added (``rss_growth_mib``, which includes SQLite's and the allocator's memory). Then
each measurement runs once more, untimed, under ``tracemalloc`` (``python_peak_mib``: the peak of Python
allocations during the call). Flat memory means these do not rise with the number of cells.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

# A throwaway key for the scratch database (the settings refuse to load with DEBUG off and no key);
# nothing it signs outlives the run. Child processes inherit it.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

REPO = Path(__file__).resolve().parent.parent
KINDS = ("floor", "imagefolder", "csv", "jsonl")


def scratch_dir() -> Path:
    base = os.environ.get("LEUKOLOOP_VAR_DIR")
    return (Path(base) if base else REPO / "var") / "bench-export"


def child_env(var_dir: Path) -> dict[str, str]:
    env = {**os.environ, "LEUKOLOOP_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.pop("DATABASE_URL", None)  # SQLite in the scratch folder
    return env


def django_setup() -> None:
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def max_rss_mib() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def subset_manifest(manifest: Path, n: int, folder: Path) -> tuple[Path, list[Path]]:
    """The first ``n`` rows of ``manifest`` as a manifest in ``folder``, whose entries reach the original
    files through symbolic links to the manifest's top-level folders; and the image paths."""
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = [row for _, row in zip(range(n), reader, strict=False)]
    folder.mkdir(parents=True, exist_ok=True)
    for top in {row["path"].split("/")[0] for row in rows}:
        link = folder / top
        if not link.exists():
            link.symlink_to(manifest.parent / top)
    out = folder / "manifest.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out, [manifest.parent / row["path"] for row in rows]


# --- Child processes ---------------------------------------------------------------------------------


def child_setup(manifest: Path) -> dict[str, Any]:
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from annotation.importing.service import LabelMode, import_cells
    from annotation.labels import LabelStatus, cell_labels
    from annotation.models import Annotation, Cell
    from annotation.services.projects import project_create

    project = project_create(name="bench-export")
    start = time.perf_counter()
    report = import_cells(project=project, source=manifest, labels=LabelMode.ANNOTATIONS)
    seconds = time.perf_counter() - start
    ids = list(Cell.objects.filter(project=project).values_list("id", flat=True))
    labelled = sum(
        1
        for state in cell_labels(project=project, cell_ids=ids).values()
        if state.status is LabelStatus.LABELLED
    )
    return {
        "project": project.pk,
        "import_seconds": round(seconds, 2),
        "cells": report.imported,
        "annotations": Annotation.objects.filter(cell__project=project).count(),
        "labelled_cells": labelled,
        "errors": len(report.errors),
        "duplicates": len(report.duplicates),
    }


def child_measure(kind: str, project_id: int, out: Path, traced: bool = False) -> dict[str, Any]:
    django_setup()
    from annotation.models import Project
    from exports import service
    from exports.rows import iter_rows, safe_file_name

    project = Project.objects.get(pk=project_id)

    def progress(fraction: float, message: str) -> None:
        return None

    members: list[tuple[str, str]] = []
    if kind == "floor":
        # The same files under the same member names as the ImageFolder export; listed untimed.
        for chunk in iter_rows(project, history=False):
            members += [
                (row.image_path, f"{row.label}/{safe_file_name(row.cell_id, row.file_name)}")
                for row in chunk
                if row.label is not None
            ]
    if traced:
        tracemalloc.start()
    rss_before = max_rss_mib()
    start = time.perf_counter()
    if kind == "floor":
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for path, member in members:
                archive.write(path, member)
        result: dict[str, Any] = {"cells": len(members)}
    else:
        writer = service.WRITERS[service.ExportFormat(kind)]
        result = writer(project, out, progress)
    seconds = time.perf_counter() - start
    rss_after = max_rss_mib()
    if traced:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"cells": result.get("cells"), "python_peak_mib": round(peak / 2**20, 2)}
    return {
        "seconds": round(seconds, 3),
        "cells": result.get("cells"),
        "bytes": out.stat().st_size,
        "rss_before_mib": round(rss_before, 1),
        "rss_peak_mib": round(rss_after, 1),
        "rss_growth_mib": round(rss_after - rss_before, 1),
    }


def child_profile(kind: str, project_id: int, out: Path, top: int = 15) -> dict[str, Any]:
    """Where the time of one export goes: cProfile's functions with the most own time."""
    import cProfile
    import pstats

    django_setup()
    from annotation.models import Project
    from exports import service

    project = Project.objects.get(pk=project_id)
    writer = service.WRITERS[service.ExportFormat(kind)]
    profiler = cProfile.Profile()
    profiler.enable()
    writer(project, out, lambda fraction, message: None)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    total = float(getattr(stats, "total_tt", 0.0))
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: -item[1][2],
    )[:top]:
        rows.append(
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "cumulative_s": round(cumulative, 3),
            }
        )
    return {"format": kind, "profiled_seconds": round(total, 3), "top_own_time": rows}


def run_child(env: dict[str, str], *args: str) -> dict[str, Any]:
    found = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{found.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(found.stdout.strip().splitlines()[-1])
    return result


# --- Parent ------------------------------------------------------------------------------------------


def warm(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def measure_size(manifest: Path, n: int, repeat: int, profile: bool) -> dict[str, Any]:
    var_dir = scratch_dir() / f"cells-{n}"
    if var_dir.exists():
        shutil.rmtree(var_dir)
    var_dir.mkdir(parents=True)
    source, paths = subset_manifest(manifest, n, var_dir / "source")
    env = child_env(var_dir)
    setup = run_child(env, "--child", "setup", "--data", str(source))
    print(f"{n} cells: {json.dumps(setup)}", file=sys.stderr, flush=True)
    warm(paths)  # untimed: every measurement then reads from the page cache
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(dir=var_dir) as tmp:
        for i in range(repeat):
            for kind in KINDS:
                out = Path(tmp) / f"{kind}-{i}.out"
                found = run_child(
                    env, "--child", kind, "--project", str(setup["project"]), "--output", str(out)
                )
                out.unlink(missing_ok=True)
                runs[kind].append(found)
                print(f"  {kind}: {json.dumps(found)}", file=sys.stderr, flush=True)
    traced: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=var_dir) as tmp:
        for kind in KINDS:
            out = Path(tmp) / f"{kind}-traced.out"
            args = ["--child", kind, "--project", str(setup["project"]), "--output", str(out)]
            traced[kind] = run_child(env, *args, "--tracemalloc")
            out.unlink(missing_ok=True)
            print(f"  {kind} (tracemalloc): {json.dumps(traced[kind])}", file=sys.stderr, flush=True)
    if profile:
        with tempfile.TemporaryDirectory(dir=var_dir) as tmp:
            profiled = run_child(
                env,
                "--child",
                "profile",
                "--project",
                str(setup["project"]),
                "--output",
                str(Path(tmp) / "profile.zip"),
            )
    best = {kind: min(runs[kind], key=lambda r: float(r["seconds"])) for kind in KINDS}
    floor = float(best["floor"]["seconds"])
    summary = {
        kind: {
            "seconds": best[kind]["seconds"],
            "ratio_to_floor": round(float(best[kind]["seconds"]) / floor, 2),
            "rss_growth_mib": max(float(r["rss_growth_mib"]) for r in runs[kind]),
            "python_peak_mib": traced[kind]["python_peak_mib"],
            "bytes": best[kind]["bytes"],
            "cells": best[kind]["cells"],
        }
        for kind in KINDS
    }
    shutil.rmtree(var_dir, ignore_errors=True)
    found_size: dict[str, Any] = {"setup": setup, "best": summary, "runs": runs}
    if profile:
        found_size["imagefolder_profile"] = profiled
    return found_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=False, help="manifest CSV")
    parser.add_argument("--sizes", default="16230,4000", help="numbers of cells, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement (the fastest counts)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "export_speed.json")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the ImageFolder export (cProfile, own time)"
    )
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("setup", "profile", *KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--project", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "setup":
        print(json.dumps(child_setup(args.data.resolve())))
        return
    if args.child == "profile":
        print(json.dumps(child_profile("imagefolder", args.project, args.output)))
        return
    if args.child:
        print(json.dumps(child_measure(args.child, args.project, args.output, args.tracemalloc)))
        return
    if args.data is None:
        parser.error("--data is required")
    manifest = args.data.resolve()
    sizes = {}
    for n in (int(s) for s in args.sizes.split(",")):
        sizes[str(n)] = measure_size(manifest, n, args.repeat, args.profile)
    result = {
        "command": "python bench/export_speed.py " + " ".join(sys.argv[1:]),
        "memory": (
            "rss_growth_mib: ru_maxrss growth of a fresh process over the timed call (peak RSS after - RSS"
            " before); python_peak_mib: tracemalloc's peak of Python allocations during the call, in a"
            " separate untimed run"
        ),
        "sizes": sizes,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
