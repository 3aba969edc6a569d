"""The pretraining checkpoint file: its format, atomic writes, and the encoder read back from it.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``)::

    {"format": "leukoloop.ssl/1",
     "meta": {backbone, backbone_kwargs, embedding_dim, method, method_kwargs, image_size, gray_world,
              augment, batch_size, lr, data_hash, n_images, epochs_done, steps_done, seconds,
              history, device, torch, created, updated},
     "backbone": encoder state dict,
     "heads": method state without the encoder (projection heads, momentum copies),
     "optimizer": optimizer state}

An encoder fine-tuned with labels is stored in the same format without heads and optimizer state
(:func:`save_encoder`), so everything that loads an encoder reads one kind of file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from models_zoo import Backbone, create_model

CHECKPOINT_FORMAT: Final = "leukoloop.ssl/1"


def encoder_kwargs(backbone_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild kwargs: weights come from the checkpoint, so never load ImageNet weights again."""
    return {k: v for k, v in backbone_kwargs.items() if k not in ("pretrained", "weights_path")}


def write_checkpoint(
    path: Path,
    *,
    meta: Mapping[str, Any],
    backbone: Mapping[str, Any],
    heads: Mapping[str, Any],
    optimizer: Mapping[str, Any],
) -> None:
    """Write the checkpoint dict from its parts (state dicts), atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "meta": meta,
        "backbone": backbone,
        "heads": heads,
        "optimizer": optimizer,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a pretraining checkpoint dict (tensors and plain data only: ``weights_only=True``)."""
    state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format={state.get('format')!r})")
    return state


def load_encoder(
    ckpt_path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild the pretrained encoder of a checkpoint, in eval mode.

    Returns:
        (backbone, meta): ``backbone.forward_features`` maps (B, 3, S, S) in [0, 1] to
        (B, meta["embedding_dim"]); ``meta`` is the checkpoint's metadata dict.
    """
    state = load_checkpoint(ckpt_path, map_location=device)
    meta: dict[str, Any] = state["meta"]
    model = create_model(meta["backbone"], pretrained=False, **encoder_kwargs(meta["backbone_kwargs"]))
    model.load_state_dict(state["backbone"])
    return model.to(device).eval(), meta


def save_encoder(path: str | Path, backbone: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write an encoder (e.g. one fine-tuned with labels) in the checkpoint format :func:`load_encoder`
    reads. ``meta`` needs ``backbone``, ``backbone_kwargs``, ``image_size`` and ``embedding_dim``; there are
    no SSL heads or optimizer state, so such a checkpoint cannot be resumed as pretraining."""
    missing = {"backbone", "backbone_kwargs", "image_size", "embedding_dim"} - set(meta)
    if missing:
        raise ValueError(f"encoder meta lacks {sorted(missing)}")
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    write_checkpoint(path, meta=dict(meta), backbone=state, heads={}, optimizer={})
    return path


__all__ = [
    "CHECKPOINT_FORMAT",
    "encoder_kwargs",
    "load_checkpoint",
    "load_encoder",
    "save_encoder",
    "write_checkpoint",
]
