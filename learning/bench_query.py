"""Query-speed benchmark: every strategy in :data:`learning.query.STRATEGIES` against modAL's ranked batch
sampling (Cardoso et al., "Ranked batch-mode active learning", Information Sciences 2017, as shipped in
``modAL.batch.uncertainty_batch_sampling``) on the same synthetic pool.

The pool is ``n`` L2-normalised float32 embeddings drawn around ``4 * n_classes`` Gaussian cluster
centres (several per class, as cell subtypes and stains give), with a stratified labelled set of
``batch`` rows (one round of the reference method's 90 labels). A scikit-learn logistic regression fit
on that labelled set scores the pool; its probabilities feed the model-based strategies, and the same
fitted model is what modAL queries.

Usage: ``python -m learning.bench_query --n 100000 --dim 512 --batch 90`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from learning.query import STRATEGIES, select


def make_synthetic_pool(
    n: int, dim: int, n_classes: int, *, seed: int = 0, subclusters: int = 4, noise: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit-norm embeddings (n, dim) float32 and their class labels (n,) int64.

    Each class owns ``subclusters`` random unit centres; a point is its centre plus isotropic noise of
    total norm ~``noise``, renormalised. Generated in blocks to keep peak memory near the output size.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes * subclusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, len(centres), size=n)
    labels = (cluster // subclusters).astype(np.int64)
    x = np.empty((n, dim), dtype=np.float32)
    step = 65536
    scale = np.float32(noise / np.sqrt(dim))
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= scale
        block += centres[cluster[start:stop]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start:stop] = block
    return x, labels


def stratified_labelled(labels: np.ndarray, size: int, n_classes: int, *, seed: int) -> np.ndarray:
    """Boolean mask (n,) with ``size`` labelled rows spread evenly over the classes."""
    rng = np.random.default_rng(seed + 1)
    mask = np.zeros(len(labels), dtype=bool)
    per = max(1, size // n_classes)
    for c in range(n_classes):
        rows = np.flatnonzero(labels == c)
        mask[rng.choice(rows, size=min(per, len(rows)), replace=False)] = True
    return mask


def _check(picks: np.ndarray, n: int, mask: np.ndarray) -> bool:
    return len(picks) == n and len(np.unique(picks)) == n and not mask[picks].any()


def bench_query(
    n: int = 100_000,
    dim: int = 512,
    batch: int = 90,
    n_classes: int = 9,
    seed: int = 0,
    strategies: Sequence[str] | None = None,
    include_modal: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time each strategy selecting ``batch`` rows from a synthetic (n, dim) pool; JSON-able dict.

    Returns ``{"config": ..., "setup_s": ..., "strategies": {name: {"seconds", "valid",
    "ratio_vs_modal"}}, "modal": {"seconds", "valid"} | None}``; ``ratio_vs_modal`` is modAL's seconds
    divided by the strategy's (how many times faster). Model-free strategies run with the same
    labelled set as the others. ``threads`` caps FAISS (OpenMP) and BLAS threads for the run; on a
    shared machine 1 thread is often faster than oversubscribed 2 (spinning OpenMP barriers).
    """
    result = _with_threads(threads, lambda: _bench(n, dim, batch, n_classes, seed, strategies, include_modal))
    result["config"]["threads"] = threads
    return result


def _with_threads(threads: int | None, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Call ``run()`` with FAISS (OpenMP) and BLAS capped at ``threads`` (None: leave as is)."""
    if threads is None:
        return run()
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            return run()
    finally:
        faiss.omp_set_num_threads(before)


def _bench(
    n: int,
    dim: int,
    batch: int,
    n_classes: int,
    seed: int,
    strategies: Sequence[str] | None,
    include_modal: bool,
) -> dict[str, Any]:
    names = list(strategies) if strategies is not None else list(STRATEGIES)
    t0 = time.perf_counter()
    x, labels = make_synthetic_pool(n, dim, n_classes, seed=seed)
    mask = stratified_labelled(labels, batch, n_classes, seed=seed)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=200).fit(x[mask], labels[mask])
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = clf.predict_proba(x).astype(np.float32)
    t_score = time.perf_counter() - t0
    result: dict[str, Any] = {
        "config": {
            "n": n,
            "dim": dim,
            "batch": batch,
            "n_classes": n_classes,
            "seed": seed,
            "n_labelled": int(mask.sum()),
            "threads": None,
        },
        "setup_s": {"data": round(t_data, 3), "fit": round(t_fit, 3), "score_pool": round(t_score, 3)},
        "strategies": {},
        "modal": None,
    }
    for name in names:
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        picks = select(name, n=batch, embeddings=x, probs=probs, labelled_mask=mask, rng=rng)
        seconds = time.perf_counter() - t0
        result["strategies"][name] = {"seconds": round(seconds, 4), "valid": _check(picks, batch, mask)}
    if include_modal:
        from modAL.batch import uncertainty_batch_sampling
        from modAL.models import ActiveLearner

        learner = ActiveLearner(estimator=clf, X_training=x[mask], y_training=labels[mask])
        t0 = time.perf_counter()
        out = uncertainty_batch_sampling(learner, x, n_instances=batch)
        seconds = time.perf_counter() - t0
        modal_picks = np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.int64)
        # modAL ranks the whole pool, labelled rows included, so only length and uniqueness are checked.
        valid = len(modal_picks) == batch and len(np.unique(modal_picks)) == batch
        result["modal"] = {"seconds": round(seconds, 4), "valid": valid}
        for entry in result["strategies"].values():
            entry["ratio_vs_modal"] = round(seconds / max(entry["seconds"], 1e-9), 1)
    return result


def bench_heads(
    n: int = 16_000,
    dim: int = 512,
    n_classes: int = 9,
    label_counts: Sequence[int] = (90, 900, 2400, 9000),
    kinds: Sequence[str] | None = None,
    seed: int = 0,
    noise: float = 2.5,
) -> dict[str, Any]:
    """Time one active-learning refresh per classifier head: fit on a random labelled subset of a
    synthetic (n, dim) pool, then ``predict_proba`` on the whole pool. ``noise`` 2.5 makes the pool
    about as separable as a good embedding of blood cells (pool accuracy ~0.96-0.99 from 900 labels).
    JSON-able dict ``{"config": ..., "heads": {kind: {labels: {"fit_s", "score_s", "total_s",
    "pool_accuracy"}}}}``."""
    from learning.classifiers import CLASSIFIER_KINDS, AlignedClassifier

    x, labels = make_synthetic_pool(n, dim, n_classes, seed=seed, noise=noise)
    classes = [f"class_{c}" for c in range(n_classes)]
    names = np.asarray(classes)[labels]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "config": {"n": n, "dim": dim, "n_classes": n_classes, "noise": noise},
        "heads": {},
    }
    for kind in kinds if kinds is not None else CLASSIFIER_KINDS:
        out["heads"][kind] = {}
        for count in label_counts:
            rows = rng.choice(n, size=min(count, n), replace=False)
            t0 = time.perf_counter()
            clf = AlignedClassifier(classes, kind).fit(x[rows], names[rows])  # type: ignore[arg-type]
            t1 = time.perf_counter()
            probs = clf.predict_proba(x)
            t2 = time.perf_counter()
            out["heads"][kind][str(count)] = {
                "fit_s": round(t1 - t0, 3),
                "score_s": round(t2 - t1, 3),
                "total_s": round(t2 - t0, 3),
                "pool_accuracy": round(float((probs.argmax(axis=1) == labels).mean()), 4),
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``--n --dim --batch --classes --seed --strategies a,b --no-modal --threads --heads``; prints
    JSON to stdout. ``--heads`` times classifier refits (:func:`bench_heads`) instead of queries."""
    parser = argparse.ArgumentParser(
        prog="bench-query", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--n", type=int, default=None, help="pool size (default 100000; 16000 with --heads)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=90)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", type=str, default="", help="comma-separated names (default: all)")
    parser.add_argument("--no-modal", action="store_true", help="skip the modAL baseline")
    parser.add_argument("--threads", type=int, default=None, help="cap FAISS and BLAS threads")
    parser.add_argument(
        "--heads",
        action="store_true",
        help="time classifier refits + pool scoring instead (n defaults to 16000)",
    )
    args = parser.parse_args(argv)
    if args.heads:
        n_pool = args.n if args.n is not None else 16_000
        heads = _with_threads(
            args.threads, lambda: bench_heads(n=n_pool, dim=args.dim, n_classes=args.classes)
        )
        json.dump(heads, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    chosen = [s for s in args.strategies.split(",") if s] or None
    unknown = [s for s in chosen or [] if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    result = bench_query(
        n=args.n if args.n is not None else 100_000,
        dim=args.dim,
        batch=args.batch,
        n_classes=args.classes,
        seed=args.seed,
        strategies=chosen,
        include_modal=not args.no_modal,
        threads=args.threads,
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
