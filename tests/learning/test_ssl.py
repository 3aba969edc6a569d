"""Semi-hard triplet loss against a slow reference, and tiny real pretraining runs that checkpoint,
load and resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from learning.data import CellRecord, data_hash, read_manifest, sample_per_class
from learning.selfsup import (
    METHODS,
    PretrainConfig,
    create_method,
    load_checkpoint,
    load_encoder,
    pretrain,
    triplet_semihard_loss,
)
from learning.selfsup.config import DeviceRecipe, device_recipe, resolve_settings
from models_zoo import create_model


def slow_triplet_semihard(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """Loop version of FaceNet's online semi-hard mining with TensorFlow Addons' fallback rule."""
    d = torch.cdist(emb.double(), emb.double())
    terms = []
    for a in range(len(labels)):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not negatives:
            continue
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, n].item() for n in negatives if d[a, n] > d[a, p]]
            d_an = min(farther) if farther else max(d[a, n].item() for n in negatives)
            terms.append(max(0.0, margin + d[a, p].item() - d_an))
    return sum(terms) / len(terms) if terms else 0.0


GRID = list(itertools.product([4, 9, 16], [2, 32], [2, 3], [0.2, 1.0], [True, False]))


@pytest.mark.parametrize(("batch", "dim", "group", "margin", "normalise"), GRID)
def test_triplet_semihard_matches_slow_reference(
    batch: int, dim: int, group: int, margin: float, normalise: bool
) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + dim * 10 + group)
    emb = torch.randn(batch, dim, generator=g)
    if normalise:
        emb = F.normalize(emb, dim=1)
    labels = torch.randperm(batch, generator=g) // group  # groups of `group` (the last may be smaller)
    got = triplet_semihard_loss(emb, labels, margin)
    assert got.item() == pytest.approx(slow_triplet_semihard(emb, labels, margin), abs=1e-5)


def test_triplet_semihard_gradients_and_edge_cases() -> None:
    emb = torch.randn(8, 4, requires_grad=True)
    labels = torch.arange(4).repeat(2)
    loss = triplet_semihard_loss(emb, labels, 1.0)
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and loss.item() > 0

    # Identical views (distance 0, where sqrt has no derivative) still give finite gradients.
    same = torch.randn(4, 3).repeat(2, 1).requires_grad_()
    triplet_semihard_loss(same, labels, 0.5).backward()
    assert same.grad is not None and torch.isfinite(same.grad).all()

    # Positives together, negatives far beyond the margin: nothing to learn.
    spread = torch.eye(4).repeat(2, 1) * 10.0
    assert triplet_semihard_loss(spread, labels, 1.0).item() == 0.0
    # No negatives (one identity) or no positives (all distinct): zero, still differentiable.
    for lab in (torch.zeros(8, dtype=torch.long), torch.arange(8)):
        zero = triplet_semihard_loss(emb, lab, 1.0)
        assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError):
        triplet_semihard_loss(emb, labels[:3], 1.0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_losses_are_finite(name: str) -> None:
    torch.manual_seed(0)
    method = create_method(name, create_model("lightcnn", width=8))
    x0, x1 = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    loss = method.training_loss(x0, x1)
    loss.backward()
    method.on_step_end(0.5)
    assert loss.ndim == 0 and torch.isfinite(loss)


# --- real pretraining runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[CellRecord]:
    path = data_dir / "manifest.csv"  # data_dir (tests/conftest.py) skips, or fails under CI, without data
    return sample_per_class(read_manifest(path), 4)[:32]  # 32 real cells, every class


@pytest.mark.realdata
@pytest.mark.parametrize("method", sorted(METHODS))
def test_pretrain_checkpoint_load_and_resume(cells: list[CellRecord], tmp_path: Path, method: str) -> None:
    config = PretrainConfig(
        method=method,
        backbone="lightcnn",
        backbone_kwargs={"width": 8},
        image_size=32,
        epochs=1,
        batch_size=16,
        seed=1,
    )
    first = pretrain(cells, config, out=tmp_path / "run.pt", progress=False)
    json.dumps(first)  # JSON-able
    assert first["stopped_by"] == "epochs"
    assert first["steps_done"] == 2 and first["epochs_done"] == 1.0
    assert len(first["history"]) == 1 and first["final_loss"] == pytest.approx(first["final_loss"])

    encoder, meta = load_encoder(tmp_path / "run.pt")
    assert not encoder.training
    assert meta["backbone"] == "lightcnn" and meta["backbone_kwargs"] == {"width": 8}
    assert meta["method"] == method and meta["image_size"] == 32
    assert meta["data_hash"] == data_hash(cells) and meta["n_images"] == 32
    assert meta["epochs_done"] == 1.0 and meta["seconds"] > 0
    with torch.no_grad():
        z = encoder.forward_features(torch.rand(3, 3, 32, 32))
    assert z.shape == (3, meta["embedding_dim"]) == (3, 64)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}

    second = pretrain(
        cells,
        PretrainConfig(epochs=2),
        out=tmp_path / "resumed.pt",
        resume=tmp_path / "run.pt",
        progress=False,
    )
    assert second["method"] == method and second["image_size"] == 32  # taken from the checkpoint
    assert second["steps_done"] == 4 and second["steps_this_run"] == 2 and second["epochs_done"] == 2.0
    assert len(second["history"]) == 2 and second["seconds"] > first["seconds"]
    resumed, meta2 = load_encoder(tmp_path / "resumed.pt")
    assert meta2["created"] == meta["created"]
    changed = [
        k for k, v in resumed.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert changed  # it trained on
    state = load_checkpoint(tmp_path / "resumed.pt")
    assert state["optimizer"]["state"]  # optimizer moments travel with the checkpoint

    with pytest.raises(ValueError, match="differs"):
        pretrain(
            cells,
            PretrainConfig(method="simclr" if method != "simclr" else "byol", epochs=3),
            out=tmp_path / "x.pt",
            resume=tmp_path / "resumed.pt",
            progress=False,
        )


@pytest.mark.realdata
def test_pretrain_time_budget(cells: list[CellRecord], tmp_path: Path) -> None:
    config = PretrainConfig(
        backbone="lightcnn", backbone_kwargs={"width": 8}, image_size=32, minutes=1e-4, batch_size=4
    )
    result = pretrain(cells[:8], config, out=tmp_path / "budget.pt", progress=False)
    assert result["stopped_by"] == "minutes"
    assert result["seconds_this_run"] < 30
    assert (tmp_path / "budget.pt").is_file()
    _, meta = load_encoder(tmp_path / "budget.pt")
    assert meta["steps_done"] == result["steps_done"]
    with pytest.raises(ValueError, match="epochs, minutes"):
        pretrain(cells, PretrainConfig(), out=tmp_path / "never.pt")


def test_pretrain_config_and_its_settings() -> None:
    with pytest.raises(ValueError, match="epochs, minutes"):
        PretrainConfig(method="simclr")
    fresh = resolve_settings(PretrainConfig(minutes=1), None)
    assert (fresh.method, fresh.backbone) == ("triplet", "lightcnn")
    assert (fresh.image_size, fresh.batch_size) == (64, 128)
    assert fresh.lr == METHODS["triplet"].default_lr and fresh.backbone_kwargs == {} == fresh.method_kwargs
    imagenet = resolve_settings(PretrainConfig(epochs=1, backbone_kwargs={"pretrained": True}), None)
    assert imagenet.lr == pytest.approx(METHODS["triplet"].default_lr / 10)  # pretrained weights: a tenth

    meta = {"method": "byol", "backbone": "resnet18", "image_size": 96, "batch_size": 64, "lr": 0.5}
    resumed = resolve_settings(PretrainConfig(epochs=2, batch_size=32), meta)
    assert (resumed.method, resumed.backbone, resumed.image_size) == ("byol", "resnet18", 96)
    assert resumed.batch_size == 32 and resumed.lr == 0.5  # the batch size may change on resume
    with pytest.raises(ValueError, match="image_size=64 differs"):
        resolve_settings(PretrainConfig(epochs=2, image_size=64), meta)
    with pytest.raises(ValueError, match="gray_world"):
        resolve_settings(PretrainConfig(epochs=2, gray_world=False), {**meta, "gray_world": True})
    with pytest.raises(ValueError, match="unknown method"):
        resolve_settings(PretrainConfig(epochs=1, method="mae"), None)


def test_a_gpu_worker_pretrains_with_the_gpu_runs_batch_and_views() -> None:
    # The recipe is chosen from the device alone, so it is checked here without a GPU.
    assert device_recipe(torch.device("cuda"), 16_230) == DeviceRecipe(batch_size=512, augment="strong")
    assert device_recipe(torch.device("cpu"), 16_230) == DeviceRecipe(batch_size=128, augment="reference")
    # A small project still takes several steps an epoch; the views stay the device's.
    assert device_recipe(torch.device("cuda"), 300) == DeviceRecipe(batch_size=150, augment="strong")
    assert device_recipe(torch.device("cpu"), 3).batch_size == 2
