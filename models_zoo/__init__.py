"""Backbone registry and task heads. Never imports Django.

Example::

    from models_zoo import create_model, list_models
    model = create_model("resnet18", small_input=True)  # (B, 3, 64, 64) in [0, 1] -> (B, 512)
"""

from models_zoo import efficientnet, lightcnn, resnet  # noqa: F401  (register the models)
from models_zoo._registry import create_model, is_model, list_models, register_model
from models_zoo.base import Backbone
from models_zoo.heads import CellTypeHead, MultiAttributeHead, multi_attribute_loss

__all__ = [
    "Backbone",
    "CellTypeHead",
    "MultiAttributeHead",
    "create_model",
    "is_model",
    "list_models",
    "multi_attribute_loss",
    "register_model",
]
