"""One manifest row, parsed: the single rule for what every column of a cell manifest means.

A manifest is a CSV with one row per cell crop. Columns with a fixed meaning (:data:`FIXED_COLUMNS`):
``path`` (required, relative to the CSV's folder), ``label``, ``subtype`` (a finer label from the
source, e.g. ``SNE``), ``source`` (e.g. ``pbc``), ``patient_id``, ``slide_id`` and ``role``. Attribute
columns hold morphological attributes, by default the 11 of WBCAtt (:data:`~learning.attributes.
WBCATT_NAMES`); every other column is kept as it is in ``extra``.

Both the learning engine (:func:`learning.data.read_manifest`) and the platform's import
(``annotation.importing.sources``) parse rows here, so they agree on every column. Pure: the standard
library only, no torch and no Django.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from learning.attributes import WBCATT_NAMES

PATH_COLUMN: Final = "path"
FIXED_COLUMNS: Final[tuple[str, ...]] = (
    PATH_COLUMN,
    "label",
    "subtype",
    "source",
    "patient_id",
    "slide_id",
    "role",
)


class ManifestError(ValueError):
    """A manifest (its header) or one of its rows cannot be read; the message names no file or line,
    the caller adds where it was."""


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row; text fields are stripped and ``""`` when empty.

    Attributes:
        attributes: the non-empty attribute columns (attribute -> value).
        extra: the remaining columns, unstripped.
    """

    path: str
    label: str = ""
    subtype: str = ""
    source: str = ""
    patient_id: str = ""
    slide_id: str = ""
    role: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)


# A cell beginning with one of these is run as a formula by spreadsheet programs (CSV injection).
FORMULA_PREFIXES: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """``value`` as a CSV cell no spreadsheet runs: text beginning with a formula character gets a
    leading single quote (OWASP's advice for CSV injection); numbers and other text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


_QUOTED_FORMULA: Final[tuple[str, ...]] = tuple("'" + prefix for prefix in FORMULA_PREFIXES)


def from_spreadsheet_safe(value: str) -> str:
    """Undo :func:`spreadsheet_safe`: a quote followed by a formula character is dropped, so what
    leukoloop exported imports back unchanged (a hand-written quote before other text stays)."""
    return value[1:] if value.startswith(_QUOTED_FORMULA) else value


def check_header(columns: Sequence[str] | None) -> list[str]:
    """The header's columns; raises :class:`ManifestError` without a ``path`` column."""
    columns = list(columns or [])
    if PATH_COLUMN not in columns:
        raise ManifestError(f"has no '{PATH_COLUMN}' column (columns: {', '.join(columns)})")
    return columns


def parse_row(
    row: Mapping[str | None, str | list[str] | None],
    *,
    attribute_columns: Collection[str] | None = WBCATT_NAMES,
    unquote: bool = True,
) -> ManifestRow:
    """Parse one ``csv.DictReader`` row.

    Args:
        row: the reader's dict; a row with too many fields has a ``None`` key, one with too few has
            ``None`` values (DictReader's defaults).
        attribute_columns: the columns that hold attributes. ``None``: every column that is not a fixed
            one, for a platform project whose attributes are its own (the caller keeps those it knows).
        unquote: undo :func:`spreadsheet_safe` on every field (a caller that knows its text holds no
            quote at all may skip it).

    Raises:
        ManifestError: the row has the wrong number of fields or an empty path.
    """
    if None in row or any(value is None for value in row.values()):
        expected = sum(1 for key in row if key is not None)
        raise ManifestError(f"malformed row: expected {expected} fields, got {_field_count(row)}")
    cells: dict[str, str] = {k: v for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
    if unquote:  # from_spreadsheet_safe, inlined: this runs for every field of every row
        cells = {
            (k[1:] if k.startswith(_QUOTED_FORMULA) else k): (v[1:] if v.startswith(_QUOTED_FORMULA) else v)
            for k, v in cells.items()
        }
    path = cells.get(PATH_COLUMN, "").strip()
    if not path:
        raise ManifestError("row has an empty path")
    fixed = {c: cells.get(c, "").strip() for c in FIXED_COLUMNS}
    # Attributes in the order of attribute_columns (the manifest's order when every column counts).
    names = [c for c in cells if c not in FIXED_COLUMNS] if attribute_columns is None else attribute_columns
    attributes = {c: value for c in names if (value := cells.get(c, "").strip())}
    return ManifestRow(
        path=path,
        label=fixed["label"],
        subtype=fixed["subtype"],
        source=fixed["source"],
        patient_id=fixed["patient_id"],
        slide_id=fixed["slide_id"],
        role=fixed["role"],
        attributes=attributes,
        extra={c: v for c, v in cells.items() if c not in FIXED_COLUMNS and c not in names},
    )


def _field_count(row: Mapping[str | None, object]) -> int:
    extra = row.get(None)
    present = sum(1 for key, value in row.items() if key is not None and value is not None)
    return present + (len(extra) if isinstance(extra, list) else 0)


__all__ = [
    "FIXED_COLUMNS",
    "FORMULA_PREFIXES",
    "PATH_COLUMN",
    "ManifestError",
    "ManifestRow",
    "check_header",
    "from_spreadsheet_safe",
    "parse_row",
    "spreadsheet_safe",
]
