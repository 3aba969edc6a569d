"""Import speed against the floor: reading, hashing and PIL-verifying the same files in one process.

    .venv/bin/python bench/import_speed.py --data ../shared/data/leukocytes/manifest.csv \
        [--configs sqlite-reference,sqlite-copy,postgres-reference,postgres-reference-here]

The floor is timed here, after one untimed pass that warms the page cache, so that the ratio compares
work, not disk. Each import configuration then runs in its own process (Django is configured once per
process) into a fresh project on a fresh database, and times ``import_cells`` alone. Configurations:
``<sqlite|postgres>-<reference|copy>``: the database, and whether files are registered in place (the
default for local folders and manifests) or copied into the media folder. A ``-here`` suffix keeps every
file's check in the importing process (what the import did before it had helper processes for large
imports in place). ``--data`` may name several manifests (bench/million_files.py writes a million cells as
a few parts): they are imported one after the other into the same project, as a lab would add them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

# A throwaway key for the scratch database (the settings refuse to load with DEBUG off and no key);
# nothing it signs outlives the run. Child processes inherit it.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/leukoloop_bench"


def manifest_paths(manifests: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for manifest in manifests:
        with manifest.open(newline="") as handle:
            paths += [manifest.parent / row["path"] for row in csv.DictReader(handle)]
    return paths


def read_hash_verify(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    return time.perf_counter() - start


def import_once(manifests: list[Path], store: str, here: bool) -> dict[str, object]:
    """Run in a child process whose environment already names the database and var folder."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from annotation.importing import service
    from annotation.importing.service import LabelMode, StoreMode, import_cells
    from annotation.models import Project
    from annotation.services.projects import project_create

    Project.objects.filter(name="bench-import").delete()
    project = project_create(name="bench-import")
    if here:
        service.PROCESS_THRESHOLD = sys.maxsize
    reports = []
    start = time.perf_counter()
    for manifest in manifests:
        reports.append(
            import_cells(project=project, source=manifest, labels=LabelMode.REFERENCE, store=StoreMode(store))
        )
    seconds = time.perf_counter() - start
    project.delete()
    return {
        "import_seconds": round(seconds, 2),
        "database": connection.vendor,
        "imported": sum(r.imported for r in reports),
        "duplicates": sum(len(r.duplicates) for r in reports),
        "conflicts": sum(len(r.conflicts) for r in reports),
        "errors": sum(len(r.errors) for r in reports),
    }


def run_config(manifests: list[Path], config: str) -> dict[str, object]:
    database, store, *rest = config.split("-")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LEUKOLOOP_VAR_DIR": tmp, "DJANGO_SETTINGS_MODULE": "config.settings"}
        env.pop("DATABASE_URL", None)
        if database == "postgres":
            env["DATABASE_URL"] = POSTGRES_URL
            subprocess.run(
                ["createdb", "-h", "127.0.0.1", "-U", "postgres", "leukoloop_bench"],
                capture_output=True,
                check=False,
            )
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--store", store, "--data", *map(str, manifests)]
            + (["--here"] if rest == ["here"] else []),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="manifest CSVs")
    parser.add_argument("--configs", default="sqlite-reference,sqlite-copy,postgres-reference")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "import_speed.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="reference", help=argparse.SUPPRESS)
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    manifests = [path.resolve() for path in args.data]
    if args.child:
        print(json.dumps(import_once(manifests, args.store, args.here)))
        return

    paths = manifest_paths(manifests)
    read_hash_verify(paths)  # warm the page cache; untimed
    baseline = read_hash_verify(paths)
    runs = {}
    for config in args.configs.split(","):
        found = run_config(manifests, config)
        found["ratio_to_read_hash_verify"] = round(float(found["import_seconds"]) / baseline, 2)  # type: ignore[arg-type]
        runs[config] = found
        print(
            f"{config}: {found['import_seconds']} s, ratio {found['ratio_to_read_hash_verify']}",
            file=sys.stderr,
        )
    result = {
        "command": "python bench/import_speed.py " + " ".join(sys.argv[1:]),
        "files": len(paths),
        "read_hash_verify_seconds": round(baseline, 2),
        "imports": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
