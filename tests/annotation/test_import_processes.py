"""A large import in place examines its files in helper processes: the same cells and the same per-file
errors as checking them here, and nothing lost if the processes die."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from annotation.importing import service
from annotation.importing.service import ImportReport, import_cells
from annotation.models import Cell, Project
from annotation.services.projects import project_create
from tests.annotation.badfiles import image_folder_with_bad_files
from tests.conftest import ManifestWriter

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]

CELL_FIELDS = ("original_name", "content_hash", "file_size", "width", "height", "image", "role")


class CountedPool(ProcessPoolExecutor):
    """The real process pool, counting how many the import started."""

    started = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountedPool.started += 1
        super().__init__(*args, **kwargs)


class DyingPool:
    """A pool whose processes die after answering ``answered`` files (what an OOM kill looks like)."""

    answered = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def map(self, fn: Callable[[str], Any], items: Iterable[str], chunksize: int = 1) -> Iterator[Any]:
        for number, item in enumerate(items):
            if number == self.answered:
                raise BrokenProcessPool("a helper process died")
            yield fn(item)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def cells_of(project: Project) -> list[tuple[Any, ...]]:
    return sorted(Cell.objects.filter(project=project).values_list(*CELL_FIELDS))


def errors_of(report: ImportReport) -> dict[str, str]:
    return {e.name: e.message for e in report.errors}


@pytest.fixture(autouse=True)
def no_pool_counted_yet() -> None:
    CountedPool.started = 0


@pytest.fixture
def folder(tmp_path: Path, make_manifest: ManifestWriter) -> Path:
    return image_folder_with_bad_files(tmp_path, make_manifest)


def test_helper_processes_import_the_same_cells_and_errors_as_this_process(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = project_create(name="checked-here")
    expected = import_cells(project=here, source=folder)
    assert CountedPool.started == 0 and expected.imported == 18 and len(expected.errors) == 3

    monkeypatch.setattr(service, "PROCESS_THRESHOLD", 1)
    monkeypatch.setattr(service, "PROCESS_CHUNK", 4)  # several chunks, so order across chunks counts
    monkeypatch.setattr(service, "ProcessPoolExecutor", CountedPool)
    there = project_create(name="checked-in-processes")
    report = import_cells(project=there, source=folder)

    assert CountedPool.started == 1
    assert (report.imported, report.already_present) == (expected.imported, 0)
    assert errors_of(report) == errors_of(expected)
    assert cells_of(there) == cells_of(here)

    again = import_cells(project=there, source=folder)
    assert CountedPool.started == 2
    assert (again.imported, again.already_present) == (0, 18)
    assert errors_of(again) == errors_of(expected)  # a bad file stays reported, never half-imported


def test_when_the_helper_processes_die_the_rest_is_checked_here_and_nothing_is_lost(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = project_create(name="checked-here")
    expected = import_cells(project=here, source=folder)

    monkeypatch.setattr(service, "PROCESS_THRESHOLD", 1)
    monkeypatch.setattr(service, "ProcessPoolExecutor", DyingPool)
    there = project_create(name="helpers-died")
    report = import_cells(project=there, source=folder)

    assert report.imported == expected.imported == 18
    assert errors_of(report) == errors_of(expected)
    assert cells_of(there) == cells_of(here)


def test_small_imports_and_copies_start_no_process(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "ProcessPoolExecutor", CountedPool)
    import_cells(project=project_create(name="small"), source=folder)
    monkeypatch.setattr(service, "PROCESS_THRESHOLD", 1)
    import_cells(project=project_create(name="copied"), source=folder, store=service.StoreMode.COPY)
    assert CountedPool.started == 0
