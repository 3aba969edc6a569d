"""Semi-supervised fine-tuning (FixMatch-style unlabelled term, joint attribute heads) on tiny synthetic
cells: pseudo-labels follow the threshold, missing attributes are ignored, the unlabelled term moves
the weights only through pseudo-labels that pass, and the time budget holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learning.finetune import FinetuneResult, finetune, predict_proba
from learning.semi import SemiSupervised, attribute_loss, consistency_loss, cutout, pseudo_labels
from models_zoo import create_model
from models_zoo.heads import MultiAttributeHead

SIZE = 24
SCHEMA = {"cell_size": 2, "granularity": 2, "nucleus_shape": 3}


def tiny_cells(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` noisy images of three colour-coded classes (uint8 (n, 3, SIZE, SIZE)) and their labels."""
    g = torch.Generator().manual_seed(seed)
    labels = np.arange(n) % 3
    base = torch.tensor([[200.0, 60, 60], [60, 200, 60], [60, 60, 200]])[torch.from_numpy(labels)]
    noise = torch.rand(n, 3, SIZE, SIZE, generator=g) * 80.0
    return (base.view(n, 3, 1, 1) + noise).clamp(0, 255).to(torch.uint8), labels


def run(**kwargs: object) -> tuple[FinetuneResult, dict[str, torch.Tensor]]:
    images, labels = tiny_cells(18, seed=0)
    options: dict[str, object] = {"epochs": 3, "batch_size": 6, "device": "cpu", "seed": 5, "lr": 1e-3}
    options.update(kwargs)
    torch.manual_seed(0)
    result = finetune(create_model("lightcnn", width=8), images, labels, 3, **options)  # type: ignore[arg-type]
    return result, {k: v.clone() for k, v in result.backbone.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_pseudo_labels_keep_exactly_the_confident_rows() -> None:
    logits = torch.log(
        torch.tensor([[0.96, 0.02, 0.02], [0.5, 0.3, 0.2], [0.05, 0.95, 0.0], [0.1, 0.1, 0.8]])
    )
    targets, mask = pseudo_labels(logits, threshold=0.95)
    assert targets.tolist() == [0, 0, 1, 2]
    assert mask.tolist() == [True, False, True, False]  # 0.95 itself passes (>=)
    assert pseudo_labels(logits, 0.0)[1].all() and not pseudo_labels(logits, 1.0)[1].any()
    strong = torch.randn(4, 3, requires_grad=True)
    loss = consistency_loss(strong, targets, mask)
    loss.backward()
    assert strong.grad is not None
    assert strong.grad[~mask].abs().sum() == 0 and strong.grad[mask].abs().sum() > 0  # masked rows: no pull
    nothing = consistency_loss(strong, targets, torch.zeros(4, dtype=torch.bool))
    assert float(nothing.detach()) == 0.0


def test_attribute_loss_ignores_missing_attributes() -> None:
    torch.manual_seed(0)
    logits = {a: torch.randn(4, k, requires_grad=True) for a, k in SCHEMA.items()}
    targets = torch.tensor([[0, -1, 2], [1, -1, -1], [-1, -1, 0], [-1, -1, -1]])
    loss = attribute_loss(logits, targets)
    loss.backward()
    grads = {a: t.grad for a, t in logits.items()}
    assert grads["granularity"] is None or grads["granularity"].abs().sum() == 0  # never labelled
    assert grads["cell_size"] is not None and grads["cell_size"][2:].abs().sum() == 0  # rows 2, 3 missing
    assert grads["nucleus_shape"] is not None and grads["nucleus_shape"][[1, 3]].abs().sum() == 0
    # Anything at a missing entry leaves the value unchanged.
    changed = {a: t.detach().clone() for a, t in logits.items()}
    changed["granularity"] += 100.0
    changed["cell_size"][3] = torch.tensor([50.0, -50.0])
    assert torch.equal(attribute_loss(changed, targets), loss.detach())
    empty = attribute_loss(logits, torch.full((4, 3), -1))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_cutout_erases_one_square_per_image() -> None:
    x = torch.rand(5, 3, 20, 20)
    out = cutout(x, 0.3, generator=torch.Generator().manual_seed(0), fill=-1.0)
    erased = (out == -1.0).all(dim=1)  # (5, 20, 20)
    assert torch.equal(out[~erased.unsqueeze(1).expand_as(out)], x[~erased.unsqueeze(1).expand_as(x)])
    per_image = erased.sum(dim=(1, 2))
    assert (per_image > 0).all() and (per_image <= 7 * 7).all()
    assert cutout(x, 0.0) is x


def test_the_unlabelled_term_changes_the_weights_only_through_passing_pseudo_labels() -> None:
    unlabelled, _ = tiny_cells(30, seed=1)
    _, without = run(unlabelled=unlabelled, semi=SemiSupervised(threshold=0.0, lambda_u=0.0))
    used, with_all = run(unlabelled=unlabelled, semi=SemiSupervised(threshold=0.0, lambda_u=1.0))
    blocked, with_none = run(unlabelled=unlabelled, semi=SemiSupervised(threshold=1.0, lambda_u=1.0))
    assert used.pseudo_label_rate == 1.0 and blocked.pseudo_label_rate == 0.0
    assert not same_weights(without, with_all)  # the consistency loss moved the encoder
    assert same_weights(without, with_none)  # nothing passed the threshold: the same run as lambda_u = 0
    assert used.unlabelled_cells == 30 and used.unlabelled_seen == 3 * 3 * 6  # 3 epochs x 3 steps x 6
    assert {"loss_x", "loss_u", "mask_rate"} <= used.history[-1].keys()
    assert used.history[-1]["mask_rate"] == 1.0 and blocked.history[-1]["loss_u"] == 0.0


def test_pseudo_label_rate_follows_the_threshold() -> None:
    unlabelled, _ = tiny_cells(30, seed=1)
    rates = [
        run(unlabelled=unlabelled, semi=SemiSupervised(threshold=t, ratio=2.0))[0].pseudo_label_rate
        for t in (0.0, 0.5, 0.9, 1.0)
    ]
    assert rates[0] == 1.0 and rates[-1] == 0.0
    assert all(r is not None for r in rates) and rates == sorted(rates, reverse=True)  # type: ignore[type-var]


def test_supervised_default_is_unchanged_by_the_new_options() -> None:
    plain, plain_weights = run()
    _, again_weights = run(unlabelled=None, attributes=None, attribute_schema=None)
    assert same_weights(plain_weights, again_weights)
    assert plain.unlabelled_cells == 0 and plain.pseudo_label_rate is None and plain.attribute_head is None
    assert set(plain.history[0]) == {"epoch", "loss", "accuracy", "seconds"}


def test_attribute_heads_train_only_where_attributes_exist() -> None:
    attributes = np.full((18, 3), -1, dtype=np.int64)
    attributes[:12, 0] = np.arange(12) % 2  # cell_size on two thirds of the cells
    attributes[::3, 2] = 1  # nucleus_shape on a few; granularity on none
    result, _ = run(attributes=attributes, attribute_schema=SCHEMA, weight_decay=0.0)
    head = result.attribute_head
    assert head is not None and list(head.heads) == list(SCHEMA) and not head.training
    assert result.attribute_cells == 14  # rows 0-11, 12 and 15
    # finetune seeds torch (seed=5), then builds the cell-type head, then the attribute heads.
    dim = result.head.in_features
    torch.manual_seed(5)
    torch.nn.Linear(dim, 3)
    fresh = MultiAttributeHead(dim, SCHEMA)
    start, end = fresh.state_dict(), head.state_dict()
    assert torch.equal(start["heads.granularity.weight"], end["heads.granularity.weight"])  # no label
    assert not torch.equal(start["heads.cell_size.weight"], end["heads.cell_size.weight"])
    assert not torch.equal(start["heads.nucleus_shape.weight"], end["heads.nucleus_shape.weight"])
    assert "loss_attr" in result.history[-1] and result.history[-1]["loss_attr"] > 0


def test_semi_supervised_run_respects_the_time_budget() -> None:
    unlabelled, _ = tiny_cells(40, seed=2)
    budget_s = 0.5
    result, _ = run(
        epochs=100_000,
        minutes=budget_s / 60,
        unlabelled=unlabelled,
        semi=SemiSupervised(ratio=2.0),
        attributes=np.zeros((18, 3), dtype=np.int64),
        attribute_schema=SCHEMA,
    )
    assert result.stopped_by == "minutes" and result.steps_done >= 1
    assert budget_s <= result.seconds < budget_s + 20.0
    assert result.unlabelled_seen == result.steps_done * 12


def test_extra_inputs_are_validated() -> None:
    images, labels = tiny_cells(6, seed=0)
    backbone = create_model("lightcnn", width=8)
    with pytest.raises(ValueError, match="unlabelled must be uint8"):
        finetune(
            backbone, images, labels, 3, epochs=1, unlabelled=torch.zeros(4, 3, SIZE + 1, SIZE + 1).byte()
        )
    with pytest.raises(ValueError, match="empty"):
        finetune(backbone, images, labels, 3, epochs=1, unlabelled=images[:0])
    with pytest.raises(ValueError, match="go together"):
        finetune(backbone, images, labels, 3, epochs=1, attributes=np.zeros((6, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="must be"):
        finetune(
            backbone,
            images,
            labels,
            3,
            epochs=1,
            attributes=np.zeros((5, 3), dtype=np.int64),
            attribute_schema=SCHEMA,
        )
    with pytest.raises(ValueError, match="out of range"):
        finetune(
            backbone,
            images,
            labels,
            3,
            epochs=1,
            attributes=np.full((6, 3), 2, dtype=np.int64),
            attribute_schema=SCHEMA,
        )
    with pytest.raises(ValueError, match="threshold"):
        SemiSupervised(threshold=1.5)
    with pytest.raises(ValueError, match="preset"):
        SemiSupervised(strong="nope")


def test_probe_heads_start_from_a_linear_probe_of_the_frozen_features() -> None:
    images, labels = tiny_cells(18, seed=0)
    attributes = np.full((18, 3), -1, dtype=np.int64)
    attributes[:, 0] = labels % 2  # cell_size follows the class: a probe can fit it
    accuracy = {}
    for probe in (False, True):
        torch.manual_seed(0)
        backbone = create_model("lightcnn", width=8)
        result = finetune(
            backbone,
            images,
            labels,
            3,
            epochs=1,
            batch_size=18,
            lr=0.0,  # nothing trains after the probe: what is left is the probe itself
            head_lr=0.0,
            augment=None,
            recalibrate_bn=False,
            device="cpu",
            attributes=attributes,
            attribute_schema=SCHEMA,
            probe_heads=probe,
        )
        accuracy[probe] = float(
            (predict_proba(result.backbone, result.head, images).argmax(axis=1) == labels).mean()
        )
        assert result.attribute_head is not None
    assert accuracy[True] == 1.0 and accuracy[False] < 1.0, accuracy
