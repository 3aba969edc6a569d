"""A small residual CNN that trains at a useful speed on two CPU cores (32-96 px inputs).

Layout (``width`` w, default 32), for a 64 px input:

    stem   3x3 conv stride 2, w           -> (B, w, 32, 32)
    stage1 3x3 stride 2 + residual, 2w    -> (B, 2w, 16, 16)
    stage2 3x3 stride 2 + residual, 4w    -> (B, 4w, 8, 8)
    stage3 3x3 stride 2 + residual, 8w    -> (B, 8w, 4, 4)  -> pooled (B, 8w)

About 70 M multiply-adds per 64 px image at w=32 (ResNet-18: ~150 M with its ImageNet stem, ~2.4 G with
``small_input``). Plain 3x3 convolutions, batch norm and ReLU: the operations oneDNN runs fastest on CPU.
Measured on 2 CPU cores, 64 px, batch 128, channels-last: ~450 training images/s at w=32 (ResNet-18 with
the ImageNet stem: ~170); w=24 is ~1.5x faster again. A residual block at full 32x32 resolution cost
25% of the speed for no clear gain, so there is none.
The residual blocks follow He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models_zoo._registry import register_model
from models_zoo.base import Backbone


class ConvBNAct(nn.Sequential):
    """3x3 convolution, batch norm, ReLU: (B, c_in, H, W) -> (B, c_out, H / stride, W / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut; shape-preserving (B, c, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)  # start as identity ("zero-init residual", Goyal et al. 2017)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.bn2(self.conv2(self.conv1(x))))


class LightCNN(Backbone):
    """Three-stage residual CNN; (B, 3, H, W) -> (B, 8 * width) embedding."""

    def __init__(self, *, width: int = 32, drop_rate: float = 0.0) -> None:
        super().__init__(8 * width, drop_rate=drop_rate, pretrained_cfg={"input_size": 64})
        w = width
        self.stem = ConvBNAct(3, w, stride=2)
        self.stages = nn.Sequential(
            nn.Sequential(ConvBNAct(w, 2 * w, stride=2), ResidualBlock(2 * w)),
            nn.Sequential(ConvBNAct(2 * w, 4 * w, stride=2), ResidualBlock(4 * w)),
            nn.Sequential(ConvBNAct(4 * w, 8 * w, stride=2), ResidualBlock(8 * w)),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _trunk(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


@register_model
def lightcnn(*, pretrained: bool = False, **kwargs: Any) -> LightCNN:
    """Light residual CNN (random init only), 256-d embedding at the default ``width=32``."""
    if pretrained:
        raise ValueError("lightcnn has no pretrained weights; use pretrained=False")
    return LightCNN(**kwargs)
