"""Batch embedding extraction and the on-disk embedding format.

On disk, one folder per embedding set::

    ids.npy          (N,) unicode record ids (the manifest's relative paths)
    embeddings.npy   (N, D) float32, L2-normalised rows
    meta.json        {"n", "dim", "dtype", "normalized", ...caller's metadata (encoder, data hash)}

Arrays are saved without pickle and loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from learning.data import CellImageDataset, CellRecord
from learning.training import resolve_device
from learning.transforms import to_float

IDS_FILE = "ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"


def _batches(
    data: Dataset[tuple[Tensor, int]], batch_size: int, num_workers: int, pin_memory: bool
) -> Iterator[Tensor]:
    """uint8 (b, 3, S, S) batches in dataset order."""
    if isinstance(data, CellImageDataset) and data.is_loaded:  # already decoded: slice, no collation
        images = data.images
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
        return
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    for images, _ in loader:
        yield images


# no_grad, not inference_mode: the model is moved and converted to channels-last in here, and under
# inference_mode its weights would become inference tensors that can never be trained or explained
# (saliency, fine-tuning) afterwards.
@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    data: Dataset[tuple[Tensor, int]] | Sequence[CellRecord],
    *,
    image_size: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    gray_world: bool = True,
    crop: str = "centre",
    normalize: bool = True,
    channels_last: bool | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed every cell with ``model.forward_features``.

    Args:
        model: a ``models_zoo`` backbone (anything with ``forward_features((B, 3, S, S) in [0, 1])``).
        data: a dataset yielding ``(uint8 image (3, S, S), index)`` such as :class:`CellImageDataset`,
            or records (then ``image_size`` is required and images are decoded on the fly).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes decoding JPEGs (ignored for a preloaded dataset).
        device: default CUDA when available, else CPU.
        normalize: L2-normalise each row (default), so dot products are cosine similarities.
        channels_last: NHWC layout, default on CPU.

    Returns:
        float32 (N, D) in dataset order.
    """
    if isinstance(data, Dataset):
        dataset = data
    else:
        if image_size is None:
            raise ValueError("image_size is required when passing records")
        dataset = CellImageDataset(list(data), image_size, gray_world=gray_world, crop=crop)
    dev = resolve_device(device)
    use_cl = dev.type == "cpu" if channels_last is None else channels_last
    was_training = model.training
    model.eval().to(dev)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    forward = getattr(model, "forward_features", model)
    n = len(dataset)  # type: ignore[arg-type]  # torch Datasets define no __len__
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="embed", unit="img")
    chunks: list[np.ndarray] = []
    try:
        for images in _batches(dataset, batch_size, num_workers, pin_memory=dev.type == "cuda"):
            x = to_float(images.to(dev, non_blocking=True))
            if use_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            z = forward(x).float()
            if normalize:
                z = F.normalize(z, dim=1)
            chunks.append(z.cpu().numpy())
            if bar is not None:
                bar.update(len(images))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if not chunks:
        raise ValueError("no data to embed")
    out = np.concatenate(chunks).astype(np.float32, copy=False)
    if out.shape[0] != n:
        raise RuntimeError(f"embedded {out.shape[0]} cells, expected {n}")
    return out


def batchnorm_for_source(
    model: nn.Module,
    dataset: Dataset[tuple[Tensor, int]],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A copy of ``model`` whose batch-norm statistics are re-estimated on one source's (unlabelled) images:
    AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016). The weights
    stay; only each BatchNorm layer's running mean and variance become this source's, so a lab's stain and
    camera are normalised away inside the network. No label is used.

    Every BatchNorm layer averages over all of ``dataset`` (cumulative, ``momentum=None``); the rest of the
    model stays in eval mode (no dropout)."""
    import copy

    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no batch-norm layer to re-estimate")
    dev = resolve_device(device)
    adapted.eval().to(dev)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
        norm.train()
    forward = getattr(adapted, "forward_features", adapted)
    with torch.no_grad():
        for images in _batches(dataset, batch_size, 0, pin_memory=False):
            forward(to_float(images.to(dev)))
    adapted.eval()
    return adapted


def save_embeddings(
    directory: str | Path,
    ids: Sequence[str] | np.ndarray,
    emb: np.ndarray,
    *,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``ids.npy``, ``embeddings.npy`` (float32) and ``meta.json`` into ``directory``."""
    emb = np.asarray(emb, dtype=np.float32)
    _checked_ids(ids, emb)  # before anything is written
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_array(directory / EMBEDDINGS_FILE, emb)
    return save_ids_and_meta(directory, ids, emb, meta=meta)


def _checked_ids(ids: Sequence[str] | np.ndarray, emb: np.ndarray) -> np.ndarray:
    ids_arr = np.asarray(ids, dtype=str)
    if emb.ndim != 2 or ids_arr.shape != (emb.shape[0],):
        raise ValueError(f"need (N,) ids and (N, D) embeddings, got {ids_arr.shape} and {emb.shape}")
    if len(set(ids_arr.tolist())) != len(ids_arr):
        raise ValueError("ids must be unique")
    return ids_arr


def save_ids_and_meta(
    directory: str | Path,
    ids: Sequence[str] | np.ndarray,
    emb: np.ndarray,
    *,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """The ids and meta of embeddings already written to ``directory/embeddings.npy`` (by
    :func:`save_embeddings`, or filled through a memory map by a sharded embedding)."""
    ids_arr = _checked_ids(ids, emb)
    directory = Path(directory)
    norms = np.linalg.norm(emb, axis=1)
    info = {
        "n": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
        "dtype": "float32",
        "normalized": bool(emb.shape[0] > 0 and np.allclose(norms, 1.0, atol=1e-4)),
        **dict(meta or {}),
    }
    _save_array(directory / IDS_FILE, ids_arr)
    (directory / META_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def _save_array(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name, then renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def load_embeddings(
    directory: str | Path, *, mmap: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a folder written by :func:`save_embeddings`. ``mmap``: the embeddings are memory-mapped
    read-only rather than read whole (a million cells at 1,280 dimensions are 5 GB), so processes that
    share a version share its pages and read only the rows they touch.

    Returns:
        (ids (N,) str, embeddings (N, D) float32, meta dict)
    """
    directory = Path(directory)
    ids = np.load(directory / IDS_FILE, allow_pickle=False)
    emb = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False, mmap_mode="r" if mmap else None)
    meta_path = directory / META_FILE
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if emb.ndim != 2 or ids.shape != (emb.shape[0],):
        raise ValueError(f"{directory}: ids {ids.shape} do not match embeddings {emb.shape}")
    return ids, emb, meta
