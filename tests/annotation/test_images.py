from pathlib import Path

import pytest

from annotation.importing.images import InvalidImage, inspect_image
from tests.annotation.badfiles import png_claiming_size, text_as_image, truncated_jpeg

pytestmark = pytest.mark.realdata


@pytest.fixture
def real_jpeg(data_dir: Path, manifest_rows: list[dict[str, str]]) -> bytes:
    return (data_dir / manifest_rows[0]["path"]).read_bytes()


def test_real_cell_is_accepted_with_its_size(real_jpeg: bytes) -> None:
    info = inspect_image(real_jpeg, max_pixels=10_000_000)
    assert (info.width, info.height, info.format) == (224, 224, "JPEG")


def test_truncated_jpeg_is_refused(real_jpeg: bytes) -> None:
    with pytest.raises(InvalidImage, match="truncated"):
        inspect_image(truncated_jpeg(real_jpeg), max_pixels=10_000_000)


def test_text_file_is_not_an_image() -> None:
    with pytest.raises(InvalidImage, match="not an image"):
        inspect_image(text_as_image(), max_pixels=10_000_000)


def test_empty_file_is_refused() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        inspect_image(b"", max_pixels=10_000_000)


def test_image_above_pixel_limit_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidImage, match="decompression bomb"):
        inspect_image(png_claiming_size(30_000, 30_000), max_pixels=40_000_000)


def test_pixel_limit_is_configurable(real_jpeg: bytes) -> None:
    with pytest.raises(InvalidImage, match="above the limit"):
        inspect_image(real_jpeg, max_pixels=224 * 224 - 1)
