"""Why did the model say this? A saliency heat map for one cell, and a PNG overlay of it.

The platform classifies a cell in three steps: backbone -> L2-normalised embedding -> a fitted
:class:`~learning.classifiers.AlignedClassifier`. Saliency methods need one differentiable model, so
:func:`linear_head_from_classifier` folds the classifier (StandardScaler + multinomial logistic
regression) into a single ``nn.Linear`` and :class:`CellClassifierModule` chains the three steps in
torch. The attribution itself comes from captum (Kokhlikyan et al., "Captum: A unified and generic
model interpretability library for PyTorch", 2020), not hand-written:

- ``"gradcam"`` (default): Grad-CAM (Selvaraju et al., ICCV 2017) on the backbone's last convolutional
  feature map (``captum.attr.LayerGradCam``), upsampled to the image with
  ``LayerAttribution.interpolate``. One forward and one backward pass: fast, coarse (the map is 1/8 to
  1/32 of the image side) and class-discriminative.
- ``"integrated_gradients"``: integrated gradients (Sundararajan et al., ICML 2017;
  ``captum.attr.IntegratedGradients``) from a flat image of the crop's background colour. Pixel-level
  but ``n_steps`` times the cost.

Classifiers that cannot be folded (``svm`` / ``mlp`` kinds, or a head fitted on one class only) get no
torch head; see :func:`linear_head_from_classifier` for the fallback.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, Literal

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from learning.calibration import TemperatureScaled
from learning.classifiers import AlignedClassifier
from learning.finetune import release_inference_tensors
from learning.transforms import to_float

SaliencyMethod = Literal["gradcam", "integrated_gradients"]
SALIENCY_METHODS: Final[tuple[str, ...]] = ("gradcam", "integrated_gradients")
# Logit of a class the classifier never saw: exp(-1e4) is 0 in float32, matching its zero column.
UNSEEN_LOGIT: Final = -1.0e4
# Side of the dummy input used to find the feature-map layer (EfficientNet needs at least 32 px).
_PROBE_SIZE: Final = 32


def linear_head_from_classifier(clf: AlignedClassifier | TemperatureScaled, dim: int) -> nn.Linear | None:
    """Fold a fitted logreg :class:`AlignedClassifier` into one ``nn.Linear(dim, len(clf.classes))``.

    ``softmax(head(x))`` equals ``clf.predict_proba(x)`` (to float32 rounding) for L2-normalised
    embeddings ``x``: the scaler is affine, ``z = (x - mean) / scale``, and logistic regression is
    affine in ``z``, so ``W / scale`` and ``b - (W / scale) @ mean`` give the same logits. A binary
    model's single decision value ``d`` becomes the logits ``(-d / 2, d / 2)`` (softmax of those is
    sigmoid(d)). Classes never seen in training get zero weights and a bias of :data:`UNSEEN_LOGIT`,
    i.e. probability 0 as in the classifier's zero columns. A temperature-scaled classifier
    (:class:`learning.calibration.TemperatureScaled`) gets its weights and bias divided by ``T``.

    Returns None where no exact linear equivalent exists: the ``svm`` kind (Platt-calibrated
    one-vs-one votes), the ``mlp`` kind (non-linear), a one-vs-rest logistic regression, or a classifier
    fitted on a single class (``estimator_`` is None: it says that class whatever the image, so there is
    nothing to explain). Fallback for the svm/mlp kinds: fit an ``AlignedClassifier(classes,
    "logreg")`` on the same labelled embeddings (well under a second) and fold that one; its saliency
    map explains a linear proxy of the deployed head, which should be said in the UI.

    Raises:
        ValueError: ``dim`` differs from the classifier's input size.
    """
    estimator = getattr(clf, "estimator_", None)
    if clf.kind != "logreg" or estimator is None:
        return None
    steps = getattr(estimator, "steps", None)
    if not steps or len(steps) != 2:
        return None
    scaler, logreg = steps[0][1], steps[1][1]
    if not isinstance(scaler, StandardScaler) or not isinstance(logreg, LogisticRegression):
        return None
    if getattr(logreg, "multi_class", "auto") == "ovr":  # normalised sigmoids, not a softmax
        return None
    coef = np.asarray(logreg.coef_, dtype=np.float64)  # (K, D), K = 1 for two classes
    intercept = np.asarray(logreg.intercept_, dtype=np.float64)
    if coef.shape[1] != dim:
        raise ValueError(f"classifier expects {coef.shape[1]}-d embeddings, got dim={dim}")
    mean = scaler.mean_ if scaler.with_mean and scaler.mean_ is not None else np.zeros(dim)
    scale = scaler.scale_ if scaler.with_std and scaler.scale_ is not None else np.ones(dim)
    weight = coef / np.asarray(scale, dtype=np.float64)
    bias = intercept - weight @ np.asarray(mean, dtype=np.float64)
    cols = np.asarray(logreg.classes_, dtype=np.int64)  # indices into clf.classes
    if weight.shape[0] == 1 and len(cols) == 2:
        weight = np.concatenate([-weight / 2.0, weight / 2.0])
        bias = np.concatenate([-bias / 2.0, bias / 2.0])
    # A temperature-scaled classifier (learning.calibration.TemperatureScaled) divides its logits by T.
    temperature = float(getattr(clf, "temperature", 1.0))
    weight, bias = weight / temperature, bias / temperature
    full_w = np.zeros((clf.n_classes, dim), dtype=np.float64)
    full_b = np.full(clf.n_classes, UNSEEN_LOGIT, dtype=np.float64)
    full_w[cols] = weight
    full_b[cols] = bias
    head = nn.Linear(dim, clf.n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(full_w))
        head.bias.copy_(torch.from_numpy(full_b))
    return head


class CellClassifierModule(nn.Module):
    """The platform's classifier as one torch model: (B, 3, H, W) in [0, 1] (or uint8) -> (B, C) logits.

    ``backbone.forward_features`` -> L2 normalisation (as :func:`learning.embeddings.extract_embeddings`
    stores embeddings) -> ``head`` (e.g. from :func:`linear_head_from_classifier`).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D) L2-normalised embedding."""
        forward: Callable[[Tensor], Tensor] = getattr(self.backbone, "forward_features", self.backbone)
        return F.normalize(forward(to_float(x)), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.embed(x))
        return logits


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (batch-norm running statistics, no dropout) for the block; every submodule's own
    mode is restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def feature_layer(backbone: nn.Module) -> nn.Module:
    """The submodule whose output is the backbone's last convolutional feature map (Grad-CAM's layer).

    For a ``models_zoo`` backbone this is the outermost module whose output *is* the tensor that
    ``forward_feature_map`` returns (``stages`` of lightcnn, ``layer4`` of resnet18, the final
    activation of EfficientNet-Lite), found by running a small dummy image with forward hooks on every
    submodule, so new backbones need no table of layer names. Without ``forward_feature_map``, or if
    the map is built outside any module, the last ``nn.Conv2d`` is used.
    """
    fmap_fn = getattr(backbone, "forward_feature_map", None)
    if callable(fmap_fn):
        outputs: list[tuple[nn.Module, object]] = []
        handles = [
            m.register_forward_hook(lambda mod, _inp, out: outputs.append((mod, out)))
            for m in backbone.modules()
            if m is not backbone
        ]
        try:
            param = next(backbone.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            probe = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device=device)
            with _eval_mode(backbone), torch.no_grad():
                fmap = fmap_fn(probe)
        finally:
            for h in handles:
                h.remove()
        # Hooks fire innermost first, so the last match is the outermost module.
        for module, out in reversed(outputs):
            if out is fmap:
                return module
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("backbone has no forward_feature_map module and no nn.Conv2d for Grad-CAM")
    return convs[-1]


def _as_image_tensor(image: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(image)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image (3, H, W), got shape {tuple(x.shape)}")
    return x


def _normalise_heat(heat: Tensor, top: Tensor) -> np.ndarray:
    """Divide by ``top`` and clip to [0, 1]; an all-zero map (no positive evidence) stays zero."""
    top_v = float(top)
    if not math.isfinite(top_v) or top_v <= 0.0:
        return np.zeros(tuple(heat.shape), dtype=np.float32)
    out: np.ndarray = (heat / top_v).clamp_(0.0, 1.0).detach().cpu().numpy().astype(np.float32)
    return out


def saliency_map(
    backbone: nn.Module,
    head: nn.Module,
    image_uint8: Tensor | np.ndarray,
    target: int | None = None,
    method: SaliencyMethod = "gradcam",
    *,
    layer: nn.Module | None = None,
    n_steps: int = 16,
) -> np.ndarray:
    """Heat map of the evidence for class ``target`` in one cell image.

    Args:
        backbone: a ``models_zoo`` backbone (anything with ``forward_features``); used in eval mode,
            its modes are restored afterwards. Runs on the device of its parameters. Weights left as
            inference tensors by ``torch.inference_mode`` are replaced by ordinary copies
            (:func:`learning.finetune.release_inference_tensors`), or no gradient could flow.
        head: (B, D) L2-normalised embedding -> (B, C) logits, e.g. :func:`linear_head_from_classifier`.
        image_uint8: (3, S, S) uint8 image as the model sees it (resized, gray-world normalised:
            :func:`learning.data.load_image`).
        target: class index into the head's outputs; default the predicted class.
        method: ``"gradcam"`` or ``"integrated_gradients"`` (see the module docstring).
        layer: Grad-CAM layer; default :func:`feature_layer`.
        n_steps: integration steps of integrated gradients (all in one batch).

    Returns:
        float32 (S, S) in [0, 1], 1 at the most salient pixel. Grad-CAM keeps positive evidence only
        (ReLU, as in the paper), so a class with none gets an all-zero map. Integrated gradients: the
        absolute attribution summed over colour channels, lightly smoothed, divided by its 99.5th
        percentile and clipped, so a few extreme pixels do not wash out the rest.
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose from {SALIENCY_METHODS}")
    img = _as_image_tensor(image_uint8)
    release_inference_tensors(backbone)  # weights touched by extract_embeddings' inference mode
    release_inference_tensors(head)
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = to_float(img.to(device)).unsqueeze(0)  # (1, 3, H, W)
    height, width = x.shape[-2:]
    model = CellClassifierModule(backbone, head)
    with _eval_mode(model), torch.enable_grad():
        if target is None:
            with torch.no_grad():
                target = int(model(x).argmax(dim=1).item())
        if method == "gradcam":
            cam = LayerGradCam(model, layer if layer is not None else feature_layer(backbone))
            attr = cam.attribute(x, target=target, relu_attributions=True)  # (1, 1, h, w)
            up = LayerAttribution.interpolate(attr, (height, width), interpolate_mode="bilinear")
            heat = up[0, 0].detach()
            return _normalise_heat(heat, heat.max())
        baseline = x.flatten(2).median(dim=2).values.view(1, 3, 1, 1).expand_as(x)  # smear background
        ig = IntegratedGradients(model)
        attr = ig.attribute(
            x, baselines=baseline, target=target, n_steps=n_steps, internal_batch_size=n_steps
        )
        heat = attr.detach().abs().sum(dim=1, keepdim=True)  # (1, 1, H, W)
        k = 2 * max(1, min(height, width) // 32) + 1
        heat = F.avg_pool2d(heat, k, stride=1, padding=k // 2, count_include_pad=False)[0, 0]
        return _normalise_heat(heat, torch.quantile(heat.flatten().float(), 0.995))


def overlay_png(
    image_uint8: Tensor | np.ndarray,
    heat: np.ndarray,
    alpha: float = 0.45,
    *,
    cmap: str = "jet",
    min_size: int = 192,
) -> bytes:
    """PNG bytes of the cell with the colour-mapped heat map blended on top.

    Args:
        image_uint8: (3, H, W) uint8 image (tensor or array).
        heat: (H, W) in [0, 1], e.g. from :func:`saliency_map`.
        alpha: weight of the heat colours (0: the plain image, 1: the heat map only).
        cmap: a matplotlib colormap name (``"jet"``, ``"inferno"`` ...).
        min_size: crops of 64-96 px are too small to read on screen, so an image whose shorter side is
            below ``min_size`` is enlarged by the integer factor ``ceil(min_size / side)`` (bicubic for
            the image, bilinear for the heat map).

    Returns:
        RGB PNG of (W * f, H * f) pixels, f = 1 when the image is already large enough.
    """
    from matplotlib import colormaps  # deferred: matplotlib's import costs ~0.3 s

    img = _as_image_tensor(image_uint8).detach().cpu()
    if img.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    height, width = img.shape[-2:]
    heat_arr = np.asarray(heat, dtype=np.float32)
    if heat_arr.shape != (height, width):
        raise ValueError(f"heat map {heat_arr.shape} does not match the image ({height}, {width})")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    factor = _upscale_factor(height, width, min_size)
    size = (width * factor, height * factor)
    base = Image.fromarray(img.permute(1, 2, 0).numpy())
    heat_t = torch.from_numpy(np.nan_to_num(heat_arr)).view(1, 1, height, width)
    if factor > 1:
        base = base.resize(size, Image.Resampling.BICUBIC)
        heat_t = F.interpolate(heat_t, scale_factor=factor, mode="bilinear", align_corners=False)
    colours = colormaps[cmap](heat_t[0, 0].clamp(0.0, 1.0).numpy())[..., :3]  # (H', W', 3) in [0, 1]
    blend = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * 255.0 * colours
    out = Image.fromarray(blend.round().clip(0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()


# The overlay the labelling page lays over a cell (see heat_overlay_png). The page's legend
# (static/css/leukoloop.css, .saliency-scale) draws the same colour map and outline colour; a test
# checks they agree.
OVERLAY_CMAP: Final = "inferno"  # perceptually uniform, readable in grey scale and by colour-blind users
OUTLINE_LEVEL: Final = 0.5  # the outline encloses the pixels with at least half the peak saliency
OUTLINE_RGB: Final = (0, 229, 255)  # cyan: absent from inferno and from May-Grunwald-Giemsa stains


def _upscale_factor(height: int, width: int, min_size: int) -> int:
    return max(1, math.ceil(min_size / min(height, width)))


def _outline(mask: Tensor, thickness: int) -> Tensor:
    """The pixels of a boolean (H, W) mask within ``thickness`` pixels of its edge (inside)."""
    outside = (~mask).float().view(1, 1, *mask.shape)
    k = 2 * thickness + 1
    near_outside = F.max_pool2d(F.pad(outside, (thickness,) * 4, value=1.0), k, stride=1)[0, 0] > 0
    return mask & near_outside


def heat_overlay_png(
    heat: np.ndarray,
    *,
    cmap: str = OVERLAY_CMAP,
    outline_level: float | None = OUTLINE_LEVEL,
    min_size: int = 192,
) -> bytes:
    """RGBA PNG of a heat map alone, to lay over the cell image (the page sets its overall opacity).

    Each pixel has the colour ``cmap(heat)`` and an alpha proportional to the heat, so low-saliency
    pixels leave the cell visible and the hot region stands out; the region with ``heat >=
    outline_level`` is outlined in opaque :data:`OUTLINE_RGB` (``None``: no outline).

    Args:
        heat: (H, W) in [0, 1], e.g. from :func:`saliency_map` (1 at the most salient pixel).
        cmap: a matplotlib colormap name.
        outline_level: heat level of the outline, in (0, 1].
        min_size: a map whose shorter side is below ``min_size`` is enlarged (bilinear) by the integer
            factor ``ceil(min_size / side)``, as in :func:`overlay_png`, so the outline is smooth.

    Returns:
        RGBA PNG of (W * f, H * f) pixels.
    """
    from matplotlib import colormaps  # deferred: matplotlib's import costs ~0.3 s

    heat_arr = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if heat_arr.ndim != 2:
        raise ValueError(f"expected a heat map (H, W), got shape {heat_arr.shape}")
    if outline_level is not None and not 0.0 < outline_level <= 1.0:
        raise ValueError(f"outline_level must be in (0, 1], got {outline_level}")
    height, width = heat_arr.shape
    factor = _upscale_factor(height, width, min_size)
    heat_t = torch.from_numpy(heat_arr).view(1, 1, height, width)
    if factor > 1:
        heat_t = F.interpolate(heat_t, scale_factor=factor, mode="bilinear", align_corners=False)
    up = heat_t[0, 0].clamp(0.0, 1.0)
    rgba = np.empty((*up.shape, 4), dtype=np.uint8)
    rgba[..., :3] = (colormaps[cmap](up.numpy())[..., :3] * 255.0).round()
    rgba[..., 3] = (up.numpy() * 255.0).round()
    if outline_level is not None and float(up.max()) >= outline_level:
        edge = _outline(up >= outline_level, thickness=max(1, factor // 2)).numpy()
        rgba[edge, :3] = OUTLINE_RGB
        rgba[edge, 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def heat_in_frame(heat: np.ndarray, frame: tuple[int, int], box: tuple[int, int, int]) -> np.ndarray:
    """A heat map computed on a square part of an image, placed back in the whole image's frame.

    The model may see only the cell's square of a file (:func:`learning.imaging.square_box`); the page
    lays the overlay over the whole file, so the map goes where its square came from, at the map's own
    resolution, and is 0 elsewhere.

    Args:
        heat: (S, S) map of the square.
        frame: (width, height) of the image the box refers to.
        box: (left, top, side) of the square in that image.

    Returns:
        (round(height * S / side), round(width * S / side)) float32.
    """
    s = heat.shape[0]
    width, height = frame
    left, top, side = box
    f = s / side
    out = np.zeros((max(1, round(height * f)), max(1, round(width * f))), dtype=np.float32)
    y0, x0 = round(top * f), round(left * f)
    part = out[y0 : y0 + s, x0 : x0 + s]  # a rounding pixel may fall off the far edge
    part[...] = heat[: part.shape[0], : part.shape[1]]
    return out


__all__ = [
    "OUTLINE_LEVEL",
    "OUTLINE_RGB",
    "OVERLAY_CMAP",
    "SALIENCY_METHODS",
    "UNSEEN_LOGIT",
    "CellClassifierModule",
    "SaliencyMethod",
    "feature_layer",
    "heat_in_frame",
    "heat_overlay_png",
    "linear_head_from_classifier",
    "overlay_png",
    "saliency_map",
]
