"""A cell's image is served only while its bytes are the ones imported: a file replaced, or a link
repointed, after the import answers 410 Gone with a logged warning and never the new bytes. The audit's
case: a cell imported through a symbolic link whose target later became a secrets file."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation import cell_files
from annotation.importing.service import StoreMode, import_cells
from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]

SECRET = b"DATABASE_PASSWORD=hunter2\n"


@pytest.fixture
def project(annotator: User) -> Project:
    project = project_create(name="served")
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    return project


@pytest.fixture
def client(annotator: User) -> Client:
    client = Client()
    client.force_login(annotator)
    return client


def _folder_of_two(data_dir: Path, manifest_rows: list[dict[str, str]], root: Path) -> tuple[Path, Path]:
    """An ImageFolder ``root/neutrophil/`` with two real images; returns their paths."""
    (root / "neutrophil").mkdir(parents=True)
    paths = []
    for row in manifest_rows[:2]:
        target = root / "neutrophil" / Path(row["path"]).name
        shutil.copyfile(data_dir / row["path"], target)
        paths.append(target)
    return paths[0], paths[1]


def _manifest(root: Path, *paths: str) -> Path:
    """A manifest at ``root`` listing only ``paths`` (so a link's target is not imported by itself)."""
    manifest = root / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in paths))
    return manifest


def _get(client: Client, cell: Cell) -> tuple[int, bytes]:
    response = client.get(f"/cells/{cell.pk}/image")
    body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
    return response.status_code, body


def test_a_symlinked_cell_whose_target_becomes_a_secrets_file_is_gone_not_served(
    project: Project,
    client: Client,
    data_dir: Path,
    manifest_rows: list[dict[str, str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "import"
    target, _ = _folder_of_two(data_dir, manifest_rows, root)
    original = target.read_bytes()
    os.symlink(target, root / "link.jpg")  # the imported name is a link to a file inside the folder
    import_cells(project=project, source=_manifest(root, "link.jpg"), store=StoreMode.REFERENCE)
    cell = Cell.objects.get(project=project, original_name="link.jpg")
    assert _get(client, cell) == (200, original)

    target.unlink()
    target.write_bytes(SECRET)  # the link's target is now something else entirely
    with caplog.at_level(logging.WARNING):
        status, body = _get(client, cell)

    assert status == 410
    assert SECRET not in body and b"hunter2" not in body
    [event] = [r for r in caplog.records if getattr(r, "event", "") == "cell_file_mismatch"]
    assert event.levelno == logging.WARNING and event.cell_id == cell.pk  # type: ignore[attr-defined]


def test_a_repointed_link_serves_the_imported_bytes_or_nothing(
    project: Project,
    client: Client,
    data_dir: Path,
    manifest_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    root = tmp_path / "import"
    target, _ = _folder_of_two(data_dir, manifest_rows, root)
    original = target.read_bytes()
    link = root / "link.jpg"
    os.symlink(target, link)
    import_cells(project=project, source=_manifest(root, "link.jpg"), store=StoreMode.REFERENCE)
    cell = Cell.objects.get(project=project, original_name="link.jpg")
    secrets = tmp_path / "secrets.txt"
    secrets.write_bytes(SECRET)

    link.unlink()
    os.symlink(secrets, link)  # the audit's move: the imported link now points at a secrets file
    status, body = _get(client, cell)
    assert (status, body) == (200, original)  # the stored path is the link's target, checked by hash

    target.unlink()
    os.symlink(secrets, target)  # and now the stored path itself is a link to the secrets
    status, body = _get(client, cell)
    assert status == 410 and SECRET not in body


def test_a_media_copy_replaced_with_other_bytes_of_the_same_size_is_gone(
    project: Project, client: Client, data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    _folder_of_two(data_dir, manifest_rows, tmp_path / "import")
    import_cells(project=project, source=tmp_path / "import", store=StoreMode.COPY)
    first, second = Cell.objects.filter(project=project).order_by("pk")
    assert _get(client, first)[0] == 200
    data = first.image_path.read_bytes()
    first.image_path.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, one bit different

    assert _get(client, first)[0] == 410
    assert _get(client, second)[0] == 200


def test_a_verified_file_is_not_hashed_again_until_it_changes(
    project: Project,
    client: Client,
    data_dir: Path,
    manifest_rows: list[dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _folder_of_two(data_dir, manifest_rows, tmp_path / "import")
    import_cells(project=project, source=tmp_path / "import", store=StoreMode.REFERENCE)
    cell = Cell.objects.filter(project=project).first()
    assert cell is not None
    hashed: list[int] = []
    real_hash = cell_files.sha256_hex

    def counting_hash(data: bytes) -> str:
        hashed.append(len(data))
        return real_hash(data)

    monkeypatch.setattr(cell_files, "sha256_hex", counting_hash)

    for _ in range(3):
        assert _get(client, cell)[0] == 200
    assert len(hashed) == 1  # the first request hashed; the next two trusted (size, mtime, inode, ctime)

    os.utime(cell.image_path, ns=(0, 0))  # touched: hashed again, still the same bytes
    assert _get(client, cell)[0] == 200 and len(hashed) == 2


def test_an_image_from_before_relative_paths_is_still_served(
    project: Project, client: Client, data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    # Rows written before image_root existed hold an absolute path and no size.
    image, _ = _folder_of_two(data_dir, manifest_rows, tmp_path / "import")
    import_cells(project=project, source=tmp_path / "import", store=StoreMode.REFERENCE)
    cell = Cell.objects.get(project=project, original_name=f"neutrophil/{image.name}")
    Cell.objects.filter(pk=cell.pk).update(image=str(image), image_root="", file_size=None)
    cell.refresh_from_db()
    assert _get(client, cell) == (200, image.read_bytes())
