"""Label-free pretraining on a GPU, then the two embedding scores that ``bench/README.md`` reports.

Two sub-commands:

``run``: pretrain one method with :func:`learning.selfsup.pretrain` on the pool cells only (labels unused),
write a small copy of the checkpoint (encoder weights and metadata, without optimiser state and heads,
still loadable by :func:`learning.selfsup.load_encoder`), embed pool and test, and score them::

    python bench/gpu/gpu_ssl.py run --pool var/gpu_data/pool.csv --test var/gpu_data/test.csv \
        --method simclr --minutes 5 --batch-size 512 --image-size 96 --out-dir $OUT

``evaluate``: score an existing checkpoint (or the frozen ImageNet backbone) on any pool/test pair, e.g.
the original full-size images on the development machine::

    .venv/bin/python bench/gpu/gpu_ssl.py evaluate --encoder bench/gpu/simclr.pt \
        --pool var/gpu_data/split_orig/pool.csv --test var/gpu_data/split_orig/test.csv --out x.json

Scores, as ``learning.benchmark.run_benchmark`` computes them:

- ``knn20_macro_f1``: :func:`learning.evaluation.knn_macro_f1` with k=20 (cosine 20-NN vote fitted on the
  pool embeddings, macro-F1 on the test cells). It needs FAISS; where FAISS is not installed (the GPU
  machine) the same exact search and vote run in torch instead (``knn_impl`` says which ran).
- ``full_label_macro_f1``: ``make_classifier("logreg", classes, seed=0)`` fitted on every pool label.

Prints one JSON object and writes it to ``--out-dir/<method>.json`` (``run``) or ``--out`` (``evaluate``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from learning.classifiers import make_classifier  # noqa: E402
from learning.data import CellImageDataset, CellRecord, read_manifest  # noqa: E402
from learning.embeddings import extract_embeddings  # noqa: E402
from learning.evaluation import macro_f1  # noqa: E402
from learning.training import resolve_device  # noqa: E402


def knn_predict_torch(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, k: int = 20
) -> np.ndarray:
    """:func:`learning.evaluation.knn_predict` without FAISS: exact inner-product top-k, same vote."""
    classes, codes = np.unique(np.asarray(train_y).astype(str), return_inverse=True)
    dev = resolve_device()
    tx = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32)).to(dev)
    k = min(k, len(train_x))
    neighbours = []
    for start in range(0, len(test_x), 4096):
        q = torch.from_numpy(np.ascontiguousarray(test_x[start : start + 4096], dtype=np.float32)).to(dev)
        sims = q @ tx.T
        neighbours.append(sims.topk(k, dim=1).indices.cpu().numpy())
    nb = np.concatenate(neighbours)
    votes = np.zeros((len(test_x), len(classes)), dtype=np.float64)
    rows = np.repeat(np.arange(len(test_x)), k)
    weights = np.tile(1.0 + 1e-6 * np.arange(k, 0, -1), len(test_x))
    np.add.at(votes, (rows, codes[nb.ravel()]), weights)
    return np.asarray(classes[votes.argmax(axis=1)])


def knn20(pool_x: np.ndarray, pool_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        from learning.evaluation import knn_macro_f1

        out["knn20_macro_f1"] = float(knn_macro_f1(pool_x, pool_y, test_x, test_y, k=20))
        out["knn_impl"] = "learning.evaluation.knn_macro_f1 (faiss)"
        out["knn20_macro_f1_torch"] = float(
            macro_f1(test_y, knn_predict_torch(pool_x, pool_y, test_x, k=20))
        )  # cross-check of the torch replica
    except ImportError:
        out["knn20_macro_f1"] = float(macro_f1(test_y, knn_predict_torch(pool_x, pool_y, test_x, k=20)))
        out["knn_impl"] = "torch exact top-20, same vote as learning.evaluation.knn_predict (no faiss here)"
    return out


def embed(
    model: torch.nn.Module, records: Sequence[CellRecord], size: int, batch: int, crop: str = "centre"
) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    data = CellImageDataset(records, size, gray_world=True, crop=crop)
    data.preload()
    t1 = time.perf_counter()
    emb = extract_embeddings(model, data, batch_size=batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    return emb, {
        "decode_seconds": round(t1 - t0, 2),
        "forward_seconds": round(t2 - t1, 2),
        "images_per_second": round(len(records) / max(t2 - t1, 1e-9), 1),
    }


def score(
    model: torch.nn.Module,
    pool_csv: Path,
    test_csv: Path,
    size: int,
    batch: int,
    say: Callable[[str], None],
    crop: str = "centre",
) -> dict[str, Any]:
    pool, test = read_manifest(pool_csv), read_manifest(test_csv)
    pool_y = np.array([r.label for r in pool])
    test_y = np.array([r.label for r in test])
    classes = sorted({str(v) for v in pool_y} | {str(v) for v in test_y})
    pool_x, pool_t = embed(model, pool, size, batch, crop)
    test_x, test_t = embed(model, test, size, batch, crop)
    say(f"embedded {len(pool)} pool + {len(test)} test cells ({pool_t['images_per_second']} img/s)")
    out: dict[str, Any] = {
        "pool": str(pool_csv),
        "test": str(test_csv),
        "crop": crop,
        "pool_size": len(pool),
        "test_size": len(test),
        "embed_pool": pool_t,
        "embed_test": test_t,
    }
    t0 = time.perf_counter()
    out.update(knn20(pool_x, pool_y, test_x, test_y))
    out["knn_seconds"] = round(time.perf_counter() - t0, 2)
    say(f"20-NN macro-F1 {out['knn20_macro_f1']:.4f} ({out['knn_impl']})")
    t0 = time.perf_counter()
    clf = make_classifier("logreg", classes, seed=0).fit(pool_x, pool_y)
    out["full_label_macro_f1"] = float(macro_f1(test_y, clf.predict(test_x)))
    out["full_label_fit_seconds"] = round(time.perf_counter() - t0, 2)
    say(f"full-label macro-F1 {out['full_label_macro_f1']:.4f} ({out['full_label_fit_seconds']} s)")
    return out


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def slim_checkpoint(src: Path, dst: Path, *, data_crop: str = "centre") -> int:
    """Encoder weights + metadata only (no optimiser state, no heads): what ``load_encoder`` reads.

    ``data_crop``: the crop the compact copy was made with. The GPU machine trained on those squares
    with ``crop="centre"`` (a no-op), so the encoder's inputs were cell crops when ``data_crop`` is
    "cell": the metadata says so, and whoever loads it on the originals crops the same way."""
    from learning.selfsup.train import load_checkpoint

    state = load_checkpoint(src)
    slim = {
        "format": state["format"],
        "meta": {**state["meta"], "crop": data_crop},
        "backbone": state["backbone"],
        "heads": {},
        "optimizer": {},
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, dst)
    return dst.stat().st_size


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


def cmd_run(a: argparse.Namespace) -> dict[str, Any]:
    from learning.selfsup import PretrainConfig, pretrain

    name = a.name or a.method

    def say(msg: str) -> None:
        print(f"[{name} {time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    out_json = a.out_dir / f"{name}.json"
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "environment": environment(),
        "method": a.method,
        "augment": a.augment,
        "data_crop": a.data_crop,
    }
    say(f"environment {result['environment']}")
    records = read_manifest(a.pool, limit=a.limit)
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"{name}_full.pt"
    config = PretrainConfig(
        method=a.method,
        backbone=a.backbone,
        backbone_kwargs={"pretrained": True},
        image_size=a.image_size,
        minutes=a.minutes,
        batch_size=a.batch_size,
        lr=a.lr,
        augment=a.augment,
        seed=a.seed,
    )
    summary = pretrain(records, config, out=ckpt, progress=False)
    if torch.cuda.is_available():
        summary["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["pretrain"] = summary
    say(
        f"pretrained {summary['epochs_done']:.2f} epochs, {summary['steps_done']} steps in "
        f"{summary['seconds']} s, {summary['cells_per_second']} cells/s, loss {summary['final_loss']}"
    )
    slim = a.out_dir / f"{name}.pt"
    result["checkpoint"] = {"path": slim.name, "bytes": slim_checkpoint(ckpt, slim, data_crop=a.data_crop)}
    write(out_json, result)
    from learning.selfsup import load_encoder

    model, _meta = load_encoder(slim, device=resolve_device())
    # The compact copy already holds the squares: decode it as it is (crop "centre" is a no-op).
    result["scores"] = score(model, a.pool, a.test, a.image_size, a.embed_batch, say)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write(out_json, result)
    return result


def cmd_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    def say(msg: str) -> None:
        print(f"[evaluate] {msg}", file=sys.stderr, flush=True)

    if a.encoder is not None:
        from learning.selfsup import load_encoder

        model, meta = load_encoder(a.encoder)
        encoder = {
            "encoder": str(a.encoder),
            "method": meta.get("method"),
            "pretrain_device": meta.get("device"),
            "pretrain_seconds": meta.get("seconds"),
            "epochs_done": meta.get("epochs_done"),
        }
        size = a.image_size or int(meta["image_size"])
        crop = a.crop or str(meta.get("crop", "centre"))
    else:
        from models_zoo import create_model

        model = create_model(a.backbone, pretrained=True).eval()
        encoder = {"encoder": f"{a.backbone} (ImageNet weights, frozen)"}
        size = a.image_size or 96
        crop = a.crop or "centre"
    result = {"command": " ".join(sys.argv), "environment": environment(), **encoder, "image_size": size}
    result["scores"] = score(model, a.pool, a.test, size, a.embed_batch, say, crop)
    if a.out is not None:
        write(a.out, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="pretrain one method, then embed and score")
    r.add_argument("--pool", type=Path, required=True)
    r.add_argument("--test", type=Path, required=True)
    r.add_argument("--method", choices=["simclr", "byol", "triplet"], required=True)
    r.add_argument("--backbone", default="efficientnet_lite0")
    r.add_argument("--image-size", type=int, default=96)
    r.add_argument("--minutes", type=float, required=True)
    r.add_argument("--batch-size", type=int, default=512)
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--augment", default="reference")
    r.add_argument("--name", default=None, help="output file stem (default: the method)")
    r.add_argument(
        "--data-crop",
        choices=["centre", "cell"],
        default="centre",
        help="the crop prepare_data.py made the copy with; recorded in the encoder's metadata",
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--limit", type=int, default=None, help="first N pool cells only (smoke tests)")
    r.add_argument("--embed-batch", type=int, default=512)
    r.add_argument(
        "--work-dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the full checkpoint goes"
    )
    r.add_argument("--out-dir", type=Path, required=True)
    e = sub.add_parser("evaluate", help="score a checkpoint, or the frozen ImageNet backbone")
    e.add_argument("--encoder", type=Path, default=None)
    e.add_argument("--backbone", default="efficientnet_lite0")
    e.add_argument("--image-size", type=int, default=None)
    e.add_argument(
        "--crop", choices=["centre", "cell"], default=None, help="default: the encoder's, else centre"
    )
    e.add_argument("--pool", type=Path, required=True)
    e.add_argument("--test", type=Path, required=True)
    e.add_argument("--embed-batch", type=int, default=256)
    e.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    result = cmd_run(a) if a.command == "run" else cmd_evaluate(a)
    print(json.dumps(result.get("scores", result), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
