"""Content-addressed storage of cell images under MEDIA_ROOT.

Images are written once, under their SHA-256, so that importing the same bytes twice (or into two
projects) costs one file. Writes go to a temporary name first and are renamed into place, so a crash
never leaves a half-written image under a real name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.conf import settings

IMAGE_EXTENSIONS = {"jpeg": "jpg", "png": "png", "tiff": "tif", "bmp": "bmp", "webp": "webp", "gif": "gif"}


def cell_image_name(content_hash: str, image_format: str) -> str:
    """Storage name (relative to MEDIA_ROOT) for an image with this hash and PIL format name."""
    ext = IMAGE_EXTENSIONS.get(image_format.lower(), "img")
    return f"cells/{content_hash[:2]}/{content_hash}.{ext}"


def store_cell_image(name: str, data: bytes) -> None:
    """Write ``data`` to ``MEDIA_ROOT/name`` unless a file is already there (same name = same bytes)."""
    target = Path(settings.MEDIA_ROOT) / name
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
