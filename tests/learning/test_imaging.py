"""The one image geometry: load_image, the exported bundle's README code and its preprocessing spec all
come from learning.imaging, and the README's copy runs on its own and decodes exactly as the platform."""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from learning.data import load_image, load_image_framed, read_manifest, sample_per_class
from learning.export import preprocessing_spec, readme_code, readme_text
from learning.imaging import (
    CELL_CROP_SCALE,
    GEOMETRY_STEPS,
    decode_square,
    locate_cell,
    preprocess,
    square_box,
)

SIZES = (20, 32, 64)


def readme_namespace() -> dict[str, Any]:
    """The README's Python block, executed in a namespace of its own."""
    namespace: dict[str, Any] = {}
    exec(compile(readme_code(readme_text(32, ["a", "b"])), "README.md", "exec"), namespace)
    return namespace


@pytest.fixture
def odd_images(tmp_path: Path) -> list[Path]:
    """A wide PNG, a tall JPEG and a square JPEG larger than every size (draft mode kicks in)."""
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in {"wide.png": (30, 50), "tall.jpg": (90, 41), "big.jpg": (300, 300)}.items():
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_readme_code_imports_only_plain_libraries() -> None:
    tree = ast.parse(readme_code(readme_text(32, ["a"])))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= {"io", "json", "zipfile", "pathlib", "numpy", "torch", "PIL"}
    assert {"load_bundle", "preprocess", "predict", "decode_square"} <= set(readme_namespace())


def test_readme_preprocess_is_load_image_without_gray_world(odd_images: list[Path]) -> None:
    readme_preprocess = readme_namespace()["preprocess"]
    for path in odd_images:
        for size in SIZES:
            expected = load_image(path, size, gray_world=False)
            assert expected.shape == (3, size, size) and expected.dtype == torch.uint8
            assert torch.equal(readme_preprocess(path, size), expected)
            assert torch.equal(preprocess(path, size), expected)
            assert decode_square(path, size).size == (size, size)


@pytest.mark.realdata
def test_readme_preprocess_matches_load_image_on_real_cells(data_dir: Path) -> None:
    readme_preprocess = readme_namespace()["preprocess"]
    for record in sample_per_class(read_manifest(data_dir / "manifest.csv"), 1):
        for size in SIZES:
            assert torch.equal(
                readme_preprocess(record.path, size), load_image(record.path, size, gray_world=False)
            )


def test_preprocessing_spec_describes_the_shared_geometry() -> None:
    caller = preprocessing_spec(48)["caller"]
    assert {k: caller[k] for k in GEOMETRY_STEPS} == GEOMETRY_STEPS
    assert "preprocess()" in caller["code"]


@pytest.mark.realdata
def test_readme_preprocess_matches_load_image_with_the_cell_crop(data_dir: Path) -> None:
    namespace = readme_namespace()
    for record in sample_per_class(read_manifest(data_dir / "manifest.csv"), 1):
        expected = load_image(record.path, 64, gray_world=False, crop="cell", cell_scale=CELL_CROP_SCALE)
        assert torch.equal(namespace["preprocess"](record.path, 64, crop="cell"), expected)
        assert not torch.equal(expected, load_image(record.path, 64, gray_world=False))


def smear(
    nucleus_xy: tuple[int, int], radius: int, size: tuple[int, int] = (200, 160), *, red_cells: bool = True
) -> Image.Image:
    """A drawn smear: beige background, pink red cells, one violet nucleus of ``radius`` at ``nucleus_xy``."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    rgb[:] = (245, 225, 200)
    for cx, cy in ((20, 20), (180, 30), (30, 140), (170, 140), (100, 20)) if red_cells else ():
        rgb[(xx - cx) ** 2 + (yy - cy) ** 2 <= 18**2] = (220, 160, 170)
    x, y = nucleus_xy
    rgb[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = (90, 40, 140)
    return Image.fromarray(rgb)


def test_locate_cell_finds_the_nucleus_off_centre_among_red_cells() -> None:
    found = locate_cell(smear((110, 70), 20))
    assert found is not None
    x, y, diameter = found
    assert abs(x - 110) < 3 and abs(y - 70) < 3
    assert 34 < diameter < 46  # 40 px across; measured on a 96 px copy


def test_locate_cell_finds_nothing_on_a_plain_field() -> None:
    assert locate_cell(Image.new("RGB", (120, 120), (240, 220, 200))) is None


def test_square_box_stays_inside_the_image_and_never_zooms_past_a_third_of_it() -> None:
    big = smear((100, 80), 60)  # a nucleus that fills the frame: 2 x its diameter is larger than it
    left, top, side = square_box(big, crop="cell", cell_scale=2.0)
    assert side == 160 and left >= 0 and left + side <= 200 and top == 0
    tiny = smear((100, 80), 10, red_cells=False)  # a platelet: not blown up to a cell's size
    assert square_box(tiny, crop="cell")[2] == round(0.35 * 160)
    assert square_box(big, crop="centre") == (20, 0, 160)


@pytest.mark.realdata
def test_the_cell_crop_gives_the_same_input_whatever_margin_a_lab_leaves(data_dir: Path) -> None:
    """The same real cells, cropped as ../leukocytes does (loose) and tightly as another lab might: the
    cell crop turns both into nearly the same input, the centre crop does not."""
    records = [r for r in sample_per_class(read_manifest(data_dir / "manifest.csv"), 2) if r.source == "pbc"]
    cell_gaps: list[float] = []
    centre_gaps: list[float] = []
    for record in records:
        with Image.open(record.path) as im:
            whole = im.convert("RGB")
        found = locate_cell(whole)
        assert found is not None, record.id
        x, y, diameter = found
        half = 1.5 * diameter  # 3 nucleus diameters: tighter than the file, looser than the cell crop
        tight = whole.crop((round(x - half), round(y - half), round(x + half), round(y + half)))
        buffer = io.BytesIO()
        tight.save(buffer, format="PNG")
        for crop, gaps in (("cell", cell_gaps), ("centre", centre_gaps)):
            buffer.seek(0)
            loose_input = load_image(record.path, 64, crop=crop).float()
            tight_input = load_image(buffer, 64, crop=crop).float()
            gaps.append(float((loose_input - tight_input).abs().mean()))
    assert len(records) >= 10
    # Grey levels of 255; measured 1.5 against 37 on these cells.
    assert np.median(cell_gaps) < 5, cell_gaps
    assert np.median(cell_gaps) * 5 < np.median(centre_gaps), (cell_gaps, centre_gaps)


@pytest.mark.realdata
def test_the_framed_decode_says_where_its_square_lies(data_dir: Path) -> None:
    """load_image_framed gives the same input as load_image, and its box cut out of the decoded frame
    and resized is that input (what saliency relies on to place its map over the whole file)."""
    record = next(r for r in read_manifest(data_dir / "manifest.csv", limit=50) if r.path.suffix == ".jpg")
    image, frame, (left, top, side) = load_image_framed(record.path, 64, crop="cell", gray_world=False)
    assert torch.equal(image, load_image(record.path, 64, crop="cell", gray_world=False))
    with Image.open(record.path) as im:
        im.draft("RGB", (256, 256))  # the draft decode_square makes for a 64 px cell crop
        whole = im.convert("RGB")
    assert whole.size == frame
    assert (left, top, side) == square_box(whole, crop="cell", cell_scale=CELL_CROP_SCALE)
    assert side < min(frame)  # a real cell crop, not the whole frame
    again = whole.crop((left, top, left + side, top + side)).resize((64, 64), Image.Resampling.BILINEAR)
    assert torch.equal(image, torch.from_numpy(np.asarray(again).copy()).permute(2, 0, 1))
