"""Peak memory and time of building the FAISS index over a million memory-mapped embeddings: the product's
``EmbeddingIndex.build`` (rows normalised and added a chunk at a time) against the build before commit
a161f8b (one normalised copy of every vector first), each in its own process.

    .venv/bin/python bench/index_memory.py var/bench-million/run/artifacts/project-2/job-7/embeddings \
        [--before]

The embeddings folder is the million-cell project's of ``bench/million.py``. Prints one JSON line: the
build's seconds, the process's peak resident memory (``VmHWM``, which counts the memory-mapped file's
pages it read) and its anonymous memory after the build (the index itself, about 5 GB at 1M x 1,280).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning.embeddings import load_embeddings
from learning.index import EmbeddingIndex, default_nlist, l2_normalize


def build_before(embeddings: np.ndarray, ids: np.ndarray) -> EmbeddingIndex:
    """The build as it was: normalise every vector into one copy, train on a sample of it, add it all."""
    x = l2_normalize(embeddings)
    n, dim = x.shape
    lists = default_nlist(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    sample = x[np.sort(np.random.default_rng(0).choice(n, min(n, 39 * lists), replace=False))]
    index.cp.seed = 0
    index.cp.niter = 10
    index.train(sample)
    index.add(x)
    return EmbeddingIndex(index, ids)


def status_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 2**20, 2)
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("embeddings", type=Path)
    parser.add_argument("--before", action="store_true", help="the build before a161f8b")
    args = parser.parse_args()
    ids, emb, _ = load_embeddings(args.embeddings, mmap=True)
    cell_ids = ids.astype(np.int64)
    start = time.perf_counter()
    index = build_before(emb, cell_ids) if args.before else EmbeddingIndex.build(emb, cell_ids)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "build": "before a161f8b" if args.before else "EmbeddingIndex.build",
                "vectors": len(cell_ids),
                "ivf": index.is_ivf,
                "seconds": round(seconds, 1),
                "peak_rss_gib": status_gib("VmHWM"),
                "anonymous_after_gib": status_gib("RssAnon"),
            }
        )
    )


if __name__ == "__main__":
    main()
