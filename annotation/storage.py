"""Content-addressed storage of cell images under MEDIA_ROOT.

Images are written once, under their SHA-256, so that importing the same bytes twice (or into two
projects) costs one file. Writes go to a temporary name first and are renamed into place, so a crash
never leaves a half-written image under a real name.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from django.conf import settings

IMAGE_EXTENSIONS = {"jpeg": "jpg", "png": "png", "tiff": "tif", "bmp": "bmp", "webp": "webp", "gif": "gif"}


def cell_image_name(content_hash: str, image_format: str) -> str:
    """Storage name (relative to MEDIA_ROOT) for an image with this hash and PIL format name."""
    ext = IMAGE_EXTENSIONS.get(image_format.lower(), "img")
    return f"cells/{content_hash[:2]}/{content_hash}.{ext}"


_made_folders: set[Path] = set()


def store_cell_image(name: str, data: bytes) -> None:
    """Write ``data`` to ``MEDIA_ROOT/name`` unless a complete file is already there.

    Same name means same bytes, so an existing file of the right size is kept. The data goes to a
    per-thread part file first and is renamed into place, so a reader never sees half an image.
    """
    target = Path(settings.MEDIA_ROOT) / name
    try:
        if target.stat().st_size == len(data):
            return
    except FileNotFoundError:
        pass
    folder = target.parent
    if folder not in _made_folders:
        folder.mkdir(parents=True, exist_ok=True)
        _made_folders.add(folder)
    part = folder / f".{target.name}.{os.getpid()}-{threading.get_ident()}.part"
    try:
        with open(part, "wb") as handle:
            handle.write(data)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
