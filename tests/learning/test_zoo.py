"""Backbone registry contract (timm-style: one test parametrised over list_models()) and task heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models_zoo import (
    Backbone,
    CellTypeHead,
    MultiAttributeHead,
    create_model,
    list_models,
    multi_attribute_loss,
    register_model,
)
from models_zoo.efficientnet import lite0_weights_path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_lists_the_required_models() -> None:
    assert {"resnet18", "lightcnn", "efficientnet_lite0"} <= set(list_models())
    assert list_models("resnet*") == ["resnet18"]


@pytest.mark.parametrize("name", list_models())
def test_backbone_contract(name: str) -> None:
    model = create_model(name, num_classes=5).eval()
    assert isinstance(model, Backbone)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
        out = model(x)
        fmap = model.forward_feature_map(x)
    assert feats.shape == (2, model.num_features)
    assert pre.shape == (2, model.num_features)
    assert logits.shape == out.shape == (2, 5)
    assert fmap.shape[:2] == (2, model.num_features)
    torch.testing.assert_close(fmap.mean(dim=(2, 3)), feats)
    torch.testing.assert_close(logits, out)
    for t in (feats, logits, fmap):
        assert torch.isfinite(t).all()

    model.reset_classifier(0)
    assert model.num_classes == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), feats)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", list_models())
def test_backbone_trains_one_step(name: str) -> None:
    model = create_model(name, num_classes=3).train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_resnet18_small_input_stem() -> None:
    small = create_model("resnet18", small_input=True)
    big = create_model("resnet18")
    assert isinstance(small.conv1, nn.Conv2d) and small.conv1.kernel_size == (3, 3)
    assert small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert small.forward_feature_map(x).shape == (1, 512, 8, 8)  # 64 / 8
        assert big.forward_feature_map(x).shape == (1, 512, 2, 2)  # 64 / 32


def test_resnet18_pretrained_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        create_model("resnet18", pretrained=True)


def test_resnet18_loads_local_imagenet_file(tmp_path: Path) -> None:
    reference = create_model("resnet18")
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = f"{tmp_path}/resnet18.pth"
    torch.save(state, path)
    model = create_model("resnet18", pretrained=True, weights_path=path)
    torch.testing.assert_close(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    small = create_model("resnet18", pretrained=True, small_input=True, weights_path=path)
    torch.testing.assert_close(small.state_dict()["layer4.1.bn2.bias"], state["layer4.1.bn2.bias"])


def test_efficientnet_lite0_loads_wheel_weights() -> None:
    path = lite0_weights_path()
    assert path.is_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0", pretrained=True)
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["net._conv_stem.weight"], state["_conv_stem.weight"])
    torch.testing.assert_close(loaded["net._bn1.running_var"], state["_bn1.running_var"])
    assert model.num_features == 1280
    with torch.no_grad():
        feats = model.eval().forward_features(torch.rand(2, 3, 96, 96))  # dynamic padding: any size
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()


def test_lightcnn_width_and_no_weights() -> None:
    assert create_model("lightcnn", width=16).num_features == 128
    with pytest.raises(ValueError):
        create_model("lightcnn", pretrained=True)


def test_unknown_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no_such_net")

    def resnet18(*, pretrained: bool = False) -> Backbone:  # same name as a registered model
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet18)


def test_cell_type_head() -> None:
    head = CellTypeHead(16, 9)
    assert head(torch.randn(4, 16)).shape == (4, 9)


def test_multi_attribute_head_and_loss() -> None:
    schema = {"cell_size": 2, "nucleus_shape": 6, "granule_colour": 4}
    head = MultiAttributeHead(8, schema)
    logits = head(torch.randn(5, 8))
    assert list(logits) == list(schema)
    assert {k: v.shape for k, v in logits.items()} == {k: (5, n) for k, n in schema.items()}

    targets = torch.tensor([[0, 1, -1], [1, -1, -1], [-1, 5, -1], [0, 0, -1], [-1, -1, -1]])
    loss = multi_attribute_loss(logits, targets)
    expected = torch.stack(
        [
            F.cross_entropy(logits["cell_size"][[0, 1, 3]], targets[[0, 1, 3], 0]),
            F.cross_entropy(logits["nucleus_shape"][[0, 2, 3]], targets[[0, 2, 3], 1]),
        ]
    ).mean()  # granule_colour has no label in the batch and is left out
    torch.testing.assert_close(loss, expected)

    empty = multi_attribute_loss(logits, torch.full((5, 3), -1))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError):
        multi_attribute_loss(logits, torch.zeros(5, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        MultiAttributeHead(8, {"cell_size": 1})
