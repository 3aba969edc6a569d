"""A few measurements of the cell a hematopathologist reads its attributes from.

The model sees the cell through :func:`learning.imaging.square_box`'s crop, which scales every cell to
the same share of the input: that is what makes cells of other microscopes comparable, and it removes
the one thing the "cell size" attribute is about. Gray-world normalisation and colour augmentation blur
the cytoplasm's colour too. These measurements give the attribute heads back what the crop and the
colour handling take away: sizes in units of the file's short side (comparable within one microscope
set-up, which is where attributes are labelled), the nucleus' shape (lobes, solidity, elongation) and
the colour and texture of the nucleus and of the ring of cytoplasm around it.

The cell is found as in :func:`learning.imaging.locate_cell` (blue minus green above Otsu's threshold
near the centre: the whole leukocyte, not only its nucleus), the nucleus as its dark part, at a fixed
working resolution so that a measurement does not depend on the file's pixel count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hsv, rgb2lab
from skimage.filters import apply_hysteresis_threshold, threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import convex_hull_image, disk, opening, skeletonize

# The working resolution: the longer side is resized to this many pixels.
WORK_SIDE: Final = 192

MEASUREMENT_NAMES: Final[tuple[str, ...]] = (
    "nucleus_diameter",  # sqrt(area) / short side
    "nucleus_lobes",  # connected parts of the nucleus mask (a segmented neutrophil has 2-5)
    "nucleus_solidity",  # area / convex hull area: indented and lobed nuclei are low
    "nucleus_eccentricity",
    "nucleus_compactness",  # 4 pi area / perimeter^2: 1 for a disc, low for a band or lobes
    "nucleus_elongation",  # minor / major axis of the mask's moments
    "cell_diameter",  # sqrt(area of the cell region) / short side
    "nucleus_share",  # nucleus area / cell area: the N:C ratio
    "nucleus_red",
    "nucleus_green",
    "nucleus_blue",
    "nucleus_texture",  # standard deviation of the nucleus' gray level: loose chromatin is patchy
    "cytoplasm_red",
    "cytoplasm_green",
    "cytoplasm_blue",
    "cytoplasm_hue",
    "cytoplasm_saturation",
    "cytoplasm_texture",  # standard deviation of gray in the cytoplasm ring: granules, frosting
    "cytoplasm_dark_share",  # share of cytoplasm pixels much darker than its median: granules
    "vacuole_share",  # share of cytoplasm pixels brighter than the background: vacuoles
    # The nucleus' constrictions (version 2): what tells a band from a segmented nucleus, and two lobes
    # from several, is how thin the chromatin gets between its parts, not whether the mask comes apart.
    "nucleus_lobes_eroded",  # parts left after an erosion of 6% of the nucleus' diameter
    "nucleus_lobes_eroded_more",  # ... of 12%: lobes joined by a thick bridge come apart too
    "nucleus_thickness",  # mean half-width along the skeleton / sqrt(area): a band is thin
    "nucleus_thin_share",  # share of the skeleton thinner than half its thickest point: filaments
    "nucleus_skeleton_length",  # skeleton pixels / sqrt(area): long for a band or lobes, short for a disc
    "nucleus_skeleton_ends",
    "nucleus_skeleton_branches",
    "nucleus_indentations",  # parts of the convex hull the nucleus leaves empty (over 3% of its area)
    # The cell's outline and colours against the file's own background (version 2): "irregular" cell
    # shape is about the outline, not the nucleus', and a colour relative to the background cancels the
    # lamp and the white balance that absolute means carry.
    "cell_solidity",
    "cell_elongation",
    "cell_compactness",
    "cytoplasm_red_vs_background",  # median of the ring / median of the background, per channel
    "cytoplasm_green_vs_background",
    "cytoplasm_blue_vs_background",
    "nucleus_red_vs_background",
    "nucleus_green_vs_background",
    "nucleus_blue_vs_background",
    "cytoplasm_lightness",  # CIELAB medians of the ring: lightness, green-red, blue-yellow
    "cytoplasm_lab_a",
    "cytoplasm_lab_b",
    "nucleus_lab_a",
    "nucleus_lab_b",
    "cytoplasm_pale_lightness",  # the ring's 90th percentile of lightness: pale against dense cytoplasm
)

# Bump when a measurement's computation changes: stored measurements of another definition are retaken.
MEASUREMENT_VERSION: Final = 2
MEASUREMENT_DEFINITION: Final = hashlib.sha256(
    f"{MEASUREMENT_VERSION}:{WORK_SIDE}:{','.join(MEASUREMENT_NAMES)}".encode()
).hexdigest()[:16]


def _cell_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of the stained cell nearest the centre (nucleus and cytoplasm, holes filled).

    Blue minus green separates a leukocyte from the beige background and the pink red cells, as in
    :func:`learning.imaging.locate_cell`; what passes Otsu's threshold there is the whole cell, not only
    its nucleus. Parts close to the one nearest the centre count as the same cell (a lobed cell can come
    apart at the threshold); a neighbour further out does not.
    """
    h, w = rgb.shape[:2]
    score = rgb[..., 2] - rgb[..., 1]
    yy, xx = np.mgrid[0:h, 0:w]
    near = (xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2 <= (0.45 * min(w, h)) ** 2
    if score[near].max() - score[near].min() < 20:
        return np.zeros((h, w), dtype=bool)
    high = threshold_otsu(score[near])
    # Pale cytoplasm (a neutrophil's) stays under Otsu's cut; hysteresis keeps what is a little bluer
    # than the background and connected to what passed it.
    background = float(np.median(score[near & (score < high)]))
    mask = near & apply_hysteresis_threshold(score, background + 0.3 * (high - background), high)
    parts = label(mask)
    if parts.max() == 0:
        return mask
    regions = regionprops(parts)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    main = min(regions, key=lambda r: np.hypot(*(np.array(r.centroid) - centre)) - np.sqrt(r.area))
    reach = 0.6 * np.sqrt(main.area) + 0.05 * min(w, h)
    keep = [
        r.label
        for r in regions
        if r.area >= max(4, 0.03 * main.area)
        and np.hypot(*(np.array(r.centroid) - np.array(main.centroid))) <= reach
    ]
    return np.asarray(ndimage.binary_fill_holes(np.isin(parts, keep)))


def _nucleus_mask(rgb: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """The dark part of the cell: red below Otsu's threshold within the cell (the chromatin absorbs the
    red the cytoplasm lets through), opened a little so that granules on the cytoplasm drop out."""
    red = ndimage.gaussian_filter(rgb[..., 0], 1.0)  # chromatin is speckled; the nucleus is not
    if cell.sum() < 8 or red[cell].max() - red[cell].min() < 10:
        return cell
    nucleus = cell & (red < threshold_otsu(red[cell]))
    opened = np.asarray(ndimage.binary_fill_holes(opening(nucleus, disk(1)).astype(bool)))
    return opened if opened.sum() >= 4 else nucleus


def _constrictions(nucleus: np.ndarray) -> dict[str, float]:
    """The version-2 measurements of a nucleus mask: lobes after erosion, the skeleton's thickness,
    length, ends and branches, and the hull's empty parts (see :data:`MEASUREMENT_NAMES`).

    Why these: the mask's connected parts (``nucleus_lobes``) miss lobes that the threshold leaves joined
    by a filament, which is most of them at the working resolution. The measurement head alone scored
    nucleus shape 0.588 macro-F1 on the 20 version-1 measurements and 0.622 with these added (420
    random cells with attributes, 5 draws; ``bench/measurement_heads.py``, bench/README.md "Version-2
    measurements and a weight per attribute").
    """
    area = float(nucleus.sum())
    diameter = np.sqrt(area)
    eroded = [
        sum(
            r.area >= 0.03 * area
            for r in regionprops(label(ndimage.binary_erosion(nucleus, disk(max(1, round(f * diameter))))))
        )
        for f in (0.06, 0.12)
    ]
    half_width = ndimage.distance_transform_edt(nucleus)
    skeleton = skeletonize(nucleus)
    along = half_width[skeleton] if skeleton.any() else np.zeros(1)
    neighbours = ndimage.convolve(skeleton.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
    empty = label(convex_hull_image(nucleus) & ~nucleus)
    return {
        "nucleus_lobes_eroded": float(eroded[0]),
        "nucleus_lobes_eroded_more": float(eroded[1]),
        "nucleus_thickness": float(along.mean()) / diameter,
        "nucleus_thin_share": float(np.mean(along < 0.5 * along.max())) if along.max() > 0 else 0.0,
        "nucleus_skeleton_length": float(skeleton.sum()) / diameter,
        "nucleus_skeleton_ends": float(((neighbours == 1) & skeleton).sum()),
        "nucleus_skeleton_branches": float(((neighbours >= 3) & skeleton).sum()),
        "nucleus_indentations": float(sum(r.area >= 0.03 * area for r in regionprops(empty))),
    }


def _outline_and_relative_colour(
    rgb: np.ndarray, cell: np.ndarray, nucleus: np.ndarray, ring: np.ndarray, background: np.ndarray
) -> dict[str, float]:
    """The version-2 measurements of the cell's outline and of colours against the background.

    Added to the measurement head alone (420 random cells with attributes, 5 draws;
    ``bench/measurement_heads.py``): cell shape 0.674 -> 0.731 macro-F1, cytoplasm colour 0.749 -> 0.774,
    vacuoles 0.718 -> 0.727, chromatin 0.795 -> 0.804.
    """
    outline = regionprops(cell.astype(np.uint8))[0]
    reference = np.median(rgb[background], axis=0) if background.any() else np.full(3, 255.0)
    reference = np.maximum(reference, 1.0)
    cyto_rel = np.median(rgb[ring], axis=0) / reference
    nucleus_rel = np.median(rgb[nucleus], axis=0) / reference
    cyto_lab = rgb2lab(np.clip(rgb[ring][None] / 255.0, 0.0, 1.0))[0]
    nucleus_lab = rgb2lab(np.clip(rgb[nucleus][None] / 255.0, 0.0, 1.0))[0]
    cyto_median, nucleus_median = np.median(cyto_lab, axis=0), np.median(nucleus_lab, axis=0)
    return {
        "cell_solidity": float(outline.solidity),
        "cell_elongation": outline.axis_minor_length / max(outline.axis_major_length, 1e-6),
        "cell_compactness": 4 * np.pi * outline.area / max(outline.perimeter, 1.0) ** 2,
        **{
            f"cytoplasm_{c}_vs_background": float(v)
            for c, v in zip(("red", "green", "blue"), cyto_rel, strict=True)
        },
        **{
            f"nucleus_{c}_vs_background": float(v)
            for c, v in zip(("red", "green", "blue"), nucleus_rel, strict=True)
        },
        "cytoplasm_lightness": float(cyto_median[0]),
        "cytoplasm_lab_a": float(cyto_median[1]),
        "cytoplasm_lab_b": float(cyto_median[2]),
        "nucleus_lab_a": float(nucleus_median[1]),
        "nucleus_lab_b": float(nucleus_median[2]),
        "cytoplasm_pale_lightness": float(np.percentile(cyto_lab[:, 0], 90)),
    }


def measure_rgb(rgb: np.ndarray) -> np.ndarray:
    """The :data:`MEASUREMENT_NAMES` of one cell image, ``rgb`` (H, W, 3) uint8 or float in 0-255."""
    rgb = np.asarray(rgb, dtype=np.float32)
    h, w = rgb.shape[:2]
    short = float(min(h, w))
    out = np.zeros(len(MEASUREMENT_NAMES), dtype=np.float32)
    cell = _cell_mask(rgb)
    nucleus = _nucleus_mask(rgb, cell)
    if nucleus.sum() < 4:
        return out
    gray = rgb.mean(axis=2)
    props = regionprops(nucleus.astype(np.uint8))[0]
    ring = cell & ~nucleus
    if ring.sum() < 4:  # a bare nucleus: measure a thin ring instead
        ring = ndimage.binary_dilation(nucleus, iterations=3) & ~nucleus
    background = ~ndimage.binary_dilation(cell, iterations=5)
    background_level = float(np.median(gray[background])) if background.any() else 255.0
    cyto = rgb[ring]
    cyto_gray = gray[ring]
    hsv = rgb2hsv(cyto[None, :, :] / 255.0)[0]
    values = {
        "nucleus_diameter": np.sqrt(nucleus.sum()) / short,
        "nucleus_lobes": float(sum(r.area >= 0.05 * nucleus.sum() for r in regionprops(label(nucleus)))),
        "nucleus_solidity": props.solidity,
        "nucleus_eccentricity": props.eccentricity,
        "nucleus_compactness": 4 * np.pi * props.area / max(props.perimeter, 1.0) ** 2,
        "nucleus_elongation": props.axis_minor_length / max(props.axis_major_length, 1e-6),
        "cell_diameter": np.sqrt(cell.sum()) / short,
        "nucleus_share": nucleus.sum() / max(cell.sum(), 1),
        "nucleus_red": rgb[nucleus][:, 0].mean() / 255,
        "nucleus_green": rgb[nucleus][:, 1].mean() / 255,
        "nucleus_blue": rgb[nucleus][:, 2].mean() / 255,
        "nucleus_texture": gray[nucleus].std() / 255,
        "cytoplasm_red": cyto[:, 0].mean() / 255,
        "cytoplasm_green": cyto[:, 1].mean() / 255,
        "cytoplasm_blue": cyto[:, 2].mean() / 255,
        # Hue is circular; the stains' hues sit between purple and blue, far from the wrap at red.
        "cytoplasm_hue": float(np.median(hsv[:, 0])),
        "cytoplasm_saturation": float(np.median(hsv[:, 1])),
        "cytoplasm_texture": cyto_gray.std() / 255,
        "cytoplasm_dark_share": float(np.mean(cyto_gray < np.median(cyto_gray) - 25)),
        "vacuole_share": float(np.mean(cyto_gray > background_level - 5)),
        **_constrictions(nucleus),
        **_outline_and_relative_colour(rgb, cell, nucleus, ring, background),
    }
    for i, name in enumerate(MEASUREMENT_NAMES):
        out[i] = float(values[name])
    return out


def measure(path: str | Path, work_side: int = WORK_SIDE) -> np.ndarray:
    """:func:`measure_rgb` of an image file, at the working resolution (``work_side``: the longer side;
    a benchmark compares others)."""
    with Image.open(path) as im:
        im.draft("RGB", (work_side, work_side))
        img = im.convert("RGB")
    scale = work_side / max(img.size)
    if scale < 1:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.BILINEAR,
        )
    return measure_rgb(np.asarray(img))


def measure_paths(paths: Sequence[str | Path], *, workers: int = 1, work_side: int = WORK_SIDE) -> np.ndarray:
    """(N, len(MEASUREMENT_NAMES)) measurements of the image files, in ``workers`` processes."""
    if not paths:
        return np.zeros((0, len(MEASUREMENT_NAMES)), dtype=np.float32)
    one = partial(measure, work_side=work_side)
    if workers <= 1:
        return np.stack([one(p) for p in paths])
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(one, paths, chunksize=64)))


def measure_cached(
    paths: Sequence[str | Path], cache_dir: Path | None, *, workers: int = 1, work_side: int = WORK_SIDE
) -> np.ndarray:
    """:func:`measure_paths`, kept in ``cache_dir`` under a key of the paths and the measurement list
    (a benchmark measures the same split again and again)."""
    if cache_dir is None:
        return measure_paths(paths, workers=workers, work_side=work_side)
    definition = MEASUREMENT_DEFINITION if work_side == WORK_SIDE else f"{MEASUREMENT_DEFINITION}@{work_side}"
    digest = hashlib.sha256("\n".join([definition, *map(str, paths)]).encode())
    file = cache_dir / f"measurements-{digest.hexdigest()[:16]}.npy"
    if file.exists():
        return np.load(file)
    values = measure_paths(paths, workers=workers, work_side=work_side)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(file, values)
    return values
