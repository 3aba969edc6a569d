"""Manifest records, an image dataset with a decoded-tensor cache, data hashes and stratified splits.

A manifest is a CSV with one row per cell crop; ``path`` is relative to the CSV's folder. What each
column means is :mod:`learning.manifest`'s (shared with the platform's import): the fixed columns, the
11 WBCAtt attribute columns (:data:`ATTRIBUTE_COLUMNS`, empty when not annotated); every other column
lands in ``CellRecord.extra``.

Decoding a 224 px JPEG costs about as much as a forward pass of a small CNN on 2 CPU cores, so
:class:`CellImageDataset` can decode every image once (resized, gray-world normalised, uint8) into one
(N, 3, S, S) tensor, optionally kept on disk as ``.npy`` between runs. 16k cells take 200 MB at 64 px,
450 MB at 96 px and 2.4 GB at 224 px.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from learning.attributes import WBCATT_NAMES
from learning.imaging import CELL_CROP_SCALE, preprocess_framed
from learning.manifest import ManifestError, ManifestRow, check_header, parse_row
from learning.transforms import gray_world as gray_world_normalize

DATA_DIR_ENV = "LEUKOLOOP_DATA_DIR"

# The manifest columns that hold WBCAtt attributes (the canonical list lives in learning.attributes).
ATTRIBUTE_COLUMNS: tuple[str, ...] = WBCATT_NAMES


def default_data_dir() -> Path:
    """The shared leukocyte folder: ``$LEUKOLOOP_DATA_DIR``, else ``<repo>/../shared/data/leukocytes``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "leukocytes"


@dataclass(frozen=True)
class CellRecord:
    """One cell crop.

    Attributes:
        id: the manifest's relative path (unique within a manifest), used as the id of embeddings.
        path: absolute path of the image.
        label: cell type, ``None`` when unlabelled.
        source: acquisition source (``pbc``, ``munich_aml``), ``""`` when unknown.
        subtype: finer label from the source (``SNE``, ``MY`` ...), ``""`` when unknown.
        attributes: annotated morphological attributes only (attribute -> value).
        extra: the remaining manifest columns as strings (``wbcatt_split``, ``orig_width`` ...).
        patient_id, slide_id, role: as the manifest gives them, ``""`` when absent (appended last so that
            positional construction stays as it was).
    """

    id: str
    path: Path
    label: str | None = None
    source: str = ""
    subtype: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    patient_id: str = ""
    slide_id: str = ""
    role: str = ""


def read_manifest(csv_path: str | Path, *, limit: int | None = None) -> list[CellRecord]:
    """Read a manifest CSV into records, in file order; ``limit`` keeps the first rows only.

    Raises:
        ValueError: no ``path`` column, a malformed row, an empty or a duplicate path (file and line named).
    """
    csv_path = Path(csv_path)
    root = csv_path.absolute().parent  # not resolve(): symlinked data folders keep their own paths
    records: list[CellRecord] = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            check_header(reader.fieldnames)
        except ManifestError as exc:
            raise ValueError(f"{csv_path}: manifest {exc}") from None
        seen: set[str] = set()
        for line, raw in enumerate(reader, start=2):
            if limit is not None and len(records) >= limit:
                break
            try:
                row = parse_row(raw, attribute_columns=ATTRIBUTE_COLUMNS)
            except ManifestError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            if row.path in seen:
                raise ValueError(f"{csv_path}:{line}: duplicate path {row.path!r}")
            seen.add(row.path)
            records.append(_record(row, root))
    return records


def _record(row: ManifestRow, root: Path) -> CellRecord:
    return CellRecord(
        id=row.path,
        path=root / row.path,
        label=row.label or None,
        source=row.source,
        subtype=row.subtype,
        attributes=row.attributes,
        extra=row.extra,
        patient_id=row.patient_id,
        slide_id=row.slide_id,
        role=row.role,
    )


def data_hash(records: Iterable[CellRecord], *, content: bool = False) -> str:
    """A stable 16-hex-digit hash of a record set, for checkpoint and embedding metadata.

    It covers id, label, source and attributes, independent of record order and of where the data
    folder is mounted. ``content=True`` also hashes the image bytes (reads every file).
    """
    lines = []
    for r in records:
        attrs = json.dumps(dict(r.attributes), sort_keys=True)
        line = f"{r.id}\t{r.label or ''}\t{r.source}\t{attrs}"
        if content:
            line += "\t" + hashlib.sha256(r.path.read_bytes()).hexdigest()
        lines.append(line)
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def manifest_hash(csv_path: str | Path, *, content: bool = False) -> str:
    """:func:`data_hash` of every record of a manifest."""
    return data_hash(read_manifest(csv_path), content=content)


def class_names(records: Iterable[CellRecord]) -> list[str]:
    """Sorted distinct labels (unlabelled records ignored)."""
    return sorted({r.label for r in records if r.label is not None})


def label_indices(records: Sequence[CellRecord], classes: Sequence[str] | None = None) -> np.ndarray:
    """(N,) int64 index of each record's label in ``classes`` (default :func:`class_names`); -1 if none."""
    classes = list(classes) if classes is not None else class_names(records)
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(r.label, -1) if r.label is not None else -1 for r in records], dtype=np.int64)


def attribute_schema(records: Iterable[CellRecord]) -> dict[str, list[str]]:
    """Attribute -> sorted observed values, in :data:`ATTRIBUTE_COLUMNS` order (for ``MultiAttributeHead``
    pass ``{k: len(v) for k, v in schema.items()}``)."""
    values: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for a, v in r.attributes.items():
            values[a].add(v)
    return {a: sorted(values[a]) for a in ATTRIBUTE_COLUMNS if a in values}


def attribute_targets(records: Sequence[CellRecord], schema: Mapping[str, Sequence[str]]) -> np.ndarray:
    """(N, A) int64 value indices in ``schema`` order; -1 where the attribute is not annotated."""
    out = np.full((len(records), len(schema)), -1, dtype=np.int64)
    lookups = [(a, {v: i for i, v in enumerate(vals)}) for a, vals in schema.items()]
    for n, r in enumerate(records):
        for j, (a, lookup) in enumerate(lookups):
            v = r.attributes.get(a)
            if v is not None:
                if v not in lookup:
                    raise ValueError(f"{r.id}: value {v!r} of {a!r} not in schema {list(lookup)}")
                out[n, j] = lookup[v]
    return out


def stratified_split(
    keys: Sequence[Hashable], test_fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that every stratum (e.g. label, or ``(label, source)``) keeps its proportion.

    Each stratum contributes ``round(test_fraction * n)`` items to the test part, but at least one to
    the train part (a stratum of one goes to train). Returns sorted int64 index arrays (train, test).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    train: list[int] = []
    test: list[int] = []
    for k in sorted(groups, key=repr):  # fixed order, so the split depends on the seed only
        idx = np.array(groups[k])
        rng.shuffle(idx)
        n_test = min(round(test_fraction * len(idx)), len(idx) - 1)
        test.extend(idx[:n_test].tolist())
        train.extend(idx[n_test:].tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


def sample_per_class(records: Sequence[CellRecord], per_class: int, *, seed: int = 0) -> list[CellRecord]:
    """Up to ``per_class`` random records of each label (unlabelled ones count as one class), in
    manifest order: a small stratified subset for smoke tests and quick experiments."""
    rng = np.random.default_rng(seed)
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.label].append(i)
    keep: list[int] = []
    for label in sorted(groups, key=lambda x: (x is None, x or "")):
        idx = groups[label]
        keep.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return [records[i] for i in sorted(keep)]


def load_image(
    path: str | Path | io.BytesIO,
    size: int,
    *,
    gray_world: bool = True,
    crop: str = "centre",
    cell_scale: float = CELL_CROP_SCALE,
) -> Tensor:
    """Decode one image: square crop (the centre's, or the cell's with ``crop="cell"``), resize to
    ``size`` (:func:`learning.imaging.preprocess`), optional gray-world normalisation.

    Returns:
        uint8 tensor (3, size, size).
    """
    return load_image_framed(path, size, gray_world=gray_world, crop=crop, cell_scale=cell_scale)[0]


def load_image_framed(
    path: str | Path | io.BytesIO,
    size: int,
    *,
    gray_world: bool = True,
    crop: str = "centre",
    cell_scale: float = CELL_CROP_SCALE,
) -> tuple[Tensor, tuple[int, int], tuple[int, int, int]]:
    """:func:`load_image` with where its square lies in the decoded image: ``(image, (width, height),
    (left, top, side))`` (:func:`learning.imaging.preprocess_framed`)."""
    x, frame, box = preprocess_framed(path, size, crop=crop, cell_scale=cell_scale)
    return (gray_world_normalize(x) if gray_world else x), frame, box


class CellImageDataset(Dataset[tuple[Tensor, int]]):
    """Cell crops as uint8 tensors; item ``i`` is ``(image (3, S, S) uint8, i)``.

    Labels, attributes and ids stay on ``records[i]``: a training loop maps the returned index to
    whatever target it needs, and augmentation runs on whole batches (:mod:`learning.transforms`).

    Args:
        records: the cells.
        image_size: side S of the square output.
        gray_world: apply gray-world colour normalisation when decoding.
        crop: ``"centre"`` square or the ``"cell"``'s (:func:`learning.imaging.decode_square`).
        cell_scale: the cell crop's side as a multiple of the nucleus' diameter.
        cache: keep decoded images in memory (filled lazily in this process, or all at once by
            :meth:`preload`; with DataLoader workers call :meth:`preload` first, worker copies are lost).
    """

    def __init__(
        self,
        records: Sequence[CellRecord],
        image_size: int,
        *,
        gray_world: bool = True,
        cache: bool = False,
        crop: str = "centre",
        cell_scale: float = CELL_CROP_SCALE,
    ) -> None:
        self.records = list(records)
        self.image_size = image_size
        self.gray_world = gray_world
        self.crop = crop
        self.cell_scale = cell_scale
        self.cache = cache
        self._images: Tensor | None = None
        self._have: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _decode(self, i: int) -> Tensor:
        return load_image(
            self.records[i].path,
            self.image_size,
            gray_world=self.gray_world,
            crop=self.crop,
            cell_scale=self.cell_scale,
        )

    def _ensure_storage(self) -> tuple[Tensor, np.ndarray]:
        if self._images is None or self._have is None:
            s = self.image_size
            self._images = torch.empty((len(self.records), 3, s, s), dtype=torch.uint8)
            self._have = np.zeros(len(self.records), dtype=bool)
        return self._images, self._have

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if not self.cache:
            return self._decode(i), i
        images, have = self._ensure_storage()
        if not have[i]:
            images[i] = self._decode(i)
            have[i] = True
        return images[i], i

    @property
    def is_loaded(self) -> bool:
        """True when every image is in the in-memory cache."""
        return self._have is not None and bool(self._have.all())

    def cache_file(self, cache_dir: str | Path) -> Path:
        """Where :meth:`preload` keeps the decoded tensor; keyed by data hash, size and preprocessing."""
        gw = "-grayworld" if self.gray_world else ""
        crop = f"-cell{self.cell_scale:g}" if self.crop == "cell" else ""
        return Path(cache_dir) / f"cells-{data_hash(self.records)}-{self.image_size}px{gw}{crop}.u8.npy"

    def preload(
        self, *, num_threads: int | None = None, cache_dir: str | Path | None = None, progress: bool = False
    ) -> Tensor:
        """Decode every image into memory (threads: Pillow releases the GIL while decoding).

        With ``cache_dir``, reuse a tensor saved by an earlier run on the same records, or save one.

        Returns:
            the cache, uint8 (N, 3, S, S); also sets ``cache=True``.
        """
        self.cache = True
        images, have = self._ensure_storage()
        path = self.cache_file(cache_dir) if cache_dir is not None else None
        if path is not None and path.is_file():
            arr = np.load(path, allow_pickle=False)
            if arr.shape == tuple(images.shape) and arr.dtype == np.uint8:
                self._images = torch.from_numpy(arr)
                have[:] = True
                return self._images
        todo = np.flatnonzero(~have).tolist()
        if todo:
            threads = num_threads or min(len(todo), os.cpu_count() or 1)

            def work(i: int) -> None:
                images[i] = self._decode(i)

            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), desc="decode", unit="img")
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for _ in pool.map(work, todo, chunksize=64):
                    if bar is not None:
                        bar.update()
            if bar is not None:
                bar.close()
            have[:] = True
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            with tmp.open("wb") as f:
                np.save(f, images.numpy(), allow_pickle=False)
            os.replace(tmp, path)
        return images

    @property
    def images(self) -> Tensor:
        """The full uint8 (N, 3, S, S) cache; raises unless :meth:`preload` ran (or every item was read)."""
        if self._images is None or not self.is_loaded:
            raise RuntimeError("images are not all decoded yet; call preload() first")
        return self._images
