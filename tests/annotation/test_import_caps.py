"""Size caps hold for every file an import reads, the manifest included: a zip whose manifest.csv
inflates to 300 MiB is refused with a clear error before it is decompressed, never read whole."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from annotation.importing import sources
from annotation.importing.service import import_cells
from annotation.importing.sources import SourceError
from annotation.models import Cell, Project
from annotation.services.projects import project_create

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.fixture
def project() -> Project:
    return project_create(name="capped")


@pytest.fixture
def inflated_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts what is decompressed out of any zip member, and stops a test that would read 64 MiB."""
    read: list[int] = []
    real_read = zipfile.ZipExtFile.read

    def counting_read(self: zipfile.ZipExtFile, n: int | None = -1) -> bytes:
        data = real_read(self, n)
        read.append(len(data))
        assert sum(read) < 64 * MiB, "a zip member was read far beyond any sensible cap"
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    return read


def _zip_with_huge_manifest(path: Path, size: int) -> Path:
    row = b"images/neutrophil/" + b"a" * 100 + b".jpg,neutrophil\n"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("manifest.csv", "w", force_zip64=True) as member,
    ):
        member.write(b"path,label\n")
        chunk = row * (MiB // len(row))
        written = 0
        while written < size:
            member.write(chunk)
            written += len(chunk)
    return path


def test_a_zip_whose_manifest_inflates_to_300_mib_is_refused_unread(
    project: Project, tmp_path: Path, inflated_bytes: list[int]
) -> None:
    archive = _zip_with_huge_manifest(tmp_path / "bomb.zip", 300 * MiB)
    assert archive.stat().st_size < 5 * MiB  # small on disk: the danger is what it inflates to

    with pytest.raises(SourceError, match=r"manifest\.csv .*uncompressed.*limit"):
        import_cells(project=project, source=archive)
    assert sum(inflated_bytes) == 0
    assert not Cell.objects.exists()


def test_a_local_manifest_above_the_cap_is_refused(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sources, "MAX_MANIFEST_BYTES", 1000)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n" + "x.jpg,neutrophil\n" * 100)
    with pytest.raises(SourceError, match=r"manifest\.csv is 1,711 bytes, above the limit of 1,000"):
        import_cells(project=project, source=manifest)
