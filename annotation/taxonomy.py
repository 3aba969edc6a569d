"""Default label taxonomy and morphological attribute schema for peripheral blood smears.

Classes follow the reference method's 9 white-blood-cell types; attributes are the 11 of WBCAtt
(Tsutsui et al., NeurIPS 2023). Both are plain data so that projects can start from them and edit.
"""

from __future__ import annotations

from typing import Final, TypedDict

from learning.attributes import WBCATT_SCHEMA


class ClassSpec(TypedDict):
    name: str
    display_name: str
    colour: str
    key: str


class AttributeSpec(TypedDict):
    name: str
    values: list[str]


# Keys are the digits 1-9 in the order pathologists read a differential; colours are distinct
# enough to tell apart on a grid and keep white text legible.
BLOOD_SMEAR_CLASSES: Final[list[ClassSpec]] = [
    {"name": "neutrophil", "display_name": "Neutrophil", "colour": "#1f77b4", "key": "1"},
    {"name": "lymphocyte", "display_name": "Lymphocyte", "colour": "#2ca02c", "key": "2"},
    {"name": "monocyte", "display_name": "Monocyte", "colour": "#9467bd", "key": "3"},
    {"name": "eosinophil", "display_name": "Eosinophil", "colour": "#d62728", "key": "4"},
    {"name": "basophil", "display_name": "Basophil", "colour": "#8c564b", "key": "5"},
    {"name": "ig", "display_name": "Immature granulocyte", "colour": "#e377c2", "key": "6"},
    {"name": "blast", "display_name": "Blast", "colour": "#b8860b", "key": "7"},
    {"name": "erythroblast", "display_name": "Erythroblast", "colour": "#17becf", "key": "8"},
    {"name": "platelet", "display_name": "Platelet", "colour": "#7f7f7f", "key": "9"},
]

# Derived from the learning engine's list, so that the default schema and the manifest columns the
# engine reads can never drift apart.
WBCATT_ATTRIBUTES: Final[list[AttributeSpec]] = [
    {"name": name, "values": list(values)} for name, values in WBCATT_SCHEMA.items()
]


def validate_attribute_schema(schema: object) -> list[AttributeSpec]:
    """Check an attribute schema's shape; raise ValueError with a readable message otherwise."""
    if not isinstance(schema, list):
        raise ValueError("attribute schema must be a list of {name, values}")
    seen: set[str] = set()
    for item in schema:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"attribute entry {item!r} needs a string 'name'")
        values = item.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"attribute {item['name']!r} needs a non-empty list of string 'values'")
        if len(set(values)) != len(values):
            raise ValueError(f"attribute {item['name']!r} lists a value twice")
        if item["name"] in seen:
            raise ValueError(f"attribute {item['name']!r} appears twice")
        seen.add(item["name"])
    return schema


# Classes a haematology lab commonly adds to the nine above (``annotation.services.taxonomy
# .class_add_presets`` adds any of them in one call). Keys are not given: they follow the order.
PRESET_CLASSES: Final[list[ClassSpec]] = [
    {"name": "band_neutrophil", "display_name": "Band neutrophil", "colour": "#aec7e8", "key": ""},
    {"name": "reactive_lymphocyte", "display_name": "Reactive lymphocyte", "colour": "#98df8a", "key": ""},
    {"name": "smudge_cell", "display_name": "Smudge cell", "colour": "#c49c94", "key": ""},
    {"name": "artefact", "display_name": "Artefact", "colour": "#bcbd22", "key": ""},
    {"name": "unidentifiable", "display_name": "Unidentifiable", "colour": "#525252", "key": ""},
]

# Letters the labelling page uses for its own commands (static/js/label/state.js ``keyAction``; a test
# keeps the two in step): a class never gets one of them, or its key would shadow the command.
PAGE_COMMAND_LETTERS: Final = frozenset("abgnsuwxz")
# Letters the review queue moves with (static/js/review.js; a test keeps the two in step): there a class
# key j or k (the 21st and 22nd classes before) would never be reached.
REVIEW_COMMAND_LETTERS: Final = frozenset("jk")
# After 1-9, classes get letters in keyboard order (top row first, near the digits), skipping the above.
_LETTER_ORDER: Final = "qertyiopdfhjklcvbm"


def class_keys(count: int) -> list[str]:
    """The keyboard keys of ``count`` active classes in display order: 1-9, then letters that are not
    commands of the labelling page or the review queue, then none ("": the class is still a button on
    the page, just without a key)."""
    reserved = PAGE_COMMAND_LETTERS | REVIEW_COMMAND_LETTERS
    letters = [c for c in _LETTER_ORDER if c not in reserved]
    keys = [str(d) for d in range(1, 10)] + letters
    return [keys[i] if i < len(keys) else "" for i in range(count)]
