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

No Django here: the platform's export job supplies the backbone, the classifier and the class names.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
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
    """Scripted wrapper: preprocessing in tensors, traced features, L2 norm, linear head, softmax."""

    def __init__(self, features: nn.Module, head: nn.Linear, *, gray_world: bool = True) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.gray_world = gray_world

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if self.gray_world:
            # The platform's own function, compiled into the file: uint8 input is rounded and clipped
            # exactly as when the platform decodes a cell.
            x = gray_world_normalize(x)
        xf = to_float(x).float()  # .float(): float64 input too
        z = F.normalize(self.features(xf), dim=1)
        return torch.softmax(self.head(z), dim=1)


def build_torchscript(
    backbone: nn.Module, head: nn.Linear, image_size: int, *, gray_world: bool = True
) -> torch.jit.ScriptModule:
    """Trace the backbone's ``forward_features`` at ``image_size`` and script the wrapper around it.

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
    module = ExportedClassifier(traced, head_copy, gray_world=gray_world).eval()
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
) -> torch.jit.ScriptModule:
    """Fold ``clf`` (logistic regression) into a head and build the TorchScript model.

    Raises:
        ValueError: the classifier has no exact linear form (svm or mlp kind, a single class).
    """
    head = linear_head_from_classifier(clf, dim)
    if head is None:
        raise ValueError(
            f"a {clf.kind!r} classifier cannot be exported as TorchScript; only logistic regression "
            "(classifier kind 'logreg') fitted on two or more classes folds into a linear head"
        )
    return build_torchscript(backbone, head, image_size, gray_world=gray_world)


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
"""


def readme_text(image_size: int, classes: Sequence[str], *, crop: str = "centre") -> str:
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
) -> Path:
    """Write ``model.pt``, ``labels.json``, ``preprocessing.json`` and ``README.md`` into a zip at
    ``path`` (atomically: a temporary file is renamed into place)."""
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
        bundle.writestr(README_FILE, readme_text(image_size, classes, crop=crop))
    os.replace(tmp, path)
    return path


__all__ = [
    "ExportedClassifier",
    "build_torchscript",
    "classifier_to_torchscript",
    "preprocessing_spec",
    "readme_code",
    "readme_text",
    "write_bundle",
]
