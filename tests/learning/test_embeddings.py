"""Embedding extraction on real cells and the ids.npy / embeddings.npy / meta.json format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learning.data import CellImageDataset, CellRecord, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings, load_embeddings, save_embeddings
from models_zoo import create_model


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[CellRecord]:
    path = data_dir / "manifest.csv"  # data_dir (tests/conftest.py) skips, or fails under CI, without data
    return sample_per_class(read_manifest(path), 2, seed=5)  # 18 real cells


@pytest.mark.realdata
def test_extract_embeddings_shapes_norms_and_paths(cells: list[CellRecord], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("lightcnn", width=8)  # 64-d
    emb = extract_embeddings(model, cells, image_size=32, batch_size=7)
    assert emb.shape == (len(cells), 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert model.training  # the caller's mode is restored

    # Same numbers whether images come preloaded, through DataLoader workers, or in another batch size.
    dataset = CellImageDataset(cells, 32)
    dataset.preload()
    np.testing.assert_allclose(extract_embeddings(model, dataset, batch_size=64), emb, atol=1e-5)
    workers = extract_embeddings(model, CellImageDataset(cells, 32), batch_size=5, num_workers=1)
    np.testing.assert_allclose(workers, emb, atol=1e-5)
    raw = extract_embeddings(model, dataset, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)

    ids = [c.id for c in cells]
    folder = save_embeddings(tmp_path / "emb", ids, emb, meta={"encoder": "lightcnn", "image_size": 32})
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", "ids.npy", "meta.json"]
    ids2, emb2, meta = load_embeddings(folder)
    assert ids2.tolist() == ids
    np.testing.assert_array_equal(emb2, emb)
    assert meta == {
        "n": len(cells),
        "dim": 64,
        "dtype": "float32",
        "normalized": True,
        "encoder": "lightcnn",
        "image_size": 32,
    }
    assert json.loads((folder / "meta.json").read_text())["n"] == len(cells)


def test_save_embeddings_validates(tmp_path: Path) -> None:
    emb = np.eye(3, dtype=np.float64)
    with pytest.raises(ValueError):
        save_embeddings(tmp_path, ["a", "b"], emb)
    with pytest.raises(ValueError, match="unique"):
        save_embeddings(tmp_path, ["a", "a", "b"], emb)
    save_embeddings(tmp_path, ["a", "b", "c"], emb)
    ids, loaded, meta = load_embeddings(tmp_path)
    assert loaded.dtype == np.float32 and meta["normalized"] is True and ids.dtype.kind == "U"


def test_extract_needs_image_size_for_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        extract_embeddings(create_model("lightcnn", width=8), [CellRecord("x", tmp_path / "x.jpg")])


@pytest.mark.realdata
def test_batchnorm_for_source_re_estimates_statistics_on_that_source_only(cells: list[CellRecord]) -> None:
    from learning.embeddings import batchnorm_for_source

    torch.manual_seed(0)
    model = create_model("lightcnn", width=8).eval()
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert first_bn.running_mean is not None
    before = first_bn.running_mean.clone()
    dataset = CellImageDataset(cells[:16], 32)  # 16 real cells, two batches of 8
    dataset.preload()
    adapted = batchnorm_for_source(model, dataset, batch_size=8)

    # The first batch-norm layer's input does not depend on any statistics: capture it, average it.
    seen: list[torch.Tensor] = []
    adapted_bn = next(m for m in adapted.modules() if isinstance(m, torch.nn.BatchNorm2d))
    hook = adapted_bn.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach()))
    extract_embeddings(adapted, dataset, batch_size=8)
    hook.remove()
    batch_means = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen])  # momentum None: mean of batch means
    torch.testing.assert_close(adapted_bn.running_mean, batch_means.mean(dim=0), rtol=1e-4, atol=1e-5)
    assert adapted_bn.running_mean is not None
    assert not torch.allclose(adapted_bn.running_mean, before)
    torch.testing.assert_close(first_bn.running_mean, before)  # the caller's model is untouched
    assert not adapted.training
    # Other images, other statistics, other embeddings: the point of a per-source normalisation.
    other = CellImageDataset(cells[2:18], 32)
    other.preload()
    elsewhere = batchnorm_for_source(model, other, batch_size=8)
    assert not np.allclose(extract_embeddings(elsewhere, dataset), extract_embeddings(adapted, dataset))
