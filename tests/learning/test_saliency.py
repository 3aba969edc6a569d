"""Saliency: the folded classifier head, Grad-CAM / integrated gradients through captum on real cells, a
synthetic backbone where the right answer is known, and the PNG overlay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from learning.classifiers import AlignedClassifier, ClassifierKind
from learning.data import CellImageDataset, CellRecord, read_manifest, sample_per_class
from learning.embeddings import extract_embeddings
from learning.saliency import (
    OUTLINE_LEVEL,
    OUTLINE_RGB,
    OVERLAY_CMAP,
    CellClassifierModule,
    feature_layer,
    heat_in_frame,
    heat_overlay_png,
    linear_head_from_classifier,
    overlay_png,
    saliency_map,
)
from models_zoo import Backbone, create_model, list_models

# Five-class list, labels from three of them: columns 0 and 3 are never seen.
CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "platelet"]
SEEN = ["eosinophil", "lymphocyte", "platelet"]
SIZE = 48


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[CellRecord]:
    records = [r for r in read_manifest(data_dir / "manifest.csv") if r.label in SEEN]
    return sample_per_class(records, 20, seed=3)  # 60 real cells


@pytest.fixture(scope="module")
def fitted(cells: list[CellRecord]) -> tuple[Backbone, CellImageDataset, np.ndarray, AlignedClassifier]:
    torch.manual_seed(0)
    backbone = create_model("lightcnn", width=8).eval()  # 64-d
    dataset = CellImageDataset(cells, SIZE)
    dataset.preload()
    emb = extract_embeddings(backbone, dataset, batch_size=32)
    clf = AlignedClassifier(CLASSES, "logreg").fit(emb, [str(c.label) for c in cells])
    return backbone, dataset, emb, clf


@pytest.mark.realdata
def test_folded_head_reproduces_predict_proba(
    fitted: tuple[Backbone, CellImageDataset, np.ndarray, AlignedClassifier],
) -> None:
    backbone, dataset, emb, clf = fitted
    head = linear_head_from_classifier(clf, emb.shape[1])
    assert head is not None and (head.in_features, head.out_features) == (64, 5)
    expected = clf.predict_proba(emb)
    assert np.all(expected[:, [0, 3]] == 0) and expected[:, [1, 2, 4]].min() < 0.9  # not trivially one-hot
    with torch.no_grad():
        got = torch.softmax(head(torch.from_numpy(emb)), dim=1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.all(got[:, [0, 3]] < 1e-30)

    # The whole chain in torch, from uint8 pixels: same probabilities as embed-then-classify.
    model = CellClassifierModule(backbone, head).eval()
    with torch.no_grad():
        chained = torch.softmax(model(dataset.images), dim=1).numpy()
    np.testing.assert_allclose(chained, expected, atol=1e-4)

    # Two seen classes: the single decision value becomes two logits.
    two = [i for i, c in enumerate(dataset.records) if c.label != "platelet"]
    binary = AlignedClassifier(CLASSES, "logreg").fit(emb[two], [str(dataset.records[i].label) for i in two])
    bin_head = linear_head_from_classifier(binary, 64)
    assert bin_head is not None
    with torch.no_grad():
        got2 = torch.softmax(bin_head(torch.from_numpy(emb)), dim=1).numpy()
    np.testing.assert_allclose(got2, binary.predict_proba(emb), atol=1e-4)


def test_heads_that_cannot_be_folded() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 8)).astype(np.float32)
    y = np.array(["basophil", "lymphocyte", "platelet"] * 10)
    kinds: tuple[ClassifierKind, ...] = ("svm", "mlp")
    for kind in kinds:
        assert linear_head_from_classifier(AlignedClassifier(CLASSES, kind).fit(X, y), 8) is None
    one_class = AlignedClassifier(CLASSES, "logreg").fit(X, ["monocyte"] * 30)
    assert one_class.estimator_ is None and linear_head_from_classifier(one_class, 8) is None
    with pytest.raises(ValueError, match="dim"):
        linear_head_from_classifier(AlignedClassifier(CLASSES).fit(X, y), 16)


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_saliency_map_on_real_cells(
    fitted: tuple[Backbone, CellImageDataset, np.ndarray, AlignedClassifier], method: str
) -> None:
    backbone, dataset, emb, clf = fitted
    head = linear_head_from_classifier(clf, emb.shape[1])
    assert head is not None
    backbone.train()
    for i in (0, 25, 50):
        image = dataset.images[i]
        heat = saliency_map(backbone, head, image, method=method)  # type: ignore[arg-type]
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
        assert heat.std() > 0.01  # not constant
        # An explicit target gives that class's map; the default is the predicted class.
        predicted = int(np.argmax(clf.predict_proba(emb[i : i + 1])))
        np.testing.assert_allclose(
            saliency_map(backbone, head, image.numpy(), predicted, method),  # type: ignore[arg-type]
            heat,
            atol=1e-5,
        )
    assert backbone.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="method"):
        saliency_map(backbone, head, dataset.images[0], method="lime")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list_models())
def test_gradcam_layer_is_the_feature_map(name: str) -> None:
    """captum's Grad-CAM on the layer :func:`feature_layer` finds equals Grad-CAM computed by hand on
    ``forward_feature_map`` (EfficientNet-Lite's map comes out of an activation module it also uses
    earlier in the network; captum must keep the last call)."""
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    backbone = create_model(name).eval()
    head = nn.Linear(backbone.num_features, 4)
    x = torch.rand(1, 3, 64, 64)
    fmap = backbone.forward_feature_map(x)
    fmap.retain_grad()
    logits = head(F.normalize(fmap.mean(dim=(2, 3)), dim=1))
    target = int(logits.argmax())
    logits[0, target].backward()
    assert fmap.grad is not None
    by_hand = F.relu((fmap.grad.mean(dim=(2, 3), keepdim=True) * fmap).sum(dim=1, keepdim=True)).detach()
    model = CellClassifierModule(backbone, head).eval()
    cam = LayerGradCam(model, feature_layer(backbone)).attribute(x, target=target, relu_attributions=True)
    torch.testing.assert_close(cam.detach(), by_hand, atol=1e-7, rtol=1e-4)
    assert by_hand.max() > 0


class QuadrantNet(nn.Module):
    """A backbone whose embedding sees only the top-left quadrant of a 32 px image.

    Channel 0 of the 8x8 map measures darkness (a "nucleus detector"), channel 1 is constant; the map
    is zeroed outside the top-left 4x4 block *inside* the trunk, so the logit cannot depend on the rest.
    """

    def __init__(self, *, mask: bool = True) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0] = -1.0 / 27.0  # mean darkness over the 3x3x3 window, negated
        conv.bias = nn.Parameter(torch.tensor([0.7, 1.0]))
        keep = torch.ones(1, 1, 8, 8)
        if mask:
            keep[..., 4:, :] = 0.0
            keep[..., :, 4:] = 0.0
        self.trunk = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4), Mask(keep))

    def forward_feature_map(self, x: Tensor) -> Tensor:
        out: Tensor = self.trunk(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_feature_map(x).mean(dim=(2, 3))


class Mask(nn.Module):
    keep: Tensor

    def __init__(self, keep: Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", keep)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.keep


def two_nuclei() -> Tensor:
    """32 px light background with a dark blob in the top-left and one in the bottom-right quadrant."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    img = torch.full((3, 32, 32), 0.85)
    for cy, cx in ((8.0, 8.0), (23.0, 23.0)):
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) <= 16.0
        img[:, blob] = torch.tensor([0.35, 0.2, 0.5]).view(3, 1)
    return (img * 255).round().to(torch.uint8)


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_heat_lands_where_the_logit_looks(method: str) -> None:
    head = nn.Linear(2, 2)
    with torch.no_grad():  # class 0: "more nucleus than background", class 1 the opposite
        head.weight.copy_(torch.tensor([[5.0, -5.0], [-5.0, 5.0]]))
        head.bias.zero_()
    image = two_nuclei()
    net = QuadrantNet()
    assert isinstance(feature_layer(net), nn.Sequential)  # the trunk, whose output is the map

    heat = saliency_map(net, head, image, target=0, method=method)  # type: ignore[arg-type]
    top_left = heat[:16, :16].sum() / heat.sum()
    assert top_left > 0.9, f"only {top_left:.2f} of the heat in the top-left quadrant"
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(peak[0] - 8) <= 4 and abs(peak[1] - 8) <= 4  # on the top-left nucleus

    # Control: the same network looking at the whole image splits the heat between both nuclei, so
    # the assertion above can fail.
    both = saliency_map(QuadrantNet(mask=False), head, image, target=0, method=method)  # type: ignore[arg-type]
    assert 0.3 < both[16:, 16:].sum() / both.sum() < 0.7


def test_overlay_png_sizes_and_colours() -> None:
    rng = np.random.default_rng(0)
    for side, expected in ((48, 192), (64, 192), (96, 192), (100, 200), (224, 224)):
        image = torch.from_numpy(rng.integers(0, 256, (3, side, side), dtype=np.uint8))
        heat = rng.random((side, side)).astype(np.float32)
        png = overlay_png(image, heat)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as im:
            assert im.mode == "RGB" and im.size == (expected, expected)

    image = torch.from_numpy(rng.integers(0, 256, (3, 200, 200), dtype=np.uint8))
    zeros = np.zeros((200, 200), dtype=np.float32)
    with Image.open(io.BytesIO(overlay_png(image, zeros, alpha=0.0))) as im:
        np.testing.assert_array_equal(np.asarray(im), image.permute(1, 2, 0).numpy())  # alpha 0: the cell
    with Image.open(io.BytesIO(overlay_png(image, zeros, alpha=1.0))) as im:
        assert np.all(np.asarray(im) == [0, 0, 128])  # jet(0) is dark blue
    with pytest.raises(ValueError):
        overlay_png(image, np.zeros((10, 10), dtype=np.float32))


def test_heat_overlay_png_is_a_transparent_colour_scale_with_an_outline() -> None:
    """The page's overlay: inferno colours, alpha proportional to the heat (0 leaves the cell untouched),
    an opaque cyan outline around the half-peak region and nowhere else."""
    from matplotlib import colormaps

    yy, xx = np.mgrid[:64, :64]
    heat = np.exp(-((yy - 32.0) ** 2 + (xx - 32.0) ** 2) / 150.0).astype(np.float32)
    with Image.open(io.BytesIO(heat_overlay_png(heat))) as im:
        assert im.mode == "RGBA" and im.size == (192, 192)
        rgba = np.asarray(im).astype(np.int64)
    up = F.interpolate(torch.from_numpy(heat).view(1, 1, 64, 64), scale_factor=3, mode="bilinear")[
        0, 0
    ].numpy()
    outline = np.all(rgba[..., :3] == OUTLINE_RGB, axis=-1) & (rgba[..., 3] == 255)
    assert outline.sum() > 100
    assert np.all(up[outline] >= OUTLINE_LEVEL) and np.all(up[outline] < OUTLINE_LEVEL + 0.1)  # on the edge
    ring = np.hypot(*np.nonzero(outline) - np.array([[95.5], [95.5]]))  # a circle around the centre
    assert ring.std() < 2.0
    rest = ~outline
    np.testing.assert_allclose(rgba[..., 3][rest], np.round(up[rest] * 255), atol=1)  # alpha = heat
    expected = np.round(colormaps[OVERLAY_CMAP](up)[..., :3] * 255)
    np.testing.assert_allclose(rgba[..., :3][rest], expected[rest], atol=1)
    assert rgba[0, 0, 3] == 0  # no heat: fully transparent, the cell shows through

    with Image.open(io.BytesIO(heat_overlay_png(heat * 0.4))) as im:  # below the level: no outline
        assert not np.all(np.asarray(im)[..., :3] == OUTLINE_RGB, axis=-1).any()
    with Image.open(io.BytesIO(heat_overlay_png(np.zeros((200, 200), dtype=np.float32)))) as im:
        assert im.size == (200, 200) and np.asarray(im)[..., 3].max() == 0
    with pytest.raises(ValueError):
        heat_overlay_png(heat, outline_level=0.0)
    with pytest.raises(ValueError):
        heat_overlay_png(np.zeros((3, 8, 8), dtype=np.float32))


def test_page_legend_draws_the_overlays_colour_scale() -> None:
    """The legend in the stylesheet (.saliency-scale) has the overlay's colours and alphas at 0, 1/8 .. 1,
    and its outline mark has the outline's colour at the outline's level."""
    import re

    from matplotlib import colormaps

    css = (Path(__file__).resolve().parents[2] / "static" / "css" / "leukoloop.css").read_text()
    scale = re.search(r"\.saliency-scale \{[^}]*linear-gradient\(to right,([^;]*)\)", css)
    assert scale is not None
    stops = re.findall(r"rgb\((\d+) (\d+) (\d+) / ([\d.]+)\)", scale.group(1))
    assert len(stops) == 9
    for i, (r, g, b, a) in enumerate(stops):
        expected = np.round(np.asarray(colormaps[OVERLAY_CMAP](i / 8)[:3]) * 255)
        np.testing.assert_allclose([int(r), int(g), int(b)], expected, atol=1)
        assert float(a) == pytest.approx(i / 8)
    mark = re.search(
        r"\.saliency-outline-mark \{[^}]*left: calc\((\d+)% - 1px\)[^}]*rgb\((\d+) (\d+) (\d+)\)", css
    )
    assert mark is not None
    assert int(mark.group(1)) / 100 == OUTLINE_LEVEL
    assert tuple(int(x) for x in mark.groups()[1:]) == OUTLINE_RGB


def test_a_square_s_map_goes_back_where_the_square_came_from() -> None:
    """A 16 px map of the 80 px square at (30, 10) of a 200 x 120 image: the frame is 40 x 24 at the
    map's scale, the map sits at (6, 2) and the rest is 0."""
    heat = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    framed = heat_in_frame(heat, (200, 120), (30, 10, 80))
    assert framed.shape == (24, 40)
    assert np.array_equal(framed[2:18, 6:22], heat)
    framed[2:18, 6:22] = 0
    assert not framed.any()
    edge = heat_in_frame(heat, (81, 81), (1, 1, 80))  # rounding may put the square's last pixel outside
    assert edge.shape == (16, 16) and np.array_equal(edge, heat)
