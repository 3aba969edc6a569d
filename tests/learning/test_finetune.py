"""Supervised fine-tuning on real cells: it learns, respects its time budget, reports progress, and the
fine-tuned backbone is a working embedding model again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learning.data import CellImageDataset, CellRecord, label_indices, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings
from learning.finetune import finetune, group_balanced_weights, predict_proba, release_inference_tensors
from models_zoo import create_model

CLASSES = ["eosinophil", "lymphocyte", "platelet"]  # well separated by eye: granules, nucleus, size
SIZE = 48


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[CellRecord]:
    records = [r for r in read_manifest(data_dir / "manifest.csv") if r.label in CLASSES]
    return sample_per_class(records, 40, seed=0)  # 120 real cells


@pytest.fixture(scope="module")
def dataset(cells: list[CellRecord]) -> CellImageDataset:
    data = CellImageDataset(cells, SIZE)
    data.preload()
    return data


@pytest.mark.realdata
def test_finetune_learns_three_real_classes(dataset: CellImageDataset) -> None:
    images = dataset.images
    labels = label_indices(dataset.records, CLASSES)
    torch.manual_seed(0)
    backbone = create_model("lightcnn", width=16)
    before = extract_embeddings(backbone, dataset)  # leaves inference-mode weights behind on CPU
    calls: list[tuple[float, str]] = []

    result = finetune(
        backbone,
        images,
        labels,
        len(CLASSES),
        epochs=8,
        batch_size=32,
        lr=1e-3,  # random initialisation: ten times the default for pretrained weights
        device="cpu",
        progress=lambda fraction, message: calls.append((fraction, message)),
    )

    assert result.backbone is backbone and not backbone.training
    assert result.stopped_by == "epochs" and result.epochs_done == 8.0 and result.steps_done == 8 * 3
    assert (result.head.in_features, result.head.out_features) == (128, 3)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    probs = predict_proba(result.backbone, result.head, images)
    assert probs.shape == (120, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.75, f"training-set accuracy {accuracy:.2f} (chance 0.33)"

    fractions = [f for f, _ in calls]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(calls) >= 8  # start, every epoch, end
    assert all(isinstance(m, str) and m for _, m in calls)

    # The platform re-embeds with the fine-tuned backbone: a different, still normalised embedding.
    after = extract_embeddings(result.backbone, dataset)
    assert after.shape == before.shape and not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)


@pytest.mark.realdata
def test_minutes_budget_stops_training(dataset: CellImageDataset) -> None:
    images = dataset.images[:40]
    labels = label_indices(dataset.records[:40], CLASSES)
    torch.manual_seed(0)
    backbone = create_model("lightcnn", width=8)
    budget_s = 0.5
    result = finetune(
        backbone, images, labels, 3, epochs=10_000, minutes=budget_s / 60, batch_size=8, device="cpu"
    )
    assert result.stopped_by == "minutes"
    assert 0 < result.epochs_done < 10_000 and result.steps_done >= 1
    assert budget_s <= result.seconds < budget_s + 30.0  # the first step past the budget ends it
    assert result.history and result.history[-1]["epoch"] == pytest.approx(result.epochs_done, abs=1e-3)

    only_minutes = finetune(backbone, images, labels, 3, minutes=0.1 / 60, batch_size=8, device="cpu")
    assert only_minutes.stopped_by == "minutes"


@pytest.mark.realdata
@pytest.mark.parametrize("balance", ["loss", "none"])
def test_other_balancing_modes_and_unlabelled_rows(dataset: CellImageDataset, balance: str) -> None:
    images = dataset.images[:24]
    labels = label_indices(dataset.records[:24], CLASSES)
    labels[:4] = -1  # unlabelled cells are left out
    torch.manual_seed(0)
    result = finetune(
        create_model("lightcnn", width=8),
        images,
        labels,
        5,  # two classes without any label
        epochs=1,
        batch_size=10,
        balance=balance,  # type: ignore[arg-type]
        augment=None,
        device="cpu",
    )
    assert result.steps_done == 2  # 20 labelled cells // 10
    assert result.head.out_features == 5
    assert predict_proba(result.backbone, result.head, images).shape == (24, 5)


def test_finetune_validates_inputs() -> None:
    backbone = create_model("lightcnn", width=8)
    images = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="epochs, minutes"):
        finetune(backbone, images, labels, 2)
    with pytest.raises(ValueError, match="out of range"):
        finetune(backbone, images, labels + 1, 2, epochs=1)
    with pytest.raises(ValueError, match="uint8"):
        finetune(backbone, images.float(), labels, 2, epochs=1)
    with pytest.raises(ValueError, match="two labelled"):
        finetune(backbone, images, np.array([0, -1, -1, -1, -1, -1]), 2, epochs=1)
    with pytest.raises(ValueError, match="balance"):
        finetune(backbone, images, labels, 2, epochs=1, balance="oversample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_groups"):
        finetune(backbone, images, labels, 2, epochs=1, sample_groups=np.zeros(5, dtype=np.int64))


def test_release_inference_tensors() -> None:
    model = create_model("lightcnn", width=8)
    with torch.inference_mode():
        model.to(memory_format=torch.channels_last)  # what extract_embeddings does on CPU
    assert any(p.is_inference() for p in model.parameters())
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    assert release_inference_tensors(model) > 0
    assert not any(t.is_inference() for t in [*model.parameters(), *model.buffers()])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[key])
    model.forward_features(torch.rand(2, 3, 32, 32)).sum().backward()  # trainable again
    assert release_inference_tensors(model) == 0


def test_group_balanced_weights_split_each_class_equally_between_its_groups() -> None:
    # Class 0: three old-site cells and one new-site cell; class 1: one of each; class 2: new site only.
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    groups = torch.tensor([0, 0, 0, 1, 0, 1, 1])
    weights = group_balanced_weights(targets, groups)
    np.testing.assert_allclose(weights.numpy(), [1 / 6, 1 / 6, 1 / 6, 1 / 2, 1 / 2, 1 / 2, 1.0], rtol=1e-6)
    for label in range(3):  # every class is drawn equally often, as without groups
        assert float(weights[targets == label].sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="groups"):
        group_balanced_weights(targets, groups[:-1])


@pytest.mark.realdata
def test_sample_groups_steer_the_draws(dataset: CellImageDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    images = dataset.images[:30]
    labels = label_indices(dataset.records[:30], CLASSES)
    groups = np.zeros(30, dtype=np.int64)
    groups[:2] = 1  # two cells of a "new site"
    drawn: list[torch.Tensor] = []
    multinomial = torch.multinomial

    def spy(weights: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        drawn.append(weights.clone())
        return multinomial(weights, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "multinomial", spy)
    for sample_groups in (None, groups):
        finetune(
            create_model("lightcnn", width=8),
            images,
            labels,
            3,
            epochs=1,
            batch_size=10,
            augment=None,
            device="cpu",
            sample_groups=sample_groups,
        )
    plain, balanced = drawn[0], drawn[-1]
    site = torch.from_numpy(groups == 1)
    # Without groups the two cells weigh as their class-mates do; with them their class's half.
    same_class = torch.from_numpy(labels == labels[0])
    assert float(plain[site & same_class].sum()) < 0.5 * float(plain[same_class].sum())
    assert float(balanced[site & same_class].sum()) == pytest.approx(0.5 * float(balanced[same_class].sum()))
