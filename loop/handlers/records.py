"""Database cells -> the engine's ``CellRecord`` (id = cell primary key as text)."""

from __future__ import annotations

from collections.abc import Iterable

from annotation.models import Cell
from learning.data import CellRecord


def cell_records(cells: Iterable[Cell]) -> list[CellRecord]:
    return [CellRecord(id=str(cell.pk), path=cell.image_path, source=cell.source) for cell in cells]
