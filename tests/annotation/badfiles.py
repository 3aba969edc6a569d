"""Builders for the kinds of broken input an import must survive."""

from __future__ import annotations

import csv
import io
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from tests.conftest import ManifestWriter


def truncated_jpeg(real_jpeg: bytes) -> bytes:
    return real_jpeg[: len(real_jpeg) // 2]


def text_as_image() -> bytes:
    return b"this is a lab note, not a picture\n"


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's calling card."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 100, 100)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # IHDR starts after the 8-byte signature, 4-byte length and 4-byte type; width and height are first.
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in entries.items():
            archive.writestr(zipfile.ZipInfo(name), payload)
    return path


def image_folder_with_bad_files(tmp_path: Path, make_manifest: ManifestWriter) -> Path:
    """An ImageFolder tree of real cells plus one truncated JPEG, one text file named .jpg and one bomb."""
    manifest = make_manifest(per_class=2, folder="src")
    folder = tmp_path / "folder"
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            target = folder / row["label"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(manifest.parent / row["path"], target)
    real = next((folder / "basophil").iterdir()).read_bytes()
    (folder / "basophil" / "cut_short.jpg").write_bytes(truncated_jpeg(real))
    (folder / "monocyte" / "notes.jpg").write_bytes(text_as_image())
    (folder / "platelet" / "huge.png").write_bytes(png_claiming_size(20_000, 20_000))
    return folder
