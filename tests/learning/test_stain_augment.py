"""Stain jitter and blur of the "travel" augmentation (learning.transforms): known answers against
scikit-image and by hand, and what they do to a real cell."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed

from learning.data import load_image, read_manifest
from learning.transforms import (
    AugmentConfig,
    BloodSmearAugment,
    gaussian_blur,
    hed_to_rgb,
    rgb_to_hed,
)


def random_rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.05, 1.0, (2, 9, 7, 3))


def test_hed_conversion_matches_scikit_image_both_ways() -> None:
    images = random_rgb()
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    hed = rgb_to_hed(batch)
    expected = np.stack([rgb2hed(image) for image in images])
    np.testing.assert_allclose(hed.permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    back = hed_to_rgb(hed).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(back, np.stack([hed2rgb(h) for h in expected]), atol=1e-5)


def test_unclipped_hed_gives_the_image_back() -> None:
    batch = torch.from_numpy(random_rgb(1)).permute(0, 3, 1, 2).float()
    assert torch.allclose(hed_to_rgb(rgb_to_hed(batch, clip=False)), batch, atol=1e-5)
    # Clipped (as scikit-image does) it does not: why the jitter works on the unclipped concentrations.
    assert not torch.allclose(hed_to_rgb(rgb_to_hed(batch)), batch, atol=0.05)


def test_gaussian_blur_per_image_by_hand() -> None:
    impulse = torch.zeros(2, 1, 21, 21)
    impulse[:, :, 10, 10] = 1.0
    out = gaussian_blur(impulse, torch.tensor([0.0, 2.0]))
    assert torch.allclose(out[0], impulse[0], atol=1e-6)  # sigma 0: unchanged
    assert out[1].sum().item() == pytest.approx(1.0, abs=1e-5)  # mass kept
    row = out[1, 0, 10]
    # A separable Gaussian of sigma 2 through the centre: exp(-d^2 / 8) relative to the peak.
    assert (row[12] / row[10]).item() == pytest.approx(np.exp(-4 / 8), rel=1e-3)
    assert (row[14] / row[10]).item() == pytest.approx(np.exp(-16 / 8), rel=1e-3)


def test_stain_jitter_is_off_in_the_reference_preset_and_draws_nothing() -> None:
    """Old presets keep their draws: a run seeded before the stain jitter existed augments alike."""
    batch = (torch.from_numpy(random_rgb(2)).permute(0, 3, 1, 2) * 255).to(torch.uint8)
    first = BloodSmearAugment("reference", generator=torch.Generator().manual_seed(3))(batch)
    plain = BloodSmearAugment("reference", generator=torch.Generator().manual_seed(3))
    again = plain.colour(plain.geometric(batch.float() / 255))
    assert torch.equal(first, again)


def only(**fields: Any) -> AugmentConfig:
    """A configuration with every reference augmentation off and ``fields`` on."""
    off = AugmentConfig(hflip=0, vflip=0, degrees=0, zoom=(1, 1), shift=0)
    return replace(off, brightness=0, contrast=0, saturation=0, hue=0, **fields)


@pytest.mark.realdata
def test_travel_changes_a_real_cell_by_a_bounded_amount(data_dir: Path) -> None:
    record = read_manifest(data_dir / "manifest.csv", limit=1)[0]
    cell = load_image(record.path, 64, crop="cell")[None].float() / 255
    stain_only = BloodSmearAugment(
        only(stain=0.2, stain_shift=0.005), generator=torch.Generator().manual_seed(0)
    )
    changes = [float((stain_only(cell) - cell).abs().mean() * 255) for _ in range(8)]
    # Measured 9 and 19 grey levels for the factor and the shift at their ends (bench notes): never 0,
    # never the 120 of an unscaled shift.
    assert min(changes) > 0.5 and max(changes) < 40, changes
    blurred = BloodSmearAugment(
        only(blur=1.0, blur_sigma=(1.5, 1.5)), generator=torch.Generator().manual_seed(0)
    )(cell)
    # Blur keeps the mean colour and lowers the detail (pixel-to-pixel differences).
    assert torch.allclose(blurred.mean(dim=(2, 3)), cell.mean(dim=(2, 3)), atol=0.01)
    detail = (cell[..., 1:] - cell[..., :-1]).abs().mean()
    assert (blurred[..., 1:] - blurred[..., :-1]).abs().mean() < 0.6 * detail
