"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) from torchvision.

``small_input=True`` swaps the 7x7 stride-2 stem and the 3x3 max-pool for one 3x3 stride-1 convolution,
the CIFAR variant of the same paper (Sec. 4.2), so a 64-96 px cell keeps a 64x64-96x96 map in the
first stage instead of 16x16-24x24. Dropping that 4x downsampling costs about 16x the FLOPs of the
ImageNet stem at the same input size: at 64 px the trunk costs about what the ImageNet model does at 256 px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from models_zoo._registry import register_model
from models_zoo.base import Backbone

# File name torchvision gives the ImageNet weights (ResNet18_Weights.IMAGENET1K_V1) in its hub cache.
RESNET18_IMAGENET_FILE = "resnet18-f37072fd.pth"


def _resolve_weights(weights_path: str | Path | None, file_name: str) -> Path:
    """Find ImageNet weights on local disk; never download (the machines have no internet)."""
    candidates = [Path(weights_path)] if weights_path else []
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / file_name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"ImageNet weights {file_name} not found (looked in {', '.join(map(str, candidates))}); "
        "pass weights_path=... or use pretrained=False. Weights are never downloaded at run time."
    )


class ResNet(Backbone):
    """torchvision ResNet-18 trunk; (B, 3, H, W) -> (B, 512) embedding."""

    def __init__(self, *, small_input: bool = False, drop_rate: float = 0.0) -> None:
        super().__init__(512, drop_rate=drop_rate, pretrained_cfg={"input_size": 64 if small_input else 224})
        tv = torchvision.models.resnet18(weights=None)
        # Same attribute names as torchvision, so ImageNet state dicts load without renaming.
        self.conv1: nn.Module = tv.conv1
        self.maxpool: nn.Module = tv.maxpool
        if small_input:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        self.bn1 = tv.bn1
        self.relu = tv.relu
        self.layer1 = tv.layer1
        self.layer2 = tv.layer2
        self.layer3 = tv.layer3
        self.layer4 = tv.layer4
        self.small_input = small_input

    def _trunk(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_imagenet(self, path: Path) -> None:
        """Load torchvision ImageNet weights; a ``small_input`` 3x3 stem stays randomly initialised."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if self.small_input:
            state = {k: v for k, v in state.items() if not k.startswith("conv1.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        allowed_missing = {"conv1.weight"} if self.small_input else set()
        if unexpected or set(missing) - allowed_missing:
            raise RuntimeError(f"ImageNet weights do not fit: missing={missing} unexpected={unexpected}")


@register_model
def resnet18(
    *, pretrained: bool = False, small_input: bool = False, weights_path: str | None = None, **kwargs: Any
) -> ResNet:
    """ResNet-18, 512-d embedding. ``small_input``: 3x3 stride-1 stem without max-pool for 64-96 px."""
    model = ResNet(small_input=small_input, **kwargs)
    if pretrained:
        model.load_imagenet(_resolve_weights(weights_path, RESNET18_IMAGENET_FILE))
    return model
