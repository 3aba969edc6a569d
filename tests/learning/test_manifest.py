"""The one manifest row parser: every column, both attribute modes, the errors, and the learning engine
and the platform's import reading the same manifest alike."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from annotation.importing.sources import SourceEntry, SourceProblem, list_source
from annotation.taxonomy import WBCATT_ATTRIBUTES, validate_attribute_schema
from learning.attributes import WBCATT_NAMES, WBCATT_SCHEMA
from learning.data import ATTRIBUTE_COLUMNS, read_manifest
from learning.manifest import FIXED_COLUMNS, ManifestError, check_header, parse_row

HEADER = [*FIXED_COLUMNS, "wbcatt_split", *WBCATT_NAMES, "stain"]
FULL = {
    "path": " images/a.jpg ",
    "label": " neutrophil",
    "subtype": "SNE ",
    "source": "pbc",
    "patient_id": "p7",
    "slide_id": " s3 ",
    "role": "test",
    "wbcatt_split": " train",
    **{name: f" {values[0]} " for name, values in WBCATT_SCHEMA.items()},
    "stain": "MGG",
}


def rows(text: str) -> list[dict[str | None, str | list[str] | None]]:
    return list(csv.DictReader(io.StringIO(text)))


def write_manifest(folder: Path, lines: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(lines)
    return path


def test_every_column_is_parsed() -> None:
    row = parse_row(FULL)  # type: ignore[arg-type]
    assert (row.path, row.label, row.subtype, row.source) == ("images/a.jpg", "neutrophil", "SNE", "pbc")
    assert (row.patient_id, row.slide_id, row.role) == ("p7", "s3", "test")
    assert dict(row.attributes) == {name: values[0] for name, values in WBCATT_SCHEMA.items()}
    assert list(row.attributes) == list(WBCATT_NAMES)
    assert dict(row.extra) == {"wbcatt_split": " train", "stain": "MGG"}  # kept as they are


def test_missing_and_empty_columns_are_empty_strings() -> None:
    (row,) = rows("path,cell_size,label\nx.jpg,,\n")
    parsed = parse_row(row)
    assert parsed.path == "x.jpg" and parsed.label == parsed.subtype == parsed.role == ""
    assert dict(parsed.attributes) == {} and dict(parsed.extra) == {}


def test_every_free_column_is_an_attribute_when_asked() -> None:
    row = parse_row(FULL, attribute_columns=None)  # type: ignore[arg-type]
    assert row.subtype == "SNE" and "subtype" not in row.attributes  # a fixed column, never an attribute
    assert row.attributes["stain"] == "MGG" and row.attributes["wbcatt_split"] == "train"
    assert set(row.attributes) == {"wbcatt_split", "stain", *WBCATT_NAMES} and dict(row.extra) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\nx.jpg,blast,extra\n", "malformed row: expected 2 fields, got 3"),
        ("path,label,source\nx.jpg\n", "malformed row: expected 3 fields, got 1"),
        ("path,label\n  ,blast\n", "empty path"),
    ],
)
def test_bad_rows_raise_one_clear_error(text: str, message: str) -> None:
    (row,) = rows(text)
    with pytest.raises(ManifestError, match=message):
        parse_row(row)


def test_header_needs_a_path_column() -> None:
    assert check_header(["path", "label"]) == ["path", "label"]
    with pytest.raises(ManifestError, match="no 'path' column"):
        check_header(["file", "label"])
    with pytest.raises(ManifestError, match="no 'path' column"):
        check_header(None)


def test_engine_and_import_read_a_manifest_alike(tmp_path: Path) -> None:
    second = {**FULL, "path": "images/b.jpg", "subtype": "", "cell_size": "", "label": "blast"}
    manifest = write_manifest(tmp_path, [FULL, second])
    records = read_manifest(manifest)
    listing = list_source(manifest)
    assert not [p for p in listing if isinstance(p, SourceProblem)]
    entries = [e for e in listing if isinstance(e, SourceEntry)]
    assert [e.name for e in entries] == [r.id for r in records] == ["images/a.jpg", "images/b.jpg"]
    for record, entry in zip(records, entries, strict=True):
        assert (record.label, record.subtype, record.source) == (entry.label, entry.subtype, entry.source)
        assert (record.patient_id, record.slide_id, record.role) == (
            entry.patient_id,
            entry.slide_id,
            entry.role,
        )
        # The import also offers the free columns to the project; the WBCAtt ones agree.
        assert {k: v for k, v in entry.attributes.items() if k in WBCATT_NAMES} == dict(record.attributes)
    assert records[1].subtype == "" and "cell_size" not in records[1].attributes


def test_read_manifest_names_file_and_line_of_a_bad_row(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.jpg,blast\nb.jpg,ig,surplus\n")
    with pytest.raises(ValueError, match=r"m\.csv:3: malformed row"):
        read_manifest(manifest)


def test_one_attribute_list() -> None:
    assert ATTRIBUTE_COLUMNS == WBCATT_NAMES and len(WBCATT_NAMES) == 11
    assert validate_attribute_schema([dict(a) for a in WBCATT_ATTRIBUTES]) == WBCATT_ATTRIBUTES
    assert [(a["name"], tuple(a["values"])) for a in WBCATT_ATTRIBUTES] == list(WBCATT_SCHEMA.items())
