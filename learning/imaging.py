"""How a cell image file becomes the model's square input: the one copy of that geometry.

Decode as RGB (letting a JPEG decoder downscale while it decodes), crop the centre square, resize it
bilinearly to the model's side. :func:`learning.data.load_image` adds gray-world normalisation on top,
the exported TorchScript bundle's README prints :func:`decode_square` and :func:`preprocess` verbatim
(:func:`readme_source`) and ``bench/gpu/prepare_data.py`` shrinks the data set with :func:`decode_square`.

The two functions must stay runnable on their own, in a README, with only Pillow, numpy and torch
(plus ``io``, ``Path`` and ``Tensor`` for their annotations): no other import, no helper from
this project.
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


def decode_square(path: str | Path | io.BytesIO, size: int) -> Image.Image:
    """Decode an image (a path, or a file object) as RGB, crop its centre square and resize that to
    ``size`` x ``size``."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: the decoder downscales by 2/4/8, never below size
        img = im.convert("RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


def preprocess(path: str | Path | io.BytesIO, size: int) -> Tensor:
    """The model's input for one image file: uint8 tensor (3, size, size), RGB."""
    img = decode_square(path, size)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def readme_source() -> str:
    """Imports plus the source of :func:`decode_square` and :func:`preprocess`, runnable on its own."""
    functions = "\n\n".join(inspect.getsource(f) for f in (decode_square, preprocess))
    return f"{_STANDALONE_IMPORTS}\n\n{functions}"


__all__ = ["GEOMETRY_STEPS", "decode_square", "preprocess", "readme_source"]
