"""Pretraining loop: decoded-tensor cache -> batched augmentation -> method loss, under an epoch and/or
wall-clock budget (:func:`learning.training.run_budgeted`), with resumable checkpoints
(:mod:`learning.selfsup.checkpoints`).

``epochs`` counts the whole run, resumed epochs included (like Keras' ``initial_epoch``); ``minutes`` is
the budget of this call. Whichever ends first stops training, possibly mid-epoch (``epochs_done`` is
then fractional); the learning rate follows a short warm-up and a cosine decay over that budget.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import InitVar, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from learning.data import CellImageDataset, CellRecord, data_hash
from learning.selfsup.checkpoints import (
    CHECKPOINT_FORMAT,
    encoder_kwargs,
    load_checkpoint,
    load_encoder,
    save_encoder,
    write_checkpoint,
)
from learning.selfsup.config import DEFAULTS, PretrainConfig, PretrainSettings, resolve_settings
from learning.selfsup.methods import SSLMethod, create_method
from learning.training import (
    EpochEnd,
    ProgressCallback,
    ProgressReporter,
    TrainingBudget,
    backward_step,
    device_generator,
    lr_factor,
    resolve_device,
    run_budgeted,
    scale_learning_rates,
)
from learning.transforms import BloodSmearAugment, augment_config, to_float
from models_zoo import create_model


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pretrain(
    records: Sequence[CellRecord],
    config: PretrainConfig,
    *,
    out: str | Path,
    resume: str | Path | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Label-free pretraining of a ``models_zoo`` backbone on ``records``; writes a checkpoint to ``out``.

    Args:
        records: the cells (labels are ignored); at least two.
        config: what to train and for how long (:class:`~learning.selfsup.config.PretrainConfig`).
        out: checkpoint path, written after every epoch and at the end.
        resume: checkpoint to continue from (model, heads and optimizer state); the config's None
            fields take its values.
        progress: show a tqdm bar.
        on_progress: called after every step with (fraction of the budget done, a short message), for
            callers that report progress elsewhere (the platform's job rows).

    Returns:
        JSON-able summary: checkpoint, method, backbone, epochs_done, steps_done, seconds,
        seconds_this_run, cells_per_second, final_loss, history, stopped_by, device, data_hash ...
    """
    t_start = time.perf_counter()
    out = Path(out)
    ckpt = load_checkpoint(resume) if resume is not None else None
    prev: dict[str, Any] = ckpt["meta"] if ckpt is not None else {}
    settings = resolve_settings(config, prev if ckpt is not None else None)
    if len(records) < 2:
        raise ValueError("need at least two cells (each batch needs negatives)")
    dev = resolve_device(config.device)
    with _torch_threads(dev, config.num_threads):
        use_cl = dev.type == "cpu" if config.channels_last is None else config.channels_last
        torch.manual_seed(config.seed)
        model = _build_model(settings, ckpt, dev, channels_last=use_cl)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=settings.lr,
            weight_decay=config.weight_decay,
        )
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        # Data: decode once into a uint8 (N, 3, S, S) tensor; batches are random rows of it.
        dataset = CellImageDataset(
            records, settings.image_size, gray_world=config.gray_world, crop=config.crop, cache=True
        )
        images = dataset.preload(cache_dir=config.cache_dir, progress=progress)
        dhash = data_hash(records)
        if ckpt is not None and prev.get("data_hash") != dhash:
            warnings.warn(
                f"resume: data hash {dhash} differs from the checkpoint's {prev.get('data_hash')}",
                stacklevel=2,
            )
        batch_size = min(settings.batch_size, len(records))
        budget = TrainingBudget(
            epochs=config.epochs,
            minutes=config.minutes,
            steps_per_epoch=max(1, len(records) // batch_size),
            steps_done=int(prev.get("steps_done", 0)),
            started=t_start,
        )
        run = _PretrainRun(
            model=model,
            optimizer=optimizer,
            images=images,
            batch_size=batch_size,
            budget=budget,
            config=config,
            device=dev,
            channels_last=use_cl,
            out=out,
            meta=_initial_meta(settings, config, model, dhash, len(records), prev),
            previous=prev,
        )
        run.train(progress=progress, on_progress=on_progress)
    return run.summary() | {"resumed_from": str(resume) if resume is not None else None}


@contextmanager
def _torch_threads(device: torch.device, num_threads: int | None) -> Iterator[None]:
    """On CPU, train with ``num_threads`` (default every core) and restore the caller's count after."""
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(num_threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        if device.type == "cpu":
            torch.set_num_threads(old_threads)


def _build_model(
    settings: PretrainSettings, ckpt: Mapping[str, Any] | None, device: torch.device, *, channels_last: bool
) -> SSLMethod:
    """The method around a fresh encoder, or around the checkpoint's encoder and heads."""
    # On resume build without ImageNet weights: the checkpoint overwrites them anyway.
    build_kwargs = encoder_kwargs(settings.backbone_kwargs) if ckpt is not None else settings.backbone_kwargs
    model = create_method(
        settings.method, create_model(settings.backbone, **build_kwargs), **settings.method_kwargs
    )
    if ckpt is not None:
        model.load_state_dict({**ckpt["heads"], **{f"backbone.{k}": v for k, v in ckpt["backbone"].items()}})
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _initial_meta(
    settings: PretrainSettings,
    config: PretrainConfig,
    model: SSLMethod,
    dhash: str,
    n_images: int,
    prev: Mapping[str, Any],
) -> dict[str, Any]:
    """The checkpoint's description of the run; the progress fields are added at every save."""
    return {
        "backbone": settings.backbone,
        "backbone_kwargs": settings.backbone_kwargs,
        "embedding_dim": model.backbone.num_features,
        "method": settings.method,
        "method_kwargs": settings.method_kwargs,
        "image_size": settings.image_size,
        "gray_world": config.gray_world,
        "crop": config.crop,
        "augment": augment_config(config.augment).to_dict() | {"preset": config.augment},
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "data_hash": dhash,
        "n_images": n_images,
        "created": prev.get("created", _now()),
        "torch": str(torch.__version__),
    }


@dataclass(kw_only=True, eq=False)
class _PretrainRun:
    """One pretraining call once everything is built: the steps :func:`run_budgeted` drives, the
    checkpoint after each epoch, and the summary."""

    model: SSLMethod
    optimizer: torch.optim.Optimizer
    images: Tensor
    batch_size: int
    budget: TrainingBudget
    config: PretrainConfig
    device: torch.device
    channels_last: bool
    out: Path
    meta: dict[str, Any]
    previous: InitVar[Mapping[str, Any]]
    last_loss: float = float("nan")
    stopped_by: str | None = None
    loop_seconds: float = 0.0
    bar: Any = None

    def __post_init__(self, previous: Mapping[str, Any]) -> None:
        self.base_lr: float = self.meta["lr"]
        self.steps_before = self.budget.steps_done
        self.seconds_before = float(previous.get("seconds", 0.0))
        self.history: list[dict[str, float]] = list(previous.get("history", []))
        # Seeded by the steps already done, so a resumed run does not replay the same batches.
        seed = self.config.seed + self.steps_before
        self.augmenter = BloodSmearAugment(self.config.augment, generator=device_generator(self.device, seed))
        self.perm_gen = torch.Generator().manual_seed(seed + 7919)
        self.perm = torch.empty(0, dtype=torch.long)

    def train(self, *, progress: bool, on_progress: ProgressCallback | None) -> None:
        if progress:
            from tqdm import tqdm

            target = self.budget.target_steps
            total = max(target - self.budget.steps_done, 0) if target is not None else None
            self.bar = tqdm(total=total, desc=f"{self.meta['method']}/{self.meta['backbone']}", unit="step")
        self.model.train()
        t_loop = time.perf_counter()
        try:
            self.stopped_by = run_budgeted(
                self.budget,
                self.step,
                start_epoch=self.start_epoch,
                after_step=self.after_step,
                end_epoch=self.end_epoch,
                # Every step: the platform's job rows want the loss as it goes (steps take >= 0.1 s).
                report=ProgressReporter(on_progress, self.budget, interval=0.0),
            )
        finally:
            if self.bar is not None:
                self.bar.close()
        self.loop_seconds = time.perf_counter() - t_loop
        if self.steps_this_run == 0:
            self.save()  # still write the checkpoint the caller asked for

    @property
    def steps_this_run(self) -> int:
        return self.budget.steps_done - self.steps_before

    def start_epoch(self) -> None:
        self.perm = torch.randperm(len(self.images), generator=self.perm_gen)

    def step(self, position: int) -> float:
        idx = self.perm[position * self.batch_size : (position + 1) * self.batch_size]
        x = to_float(self.images[idx].to(self.device, non_blocking=True))
        v0, v1 = self.augmenter(x), self.augmenter(x)
        if self.channels_last:
            v0 = v0.contiguous(memory_format=torch.channels_last)
            v1 = v1.contiguous(memory_format=torch.channels_last)
        factor = lr_factor(self.budget.fraction(), warmup=self.config.warmup, schedule=self.config.schedule)
        scale_learning_rates(self.optimizer, [self.base_lr], factor)
        loss = self.model.training_loss(v0, v1)
        return backward_step(self.optimizer, loss, step=self.budget.steps_done)

    def after_step(self, loss: float) -> None:
        self.model.on_step_end(self.budget.fraction())
        self.last_loss = loss
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.4f}", epoch=f"{self.budget.epochs_done:.2f}")

    def end_epoch(self, end: EpochEnd) -> None:
        self.history.append(
            {"epoch": end.epoch, "loss": end.loss, "seconds": round(self.seconds_before + end.seconds, 2)}
        )
        self.save()

    def save(self) -> None:
        """Write the checkpoint with the progress so far."""
        self.meta.update(
            epochs_done=self.budget.epochs_done,
            steps_done=self.budget.steps_done,
            seconds=self.seconds_before + self.budget.elapsed(),
            history=self.history,
            device=str(self.device),
            updated=_now(),
        )
        state = self.model.state_dict()
        write_checkpoint(
            self.out,
            meta=self.meta,
            backbone=self.model.backbone.state_dict(),
            heads={k: v for k, v in state.items() if not k.startswith("backbone.")},
            optimizer=self.optimizer.state_dict(),
        )

    def summary(self) -> dict[str, Any]:
        steps = self.steps_this_run
        meta = self.meta
        return {
            "checkpoint": str(self.out),
            "method": meta["method"],
            "backbone": meta["backbone"],
            "backbone_kwargs": meta["backbone_kwargs"],
            "embedding_dim": meta["embedding_dim"],
            "image_size": meta["image_size"],
            "batch_size": self.batch_size,
            "lr": self.base_lr,
            "epochs_done": self.budget.epochs_done,
            "steps_done": self.budget.steps_done,
            "steps_this_run": steps,
            "seconds": round(self.seconds_before + self.budget.elapsed(), 2),
            "seconds_this_run": round(self.budget.elapsed(), 2),
            "cells_per_second": round(steps * self.batch_size / self.loop_seconds, 1) if steps else 0.0,
            "final_loss": self.last_loss if steps else (self.history[-1]["loss"] if self.history else None),
            "history": self.history,
            "stopped_by": self.stopped_by,
            "device": str(self.device),
            "data_hash": meta["data_hash"],
            "n_images": meta["n_images"],
        }


__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULTS",
    "PretrainConfig",
    "load_checkpoint",
    "load_encoder",
    "pretrain",
    "save_encoder",
]
