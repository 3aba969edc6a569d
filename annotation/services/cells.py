"""Cells' roles: the validation hold-out."""

from __future__ import annotations

import random

from annotation.models import Cell, Project


def hold_out_validation(
    *, project: Project, fraction: float = 0.05, per_class_min: int = 2, seed: int = 0
) -> int:
    """Move a stratified sample of the pool's reference-labelled cells to the validation role, where
    every retrain is measured and nothing is queried. Does nothing when the project has validation cells
    already. Returns how many cells were moved."""
    if Cell.objects.filter(project=project, role=Cell.Role.VALIDATION).exists():
        return 0
    pool = Cell.objects.filter(project=project, role=Cell.Role.POOL, reference_label__isnull=False)
    by_class: dict[int, list[int]] = {}
    for cell_id, label_id in pool.values_list("pk", "reference_label_id").order_by("pk"):
        by_class.setdefault(label_id, []).append(cell_id)
    rng = random.Random(seed)
    chosen: list[int] = []
    for ids in by_class.values():
        if len(ids) <= per_class_min:  # too rare to spare: keep them for labelling
            continue
        n = min(max(per_class_min, round(fraction * len(ids))), len(ids) // 2)
        chosen += rng.sample(ids, n)
    return Cell.objects.filter(pk__in=chosen).update(role=Cell.Role.VALIDATION)
