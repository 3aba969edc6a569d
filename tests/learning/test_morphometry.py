"""The cell measurements on real cells: they separate what the WBCAtt attributes they serve separate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learning.morphometry import MEASUREMENT_NAMES, measure, measure_cached, measure_paths, measure_rgb

pytestmark = pytest.mark.realdata

PER_GROUP = 30


def column(name: str) -> int:
    return MEASUREMENT_NAMES.index(name)


def cells_with(rows: list[dict[str, str]], data_dir: Path, **wanted: str) -> list[Path]:
    """The first PER_GROUP cells whose manifest row has every ``attribute=value`` of ``wanted``."""
    picked = [data_dir / r["path"] for r in rows if all(r.get(k) == v for k, v in wanted.items())]
    assert len(picked) >= PER_GROUP, wanted
    return picked[:PER_GROUP]


def mean_of(paths: list[Path], name: str) -> float:
    return float(np.mean(measure_paths(paths)[:, column(name)]))


def test_every_measurement_is_finite_and_named(manifest_rows: list[dict[str, str]], data_dir: Path) -> None:
    values = measure_paths([data_dir / r["path"] for r in manifest_rows[:: len(manifest_rows) // 20]])
    assert values.shape == (len(manifest_rows[:: len(manifest_rows) // 20]), len(MEASUREMENT_NAMES))
    assert np.isfinite(values).all()
    # A real cell has a nucleus and a cell around it: sizes above zero, the nucleus the smaller.
    assert (values[:, column("nucleus_diameter")] > 0).all()
    assert (values[:, column("nucleus_share")] <= 1.0 + 1e-6).all()


def test_big_cells_measure_bigger_than_small_ones(
    manifest_rows: list[dict[str, str]], data_dir: Path
) -> None:
    # Within one class and source, so that the class's typical size does not decide it.
    big = cells_with(manifest_rows, data_dir, label="neutrophil", source="pbc", cell_size="big")
    small = cells_with(manifest_rows, data_dir, label="neutrophil", source="pbc", cell_size="small")
    assert mean_of(big, "cell_diameter") > mean_of(small, "cell_diameter") * 1.05


def test_lobed_nuclei_are_less_solid_than_round_ones(
    manifest_rows: list[dict[str, str]], data_dir: Path
) -> None:
    lobed = cells_with(manifest_rows, data_dir, nucleus_shape="segmented-multilobed")
    round_ = cells_with(manifest_rows, data_dir, nucleus_shape="unsegmented-round")
    assert mean_of(lobed, "nucleus_solidity") < mean_of(round_, "nucleus_solidity") - 0.05
    assert mean_of(lobed, "nucleus_lobes") > mean_of(round_, "nucleus_lobes")


def test_segmented_nuclei_come_apart_under_erosion_and_band_nuclei_do_not(
    manifest_rows: list[dict[str, str]], data_dir: Path
) -> None:
    # Within neutrophils, so that the class does not decide it: a band and a two-lobed nucleus are
    # what the version-1 lobe count (the mask's parts) could not tell apart.
    segmented = cells_with(manifest_rows, data_dir, label="neutrophil", nucleus_shape="segmented-bilobed")
    band = cells_with(manifest_rows, data_dir, label="neutrophil", nucleus_shape="unsegmented-band")
    assert mean_of(segmented, "nucleus_lobes_eroded") > mean_of(band, "nucleus_lobes_eroded") + 0.2
    assert mean_of(segmented, "nucleus_thin_share") > mean_of(band, "nucleus_thin_share") + 0.05


def test_a_round_nucleus_is_thick_and_short_against_a_band(
    manifest_rows: list[dict[str, str]], data_dir: Path
) -> None:
    round_ = cells_with(manifest_rows, data_dir, nucleus_shape="unsegmented-round")
    band = cells_with(manifest_rows, data_dir, nucleus_shape="unsegmented-band")
    assert mean_of(round_, "nucleus_thickness") > mean_of(band, "nucleus_thickness") * 1.2
    assert mean_of(round_, "nucleus_skeleton_length") < mean_of(band, "nucleus_skeleton_length") * 0.8


def test_a_high_nc_ratio_means_more_of_the_cell_is_nucleus(
    manifest_rows: list[dict[str, str]], data_dir: Path
) -> None:
    high = cells_with(manifest_rows, data_dir, nuclear_cytoplasmic_ratio="high")
    low = cells_with(manifest_rows, data_dir, nuclear_cytoplasmic_ratio="low")
    assert mean_of(high, "nucleus_share") > mean_of(low, "nucleus_share") + 0.05


def test_a_blank_image_measures_zeros(tmp_path: Path) -> None:
    assert not measure_rgb(np.full((64, 64, 3), 230, dtype=np.uint8)).any()
    path = tmp_path / "blank.png"
    Image.new("RGB", (100, 100), (240, 230, 220)).save(path)
    assert not measure(path).any()


def test_the_cache_returns_what_was_measured(
    manifest_rows: list[dict[str, str]], data_dir: Path, tmp_path: Path
) -> None:
    paths = [data_dir / r["path"] for r in manifest_rows[:3]]
    first = measure_cached(paths, tmp_path)
    assert len(list(tmp_path.glob("measurements-*.npy"))) == 1
    np.testing.assert_array_equal(measure_cached(paths, tmp_path), first)
    np.testing.assert_array_equal(first, measure_paths(paths))
    # Other paths, another entry.
    measure_cached(paths[:2], tmp_path)
    assert len(list(tmp_path.glob("measurements-*.npy"))) == 2


def test_another_working_side_is_measured_and_cached_apart(
    manifest_rows: list[dict[str, str]], data_dir: Path, tmp_path: Path
) -> None:
    paths = [data_dir / r["path"] for r in manifest_rows if r["source"] == "pbc"][:2]
    at_default = measure_cached(paths, tmp_path)
    at_full = measure_cached(paths, tmp_path, work_side=400)  # the files' own 360 x 363 pixels
    assert len(list(tmp_path.glob("measurements-*.npy"))) == 2
    np.testing.assert_array_equal(at_full, measure_paths(paths, work_side=400))
    # Pixel counts differ, sizes in units of the short side hardly do.
    assert not np.array_equal(at_default, at_full)
    diameter = column("cell_diameter")
    np.testing.assert_allclose(at_full[:, diameter], at_default[:, diameter], rtol=0.1)
