"""An ImageFolder export copies only the bytes each cell was imported with: a file changed since is
left out and counted, never packed."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from annotation.demo import draw_cell
from annotation.importing.service import LabelMode, StoreMode, import_cells
from annotation.models import Cell
from annotation.services.projects import project_create
from exports.service import write_imagefolder

pytestmark = pytest.mark.django_db


def test_a_changed_image_is_left_out_of_the_imagefolder_zip(tmp_path: Path) -> None:
    project = project_create(name="changed")
    rng = random.Random(5)
    for kind in ("neutrophil", "lymphocyte"):
        (tmp_path / "in" / kind).mkdir(parents=True)
        draw_cell(kind, rng).save(tmp_path / "in" / kind / "a.png")
    report = import_cells(
        project=project, source=tmp_path / "in", labels=LabelMode.ANNOTATIONS, store=StoreMode.REFERENCE
    )
    assert report.imported == 2
    changed = Cell.objects.get(project=project, original_name="neutrophil/a.png")
    secret = b"not the imported image: a secrets file\n"
    changed.image_path.write_bytes(secret)

    archive = tmp_path / "out.zip"
    result = write_imagefolder(project, archive, lambda fraction, message: None)

    assert result["cells"] == 1 and result["changed_images"] == [changed.pk]
    with zipfile.ZipFile(archive) as zf:
        members = [n for n in zf.namelist() if n != "manifest.csv"]
        assert len(members) == 1 and members[0].startswith("lymphocyte/")
        assert all(secret not in zf.read(n) for n in zf.namelist())
