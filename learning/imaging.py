"""How a cell image file becomes the model's square input: the one copy of that geometry.

Decode as RGB (letting a JPEG decoder downscale while it decodes), crop a square, resize it bilinearly to
the model's side. The square is either the image's centre (``crop="centre"``) or the cell's
(``crop="cell"``): centred on the stained nucleus and ``CELL_CROP_SCALE`` times its size, so a cell
fills about the same share of the input whichever microscope, magnification or crop margin it came from
(a lab that crops tightly and a lab that leaves three cell widths of margin give nearly the same
picture). The original file is never changed: the crop is recomputed from its pixels wherever it is
read. :func:`learning.data.load_image` adds gray-world normalisation on top, the exported TorchScript
bundle's README prints these functions verbatim (:func:`readme_source`) and ``bench/gpu/prepare_data.py``
shrinks the data set with :func:`decode_square`.

The functions must stay runnable on their own, in a README, with only Pillow, numpy and torch (plus
``io``, ``Path`` and ``Tensor`` for their annotations): no other import, no helper from this project.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Final

import numpy as np
import torch
from PIL import Image
from torch import Tensor

# The imports the functions below need when their source stands alone (see readme_source).
_STANDALONE_IMPORTS: Final = """\
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
"""

# decode_square in words, for the bundle's preprocessing.json.
GEOMETRY_STEPS: Final[dict[str, str]] = {
    "decode": "PIL: Image.open(path); im.draft('RGB', (S, S)) for JPEG; im.convert('RGB')",
    "crop": "centre square crop to min(width, height)",
    "resize": "PIL Image.resize((S, S), Image.Resampling.BILINEAR) when the side is not S",
}

# The crop modes decode_square knows (the encoder records which one it was trained with).
CROP_MODES: Final = ("centre", "cell")

# The cell crop's side as a multiple of the nucleus' diameter (set by bench/cell_crop.py; the
# functions' own default repeats it because they must run standalone).
CELL_CROP_SCALE: Final = 2.0

# decode_square(crop="cell") in words, replacing GEOMETRY_STEPS' "crop" (for preprocessing.json).
CELL_CROP_STEP: Final = (
    "square_box(crop='cell'): on a copy shrunk to 96 px, the pixels within 0.45 x the short side of the "
    "centre whose blue minus green exceeds Otsu's threshold are the nucleus (locate_cell); a square of "
    "cell_scale x its diameter (4 x the geometric mean of its standard deviations) around its centroid, "
    "at least 0.35 x and at most 1 x the short side, shifted inside the image; the centre square when "
    "no nucleus is found"
)


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold of a 1-D sample: the cut that maximises the between-class variance."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][int(np.argmax(between))])


def locate_cell(img: Image.Image) -> tuple[float, float, float] | None:
    """The stained nucleus nearest the centre: ``(x, y, diameter)`` in ``img``'s pixels, or None.

    Stained nuclei are the pixels where blue most exceeds green: red cells are pink (blue about green),
    backgrounds beige or grey-white, granules orange-red; across May-Gruenwald-Giemsa and Wright stains
    and three cameras the violet nucleus is what stands out. The diameter is taken from the spread of the
    nucleus pixels rather than their area, so that a segmented neutrophil nucleus measures about its
    cell's width instead of the width of one lobe.
    """
    w, h = img.size
    shrink = 96 / max(w, h)
    small = img.resize((max(1, round(w * shrink)), max(1, round(h * shrink))), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32)
    score = rgb[..., 2] - rgb[..., 1]
    sh, sw = score.shape
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    # Only the middle of the frame: a neighbour's nucleus at the edge of the crop is not this cell's.
    near = (xx - (sw - 1) / 2) ** 2 + (yy - (sh - 1) / 2) ** 2 <= (0.45 * min(sw, sh)) ** 2
    if score[near].max() - score[near].min() < 20:  # flat: nothing stained stands out
        return None
    nucleus = near & (score > otsu_threshold(score[near]))
    if nucleus.sum() < 0.005 * near.sum():
        return None
    x, y = xx[nucleus], yy[nucleus]
    diameter = 4 * float(np.sqrt(x.std() * y.std()))  # a uniform disc of radius r: std r/2
    if diameter <= 0:
        return None
    return float(x.mean()) / shrink, float(y.mean()) / shrink, diameter / shrink


def square_box(
    img: Image.Image, *, crop: str = "centre", cell_scale: float = 2.0, min_side: float = 0.35
) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square :func:`decode_square` takes from ``img``: the centre square,
    or with ``crop="cell"`` the cell's (:func:`locate_cell`; ``cell_scale`` times the nucleus'
    diameter, at least ``min_side`` times the short side, never more than the image)."""
    if crop not in ("centre", "cell"):
        raise ValueError(f"crop must be 'centre' or 'cell', not {crop!r}")
    w, h = img.size
    found = locate_cell(img) if crop == "cell" else None
    if found is None:
        s = min(w, h)
        return (w - s) // 2, (h - s) // 2, s
    x, y, diameter = found
    # Never zoom in past about a third of the frame: a platelet or a fragment blown up to a cell's size
    # looks like a lymphocyte. Never past the frame either: padding is a picture no training cell of a
    # loosely cropped lab has, and a model learns it as a class (it did: bench/cell_crop.py).
    side = min(max(round(cell_scale * diameter), round(min_side * min(w, h)), 8), min(w, h))
    left = min(max(round(x - side / 2), 0), w - side)
    top = min(max(round(y - side / 2), 0), h - side)
    return left, top, side


def decode_square_framed(
    path: str | Path | io.BytesIO, size: int, *, crop: str = "centre", cell_scale: float = 2.0
) -> tuple[Image.Image, tuple[int, int], tuple[int, int, int]]:
    """:func:`decode_square`, with where the square lies: ``(square, (width, height) of the decoded
    image, (left, top, side) of the square in it)``. The decoded image may be a JPEG draft smaller than
    the file, with the file's aspect ratio."""
    with Image.open(path) as im:
        # JPEG: the decoder downscales by 2/4/8, never below size; a cell crop is a part of the image,
        # so it keeps the resolution that part needs.
        im.draft("RGB", (size, size) if crop == "centre" else (4 * size, 4 * size))
        img = im.convert("RGB")
    frame = img.size
    left, top, side = square_box(img, crop=crop, cell_scale=cell_scale)
    if (left, top, side, side) != (0, 0, *img.size):
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img, frame, (left, top, side)


def decode_square(
    path: str | Path | io.BytesIO, size: int, *, crop: str = "centre", cell_scale: float = 2.0
) -> Image.Image:
    """Decode an image (a path, or a file object) as RGB, crop its :func:`square_box` and resize that
    to ``size`` x ``size``."""
    return decode_square_framed(path, size, crop=crop, cell_scale=cell_scale)[0]


def preprocess_framed(
    path: str | Path | io.BytesIO, size: int, *, crop: str = "centre", cell_scale: float = 2.0
) -> tuple[Tensor, tuple[int, int], tuple[int, int, int]]:
    """:func:`preprocess`, with the frame and box of :func:`decode_square_framed` (to place a map
    computed on the input back over the whole image without decoding the file again)."""
    img, frame, box = decode_square_framed(path, size, crop=crop, cell_scale=cell_scale)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous(), frame, box


def preprocess(
    path: str | Path | io.BytesIO, size: int, *, crop: str = "centre", cell_scale: float = 2.0
) -> Tensor:
    """The model's input for one image file: uint8 tensor (3, size, size), RGB."""
    return preprocess_framed(path, size, crop=crop, cell_scale=cell_scale)[0]


def readme_source() -> str:
    """Imports plus the source of the geometry functions, runnable on their own."""
    functions = "\n\n".join(
        inspect.getsource(f)
        for f in (
            otsu_threshold,
            locate_cell,
            square_box,
            decode_square_framed,
            decode_square,
            preprocess_framed,
            preprocess,
        )
    )
    return f"{_STANDALONE_IMPORTS}\n\n{functions}"


__all__ = [
    "CELL_CROP_SCALE",
    "CELL_CROP_STEP",
    "CROP_MODES",
    "GEOMETRY_STEPS",
    "decode_square",
    "decode_square_framed",
    "locate_cell",
    "otsu_threshold",
    "preprocess",
    "preprocess_framed",
    "readme_source",
    "square_box",
]
