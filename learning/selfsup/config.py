"""What a pretraining run is asked to do (:class:`PretrainConfig`) and what it then does once a resumed
checkpoint has had its say (:class:`PretrainSettings`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from learning.selfsup.methods import METHODS
from learning.training import check_budget

# What a fresh run uses for the fields a config leaves None (a resumed run takes its checkpoint's).
DEFAULTS: Final[dict[str, Any]] = {
    "method": "triplet",
    "backbone": "lightcnn",
    "image_size": 64,
    "batch_size": 128,
}


@dataclass(frozen=True)
class DeviceRecipe:
    """The batch and views that measured best on a kind of device (bench/README.md).

    On CUDA: 512 cells a step and the ``strong`` views. SimCLR from ImageNet EfficientNet-Lite0 with the
    cell crop reached 20-NN macro-F1 0.902 in 5 minutes on an H200 ("Second GPU session"), where the
    ``reference`` views gave 0.887 in the same run. On CPU: 128 cells and the ``reference`` views, the
    CPU runs' settings; ``strong`` was never compared on CPU."""

    batch_size: int
    augment: str


def device_recipe(device: torch.device, n_cells: int) -> DeviceRecipe:
    """:class:`DeviceRecipe` for ``device``, the batch capped at half of ``n_cells`` (at least 2) so a
    small project still takes several steps an epoch."""
    if device.type == "cuda":
        batch, augment = 512, "strong"
    else:
        batch, augment = DEFAULTS["batch_size"], "reference"
    return DeviceRecipe(batch_size=min(batch, max(2, n_cells // 2)), augment=augment)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """How to pretrain; validated on construction (at least one of ``epochs`` and ``minutes``).

    Attributes:
        epochs: total epochs to reach (resumed ones included); may be fractional.
        minutes: wall-clock budget of the call, data loading included. Whichever ends first stops.
        method: ``"triplet"`` (reference), ``"simclr"`` or ``"byol"``; None: the resumed checkpoint's,
            else :data:`DEFAULTS`. Likewise ``backbone`` (lightcnn), ``image_size`` (64), ``batch_size``
            (128 cells, i.e. 256 views per step), ``backbone_kwargs`` and ``method_kwargs``; except
            ``batch_size``, a value that differs from the resumed checkpoint's is an error.
        augment: preset of :data:`learning.transforms.AUGMENT_PRESETS`.
        lr: AdamW learning rate; default the checkpoint's, else the method's ``default_lr``, a tenth of
            it for ImageNet initialised backbones (``backbone_kwargs["pretrained"]``).
        schedule: ``"cosine"`` or ``"constant"`` after a linear warm-up over the first ``warmup``
            fraction of the budget (:func:`learning.training.lr_factor`).
        gray_world: gray-world colour normalisation when decoding (must match a resumed checkpoint).
        crop: ``"centre"`` square or the ``"cell"``'s (:func:`learning.imaging.square_box`; must match
            a resumed checkpoint).
        seed: seeds the model's initialisation, the batches and the augmentation.
        device: default CUDA when available, else CPU with ``num_threads`` (default all cores) threads.
        channels_last: NHWC memory layout (default on CPU, where oneDNN convolutions run faster with it).
        cache_dir: keep the decoded image tensor there between runs.
    """

    epochs: float | None = None
    minutes: float | None = None
    method: str | None = None
    backbone: str | None = None
    backbone_kwargs: Mapping[str, Any] | None = None
    method_kwargs: Mapping[str, Any] | None = None
    image_size: int | None = None
    batch_size: int | None = None
    augment: str = "reference"
    lr: float | None = None
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    warmup: float = 0.02
    gray_world: bool = True
    crop: str = "centre"
    seed: int = 0
    device: str | torch.device | None = None
    num_threads: int | None = None
    channels_last: bool | None = None
    cache_dir: str | Path | None = None

    def __post_init__(self) -> None:
        check_budget(self.epochs, self.minutes)


@dataclass(frozen=True)
class PretrainSettings:
    """The model fields of a :class:`PretrainConfig`, every None filled in."""

    method: str
    backbone: str
    image_size: int
    batch_size: int
    backbone_kwargs: dict[str, Any]
    method_kwargs: dict[str, Any]
    lr: float


def resolve_settings(config: PretrainConfig, checkpoint_meta: Mapping[str, Any] | None) -> PretrainSettings:
    """Fill the config's None fields from a resumed checkpoint's meta, else :data:`DEFAULTS`.

    Raises:
        ValueError: a given value differs from the checkpoint's (batch size excepted), or an unknown method.
    """
    prev = checkpoint_meta if checkpoint_meta is not None else {}

    def pick(name: str, value: Any) -> Any:
        if value is None:
            return prev.get(name, DEFAULTS.get(name))
        if checkpoint_meta is not None and name in prev and prev[name] != value and name != "batch_size":
            raise ValueError(f"resume: {name}={value!r} differs from the checkpoint's {prev[name]!r}")
        return value

    def as_dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else dict(value)

    method: str = pick("method", config.method)
    backbone: str = pick("backbone", config.backbone)
    image_size = int(pick("image_size", config.image_size))
    batch_size = int(pick("batch_size", config.batch_size))
    backbone_kwargs: dict[str, Any] = dict(pick("backbone_kwargs", as_dict(config.backbone_kwargs)) or {})
    method_kwargs: dict[str, Any] = dict(pick("method_kwargs", as_dict(config.method_kwargs)) or {})
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    if checkpoint_meta is not None and prev.get("gray_world", config.gray_world) != config.gray_world:
        raise ValueError(f"resume: gray_world={config.gray_world} differs from the checkpoint's setting")
    if checkpoint_meta is not None and prev.get("crop", "centre") != config.crop:
        raise ValueError(
            f"resume: crop={config.crop!r} differs from the checkpoint's {prev.get('crop', 'centre')!r}"
        )
    # ImageNet-initialised weights only need nudging: a tenth of the method's rate.
    default_lr = METHODS[method].default_lr * (0.1 if backbone_kwargs.get("pretrained") else 1.0)
    lr = config.lr if config.lr is not None else float(prev.get("lr", default_lr))
    return PretrainSettings(method, backbone, image_size, batch_size, backbone_kwargs, method_kwargs, lr)


__all__ = ["DEFAULTS", "PretrainConfig", "PretrainSettings", "resolve_settings"]
