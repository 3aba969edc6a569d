"""Read-only model use in the web process: a cell's nearest neighbours in the FAISS index and its
saliency map. Models and indexes are cached per version (see ``artifacts``)."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any, Final

import numpy as np
from django.conf import settings

from annotation.cell_files import read_verified
from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.artifacts import faiss_index, index_embeddings
from loop.handlers.encoders import encoder_crop, load_backbone
from loop.handlers.training_set import rows_of
from loop.models import ModelVersion
from loop.selectors import latest_version


def similar_cells(*, cell: Cell, k: int = 8) -> dict[str, Any]:
    """The ``k`` most similar cells of the latest index with their current labels (if any)."""
    index = latest_version(cell.project_id, ModelVersion.Kind.INDEX)
    if index is None:
        return {"cell": cell.pk, "index_version": None, "neighbours": []}
    ids, emb = index_embeddings(index)
    rows, found = rows_of(ids, np.array([cell.pk], dtype=np.int64))
    if not found.all():
        return {"cell": cell.pk, "index_version": index.version, "neighbours": [], "note": "not indexed yet"}
    sims, neighbour_ids = faiss_index(index).search(emb[rows], k + 1)
    pairs = [
        (int(i), float(s)) for i, s in zip(neighbour_ids[0], sims[0], strict=True) if i >= 0 and i != cell.pk
    ]
    pairs = pairs[:k]
    states = cell_labels(project=cell.project, cell_ids=[i for i, _ in pairs])
    return {
        "cell": cell.pk,
        "index_version": index.version,
        "neighbours": [
            {
                "cell": cell_id,
                "image_url": f"/cells/{cell_id}/image",
                "similarity": round(similarity, 4),
                "label": states[cell_id].label
                if cell_id in states and states[cell_id].status is LabelStatus.LABELLED
                else None,
            }
            for cell_id, similarity in pairs
        ],
    }


@functools.lru_cache(maxsize=2)
def _backbone(encoder_pk: int) -> tuple[Any, int, str]:
    """(backbone, image size, crop) of an encoder version."""
    encoder = ModelVersion.objects.get(pk=encoder_pk)
    backbone, size = load_backbone(encoder)
    return backbone, size, encoder_crop(encoder)


# Integrated gradients, not Grad-CAM: on real cells with the loop's default model (EfficientNet-Lite0
# at 64 px, whose last feature map is 2x2) Grad-CAM's map is one blob over the crop and is hotter on the
# nucleus than on the background for about half the cells (chance); integrated gradients are for all
# of them (bench/saliency_nucleus.py, bench/results/saliency_nucleus.json). It costs ~16 passes instead
# of one, once per cell and classifier version (cached).
WEB_SALIENCY_METHOD: Final = "integrated_gradients"


def saliency_cache_file(*, project_id: int, classifier_version: int, cell_id: int) -> Path:
    """Where the overlay of a cell under a classifier version is cached (``-overlay``: the RGBA heat
    layer; files of the earlier blended format are never read)."""
    cache = Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{project_id}" / "saliency"
    return cache / f"classifier-v{classifier_version}-cell-{cell_id}-overlay.png"


def saliency_png(*, cell: Cell) -> bytes | None:
    """The latest classifier's saliency map for its predicted class as an RGBA overlay (PNG: colour
    scale, alpha proportional to saliency, top region outlined; :func:`learning.saliency.heat_overlay_png`)
    for the page to lay over the cell, or None when the project has no classifier yet or its kind
    cannot be written as a torch head (SVM, MLP).

    Cached on disk per classifier version: the map of a cell only changes with the model. The image is
    checked against its hash first, cached map or not (raises ``CellFileChanged`` if it changed)."""
    from learning.data import load_image_framed
    from learning.saliency import heat_in_frame, heat_overlay_png, linear_head_from_classifier, saliency_map

    version = latest_version(cell.project_id, ModelVersion.Kind.CLASSIFIER)
    if version is None or version.parent is None or version.parent.parent_id is None:
        return None
    image_bytes = read_verified(cell.cell_file)
    path = saliency_cache_file(
        project_id=cell.project_id, classifier_version=version.version, cell_id=cell.pk
    )
    if path.is_file():
        return path.read_bytes()
    clf = load_classifier(version)
    backbone, size, crop = _backbone(version.parent.parent_id)
    _, emb = index_embeddings(version.parent)
    head = linear_head_from_classifier(clf, emb.shape[1])
    if head is None:
        return None
    image, frame, box = load_image_framed(io.BytesIO(image_bytes), size, crop=crop)
    heat = saliency_map(backbone, head, image, method=WEB_SALIENCY_METHOD)
    if crop != "centre":  # the page lays the overlay over the whole file: put the map where its square is
        heat = heat_in_frame(heat, frame, box)
    png = heat_overlay_png(heat)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return png
