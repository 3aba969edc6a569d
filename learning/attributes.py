"""The 11 morphological attributes of WBCAtt (Tsutsui et al., NeurIPS 2023) and their allowed values.

This is the one list: the learning engine reads these manifest columns (:mod:`learning.manifest`) and
the platform starts every project's attribute schema from it (``annotation.taxonomy``). Plain data and
the standard library only, so that Django code can import it without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# Attribute -> allowed values, in the order WBCAtt lists them (read-only: it is shared by every caller).
WBCATT_SCHEMA: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "cell_size": ("small", "big"),
        "cell_shape": ("round", "irregular"),
        "nucleus_shape": (
            "unsegmented-round",
            "unsegmented-indented",
            "unsegmented-band",
            "segmented-bilobed",
            "segmented-multilobed",
            "irregular",
        ),
        "nuclear_cytoplasmic_ratio": ("low", "high"),
        "chromatin_density": ("densely", "loosely"),
        "cytoplasm_vacuole": ("yes", "no"),
        "cytoplasm_texture": ("clear", "frosted"),
        "cytoplasm_colour": ("light blue", "blue", "purple blue"),
        "granule_type": ("small", "round", "coarse", "nil"),
        "granule_colour": ("pink", "red", "purple", "nil"),
        "granularity": ("yes", "no"),
    }
)

WBCATT_NAMES: Final[tuple[str, ...]] = tuple(WBCATT_SCHEMA)

__all__ = ["WBCATT_NAMES", "WBCATT_SCHEMA"]
