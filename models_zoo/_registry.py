"""One registry for every backbone, in the manner of timm (``timm/models/_registry.py``).

A model file decorates a factory ``def name(*, pretrained: bool = False, **kwargs) -> Backbone`` with
:func:`register_model`; callers only ever use :func:`create_model` and :func:`list_models`, so a
checkpoint can be rebuilt from ``(name, kwargs)`` alone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from models_zoo.base import Backbone

F = TypeVar("F", bound=Callable[..., Backbone])

_MODELS: dict[str, Callable[..., Backbone]] = {}


def register_model(fn: F) -> F:
    """Register ``fn`` under its function name; a second registration of the same name is an error."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(name: str, *, num_classes: int = 0, pretrained: bool = False, **kwargs: Any) -> Backbone:
    """Build a registered backbone.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the linear classifier; 0 (default) makes ``forward`` return the
            (B, num_features) embedding, as timm does.
        pretrained: load the model's ImageNet weights from local files (never downloads).
        **kwargs: model-specific options (``small_input=True`` for ``resnet18``, ``width`` for
            ``lightcnn``, ``drop_rate`` ...).
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    model = factory(pretrained=pretrained, **kwargs)
    model.reset_classifier(num_classes)
    return model
