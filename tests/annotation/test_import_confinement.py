"""Every imported path stays inside the import's root: absolute and ``..`` manifest paths, symbolic links
that leave the folder and symlinked zip members are refused, each with its own line in the report, while
every valid row still lands; what is stored is the resolved path relative to that root."""

from __future__ import annotations

import csv
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from annotation.importing.service import import_cells
from annotation.models import Cell, Project
from annotation.services.projects import project_create
from tests.annotation.badfiles import write_zip
from tests.conftest import ManifestWriter

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]


@pytest.fixture
def project() -> Project:
    return project_create(name="confined")


def _outside_images(
    data_dir: Path, tmp_path: Path, manifest_rows: list[dict[str, str]], n: int
) -> list[Path]:
    """``n`` real images (not among the subset's) in a folder beside the import root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    chosen = []
    for row in manifest_rows[-n:]:
        target = outside / Path(row["path"]).name
        shutil.copyfile(data_dir / row["path"], target)
        chosen.append(target)
    return chosen


def _append_rows(manifest: Path, paths: list[str]) -> None:
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    template = dict(rows[0])
    with manifest.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(template))
        for path in paths:
            writer.writerow({**template, "path": path})


def test_manifest_rows_leaving_the_manifest_folder_are_refused_one_by_one(
    project: Project,
    make_manifest: ManifestWriter,
    data_dir: Path,
    manifest_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    manifest = make_manifest(per_class=1)  # 9 valid rows under tmp_path/subset
    root = manifest.parent
    absolute, dotdot, linked = _outside_images(data_dir, tmp_path, manifest_rows, 3)
    inner = next((root / "images").rglob("*.jpg"))
    os.symlink(linked, root / "images" / "leak.jpg")  # a link inside the folder to a file outside it
    os.symlink(inner, root / "images" / "alias.jpg")  # a link that stays inside: allowed (a duplicate)
    _append_rows(
        manifest, [str(absolute), f"../outside/{dotdot.name}", "images/leak.jpg", "images/alias.jpg"]
    )

    report = import_cells(project=project, source=manifest)

    errors = {e.name: e.message for e in report.errors}
    assert set(errors) == {str(absolute), f"../outside/{dotdot.name}", "images/leak.jpg"}, errors
    assert "absolute path" in errors[str(absolute)]
    assert "'..'" in errors[f"../outside/{dotdot.name}"]
    assert "symbolic link" in errors["images/leak.jpg"] and "outside" in errors["images/leak.jpg"]
    assert report.imported == 9 and len(report.duplicates) == 1  # the alias is the same image as its target
    assert not Cell.objects.filter(original_name__in=list(errors)).exists()


def test_image_folder_symlinks_leaving_the_folder_are_refused(
    project: Project,
    make_manifest: ManifestWriter,
    data_dir: Path,
    manifest_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    manifest = make_manifest(per_class=1)
    folder = manifest.parent / "images"  # <label>/<image>
    [leaked_file] = _outside_images(data_dir, tmp_path, manifest_rows, 1)
    os.symlink(leaked_file, folder / "neutrophil" / "leak.jpg")
    os.symlink(leaked_file.parent, folder / "lymphocyte_elsewhere")  # a whole folder outside

    report = import_cells(project=project, source=folder)

    errors = {e.name: e.message for e in report.errors}
    assert set(errors) == {"neutrophil/leak.jpg", "lymphocyte_elsewhere"}, errors
    assert all("symbolic link" in m and "outside" in m for m in errors.values())
    assert report.imported == 9
    names = set(Cell.objects.filter(project=project).values_list("original_name", flat=True))
    assert not any(name.startswith("lymphocyte_elsewhere") or "leak" in name for name in names)


def test_zip_manifest_rows_with_absolute_or_parent_paths_and_symlink_members_are_refused(
    project: Project, make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    manifest = make_manifest(per_class=1)
    _append_rows(manifest, ["/etc/hostname", "../../secret.jpg", "images/link.jpg"])
    entries = {"data/manifest.csv": manifest.read_bytes()}
    for image in (manifest.parent / "images").rglob("*.jpg"):
        entries[f"data/{image.relative_to(manifest.parent).as_posix()}"] = image.read_bytes()
    archive = write_zip(tmp_path / "m.zip", entries)
    with zipfile.ZipFile(archive, "a") as zf:  # a member that is a symbolic link (as `zip -y` stores one)
        link = zipfile.ZipInfo("data/images/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")

    report = import_cells(project=project, source=archive)

    errors = {e.name: e.message for e in report.errors}
    assert set(errors) == {"/etc/hostname", "../../secret.jpg", "images/link.jpg"}, errors
    assert "absolute path" in errors["/etc/hostname"]
    assert "'..'" in errors["../../secret.jpg"]
    assert "symbolic link" in errors["images/link.jpg"]
    assert report.imported == 9


def test_referenced_cells_store_the_resolved_path_relative_to_the_import_root(
    project: Project, make_manifest: ManifestWriter
) -> None:
    manifest = make_manifest(per_class=1)
    root = manifest.parent
    rows = manifest.read_text().splitlines()
    first_path = rows[1].split(",")[0]
    os.symlink(root / first_path, root / "first-link.jpg")
    manifest.write_text(
        "\n".join([rows[0], rows[1].replace(first_path, "first-link.jpg", 1), *rows[2:]]) + "\n"
    )

    report = import_cells(project=project, source=manifest)

    assert report.imported == 9 and not report.errors, report.as_dict()
    for cell in Cell.objects.filter(project=project):
        assert not Path(cell.image).is_absolute() and ".." not in Path(cell.image).parts
        assert cell.image_root == str(root.resolve())
        assert cell.image_path == root.resolve() / cell.image
        assert cell.file_size == cell.image_path.stat().st_size
    linked = Cell.objects.get(project=project, original_name="first-link.jpg")
    assert linked.image == first_path  # the link's target, not the link
