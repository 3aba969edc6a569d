"""Read-only model use in the web process: a cell's nearest neighbours in the FAISS index and its
saliency map. Models and indexes are cached per version (see ``artifacts``)."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from annotation.cell_files import read_verified
from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.artifacts import faiss_index, index_embeddings
from loop.handlers.encoders import load_backbone
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
def _backbone(encoder_pk: int) -> tuple[Any, int]:
    return load_backbone(ModelVersion.objects.get(pk=encoder_pk))


def saliency_png(*, cell: Cell) -> bytes | None:
    """The latest classifier's Grad-CAM for its predicted class, over the cell (PNG), or None when the
    project has no classifier yet or its kind cannot be written as a torch head (SVM, MLP).

    Cached on disk per classifier version: the map of a cell only changes with the model. The image is
    checked against its hash first, cached map or not (raises ``CellFileChanged`` if it changed)."""
    from learning.data import load_image
    from learning.saliency import linear_head_from_classifier, overlay_png, saliency_map

    version = latest_version(cell.project_id, ModelVersion.Kind.CLASSIFIER)
    if version is None or version.parent is None or version.parent.parent_id is None:
        return None
    image_bytes = read_verified(cell.cell_file)
    cache = Path(settings.LEUKOLOOP_ARTIFACTS_DIR) / f"project-{cell.project_id}" / "saliency"
    path = cache / f"classifier-v{version.version}-cell-{cell.pk}.png"
    if path.is_file():
        return path.read_bytes()
    clf = load_classifier(version)
    backbone, size = _backbone(version.parent.parent_id)
    _, emb = index_embeddings(version.parent)
    head = linear_head_from_classifier(clf, emb.shape[1])
    if head is None:
        return None
    image = load_image(io.BytesIO(image_bytes), size)
    png = overlay_png(image, saliency_map(backbone, head, image))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return png
