"""learning.export without Django or real data: the scripted model equals the platform's torch pipeline
(gray-world, backbone, L2 norm, folded head, softmax) for uint8 and float input at any batch size, and
a classifier without a linear form is refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from learning.classifiers import AlignedClassifier
from learning.export import (
    build_torchscript,
    classifier_to_torchscript,
    exported_attributes,
    readme_code,
    write_bundle,
)
from learning.saliency import CellClassifierModule
from learning.transforms import gray_world, to_float
from models_zoo import create_model

SIZE = 32


@pytest.fixture(scope="module")
def backbone() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("lightcnn", width=8)
    # Non-trivial batch-norm statistics, so eval mode matters.
    with torch.no_grad():
        model.train()
        model.forward_features(torch.rand(16, 3, SIZE, SIZE))
    return model.eval()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_scripted_model_matches_the_platform_pipeline(backbone: nn.Module, tmp_path: Path) -> None:
    head = nn.Linear(int(backbone.num_features), 5)  # type: ignore[arg-type]
    scripted = build_torchscript(backbone, head, SIZE)
    images = torch.randint(0, 256, (7, 3, SIZE, SIZE), dtype=torch.uint8)
    reference = CellClassifierModule(backbone, head).eval()
    with torch.no_grad():
        expected = torch.softmax(reference(gray_world(images)), dim=1)
        got_uint8 = scripted(images)
        got_float = scripted(to_float(images))
        got_one = scripted(images[0])
    assert torch.allclose(got_uint8, expected, atol=1e-5)
    assert torch.allclose(got_one, expected[:1], atol=1e-5)
    # Float input skips the uint8 rounding of gray-world: close, not bit-equal.
    assert torch.allclose(got_float, expected, atol=1e-2)
    assert torch.allclose(got_uint8.sum(dim=1), torch.ones(7))

    bundle = write_bundle(tmp_path / "model.zip", scripted, list("abcde"), SIZE, metadata={"v": 1})
    with zipfile.ZipFile(bundle) as zf:
        loaded = torch.jit.load(io.BytesIO(zf.read("model.pt")))
        assert json.loads(zf.read("labels.json"))["classes"] == list("abcde")
        spec = json.loads(zf.read("preprocessing.json"))
        assert spec["image_size"] == SIZE and spec["model"]["gray_world"]["applied_in_model"] is True
        compile(readme_code(zf.read("README.md").decode()), "README.md", "exec")
    with torch.no_grad():
        assert torch.equal(loaded(images), got_uint8)


def test_a_classifier_without_a_linear_form_is_refused(backbone: nn.Module) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, int(backbone.num_features))).astype(np.float32)  # type: ignore[arg-type]
    y = np.array(["a", "b", "c"] * 10)
    clf = AlignedClassifier(["a", "b", "c"], "mlp", max_iter=5)
    clf.fit(x, y)
    with pytest.raises(ValueError, match="cannot be exported"):
        classifier_to_torchscript(backbone, clf, x.shape[1], SIZE)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_attribute_heads_fold_into_the_model_and_one_value_heads_are_left_out(
    backbone: nn.Module, tmp_path: Path
) -> None:
    dim = int(backbone.num_features)  # type: ignore[arg-type]
    images = torch.randint(0, 256, (9, 3, SIZE, SIZE), dtype=torch.uint8)
    with torch.no_grad():
        features = backbone.forward_features(to_float(gray_world(images)))  # type: ignore[operator]
        z = torch.nn.functional.normalize(features, dim=1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clf = AlignedClassifier(["a", "b", "c"], "logreg").fit(x, np.array(["a", "b", "c", "a"] * 10))
    heads = {
        "granules": AlignedClassifier(["no", "yes"], "logreg").fit(x, np.array(["no", "yes"] * 20)),
        # Values as the schema lists them, one never seen: its column is 0, as on the platform.
        "size": AlignedClassifier(["big", "medium", "small"], "logreg").fit(
            x, np.array(["small", "big"] * 20)
        ),
        "shape": AlignedClassifier(["round", "irregular", "oval"], "logreg").fit(
            x, np.array(["round", "irregular", "oval", "round"] * 10)
        ),
        "vacuoles": AlignedClassifier(["no", "yes"], "logreg").fit(x, np.array(["no"] * 40)),  # one value
    }
    scripted = classifier_to_torchscript(backbone, clf, dim, SIZE, attribute_heads=heads)
    assert exported_attributes(scripted) == ["granules", "size", "shape"]
    with torch.no_grad():
        got = scripted.attributes(images)
    assert sorted(got) == ["granules", "shape", "size"]
    for name in got:
        expected = heads[name].predict_proba(z.numpy())
        assert got[name].shape == expected.shape
        assert np.abs(got[name].numpy() - expected).max() < 1e-5, name
    assert float(got["size"][:, 1].max()) < 1e-6  # "medium", never seen

    attributes = {name: list(heads[name].classes) for name in exported_attributes(scripted)}
    bundle = write_bundle(tmp_path / "model.zip", scripted, clf.classes, SIZE, attributes=attributes)
    with zipfile.ZipFile(bundle) as zf:
        assert json.loads(zf.read("attributes.json"))["attributes"] == attributes
        loaded = torch.jit.load(io.BytesIO(zf.read("model.pt")))
    with torch.no_grad():
        again = loaded.attributes(images)
        assert all(torch.equal(again[name], got[name]) for name in got)
        assert torch.equal(loaded(images), scripted(images))
    # A model without attribute heads says so with an empty answer, not an error.
    plain = classifier_to_torchscript(backbone, clf, dim, SIZE)
    with torch.no_grad():
        assert plain.attributes(images) == {}
