"""Checking that a file is a complete, decodable image of sensible size, before anything is written."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from annotation.importing.sources import read_file_capped

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
    """Identify and size-check an image held in memory, and make sure it is complete.

    A size check from the header comes first, so a decompression bomb is refused before any decoding.
    Completeness: JPEGs must end in an EOI marker after their last scan (``verify()`` does not look, and
    a truncated JPEG would otherwise import and fail later in training); PNGs are verified chunk by chunk
    (CRCs, IEND); other formats are fully decoded. Checking the JPEG structure instead of decoding keeps
    the import of 16k cells within a few times the cost of merely reading them.
    """
    if not data:
        raise InvalidImage("empty file")
    try:
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
                _check_jpeg_complete(data)
            elif image_format == "PNG":
                image.verify()
            else:
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            message = str(exc)
            if "truncated" in message.lower():
                raise InvalidImage(f"truncated {image_format} ({message})") from None
            raise InvalidImage(f"{image_format} does not decode: {message}") from None
    return ImageInfo(width=width, height=height, format=image_format)


_JPEG_START_OF_SCAN = b"\xff\xda"
_JPEG_END_OF_IMAGE = b"\xff\xd9"


def _check_jpeg_complete(data: bytes) -> None:
    """Raise if the JPEG stops before its end-of-image marker.

    The marker must come after the last start-of-scan, so the EOI of an embedded EXIF thumbnail does not
    count; bytes some cameras append after the EOI are tolerated.
    """
    last_scan = data.rfind(_JPEG_START_OF_SCAN)
    if last_scan < 0:
        raise OSError("image file is truncated (no image data)")
    if data.rfind(_JPEG_END_OF_IMAGE) < last_scan:
        raise OSError("image file is truncated (no end-of-image marker)")


@dataclass(frozen=True, slots=True)
class Examined:
    """What reading one file found: its hash and image facts, or why it cannot be used.

    Small and picklable: at scale files are examined in other processes and only this comes back."""

    content_hash: str  # "" when the file could not be read
    size: int
    info: ImageInfo | None  # None: unreadable, not a usable image (``problem`` says why), or already known
    problem: str = ""


def examine_bytes(data: bytes, *, max_pixels: int, known: Collection[str] = ()) -> Examined:
    """Hash the bytes and inspect the image, unless its hash is in ``known`` (a cell already stored)."""
    content_hash = hashlib.sha256(data).hexdigest()
    if content_hash in known:
        return Examined(content_hash, len(data), None)
    try:
        info = inspect_image(data, max_pixels=max_pixels)
    except InvalidImage as exc:
        return Examined(content_hash, len(data), None, str(exc))
    return Examined(content_hash, len(data), info)


def examine_read(
    read: Callable[[], bytes], *, max_pixels: int, known: Collection[str] = ()
) -> tuple[Examined, bytes | None]:
    """Read a file (a plain file or a zip member) and examine it; a failed read is a problem, not a raise.
    The bytes come back too (None if unreadable), for an import that keeps its own copy."""
    try:
        data = read()
    except FileNotFoundError:
        return Examined("", 0, None, "missing file"), None
    except (OSError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:  # encrypted or corrupt entry
        return Examined("", 0, None, f"cannot be read: {exc}"), None
    return examine_bytes(data, max_pixels=max_pixels, known=known), data


def examine_file(path: str, max_pixels: int) -> Examined:
    """``examine_read`` of a plain file given by its resolved path: what an import's helper process runs
    (module-level, picklable by name, and free of Django: it touches no database connection)."""
    examined, _ = examine_read(lambda: read_file_capped(Path(path)), max_pixels=max_pixels)
    return examined
