"""The one image geometry: load_image, the exported bundle's README code and its preprocessing spec all
come from learning.imaging, and the README's copy runs on its own and decodes exactly as the platform."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from learning.data import load_image, read_manifest, sample_per_class
from learning.export import preprocessing_spec, readme_code, readme_text
from learning.imaging import GEOMETRY_STEPS, decode_square, preprocess

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
