"""Spreadsheet-safe CSV: a cell value a spreadsheet would run as a formula (it begins with = + - @, a tab
or a carriage return) is written with a leading single quote (OWASP, CSV injection), in the CSV export
and in the ImageFolder zip's manifest.csv; importing that zip gives the original values back."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from pathlib import Path

import pytest

from annotation.demo import draw_cell
from annotation.importing.service import LabelMode, import_cells
from annotation.models import Cell, Project
from annotation.services.projects import project_create
from exports.service import write_csv, write_imagefolder

pytestmark = pytest.mark.django_db

HOSTILE = {
    "source": '=HYPERLINK("http://x","click")',
    "patient_id": "+1+cmd|' /C calc'!A0",
    "slide_id": "-2+3",
    "cell_size": "@SUM(1+1)",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    schema = [{"name": "cell_size", "values": ["@SUM(1+1)", "big"]}]
    project = project_create(name="formulas", attribute_schema=schema)
    rng = random.Random(3)
    folder = tmp_path / "in"
    folder.mkdir()
    draw_cell("neutrophil", rng).save(folder / "=cmd.png")
    draw_cell("lymphocyte", rng).save(folder / "plain.png")
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", *HOSTILE])
        writer.writerow(["=cmd.png", "neutrophil", *HOSTILE.values()])
        writer.writerow(["plain.png", "lymphocyte", "pbc", "p1", "s1", "big"])
    report = import_cells(project=project, source=folder / "manifest.csv", labels=LabelMode.ANNOTATIONS)
    assert report.imported == 2 and not report.errors, report.as_dict()
    return project


def _cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _no_formula_anywhere(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for column, value in row.items():
            assert not value.startswith(FORMULA_START), (column, value)


def test_the_csv_export_quotes_every_formula_leading_value(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "cells.csv"
    write_csv(project, out, lambda fraction, message: None)

    rows = _cells(out.read_text(encoding="utf-8"))
    _no_formula_anywhere(rows)
    hostile = next(r for r in rows if r["label"] == "neutrophil")
    assert hostile["source"] == "'" + HOSTILE["source"]
    assert hostile["patient_id"] == "'" + HOSTILE["patient_id"]
    assert hostile["slide_id"] == "'-2+3"
    assert hostile["cell_size"] == "'@SUM(1+1)"
    assert hostile["original_name"] == "'=cmd.png"
    plain = next(r for r in rows if r["label"] == "lymphocyte")
    assert plain["source"] == "pbc" and plain["confidence"] == ""


def test_the_imagefolder_manifest_is_safe_and_imports_back_unchanged(
    project: Project, tmp_path: Path
) -> None:
    archive = tmp_path / "images.zip"
    write_imagefolder(project, archive, lambda fraction, message: None)
    with zipfile.ZipFile(archive) as zf:
        rows = _cells(zf.read("manifest.csv").decode("utf-8"))
    _no_formula_anywhere(rows)
    assert any(r["source"] == "'" + HOSTILE["source"] for r in rows)

    copy = project_create(name="formulas-again", attribute_schema=project.attribute_schema)
    report = import_cells(project=copy, source=archive, labels=LabelMode.ANNOTATIONS)
    assert report.imported == 2 and not report.errors, report.as_dict()
    again = Cell.objects.get(project=copy, source=HOSTILE["source"])
    assert (again.patient_id, again.slide_id) == (HOSTILE["patient_id"], HOSTILE["slide_id"])
    assert again.annotations.get().attributes == {"cell_size": HOSTILE["cell_size"]}
