"""Does a saliency map point at the nucleus? A known-answer check on real stained cells.

A leukocyte's class is read mostly from its nucleus (shape, lobes, chromatin), and a crop's background
(plasma, red cells) carries little class information, so a saliency map that explains a working
classifier should put more heat on the nucleus than on the background. This module segments the nucleus
from the stain (no model involved) and compares the map's mean inside the nucleus with its mean over the
background, so tests and ``bench/saliency_nucleus.py`` can count on how many cells the map is right.

- Nucleus: hematoxylin (the purple nuclear stain) from colour deconvolution (``skimage.color.rgb2hed``,
  Ruifrok & Johnston 2001), Otsu threshold, the connected component closest to the crop's centre (crops
  are centred on the leukocyte), its holes filled.
- Background: everything farther than ``margin`` (a fraction of the side) from the nucleus, i.e. outside
  a dilated cell mask, so the cytoplasm ring (class evidence too: granules, colour) counts for neither.

scikit-image is a development dependency: this is a measuring tool, not part of the web process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from torch import Tensor

# Distance from the nucleus, as a fraction of the crop's side, beyond which a pixel is background:
# wide enough to cover the cytoplasm of a monocyte around its nucleus in a 224 px PBC crop.
BACKGROUND_MARGIN: Final = 0.2
# A segmentation outside these area fractions failed (no nuclear stain found, or it covers the crop).
MIN_NUCLEUS_AREA: Final = 0.01
MAX_NUCLEUS_AREA: Final = 0.45


def _hwc_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (3, H, W), got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def nucleus_mask(image: Tensor | np.ndarray) -> np.ndarray | None:
    """Boolean (H, W) mask of the central nucleus of a (3, H, W) uint8 crop, or None when the stain
    gives no plausible nucleus (e.g. a platelet, or a crop without hematoxylin contrast)."""
    from scipy.ndimage import binary_fill_holes
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    rgb = _hwc_uint8(image)
    hematoxylin = rgb2hed(rgb)[..., 0]
    if float(np.ptp(hematoxylin)) <= 0.0:
        return None
    stained = hematoxylin > threshold_otsu(hematoxylin)
    components = label(stained, connectivity=2)
    if components.max() == 0:
        return None
    height, width = stained.shape
    yy, xx = np.mgrid[:height, :width]
    centre_distance = np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2)
    # The component whose nearest pixel is closest to the centre (the crop is centred on the cell).
    best = min(
        range(1, int(components.max()) + 1),
        key=lambda k: float(centre_distance[components == k].min()),
    )
    mask = binary_fill_holes(components == best)
    area = float(mask.mean())
    if not MIN_NUCLEUS_AREA <= area <= MAX_NUCLEUS_AREA:
        return None
    return np.asarray(mask, dtype=bool)


def background_mask(nucleus: np.ndarray, margin: float = BACKGROUND_MARGIN) -> np.ndarray:
    """Pixels farther than ``margin * side`` from the nucleus: outside the dilated cell."""
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~nucleus)
    out: np.ndarray = distance > margin * min(nucleus.shape)
    return out


@dataclass(frozen=True)
class NucleusScore:
    """Mean saliency inside the nucleus and over the background of one cell."""

    nucleus: float
    background: float

    @property
    def on_nucleus(self) -> bool:
        return self.nucleus > self.background


def score_map(heat: np.ndarray, image: Tensor | np.ndarray) -> NucleusScore | None:
    """Compare a saliency map (H, W) with the nucleus of ``image`` (3, H, W); None when the nucleus
    cannot be segmented or the crop has no background left."""
    heat_arr = np.asarray(heat, dtype=np.float64)
    nucleus = nucleus_mask(image)
    if nucleus is None:
        return None
    if heat_arr.shape != nucleus.shape:
        raise ValueError(f"heat map {heat_arr.shape} does not match the image {nucleus.shape}")
    background = background_mask(nucleus)
    if not background.any():
        return None
    return NucleusScore(float(heat_arr[nucleus].mean()), float(heat_arr[background].mean()))


@dataclass(frozen=True)
class NucleusSummary:
    """How often the map is right over a set of cells."""

    cells: int  # cells scored (a nucleus segmented)
    skipped: int  # cells without a plausible nucleus segmentation
    on_nucleus: int  # cells whose nucleus mean exceeds their background mean
    median_ratio: float  # median of nucleus mean / background mean (inf-safe: background floored)

    @property
    def fraction(self) -> float:
        return self.on_nucleus / self.cells if self.cells else 0.0


def summarise(scores: list[NucleusScore | None]) -> NucleusSummary:
    scored = [s for s in scores if s is not None]
    ratios = [s.nucleus / max(s.background, 1e-6) for s in scored]
    return NucleusSummary(
        cells=len(scored),
        skipped=len(scores) - len(scored),
        on_nucleus=sum(s.on_nucleus for s in scored),
        median_ratio=float(np.median(ratios)) if ratios else 0.0,
    )


__all__ = [
    "BACKGROUND_MARGIN",
    "NucleusScore",
    "NucleusSummary",
    "background_mask",
    "nucleus_mask",
    "score_map",
    "summarise",
]
