"""Manifest reading, data hash, splits, the image dataset and its cache, and the batch transforms,
on small subsets of the real leukocyte crops."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from learning.data import (
    ATTRIBUTE_COLUMNS,
    CellImageDataset,
    CellRecord,
    attribute_schema,
    attribute_targets,
    class_names,
    data_hash,
    label_indices,
    load_image,
    manifest_hash,
    read_manifest,
    sample_per_class,
    stratified_split,
)
from learning.transforms import (
    AugmentConfig,
    BloodSmearAugment,
    TwoViewTransform,
    augment_config,
    gray_world,
    shift_hue,
)

CLASSES = {
    "basophil",
    "blast",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
}
IDENTITY = AugmentConfig(
    hflip=0, vflip=0, degrees=0, zoom=(1, 1), shift=0, brightness=0, contrast=0, saturation=0, hue=0
)


@pytest.fixture(scope="module")
def manifest(data_dir: Path) -> Path:
    return data_dir / "manifest.csv"  # data_dir (tests/conftest.py) skips, or fails under CI, without data


@pytest.fixture(scope="module")
def records(manifest: Path) -> list[CellRecord]:
    return read_manifest(manifest)


@pytest.fixture(scope="module")
def subset(records: list[CellRecord]) -> list[CellRecord]:
    return sample_per_class(records, 3)  # 27 real cells


# --- manifest ---------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_read_real_manifest(records: list[CellRecord], manifest: Path) -> None:
    assert len(records) > 1000
    assert set(class_names(records)) == CLASSES
    assert {r.source for r in records} == {"pbc", "munich_aml"}
    first = records[0]
    assert first.path.is_absolute() and first.path.is_file()
    assert first.path == manifest.parent / first.id
    assert len({r.id for r in records}) == len(records)
    annotated = [r for r in records if r.attributes]
    assert annotated and all(set(r.attributes) == set(ATTRIBUTE_COLUMNS) for r in annotated)
    assert not any(r.attributes for r in records if r.label == "platelet")
    assert "wbcatt_split" in first.extra and "orig_width" in first.extra


@pytest.mark.realdata
def test_manifest_paths_are_relative_to_the_csv(manifest: Path, tmp_path: Path) -> None:
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [row for _, row in zip(range(20), reader, strict=False)]
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    prefix = os.path.relpath(manifest.parent, folder)
    with (folder / "subset.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": f"{prefix}/{row['path']}"})
    subset = read_manifest(folder / "subset.csv")
    assert len(subset) == 20
    assert all(r.path.resolve().is_file() for r in subset)
    assert read_manifest(manifest, limit=20)[5].label == subset[5].label


def test_manifest_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("file,label\nx.jpg,blast\n")
    with pytest.raises(ValueError, match="'path' column"):
        read_manifest(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,label\nx.jpg,blast\nx.jpg,ig\n")
    with pytest.raises(ValueError, match="duplicate"):
        read_manifest(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path\nx.jpg\n")
    (only,) = read_manifest(tmp_path / "c.csv")
    assert only.label is None and only.source == "" and dict(only.attributes) == {}


@pytest.mark.realdata
def test_data_hash_is_stable(subset: list[CellRecord], manifest: Path) -> None:
    h = data_hash(subset)
    assert len(h) == 16
    assert data_hash(list(reversed(subset))) == h  # order-free
    moved = [
        CellRecord(r.id, Path("/mnt/other") / r.id, r.label, r.source, r.subtype, r.attributes)
        for r in subset
    ]
    assert data_hash(moved) == h  # mount point does not matter
    relabelled = [CellRecord(subset[0].id, subset[0].path, "blast"), *subset[1:]]
    assert data_hash(relabelled) != h or subset[0].label == "blast"
    assert data_hash(subset[1:]) != h
    assert data_hash(subset[:5], content=True) != data_hash(subset[:5])
    assert manifest_hash(manifest) == data_hash(read_manifest(manifest))


@pytest.mark.realdata
def test_labels_and_attributes(subset: list[CellRecord]) -> None:
    classes = class_names(subset)
    y = label_indices(subset, classes)
    assert y.dtype == np.int64 and y.min() >= 0 and [classes[i] for i in y] == [r.label for r in subset]
    schema = attribute_schema(subset)
    assert list(schema) == [a for a in ATTRIBUTE_COLUMNS if a in schema]
    t = attribute_targets(subset, schema)
    assert t.shape == (len(subset), len(schema))
    for r, row in zip(subset, t, strict=True):
        assert (row >= 0).all() == bool(r.attributes)
        for j, (a, values) in enumerate(schema.items()):
            assert (values[row[j]] if row[j] >= 0 else None) == r.attributes.get(a)


def test_stratified_split() -> None:
    keys = ["a"] * 50 + ["b"] * 20 + ["c"] * 3 + ["d"]
    train, test = stratified_split(keys, 0.2, seed=1)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(keys)))
    counts = {k: sum(keys[i] == k for i in test) for k in "abcd"}
    assert counts == {"a": 10, "b": 4, "c": 1, "d": 0}  # a single "d" stays in train
    again = stratified_split(keys, 0.2, seed=1)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(keys, 0.2, seed=2)[1], test)
    with pytest.raises(ValueError):
        stratified_split(keys, 1.0)


@pytest.mark.realdata
def test_sample_per_class(records: list[CellRecord]) -> None:
    small = sample_per_class(records, 2, seed=3)
    assert len(small) == 18 and {r.label for r in small} == CLASSES
    assert small == sample_per_class(records, 2, seed=3)


# --- images and cache -------------------------------------------------------------------------------


@pytest.mark.realdata
def test_dataset_items_and_cache(subset: list[CellRecord], tmp_path: Path) -> None:
    plain = CellImageDataset(subset, 32)
    img, i = plain[4]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and i == 4

    cached = CellImageDataset(subset, 32, cache=True)
    assert not cached.is_loaded
    assert torch.equal(cached[4][0], img)  # lazily cached
    images = cached.preload(num_threads=2)
    assert cached.is_loaded and images.shape == (len(subset), 3, 32, 32)
    assert torch.equal(images[4], img)
    assert torch.equal(cached.images, images)

    on_disk = CellImageDataset(subset, 32).preload(cache_dir=tmp_path)
    assert torch.equal(on_disk, images)
    files = list(tmp_path.glob("cells-*-32px-grayworld.u8.npy"))
    assert len(files) == 1
    again = CellImageDataset(subset, 32)
    assert again.cache_file(tmp_path) == files[0]
    assert torch.equal(again.preload(cache_dir=tmp_path), images)  # read back, not decoded

    with pytest.raises(RuntimeError):
        _ = CellImageDataset(subset, 32).images


def test_load_image_centre_crops_non_square(tmp_path: Path) -> None:
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 20:60] = 200  # the centre square is bright, the sides black
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 20, gray_world=False)
    assert x.shape == (3, 20, 20) and int(x.min()) == 200


# --- transforms -------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_gray_world_equalises_channel_means(subset: list[CellRecord]) -> None:
    raw = torch.stack([load_image(r.path, 64, gray_world=False) for r in subset])
    before = raw.float().mean(dim=(2, 3))  # (B, 3) channel means, 0-255
    spread_before = before.max(dim=1).values - before.min(dim=1).values
    assert spread_before.min() > 20  # stained smears are far from gray
    for x, scale in ((raw, 1.0), (raw.float() / 255, 255.0)):  # uint8 and float paths
        out = gray_world(x)
        assert out.dtype == x.dtype and out.shape == x.shape
        after = out.float().mean(dim=(2, 3)) * scale
        spread = after.max(dim=1).values - after.min(dim=1).values
        # Equal up to rounding; a channel scaled up past 255 clips (bright Munich backgrounds), so
        # the odd image keeps a few grey levels of difference.
        assert spread.median() < 0.5
        assert (spread < spread_before / 4).all()
    torch.testing.assert_close(gray_world(raw[0]), gray_world(raw)[0])  # (3, H, W) works too
    decoded = load_image(subset[0].path, 64)  # the dataset applies it by default
    torch.testing.assert_close(decoded, gray_world(raw[0]))


def test_gray_world_is_exact_without_clipping() -> None:
    x = torch.rand(4, 3, 16, 16) * torch.tensor([0.9, 0.5, 0.3]).view(1, 3, 1, 1)
    m = gray_world(x).mean(dim=(2, 3))
    torch.testing.assert_close(m, x.mean(dim=(1, 2, 3)).unsqueeze(1).expand(4, 3))


def test_augment_identity_flip_and_range() -> None:
    x = torch.rand(6, 3, 24, 24)
    torch.testing.assert_close(BloodSmearAugment(IDENTITY)(x), x)
    hflip = BloodSmearAugment(augment_config(IDENTITY, hflip=1.0))
    torch.testing.assert_close(hflip(x), x.flip(-1))
    vflip = BloodSmearAugment(augment_config(IDENTITY, vflip=1.0))
    torch.testing.assert_close(vflip(x), x.flip(-2))
    rot = BloodSmearAugment(augment_config(IDENTITY, degrees=0.0, rot90=True))(x)
    for out, src in zip(rot, x, strict=True):
        assert min((out - torch.rot90(src, k, (1, 2))).abs().max().item() for k in range(4)) < 1e-4
    for preset in ("reference", "strong", "geometric"):
        y = BloodSmearAugment(preset)((x * 255).to(torch.uint8))  # uint8 input is scaled to [0, 1]
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    with pytest.raises(ValueError):
        augment_config("nope")


def test_hue_shift_matches_torchvision() -> None:
    x = torch.rand(3, 3, 16, 16)
    x[0, :, :4] = 0.5  # gray pixels
    for h in (-0.5, -0.2, 0.0, 0.13, 0.5):
        torch.testing.assert_close(shift_hue(x, torch.full((3,), h)), TF.adjust_hue(x, h), atol=1e-5, rtol=0)


def test_two_views_differ_and_are_repeatable() -> None:
    x = torch.rand(4, 3, 32, 32)
    v0, v1 = TwoViewTransform(BloodSmearAugment(generator=torch.Generator().manual_seed(0)))(x)
    assert v0.shape == v1.shape == x.shape
    assert not torch.allclose(v0, v1)
    w0, w1 = TwoViewTransform(BloodSmearAugment(generator=torch.Generator().manual_seed(0)))(x)
    torch.testing.assert_close(v0, w0)
    torch.testing.assert_close(v1, w1)
