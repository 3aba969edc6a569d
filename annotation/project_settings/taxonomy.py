"""What the settings page shows of the taxonomy: the classes (retired and merged ones marked), the lab
presets not added yet, and the history of changes with what each changed. The changes themselves go
through the API (``loop.api.taxonomy``, called by static/js/taxonomy.js), which queues the retrain."""

from __future__ import annotations

from typing import Any

from annotation import selectors
from annotation.models import Project, TaxonomyChange
from annotation.taxonomy import PRESET_CLASSES

# The fields of a history row's before/after shown as "field: old -> new" (``keys`` is shown apart).
_SHOWN = ("display_name", "colour", "key", "retired", "merged_into")


def change_lines(change: TaxonomyChange) -> list[str]:
    """What one change did, as short lines: each field that differs, the keys that moved, the counts."""
    before, after = change.before or {}, change.after or {}
    lines = [
        f"{field}: {_text(before.get(field))} → {_text(after.get(field))}"
        for field in _SHOWN
        if field in after and before.get(field) != after.get(field)
    ]
    moved = after.get("keys") or {}
    others = {name: keys for name, keys in moved.items() if name != after.get("name")}
    if others:
        lines.append(
            "keys: " + ", ".join(f"{name} {_text(k[0])}→{_text(k[1])}" for name, k in others.items())
        )
    for count in ("annotations_moved", "labels_kept"):
        if count in after:
            lines.append(f"{count.replace('_', ' ')}: {after[count]}")
    return lines


def _text(value: Any) -> str:
    if value in (None, ""):
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def taxonomy_context(project: Project) -> dict[str, Any]:
    classes = list(selectors.class_list(project=project))
    names = {c.name for c in classes}
    return {
        "taxonomy_classes": classes,
        "active_class_names": [c for c in classes if c.retired_at is None],
        "missing_presets": [spec for spec in PRESET_CLASSES if spec["name"] not in names],
        "taxonomy_history": [
            {"change": change, "lines": change_lines(change)}
            for change in selectors.taxonomy_history(project=project, limit=100)
        ],
    }
