"""Blood-smear preprocessing and augmentation as batched tensor operations.

The reference method (HemoSight, MD Anderson; ``src/model/generator.py`` of MXGHarryLiu/HemoSight)
preprocesses every crop with gray-world colour normalisation and augments with horizontal / vertical
flips, a rotation drawn from [-90, 90] degrees, zoom 0.9-1.1, a shift of +-20 px at 224 px and
``ColorJitter(0.2, 0.2, 0.2, 0.2)``. It does this per image in PIL; here the same augmentations act on a
whole float batch (B, 3, H, W) in [0, 1] at once, on CPU or GPU:

- all geometric changes compose into one 2x3 affine matrix per image and run as a single
  ``affine_grid`` + ``grid_sample`` call (so rotation, flip, zoom and shift interpolate only once);
- colour jitter draws one factor per image and applies it with broadcasting (brightness, contrast,
  saturation, then hue, each followed by clamping to [0, 1] as torchvision's ``ColorJitter`` does;
  torchvision shuffles the order per call, here it is fixed).

Random numbers come from an optional ``torch.Generator`` so runs can be made repeatable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gray_world(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Gray-world colour constancy (Buchsbaum, J. Franklin Inst. 1980), as in the reference method.

    Each channel is scaled so that its mean over the image equals the mean over all channels:
    ``x_c * mean(x) / mean(x_c)``. Deterministic: a preprocessing step, applied once before caching.
    A channel scaled up can exceed the range and is clipped, as in the reference, so on bright
    backgrounds the channel means end up equal only to within a few grey levels.

    Args:
        x: (3, H, W) or (B, 3, H, W); uint8 in [0, 255] or float in [0, 1].
        eps: guards against a black channel.

    Returns:
        same shape and dtype; clipped to the valid range (uint8 values are rounded).
    """
    if x.shape[-3] != 3:
        raise ValueError(f"expected 3 channels in dim -3, got shape {list(x.shape)}")
    xf = x.float()
    channel_mean = xf.mean(dim=(-2, -1), keepdim=True)  # (..., 3, 1, 1)
    gain = channel_mean.mean(dim=-3, keepdim=True) / channel_mean.clamp_min(eps)
    out = xf * gain
    if x.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.clamp_(0.0, 1.0).to(x.dtype)


def to_float(x: Tensor) -> Tensor:
    """uint8 (..., 3, H, W) in [0, 255] -> float32 in [0, 1]; float input passes through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _uniform(n: int, low: float, high: float, device: torch.device, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=device, generator=g) * (high - low) + low


def _grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma, as torchvision: (B, 3, H, W) -> (B, 1, H, W)."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


# Ruifrok & Johnston (2001) stain vectors in optical density, rows haematoxylin, eosin, DAB: the
# ``rgb_from_hed`` of scikit-image (skimage.color), whose conversion these functions follow.
RGB_FROM_HED: Final = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
_LOG_ADJUST: Final = math.log(1e-6)


def rgb_to_hed(x: Tensor, *, clip: bool = True) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> stain concentrations, as ``skimage.color.rgb2hed`` per image.

    ``clip=False`` keeps negative concentrations, so that :func:`hed_to_rgb` gives the image back (the
    clipped ones lose colours the three vectors do not span: on random pixels up to 0.88 of the range)."""
    matrix = torch.linalg.inv(torch.tensor(RGB_FROM_HED, dtype=torch.float64)).to(x)
    od = torch.log(x.clamp_min(1e-6)) / _LOG_ADJUST
    hed = torch.einsum("bchw,cd->bdhw", od, matrix)
    return hed.clamp_min(0.0) if clip else hed


def hed_to_rgb(hed: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hed` (``skimage.color.hed2rgb``), clipped to [0, 1]."""
    matrix = torch.tensor(RGB_FROM_HED, dtype=hed.dtype, device=hed.device)
    od = torch.einsum("bdhw,dc->bchw", hed, matrix)
    return torch.exp(od * _LOG_ADJUST).clamp(0.0, 1.0)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image of (B, C, H, W) with its own Gaussian (``sigma``: (B,) pixels; 0 leaves it).

    One separable pass over the whole batch (a grouped convolution, one kernel per image); the kernel
    spans 3 sigma of the largest. Edges are reflected."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    safe = sigma.to(x.dtype).clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K); sigma ~0: a delta
    kernel = kernel.repeat_interleave(c, dim=0)  # (B * C, K)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def shift_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of each image by ``shift`` turns, like torchvision's ``adjust_hue`` per image.

    Args:
        x: (B, 3, H, W) RGB in [0, 1].
        shift: (B,) hue offsets in [-0.5, 0.5].

    Value (max) and chroma (max - min) are unchanged, so only the hue needs computing: with h in [0, 6),
    HSV -> RGB is ``v - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h) mod 6``, n = 5, 3, 1.
    """
    r, g, b = x.unbind(1)  # each (B, H, W)
    maxc = x.amax(dim=1)
    chroma = maxc - x.amin(dim=1)
    inv = 1.0 / chroma.clamp_min(1e-12)  # gray pixels: chroma 0, so the hue does not matter
    h6 = torch.where(
        maxc == r, (g - b) * inv, torch.where(maxc == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0)
    )  # hue * 6
    h6 = (h6 + shift.view(-1, 1, 1) * 6.0).unsqueeze(1)  # (B, 1, H, W)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + h6) % 6.0
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :class:`BloodSmearAugment`; ``AUGMENT_PRESETS`` holds the named ones.

    Attributes:
        hflip, vflip: probability of a horizontal / vertical flip.
        rot90: also rotate by a random multiple of 90 degrees.
        degrees: rotation drawn uniformly from [-degrees, degrees].
        zoom: scale range (>1 enlarges the cell).
        shift: maximal translation as a fraction of the image side (20 / 224 in the reference).
        brightness, contrast, saturation: factor drawn from [1 - v, 1 + v]; hue: shift in [-v, v] turns.
        grayscale: probability of replacing the image by its luma (0 in the reference).
        padding_mode: ``grid_sample`` padding for pixels that come from outside the image.
        stain, stain_shift: HED stain jitter (Tellez et al. 2018): each stain's concentration (in
            ``skimage.color.rgb2hed`` units, about 0-0.2 on these cells) scaled by a factor in
            [1 - stain, 1 + stain] and shifted by [-stain_shift, stain_shift] per image; 0 (the
            reference) leaves it. On a real PBC cell a factor of 1.2 moves pixels by 9 grey levels on
            average and a shift of 0.005 by 19 (0.05 by 120: the shift needs its own, far smaller range).
            Stands for
            another lab's staining (the Ruifrok-Johnston vectors are for H&E, not Wright-Giemsa: the
            jitter is a plausible colour perturbation in optical density, not a stain model).
        blur: probability of a Gaussian blur (another camera's focus and optics), sigma drawn from
            ``blur_sigma`` pixels.
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = False
    degrees: float = 90.0
    zoom: tuple[float, float] = (0.9, 1.1)
    shift: float = 20.0 / 224.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.2
    grayscale: float = 0.0
    padding_mode: str = "reflection"
    stain: float = 0.0
    stain_shift: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 1.5)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    # HemoSight's generator: flips, rotation [-90, 90], zoom 0.9-1.1, +-20 px, ColorJitter(0.2, ...).
    "reference": AugmentConfig(),
    # Stronger views for contrastive methods (SimCLR: Chen et al. 2020, Sec. 3 "composition of data
    # augmentations is crucial"): wider zoom / shift, stronger colour, some grayscale.
    "strong": AugmentConfig(
        zoom=(0.75, 1.3),
        shift=0.15,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        grayscale=0.2,
        rot90=True,
    ),
    # For a model that should hold up in other labs (issue 13): the reference, plus stain jitter, blur and
    # a wider zoom for the magnification the cell crop leaves (bench/README.md says what it measured).
    "travel": AugmentConfig(stain=0.2, stain_shift=0.005, blur=0.5, zoom=(0.8, 1.25)),
    # Geometry only (dihedral group + small zoom / shift): for supervised training of colour-sensitive tasks.
    "geometric": AugmentConfig(
        rot90=True, degrees=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0
    ),
}


def augment_config(name_or_config: str | AugmentConfig | None = None, **overrides: Any) -> AugmentConfig:
    """Resolve a preset name (or config) and apply field overrides."""
    if name_or_config is None:
        cfg = AUGMENT_PRESETS["reference"]
    elif isinstance(name_or_config, AugmentConfig):
        cfg = name_or_config
    else:
        try:
            cfg = AUGMENT_PRESETS[name_or_config]
        except KeyError:
            raise ValueError(
                f"unknown augmentation preset {name_or_config!r}; known: {sorted(AUGMENT_PRESETS)}"
            ) from None
    return replace(cfg, **overrides) if overrides else cfg


class BloodSmearAugment(nn.Module):
    """Random geometric + colour augmentation of a batch: (B, 3, H, W) float in [0, 1] -> same shape.

    Args:
        config: an :class:`AugmentConfig` or a preset name (``"reference"``, ``"strong"``, ``"geometric"``).
        generator: optional ``torch.Generator`` on the batch's device, for repeatable draws.
    """

    def __init__(
        self, config: str | AugmentConfig | None = None, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.config = augment_config(config)
        self.generator = generator

    def affine_matrices(self, n: int, device: torch.device) -> Tensor:
        """(n, 2, 3) matrices mapping output to input coordinates (``affine_grid`` convention)."""
        c, g = self.config, self.generator
        angle = _uniform(n, -c.degrees, c.degrees, device, g) * (math.pi / 180.0)
        if c.rot90:
            angle = angle + torch.randint(0, 4, (n,), device=device, generator=g).float() * (math.pi / 2)
        fx = torch.where(torch.rand(n, device=device, generator=g) < c.hflip, -1.0, 1.0)
        fy = torch.where(torch.rand(n, device=device, generator=g) < c.vflip, -1.0, 1.0)
        inv_zoom = 1.0 / _uniform(n, c.zoom[0], c.zoom[1], device, g)
        # Normalised coordinates span [-1, 1], so a shift of s image sides is 2 s.
        tx = _uniform(n, -c.shift, c.shift, device, g) * 2.0
        ty = _uniform(n, -c.shift, c.shift, device, g) * 2.0
        cos, sin = torch.cos(angle) * inv_zoom, torch.sin(angle) * inv_zoom
        row0 = torch.stack((cos * fx, -sin * fy, tx), dim=1)
        row1 = torch.stack((sin * fx, cos * fy, ty), dim=1)
        return torch.stack((row0, row1), dim=1)

    def geometric(self, x: Tensor) -> Tensor:
        theta = self.affine_matrices(x.shape[0], x.device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode=self.config.padding_mode, align_corners=False
        )

    def colour(self, x: Tensor) -> Tensor:
        c, g, n, dev = self.config, self.generator, x.shape[0], x.device

        def factor(v: float) -> Tensor:
            return _uniform(n, 1.0 - v, 1.0 + v, dev, g).view(n, 1, 1, 1)

        if c.brightness > 0:
            x = (x * factor(c.brightness)).clamp_(0.0, 1.0)
        if c.contrast > 0:
            mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            x = (mean + (x - mean) * factor(c.contrast)).clamp_(0.0, 1.0)
        if c.saturation > 0:
            gray = _grayscale(x)
            x = (gray + (x - gray) * factor(c.saturation)).clamp_(0.0, 1.0)
        if c.hue > 0:
            x = shift_hue(x, _uniform(n, -c.hue, c.hue, dev, g)).clamp_(0.0, 1.0)
        if c.grayscale > 0:
            pick = (torch.rand(n, device=dev, generator=g) < c.grayscale).view(n, 1, 1, 1)
            x = torch.where(pick, _grayscale(x).expand_as(x), x)
        return x

    def stain_and_optics(self, x: Tensor) -> Tensor:
        """HED stain jitter, then blur (:attr:`AugmentConfig.stain`, :attr:`AugmentConfig.blur`)."""
        c, g, n, dev = self.config, self.generator, x.shape[0], x.device
        if c.stain > 0 or c.stain_shift > 0:
            alpha = (torch.rand(n, 3, device=dev, generator=g) * 2 - 1) * c.stain + 1.0
            beta = (torch.rand(n, 3, device=dev, generator=g) * 2 - 1) * c.stain_shift
            hed = rgb_to_hed(x, clip=False)
            x = hed_to_rgb(hed * alpha.view(n, 3, 1, 1) + beta.view(n, 3, 1, 1))
        if c.blur > 0:
            sigma = _uniform(n, c.blur_sigma[0], c.blur_sigma[1], dev, g)
            sigma = torch.where(torch.rand(n, device=dev, generator=g) < c.blur, sigma, 0.0)
            if bool((sigma > 0).any()):
                x = gaussian_blur(x, sigma)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        x = to_float(x)
        return self.stain_and_optics(self.colour(self.geometric(x)))


class TwoViewTransform(nn.Module):
    """Two independent augmentations of the same batch, the positives of instance discrimination.

    (B, 3, H, W) -> ((B, 3, H, W), (B, 3, H, W)); row i of both views shows cell i.
    """

    def __init__(self, transform: nn.Module | None = None) -> None:
        super().__init__()
        self.transform = transform if transform is not None else BloodSmearAugment()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(x), self.transform(x)
