"""The platform's classifier as one self-contained TorchScript file that plain ``torch`` can run.

The deployed model is three steps: a ``models_zoo`` backbone (which normalises pixels with its own
statistics inside ``forward_features``), L2 normalisation of the pooled embedding, and a fitted
:class:`~learning.classifiers.AlignedClassifier`. :func:`learning.saliency.linear_head_from_classifier`
folds a logistic-regression classifier into one ``nn.Linear``; here the three steps become one
TorchScript module:

    image (B, 3, S, S), uint8 in [0, 255] or float in [0, 1], centre-cropped and resized to S
      -> gray-world colour normalisation (:func:`learning.transforms.gray_world` itself, scripted)
      -> float in [0, 1] -> backbone.forward_features (pixel mean/std normalisation inside)
      -> L2 normalisation -> folded linear head -> softmax -> (B, C) class probabilities

The backbone is traced (``torch.jit.trace``), the wrapper with the dtype branch and gray-world is
scripted, so the file runs without leukoloop, models_zoo or scikit-learn. Decoding, the centre square
crop and the bilinear resize to S stay with the caller (PIL's resize cannot be scripted to the bit);
``preprocessing.json`` says how and the README in the bundle prints the code, the source of
:mod:`learning.imaging` that the platform itself decodes with.

The morphological attributes' heads on the embedding (logistic regressions, as the class head) fold
the same way, into one more linear layer behind the model's ``attributes`` method: attribute ->
probabilities over its values, listed in ``attributes.json``. The heads on the cell's measurements that
the platform's suggestions also average in are trees on :mod:`learning.morphometry`'s measurements,
which are not tensors of the image: they stay out, and the bundle's README says so.

No Django here: the platform's export job supplies the backbone, the classifier, the attribute heads and
the class names.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learning.calibration import TemperatureScaled
from learning.classifiers import AlignedClassifier
from learning.imaging import CELL_CROP_SCALE, CELL_CROP_STEP, GEOMETRY_STEPS, readme_source
from learning.saliency import linear_head_from_classifier
from learning.transforms import gray_world as gray_world_normalize
from learning.transforms import to_float

MODEL_FILE: Final = "model.pt"
LABELS_FILE: Final = "labels.json"
PREPROCESSING_FILE: Final = "preprocessing.json"
README_FILE: Final = "README.md"
ATTRIBUTES_FILE: Final = "attributes.json"


class _Features(nn.Module):
    """``backbone.forward_features`` as a module's ``forward`` (what gets traced)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        forward = getattr(self.backbone, "forward_features", self.backbone)
        out: Tensor = forward(x)
        return out


class ExportedClassifier(nn.Module):
    """Scripted wrapper: preprocessing in tensors, traced features, L2 norm, linear head, softmax.

    ``forward`` gives the class probabilities; ``attributes`` (exported beside it) the morphological
    attributes' probabilities, attribute -> (B, its values), from the embedding heads folded into one
    linear layer (``attribute_head``; its rows are the attributes' values one after another,
    ``attribute_sizes`` long each). Without attribute heads it returns an empty dict."""

    def __init__(
        self,
        features: nn.Module,
        head: nn.Linear,
        *,
        gray_world: bool = True,
        attribute_heads: Mapping[str, nn.Linear] | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.gray_world = gray_world
        heads = dict(attribute_heads or {})
        sizes = [int(h.out_features) for h in heads.values()]
        # Typed for TorchScript, which cannot infer an empty list's element type (no attribute heads).
        # Eager, they are (value, type) pairs: ``attributes`` runs scripted only (build_torchscript).
        self.attribute_names = torch.jit.Attribute(list(heads), list[str])
        self.attribute_sizes = torch.jit.Attribute(sizes, list[int])
        with warnings.catch_warnings():  # no attribute heads: an empty layer, whose init warns
            warnings.simplefilter("ignore", UserWarning)
            self.attribute_head = nn.Linear(head.in_features, sum(sizes))
        with torch.no_grad():
            if heads:
                self.attribute_head.weight.copy_(torch.cat([h.weight for h in heads.values()]))
                self.attribute_head.bias.copy_(torch.cat([h.bias for h in heads.values()]))
        self.attribute_head.requires_grad_(False)

    def embed(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if self.gray_world:
            # The platform's own function, compiled into the file: uint8 input is rounded and clipped
            # exactly as when the platform decodes a cell.
            x = gray_world_normalize(x)
        xf = to_float(x).float()  # .float(): float64 input too
        return F.normalize(self.features(xf), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.head(self.embed(x)), dim=1)

    @torch.jit.export
    def attributes(self, x: Tensor) -> dict[str, Tensor]:
        logits = self.attribute_head(self.embed(x))
        out: dict[str, Tensor] = {}
        start = 0
        for i in range(len(self.attribute_names)):
            stop = start + self.attribute_sizes[i]
            out[self.attribute_names[i]] = torch.softmax(logits[:, start:stop], dim=1)
            start = stop
        return out


def build_torchscript(
    backbone: nn.Module,
    head: nn.Linear,
    image_size: int,
    *,
    gray_world: bool = True,
    attribute_heads: Mapping[str, nn.Linear] | None = None,
) -> torch.jit.ScriptModule:
    """Trace the backbone's ``forward_features`` at ``image_size`` and script the wrapper around it
    (with ``attribute_heads``, attribute -> a head over its values, behind ``attributes``).

    The backbone is copied to CPU and eval mode first (batch-norm running statistics, no dropout);
    the caller's module is left as it was.
    """
    import copy

    from learning.finetune import release_inference_tensors

    features = _Features(copy.deepcopy(backbone)).cpu().eval()
    release_inference_tensors(features)  # weights touched by extract_embeddings' inference mode
    for param in features.parameters():
        param.requires_grad_(False)
    example = torch.rand(2, 3, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.x marks TorchScript deprecated; it is still the one format plain torch loads alone.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(features, example, check_trace=False)
    head_copy = copy.deepcopy(head).cpu().eval()
    for param in head_copy.parameters():
        param.requires_grad_(False)
    module = ExportedClassifier(
        traced, head_copy, gray_world=gray_world, attribute_heads=attribute_heads
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted: torch.jit.ScriptModule = torch.jit.script(module)
    return scripted


def classifier_to_torchscript(
    backbone: nn.Module,
    clf: AlignedClassifier | TemperatureScaled,
    dim: int,
    image_size: int,
    *,
    gray_world: bool = True,
    attribute_heads: Mapping[str, AlignedClassifier] | None = None,
) -> torch.jit.ScriptModule:
    """Fold ``clf`` (logistic regression) into a head and build the TorchScript model; with
    ``attribute_heads`` (attribute -> a logistic regression on the same embedding: the embedding heads
    of :class:`learning.attribute_heads.FusedAttributeHeads`), fold those too, behind ``attributes``.
    An attribute head without a linear form (fitted on one value) is left out.

    Raises:
        ValueError: the classifier has no exact linear form (svm or mlp kind, a single class).
    """
    head = linear_head_from_classifier(clf, dim)
    if head is None:
        raise ValueError(
            f"a {clf.kind!r} classifier cannot be exported as TorchScript; only logistic regression "
            "(classifier kind 'logreg') fitted on two or more classes folds into a linear head"
        )
    folded = {name: linear_head_from_classifier(h, dim) for name, h in (attribute_heads or {}).items()}
    return build_torchscript(
        backbone,
        head,
        image_size,
        gray_world=gray_world,
        attribute_heads={name: h for name, h in folded.items() if h is not None},
    )


def exported_attributes(model: torch.jit.ScriptModule) -> list[str]:
    """The attributes a built model's ``attributes`` method gives, in its order."""
    return list(model.attribute_names)


def preprocessing_spec(image_size: int, *, gray_world: bool = True, crop: str = "centre") -> dict[str, Any]:
    """What the caller does before the model, and what the model does itself."""
    steps = dict(GEOMETRY_STEPS) | ({"crop": CELL_CROP_STEP} if crop == "cell" else {})
    return {
        "image_size": image_size,
        "crop": crop,
        "cell_scale": CELL_CROP_SCALE,
        "input": {
            "shape": ["B", 3, image_size, image_size],
            "layout": "NCHW, RGB",
            "dtype": "uint8 in [0, 255] (preferred; as the platform) or float32 in [0, 1]",
        },
        "caller": {**steps, "code": "preprocess() in README.md"},
        "model": {
            "gray_world": {
                "applied_in_model": gray_world,
                "formula": "x_c * mean(x) / mean(x_c) per image; uint8 input rounded and clipped",
            },
            "pixel_normalisation": "backbone mean/std, applied inside the model",
            "embedding": "global average pool, then L2 normalisation",
            "output": "softmax probabilities (B, C) in the order of labels.json",
        },
    }


# The bundle's own helpers around the platform's preprocessing (learning.imaging, printed verbatim).
_LOAD_BUNDLE: Final = """\
def load_bundle(zip_path):
    with zipfile.ZipFile(zip_path) as bundle:
        labels = json.loads(bundle.read("labels.json"))["classes"]
        spec = json.loads(bundle.read("preprocessing.json"))
        with bundle.open("model.pt") as handle:
            model = torch.jit.load(io.BytesIO(handle.read()), map_location="cpu")
    geometry = {"size": spec["image_size"], "crop": spec.get("crop", "centre"),
                "cell_scale": spec.get("cell_scale", 2.0)}
    return model.eval(), labels, geometry
"""

_PREDICT: Final = """\
def predict(model, paths, geometry):
    batch = torch.stack([preprocess(p, **geometry) for p in paths])  # uint8 (B, 3, S, S)
    with torch.no_grad():
        return model(batch)  # (B, C) probabilities


def predict_attributes(model, paths, geometry):
    batch = torch.stack([preprocess(p, **geometry) for p in paths])
    with torch.no_grad():
        return model.attributes(batch)  # attribute -> (B, its values) probabilities; see attributes.json
"""


def readme_text(
    image_size: int,
    classes: Sequence[str],
    *,
    crop: str = "centre",
    attributes: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The bundle's README: how to run the model with plain torch (a test runs this very code).

    Its preprocessing is :mod:`learning.imaging`'s source, so it cannot drift from the platform's.
    """
    code = f"import io\nimport json\nimport zipfile\n{readme_source()}\n\n{_LOAD_BUNDLE}\n\n{_PREDICT}"
    what = (
        f"a square around the cell's nucleus, {CELL_CROP_SCALE:g} times its diameter"
        if crop == "cell"
        else "the centre square"
    )
    return f"""# leukoloop classifier (TorchScript)

Input: RGB images of one white blood cell; `preprocess` takes {what} and resizes it to
{image_size} px, as the platform did when it trained the model.
Output: probabilities over {len(classes)} classes, in the order of `labels.json`.
Gray-world colour normalisation and the pixel mean/std normalisation happen inside the model; see
`preprocessing.json`. Needs Python 3.10 or later and only `torch`, `numpy` and `Pillow`:

```python
{code}```

Example: `model, labels, geometry = load_bundle("model.zip")`, then
`probs = predict(model, ["cell.jpg"], geometry)` and `labels[int(probs[0].argmax())]`.
{_attributes_text(attributes)}"""


def _attributes_text(attributes: Mapping[str, Sequence[str]] | None) -> str:
    if not attributes:
        return "\nThis model has no attribute heads (too few labelled cells carried attributes).\n"
    return f"""
Morphological attributes ({len(attributes)}): `predict_attributes(model, ["cell.jpg"], geometry)` gives
attribute -> probabilities over its values, in the order of `attributes.json`. These are the heads on
the embedding alone. The platform's suggestions also hear heads on the cell's measurements (sizes,
nucleus shape, colours), which need leukoloop's `learning.morphometry` and are not in this file: on 810
labels the embedding heads scored a mean attribute macro-F1 of 0.850, both together 0.862-0.871
(bench/README.md).
"""


def readme_code(readme: str) -> str:
    """The Python block of :func:`readme_text`."""
    start = readme.index("```python\n") + len("```python\n")
    return readme[start : readme.index("```", start)]


def write_bundle(
    path: str | Path,
    model: torch.jit.ScriptModule,
    classes: Sequence[str],
    image_size: int,
    *,
    gray_world: bool = True,
    crop: str = "centre",
    metadata: dict[str, Any] | None = None,
    attributes: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write ``model.pt``, ``labels.json``, ``preprocessing.json`` and ``README.md`` into a zip at
    ``path`` (atomically: a temporary file is renamed into place); with ``attributes`` (attribute -> its
    values, as the model's ``attributes`` method gives them), ``attributes.json`` too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(model, buffer)
    labels = {"classes": list(classes), **({"model": metadata} if metadata else {})}
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(MODEL_FILE, buffer.getvalue())
        bundle.writestr(LABELS_FILE, json.dumps(labels, indent=2))
        bundle.writestr(
            PREPROCESSING_FILE,
            json.dumps(preprocessing_spec(image_size, gray_world=gray_world, crop=crop), indent=2),
        )
        bundle.writestr(README_FILE, readme_text(image_size, classes, crop=crop, attributes=attributes))
        if attributes:
            values = {name: list(v) for name, v in attributes.items()}
            bundle.writestr(
                ATTRIBUTES_FILE, json.dumps({"attributes": values, "heads": "embedding"}, indent=2)
            )
    os.replace(tmp, path)
    return path


__all__ = [
    "ExportedClassifier",
    "build_torchscript",
    "classifier_to_torchscript",
    "exported_attributes",
    "preprocessing_spec",
    "readme_code",
    "readme_text",
    "write_bundle",
]
