"""Synthetic demo cells drawn by leukoloop itself, for a platform started with no data.

They are cartoons, not microscopy: every cell is marked ``source="synthetic"`` and the demo project says
so. Each class gets a recognisable shape (lobed nucleus for neutrophils, red granules for eosinophils ...)
so that the demo's models have something real to learn.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 96
BACKGROUND = (236, 214, 214)


def _blob(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _granules(
    draw: ImageDraw.ImageDraw, rng: random.Random, r: float, fill: tuple[int, int, int], n: int, size: float
) -> None:
    c = SIZE / 2
    for _ in range(n):
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0, r * 0.85)
        _blob(draw, c + dist * math.cos(angle), c + dist * math.sin(angle), size, fill)


def draw_cell(kind: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    c = SIZE / 2 + rng.uniform(-3, 3)
    purple = (88 + rng.randint(-10, 10), 40, 120 + rng.randint(-10, 10))
    if kind == "platelet":
        for _ in range(rng.randint(1, 3)):
            _blob(draw, c + rng.uniform(-10, 10), c + rng.uniform(-10, 10), rng.uniform(3, 6), (150, 90, 170))
        return image.filter(ImageFilter.GaussianBlur(0.8))
    radius: float = {"lymphocyte": 20, "erythroblast": 19, "blast": 30, "monocyte": 36}.get(kind, 30)
    radius += rng.uniform(-2, 2)
    cytoplasm = {
        "eosinophil": (240, 170, 150),
        "basophil": (200, 170, 210),
        "monocyte": (190, 190, 220),
        "lymphocyte": (170, 190, 235),
        "erythroblast": (225, 160, 170),
        "blast": (160, 180, 230),
    }.get(kind, (235, 200, 210))
    _blob(draw, c, c, radius, cytoplasm)
    if kind == "neutrophil":
        for i in range(rng.randint(3, 5)):
            angle = i * 1.3 + rng.uniform(-0.2, 0.2)
            _blob(draw, c + 10 * math.cos(angle), c + 10 * math.sin(angle), 7, purple)
    elif kind == "eosinophil":
        _granules(draw, rng, radius, (215, 80, 60), 60, 2.2)
        _blob(draw, c - 9, c, 8, purple)
        _blob(draw, c + 9, c, 8, purple)
    elif kind == "basophil":
        _blob(draw, c, c, 13, purple)
        _granules(draw, rng, radius, (50, 20, 80), 45, 2.6)
    elif kind == "monocyte":
        draw.pieslice((c - 22, c - 22, c + 22, c + 22), 30, 330, fill=purple)
    elif kind == "ig":
        _blob(draw, c + 5, c, 15, purple)
        _granules(draw, rng, radius, (200, 120, 170), 25, 1.5)
    elif kind == "blast":
        _blob(draw, c, c, 24, (120, 70, 160))
        _blob(draw, c + 6, c - 5, 4, (160, 120, 200))
    else:  # lymphocyte, erythroblast: a round dense nucleus filling most of the cell
        _blob(draw, c, c, radius * 0.78, (60, 20, 90) if kind == "erythroblast" else purple)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def write_demo_folder(target: Path, *, classes: list[str], per_class: int = 12, seed: int = 0) -> Path:
    """Draw ``per_class`` cells for every class into an ImageFolder tree at ``target``; return it."""
    rng = random.Random(seed)
    for kind in classes:
        folder = target / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_cell(kind, rng).save(folder / f"synthetic_{kind}_{i:03d}.png")
    return target
