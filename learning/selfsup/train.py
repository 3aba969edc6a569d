"""Pretraining loop: decoded-tensor cache -> batched augmentation -> method loss, under an epoch and/or
wall-clock budget, with resumable checkpoints.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``)::

    {"format": "leukoloop.ssl/1",
     "meta": {backbone, backbone_kwargs, embedding_dim, method, method_kwargs, image_size, gray_world,
              augment, batch_size, lr, data_hash, n_images, epochs_done, steps_done, seconds,
              history, device, torch, created, updated},
     "backbone": encoder state dict,
     "heads": method state without the encoder (projection heads, momentum copies),
     "optimizer": optimizer state}

``epochs`` counts the whole run, resumed epochs included (like Keras' ``initial_epoch``); ``minutes`` is
the budget of this call. Whichever ends first stops training, possibly mid-epoch (``epochs_done`` is
then fractional); the learning rate follows a short warm-up and a cosine decay over that budget.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from learning.data import CellImageDataset, CellRecord, data_hash
from learning.selfsup.methods import METHODS, SSLMethod, create_method
from learning.training import lr_factor, resolve_device
from learning.transforms import BloodSmearAugment, augment_config, to_float
from models_zoo import Backbone, create_model

CHECKPOINT_FORMAT = "leukoloop.ssl/1"
DEFAULTS: dict[str, Any] = {"method": "triplet", "backbone": "lightcnn", "image_size": 64, "batch_size": 128}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _encoder_kwargs(backbone_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild kwargs: weights come from the checkpoint, so never load ImageNet weights again."""
    return {k: v for k, v in backbone_kwargs.items() if k not in ("pretrained", "weights_path")}


def _save(path: Path, state: dict[str, Any]) -> None:
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
    model = create_model(meta["backbone"], pretrained=False, **_encoder_kwargs(meta["backbone_kwargs"]))
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
    _save(
        path,
        {"format": CHECKPOINT_FORMAT, "meta": dict(meta), "backbone": state, "heads": {}, "optimizer": {}},
    )
    return path


def pretrain(
    records: Sequence[CellRecord],
    *,
    method: str | None = None,
    backbone: str | None = None,
    image_size: int | None = None,
    epochs: float | None = None,
    minutes: float | None = None,
    batch_size: int | None = None,
    out: str | Path,
    resume: str | Path | None = None,
    progress: bool = True,
    backbone_kwargs: Mapping[str, Any] | None = None,
    method_kwargs: Mapping[str, Any] | None = None,
    augment: str = "reference",
    lr: float | None = None,
    weight_decay: float = 1e-5,
    schedule: str = "cosine",
    warmup: float = 0.02,
    gray_world: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
    channels_last: bool | None = None,
    cache_dir: str | Path | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Label-free pretraining of a ``models_zoo`` backbone on ``records``; writes a checkpoint to ``out``.

    Args:
        records: the cells (labels are ignored).
        method: ``"triplet"`` (reference), ``"simclr"`` or ``"byol"``; None: the resumed checkpoint's, else
            triplet. Likewise ``backbone`` (lightcnn), ``image_size`` (64), ``batch_size`` (128 cells,
            i.e. 256 views per step), ``backbone_kwargs`` and ``method_kwargs``.
        epochs: total epochs to reach (resumed ones included); may be fractional.
        minutes: wall-clock budget of this call, data loading included. At least one of the two.
        out: checkpoint path, written after every epoch and at the end.
        resume: checkpoint to continue from (model, heads and optimizer state).
        progress: show a tqdm bar.
        augment: preset of :data:`learning.transforms.AUGMENT_PRESETS`.
        lr: AdamW learning rate; default the method's ``default_lr``, a tenth of it for ImageNet
            initialised backbones (``backbone_kwargs["pretrained"]``).
        schedule: ``"cosine"`` or ``"constant"`` after a linear warm-up over the first ``warmup``
            fraction of the budget.
        device: default CUDA when available, else CPU with ``num_threads`` (default all cores) threads.
        channels_last: NHWC memory layout (default on CPU, where oneDNN convolutions run faster with it).
        cache_dir: keep the decoded image tensor there between runs.
        on_progress: called after every step with (fraction of the budget done, a short message), for
            callers that report progress elsewhere (the platform's job rows).

    Returns:
        JSON-able summary: checkpoint, method, backbone, epochs_done, steps_done, seconds,
        seconds_this_run, cells_per_second, final_loss, history, stopped_by, device, data_hash ...
    """
    t_start = time.perf_counter()
    if epochs is None and minutes is None:
        raise ValueError("give epochs, minutes or both")
    out = Path(out)
    ckpt = load_checkpoint(resume) if resume is not None else None
    prev: dict[str, Any] = ckpt["meta"] if ckpt is not None else {}

    def pick(name: str, value: Any) -> Any:
        if value is None:
            return prev.get(name, DEFAULTS.get(name))
        if ckpt is not None and name in prev and prev[name] != value and name != "batch_size":
            raise ValueError(f"resume: {name}={value!r} differs from the checkpoint's {prev[name]!r}")
        return value

    method_name: str = pick("method", method)
    backbone_name: str = pick("backbone", backbone)
    size: int = int(pick("image_size", image_size))
    bsz: int = int(pick("batch_size", batch_size))
    bb_kwargs: dict[str, Any] = dict(
        pick("backbone_kwargs", None if backbone_kwargs is None else dict(backbone_kwargs)) or {}
    )
    m_kwargs: dict[str, Any] = dict(
        pick("method_kwargs", None if method_kwargs is None else dict(method_kwargs)) or {}
    )
    if method_name not in METHODS:
        raise ValueError(f"unknown method {method_name!r}; known: {sorted(METHODS)}")
    if len(records) < 2:
        raise ValueError("need at least two cells (each batch needs negatives)")
    if ckpt is not None and prev.get("gray_world", gray_world) != gray_world:
        raise ValueError(f"resume: gray_world={gray_world} differs from the checkpoint's setting")

    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(num_threads or os.cpu_count() or 1)
    use_cl = dev.type == "cpu" if channels_last is None else channels_last
    torch.manual_seed(seed)

    # Model: on resume build without ImageNet weights, the checkpoint overwrites them anyway.
    build_kwargs = _encoder_kwargs(bb_kwargs) if ckpt is not None else bb_kwargs
    encoder = create_model(backbone_name, **build_kwargs)
    model: SSLMethod = create_method(method_name, encoder, **m_kwargs)
    if ckpt is not None:
        model.load_state_dict({**ckpt["heads"], **{f"backbone.{k}": v for k, v in ckpt["backbone"].items()}})
    model.to(dev)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    base_lr = (
        lr
        if lr is not None
        else prev.get("lr", METHODS[method_name].default_lr * (0.1 if bb_kwargs.get("pretrained") else 1.0))
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=base_lr, weight_decay=weight_decay)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])

    # Data: decode once into a uint8 (N, 3, S, S) tensor; batches are random rows of it.
    dataset = CellImageDataset(records, size, gray_world=gray_world, cache=True)
    images = dataset.preload(cache_dir=cache_dir, progress=progress)
    dhash = data_hash(records)
    if ckpt is not None and prev.get("data_hash") != dhash:
        warnings.warn(
            f"resume: data hash {dhash} differs from the checkpoint's {prev.get('data_hash')}", stacklevel=2
        )
    n = len(records)
    bsz_eff = min(bsz, n)
    steps_per_epoch = max(1, n // bsz_eff)
    steps_done: int = int(prev.get("steps_done", 0))
    seconds_before: float = float(prev.get("seconds", 0.0))
    history: list[dict[str, float]] = list(prev.get("history", []))
    target_steps = round(epochs * steps_per_epoch) if epochs is not None else None
    budget_s = minutes * 60.0 if minutes is not None else None
    gen_device = dev if dev.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(seed + steps_done)
    augmenter = BloodSmearAugment(augment, generator=gen)
    perm_gen = torch.Generator().manual_seed(seed + 7919 + steps_done)

    meta: dict[str, Any] = {
        "backbone": backbone_name,
        "backbone_kwargs": bb_kwargs,
        "embedding_dim": encoder.num_features,
        "method": method_name,
        "method_kwargs": m_kwargs,
        "image_size": size,
        "gray_world": gray_world,
        "augment": augment_config(augment).to_dict() | {"preset": augment},
        "batch_size": bsz,
        "lr": base_lr,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "data_hash": dhash,
        "n_images": n,
        "created": prev.get("created", _now()),
        "torch": str(torch.__version__),
    }

    def checkpoint(seconds: float) -> None:
        meta.update(
            epochs_done=steps_done / steps_per_epoch,
            steps_done=steps_done,
            seconds=seconds,
            history=history,
            device=str(dev),
            updated=_now(),
        )
        heads = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        _save(
            out,
            {
                "format": CHECKPOINT_FORMAT,
                "meta": meta,
                "backbone": model.backbone.state_dict(),
                "heads": heads,
                "optimizer": optimizer.state_dict(),
            },
        )

    def elapsed() -> float:
        return time.perf_counter() - t_start

    def done() -> str | None:
        if target_steps is not None and steps_done >= target_steps:
            return "epochs"
        if budget_s is not None and elapsed() >= budget_s:
            return "minutes"
        return None

    def progress_fraction() -> float:
        fractions = []
        if target_steps is not None:
            fractions.append(steps_done / max(target_steps, 1))
        if budget_s is not None:
            fractions.append(elapsed() / budget_s)
        return min(max(fractions), 1.0)

    bar = None
    if progress:
        from tqdm import tqdm

        total = max(target_steps - steps_done, 0) if target_steps is not None else None
        bar = tqdm(total=total, desc=f"{method_name}/{backbone_name}", unit="step")

    model.train()
    t_loop = time.perf_counter()
    steps_this_run = 0
    last_loss = float("nan")
    stopped_by = done()
    try:
        while stopped_by is None:
            epoch_losses: list[float] = []
            perm = torch.randperm(n, generator=perm_gen)
            first = steps_done % steps_per_epoch
            for step in range(first, steps_per_epoch):
                idx = perm[step * bsz_eff : (step + 1) * bsz_eff]
                x: Tensor = to_float(images[idx].to(dev, non_blocking=True))
                v0, v1 = augmenter(x), augmenter(x)
                if use_cl:
                    v0 = v0.contiguous(memory_format=torch.channels_last)
                    v1 = v1.contiguous(memory_format=torch.channels_last)
                for group in optimizer.param_groups:
                    group["lr"] = base_lr * lr_factor(progress_fraction(), warmup=warmup, schedule=schedule)
                loss = model.training_loss(v0, v1)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {steps_done}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps_done += 1
                steps_this_run += 1
                model.on_step_end(progress_fraction())
                last_loss = float(loss.detach())
                epoch_losses.append(last_loss)
                if bar is not None:
                    bar.update()
                    bar.set_postfix(loss=f"{last_loss:.4f}", epoch=f"{steps_done / steps_per_epoch:.2f}")
                if on_progress is not None:
                    on_progress(
                        progress_fraction(),
                        f"epoch {steps_done / steps_per_epoch:.2f}, loss {last_loss:.4f}",
                    )
                stopped_by = done()
                if stopped_by is not None:
                    break
            if epoch_losses:
                history.append(
                    {
                        "epoch": round(steps_done / steps_per_epoch, 4),
                        "loss": sum(epoch_losses) / len(epoch_losses),
                        "seconds": round(seconds_before + elapsed(), 2),
                    }
                )
            checkpoint(seconds_before + elapsed())
    finally:
        if bar is not None:
            bar.close()
        if dev.type == "cpu":
            torch.set_num_threads(old_threads)
    if steps_this_run == 0:
        checkpoint(seconds_before + elapsed())
    loop_s = time.perf_counter() - t_loop
    return {
        "checkpoint": str(out),
        "method": method_name,
        "backbone": backbone_name,
        "backbone_kwargs": bb_kwargs,
        "embedding_dim": encoder.num_features,
        "image_size": size,
        "batch_size": bsz_eff,
        "lr": base_lr,
        "epochs_done": steps_done / steps_per_epoch,
        "steps_done": steps_done,
        "steps_this_run": steps_this_run,
        "seconds": round(seconds_before + elapsed(), 2),
        "seconds_this_run": round(elapsed(), 2),
        "cells_per_second": round(steps_this_run * bsz_eff / loop_s, 1) if steps_this_run else 0.0,
        "final_loss": last_loss if steps_this_run else (history[-1]["loss"] if history else None),
        "history": history,
        "stopped_by": stopped_by,
        "device": str(dev),
        "data_hash": dhash,
        "n_images": n,
        "resumed_from": str(resume) if resume is not None else None,
    }
