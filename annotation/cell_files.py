"""Reading a cell's image file only while it still holds the bytes that were imported.

A cell records the SHA-256 (and, since relative paths, the size) of the file it was imported from. Files
registered where they lie can change under leukoloop: replaced, truncated, or a link repointed at another
file, so every read of a cell's file for a person (the image view, the saliency overlay, an export) goes
through ``open_verified``. A mismatch raises ``CellFileChanged`` and logs a warning event; the new bytes
are never returned.

The hot path does not hash: a file whose bytes were verified is remembered by what ``fstat`` says of
the open file (device, inode, size, modification and change times). Any write, replacement or rename
changes one of them (``st_ctime`` cannot be set back by a user), and then the file is hashed again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import threading
from dataclasses import dataclass
from typing import BinaryIO

logger = logging.getLogger(__name__)

# Verified (cell id, hash) -> file identity; bounded: cleared when full (then files are hashed again).
_MAX_REMEMBERED = 200_000
_verified: dict[tuple[int, str], tuple[int, ...]] = {}
_lock = threading.Lock()


class CellFileChanged(Exception):
    """The file at a cell's path is not the file that was imported (or is no longer a plain file)."""


@dataclass(frozen=True, slots=True)
class CellFile:
    """What is needed to check one cell's file: from a ``Cell`` or from the columns of a bulk read."""

    cell_id: int
    path: str
    content_hash: str
    size: int | None = None  # None for cells imported before sizes were recorded


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _changed(cell: CellFile, reason: str) -> CellFileChanged:
    logger.warning(
        "cell %s: image file %s %s; not served",
        cell.cell_id,
        cell.path,
        reason,
        extra={"event": "cell_file_mismatch", "cell_id": cell.cell_id, "path": cell.path, "reason": reason},
    )
    with _lock:
        _verified.pop((cell.cell_id, cell.content_hash), None)
    return CellFileChanged(f"the image file of cell {cell.cell_id} {reason}")


def open_verified(cell: CellFile) -> BinaryIO:
    """The cell's image, open for reading from its start, if its bytes are the imported ones.

    Raises ``FileNotFoundError`` when there is no file, ``CellFileChanged`` when there is another one.
    The path is opened without following a final symbolic link: the importer stores links resolved, so a
    link there now was put there since. What is returned is the very file that was checked.
    """
    try:
        fd = os.open(cell.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _changed(cell, f"cannot be opened safely ({exc.strerror})") from None
    handle = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _changed(cell, "is no longer a regular file")
        if cell.size is not None and info.st_size != cell.size:
            raise _changed(cell, f"is {info.st_size:,} bytes, not the {cell.size:,} imported")
        key = (cell.cell_id, cell.content_hash)
        identity = _identity(info)
        if _verified.get(key) == identity:
            return handle
        data = handle.read()
        if sha256_hex(data) != cell.content_hash:
            raise _changed(cell, "has other bytes than the imported ones (SHA-256 differs)")
        with _lock:
            if len(_verified) >= _MAX_REMEMBERED:
                _verified.clear()
            _verified[key] = identity
    except BaseException:
        handle.close()
        raise
    # The bytes just hashed are the ones served: a change after the check cannot slip in.
    handle.close()
    return io.BytesIO(data)


def read_verified(cell: CellFile) -> bytes:
    """The cell's image bytes, as ``open_verified`` checks them."""
    with open_verified(cell) as handle:
        return handle.read()


def forget_verified() -> None:
    """Forget every verified file (tests; a restore)."""
    with _lock:
        _verified.clear()
