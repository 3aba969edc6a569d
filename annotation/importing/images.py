"""Checking that a file is a complete, decodable image of sensible size, before anything is written."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Our own pixel limit (below) is the one that matters; PIL's bomb check must not fire first with a
# less helpful message, nor warn for every large image.
Image.MAX_IMAGE_PIXELS = None


class InvalidImage(Exception):
    """The bytes are not an image leukoloop can use; the message says why, for the import report."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    format: str


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Identify, size-check and fully decode an image held in memory.

    Decoding (not just ``verify()``) is what catches truncated JPEGs. JPEGs are decoded in draft mode at
    1/8 scale: libjpeg still reads the whole entropy-coded stream, so truncation is detected, at a fraction
    of the cost of a full decode.
    """
    if not data:
        raise InvalidImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("not an image (unrecognised file content)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"unreadable image header: {exc}") from None
    with image:
        width, height = image.size
        image_format = image.format or "unknown"
        if width <= 0 or height <= 0:
            raise InvalidImage(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise InvalidImage(
                f"image is {width}x{height} = {width * height:,} pixels, above the limit of "
                f"{max_pixels:,} (possible decompression bomb; raise --max-pixels if it is genuine)"
            )
        try:
            if image_format == "JPEG":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            message = str(exc)
            if "truncated" in message:
                raise InvalidImage(f"truncated {image_format} ({message})") from None
            raise InvalidImage(f"{image_format} does not decode: {message}") from None
    return ImageInfo(width=width, height=height, format=image_format)
