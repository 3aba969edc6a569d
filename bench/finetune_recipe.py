"""Which fine-tuning recipe turns ~810 labels into the best cell-type model on 2 CPU cores?

The loop benchmark (``python -m learning benchmark --finetune-every K``) answers "what does the product
get", but each of its runs costs an hour here (8 query rounds, full re-embeddings). This script isolates
the fine-tune itself so recipes can be compared side by side in one run: the same labelled cells (a
stratified ``--per-class`` sample of the pool, per seed), the same test cells, one fine-tune per recipe,
scored twice on the held-out test cells:

* ``head``: the fine-tuned network's own softmax head (what a fine-tuned classifier would give);
* ``product``: the loop's classifier (class-balanced logistic regression, one BLAS thread) fitted on the
  fine-tuned embedding of the labelled cells, as ``loop.handlers.retraining`` does after a fine-tune.

Budgets are in **epochs** (of the labelled cells), so a recipe's accuracy does not depend on how busy the
shared machine was; the seconds are recorded beside it as context.

Example (the command behind ``bench/results/finetune_recipe_*.json``)::

    .venv/bin/python bench/finetune_recipe.py --pool var/bench/split/pool.csv \
        --test var/bench/split/test.csv --image-size 96 --per-class 90 --seeds 1 \
        --recipes lpft,supervised,semi_lpft --epochs 20 --out bench/results/finetune_recipe_96.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from learning.benchmark import ALProblem  # noqa: E402
from learning.classifiers import AlignedClassifier  # noqa: E402
from learning.data import CellImageDataset, read_manifest, sample_per_class  # noqa: E402
from learning.embeddings import batchnorm_for_source  # noqa: E402
from learning.evaluation import external_report, macro_f1  # noqa: E402
from learning.finetune import finetune  # noqa: E402
from learning.finetune_benchmark import (  # noqa: E402
    attribute_matrix,
    fit_and_score,
    head_scores,
    normalise,
    raw_features,
)
from learning.imaging import CROP_MODES  # noqa: E402
from learning.query import select  # noqa: E402
from learning.semi import SemiSupervised  # noqa: E402
from learning.shift import abstention  # noqa: E402

# Prefix of the saved arrays holding the network's attribute-head probabilities on the test cells.
NETWORK_HEAD = "network_head:"

# Each recipe is a set of keyword arguments of learning.finetune.finetune on top of the command line's.
RECIPES: dict[str, dict[str, Any]] = {
    "supervised": {},
    "lpft": {"probe_heads": True},
    "semi": {"semi": "fixmatch"},
    "semi_lpft": {"semi": "fixmatch", "probe_heads": True},
    "lpft_strong": {"probe_heads": True, "augment": "strong"},
    "lpft_smooth": {"probe_heads": True, "label_smoothing": 0.1},
    # Issue 13: stain jitter, blur and a wider zoom (learning.transforms, preset "travel").
    "supervised_travel": {"augment": "travel"},
    # Issue 13, adapting without labels: FixMatch whose unlabelled cells are the other lab's (half A of
    # --external with --site-half; every recipe is then scored on half B).
    "semi_site": {"semi": "site"},
    "semi_site_pool": {"semi": "site+pool"},
    # Issue 12: the attribute heads' loss weighted 3 times the default next to the cell type's, so that
    # the fine-tuned embedding carries more of what the attribute heads read (nucleus shape, colour).
    "supervised_attr3": {"attribute_weight": 3.0},
}


def build_problem(pool: list[Any], test: list[Any]) -> ALProblem:
    classes = sorted({r.label for r in pool if r.label})
    attributes = sorted({a for r in pool for a in r.attributes})
    schema = {a: sorted({r.attributes[a] for r in [*pool, *test] if a in r.attributes}) for a in attributes}
    empty = np.zeros((0, 1), dtype=np.float32)
    return ALProblem(
        pool_x=empty,
        pool_y=np.array([r.label for r in pool]),
        test_x=empty,
        test_y=np.array([r.label for r in test]),
        classes=classes,
        test_sources=np.array([r.source for r in test]),
        pool_attributes={a: np.array([r.attributes.get(a, "") for r in pool]) for a in attributes},
        test_attributes={a: np.array([r.attributes.get(a, "") for r in test]) for a in attributes},
        attribute_classes=schema,
    )


def make_encoder(args: argparse.Namespace) -> torch.nn.Module:
    if args.encoder:
        from learning.selfsup import load_encoder

        model, _meta = load_encoder(args.encoder)
        return model
    from models_zoo import create_model

    return create_model(args.backbone, pretrained=True)


def run_recipe(
    name: str,
    args: argparse.Namespace,
    problem: ALProblem,
    pool_images: torch.Tensor,
    test_images: torch.Tensor,
    rows: np.ndarray,
    seed: int,
    external: tuple[torch.Tensor, np.ndarray] | None = None,
    site_unlabelled: torch.Tensor | None = None,
) -> dict[str, Any]:
    """One fine-tune scored by its own head and by the product's classifier; with ``external`` (another
    lab's images and labels, never trained on) the product's classifier is scored there too.
    ``site_unlabelled``: other cells of that lab, without labels, for the ``semi_site`` recipes."""
    options = dict(RECIPES[name])
    semi = None
    unlabelled = None
    semi_kind = options.pop("semi", None)
    if semi_kind:
        semi = SemiSupervised(threshold=args.semi_threshold, lambda_u=1.0, ratio=1)
        rng = np.random.default_rng(seed + 7)
        free = np.setdiff1d(np.arange(len(pool_images)), rows)
        parts: list[torch.Tensor] = []
        if semi_kind in ("fixmatch", "site+pool"):
            size = 4 * len(rows)
            if semi_kind == "site+pool":  # as many of our unlabelled cells as of the other lab's
                size = 0 if site_unlabelled is None else len(site_unlabelled)
            picked = np.sort(rng.choice(free, size=min(len(free), size), replace=False))
            parts.append(pool_images[torch.from_numpy(picked)])
        if semi_kind in ("site", "site+pool"):
            if site_unlabelled is None:
                raise SystemExit(f"recipe {name} needs --external and --site-half")
            parts.append(site_unlabelled)
        unlabelled = torch.cat(parts)
    lookup = {c: i for i, c in enumerate(problem.classes)}
    labels = np.array([lookup[str(v)] for v in problem.pool_y[rows]], dtype=np.int64)
    attributes = attribute_matrix(problem.pool_attributes, problem.attribute_classes, rows)
    schema = {a: len(v) for a, v in problem.attribute_classes.items()}
    backbone = make_encoder(args)
    start = copy.deepcopy(backbone.state_dict())
    t0 = time.perf_counter()
    result = finetune(
        backbone,
        pool_images[torch.from_numpy(rows)],
        labels,
        len(problem.classes),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=seed,
        unlabelled=unlabelled,
        semi=semi,
        attributes=attributes,
        attribute_schema=schema,
        **options,
    )
    finetune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_raw = raw_features(result.backbone, test_images)
    labelled_raw = raw_features(result.backbone, pool_images[torch.from_numpy(rows)])
    embed_s = time.perf_counter() - t0
    head = head_scores(problem, result, test_raw, n_boot=200, seed=seed)
    if args.save_features is not None:
        # For experiments on the heads alone (bench/attribute_features.py): the fine-tuned embedding of
        # the labelled and the test cells, and which pool rows were labelled.
        args.save_features.mkdir(parents=True, exist_ok=True)
        arrays = {"rows": rows, "labelled": labelled_raw, "test": test_raw}
        if external is not None:
            arrays["external"] = raw_features(result.backbone, external[0])
        if result.attribute_head is not None:
            # The network's own attribute heads on the test cells, for a third voice beside the
            # embedding and measurement heads (bench/attribute_features.py).
            with torch.no_grad():
                logits = result.attribute_head(torch.from_numpy(test_raw))
            for attribute, attribute_logits in logits.items():
                probs = torch.softmax(attribute_logits.float(), dim=1).numpy()
                arrays[f"{NETWORK_HEAD}{attribute}"] = probs
        np.savez(args.save_features / f"{name}_seed{seed}.npz", **arrays)  # type: ignore[arg-type]
    out: dict[str, Any] = {
        "recipe": name,
        "seed": seed,
        "labels": len(rows),
        "options": {k: str(v) for k, v in options.items()},
        "semi_threshold": args.semi_threshold if semi else None,
        "unlabelled_cells": 0 if unlabelled is None else len(unlabelled),
        "epochs_done": round(result.epochs_done, 2),
        "steps_done": result.steps_done,
        "pseudo_label_rate": result.pseudo_label_rate,
        "finetune_seconds": round(finetune_s, 1),
        "embed_seconds": round(embed_s, 1),
        "head": head,
    }
    out |= score_backbone(
        result.backbone,
        args,
        problem,
        pool_images,
        test_images,
        rows,
        seed,
        external,
        (labelled_raw, test_raw),
    )
    wise: dict[str, Any] = {}
    for alpha in args.wise:
        # WiSE-FT (Wortsman et al., CVPR 2022): the fine-tuned weights averaged with the starting ones;
        # alpha 1 is the fine-tuned model, 0 the start.
        mixed = copy.deepcopy(result.backbone)
        mixed.load_state_dict(interpolate_weights(start, result.backbone.state_dict(), alpha))
        wise[f"{alpha:g}"] = score_backbone(
            mixed, args, problem, pool_images, test_images, rows, seed, external
        )
    if wise:
        out["wise"] = wise
    if external is not None and args.adapt_labels:
        out["adapt"] = {
            f"{strategy}_{sampling}": adapt_by_finetune(
                result.backbone,
                strategy,
                sampling,
                args,
                problem,
                pool_images,
                test_images,
                rows,
                labels,
                seed,
                external,
            )
            for strategy in args.adapt_strategies
            for sampling in args.adapt_sampling
        }
    return out


def adapt_by_finetune(
    backbone: torch.nn.Module,
    strategy: str,
    sampling: str,
    args: argparse.Namespace,
    problem: ALProblem,
    pool_images: torch.Tensor,
    test_images: torch.Tensor,
    rows: np.ndarray,
    labels: np.ndarray,
    seed: int,
    external: tuple[torch.Tensor, np.ndarray],
) -> dict[str, Any]:
    """Issue 13's "adapt to a new site with N labels", as the product would do it: N of the other lab's
    cells are chosen by ``strategy`` over that lab's cells (the fine-tuned embedding and the product
    classifier's probabilities, as ``Project.query_source`` makes the loop do), labelled, and the next
    fine-tune continues from the fine-tuned weights on the old labels plus these for ``--adapt-epochs``.
    Scored on the lab's other cells and on the old sites' test cells, with two baselines on the same
    picks: the fine-tuned model before adapting, and only the classifier refitted with the new labels
    (no further fine-tune). ``sampling``: ``plain`` (classes balanced, as the product's fine-tune) or
    ``site`` (within each class the new site's cells drawn as often as the old ones together)."""
    images, truth = external
    lookup = {c: i for i, c in enumerate(problem.classes)}

    def classifier(features: np.ndarray, y: np.ndarray) -> AlignedClassifier:
        with threadpool_limits(limits=1):
            return AlignedClassifier(problem.classes, "logreg", class_weight="balanced", seed=seed).fit(
                features, y
            )

    def embed(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            normalise(raw_features(model, pool_images[torch.from_numpy(rows)])),
            normalise(raw_features(model, images)),
            normalise(raw_features(model, test_images)),
        )

    def scores(
        features: tuple[np.ndarray, np.ndarray, np.ndarray], extra: np.ndarray | None, rest: np.ndarray
    ) -> dict[str, Any]:
        labelled, site, test = features
        x, y = labelled, np.asarray(problem.pool_y[rows]).astype(str)
        if extra is not None:
            x, y = np.concatenate([x, site[extra]]), np.concatenate([y, truth[extra]])
        fitted = classifier(x, y)
        return {
            "site": external_report(truth[rest], np.asarray(fitted.predict(site[rest])).astype(str)),
            "test_macro_f1": macro_f1(
                np.asarray(problem.test_y).astype(str), np.asarray(fitted.predict(test)).astype(str)
            ),
        }

    features = embed(backbone)
    product = classifier(features[0], np.asarray(problem.pool_y[rows]).astype(str))
    picked = np.sort(
        select(
            strategy,
            n=args.adapt_labels,
            embeddings=features[1],
            probs=np.asarray(product.predict_proba(features[1])),
            labelled_mask=np.zeros(len(images), dtype=bool),
            rng=seed,
        )
    )
    rest = np.setdiff1d(np.arange(len(images)), picked)
    site_labels = np.array([lookup[str(v)] for v in truth[picked]], dtype=np.int64)
    attributes = attribute_matrix(problem.pool_attributes, problem.attribute_classes, rows)
    no_attributes = np.full((len(picked), attributes.shape[1]), -1, dtype=np.int64)
    t0 = time.perf_counter()
    adapted = finetune(
        copy.deepcopy(backbone),
        torch.cat([pool_images[torch.from_numpy(rows)], images[torch.from_numpy(picked)]]),
        np.concatenate([labels, site_labels]),
        len(problem.classes),
        epochs=args.adapt_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=seed + 1,
        attributes=np.concatenate([attributes, no_attributes]),
        attribute_schema={a: len(v) for a, v in problem.attribute_classes.items()},
        sample_groups=np.repeat([0, 1], [len(rows), len(picked)]) if sampling == "site" else None,
    )
    seconds = time.perf_counter() - t0
    return {
        "sampling": sampling,
        "labels": len(picked),
        "picked_per_class": {c: int((truth[picked] == c).sum()) for c in sorted(set(truth.tolist()))},
        "adapt_epochs": args.adapt_epochs,
        "adapt_seconds": round(seconds, 1),
        "before": scores(features, None, rest),
        "refit": scores(features, picked, rest),
        "after": scores(embed(adapted.backbone), picked, rest),
    }


def interpolate_weights(
    start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * end`` for every floating-point tensor (batch-norm statistics
    included); integer counters are taken from ``end``."""
    return {
        key: torch.lerp(start[key].to(value.dtype), value, alpha) if value.is_floating_point() else value
        for key, value in end.items()
    }


def score_backbone(
    backbone: torch.nn.Module,
    args: argparse.Namespace,
    problem: ALProblem,
    pool_images: torch.Tensor,
    test_images: torch.Tensor,
    rows: np.ndarray,
    seed: int,
    external: tuple[torch.Tensor, np.ndarray] | None,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The product's classifier (class-balanced logistic regression on the embedding of the labelled
    cells only; nothing is queried here) scored on the test cells, and with ``external`` on another
    lab's cells, with the abstention figures; ``features``: the labelled and test cells' raw features
    when already computed."""
    if features is None:
        labelled_raw = raw_features(backbone, pool_images[torch.from_numpy(rows)])
        test_raw = raw_features(backbone, test_images)
    else:
        labelled_raw, test_raw = features
    pool_x = np.zeros((len(pool_images), labelled_raw.shape[1]), dtype=np.float32)
    pool_x[rows] = normalise(labelled_raw)
    mask = np.zeros(len(pool_images), dtype=bool)
    mask[rows] = True
    with threadpool_limits(limits=1):
        product, model = fit_and_score(
            problem,
            pool_x,
            normalise(test_raw),
            mask,
            classifier="logreg",
            class_weight="balanced",
            seed=seed,
            n_boot=200,
        )
    out: dict[str, Any] = {"product": product}
    if external is None:
        return out
    images, truth = external
    labelled_emb, test_emb = normalise(labelled_raw), normalise(test_raw)
    test_predicted = np.asarray(model.predict(test_emb)).astype(str)
    y_test = np.asarray(problem.test_y).astype(str)
    external_emb = normalise(raw_features(backbone, images))
    predicted = np.asarray(model.predict(external_emb)).astype(str)
    out["external"] = external_report(truth, predicted)
    # The product's safeguard on this embedding: abstain on cells unlike every labelled one.
    labelled_y = np.asarray(problem.pool_y[rows]).astype(str)
    out["abstention"] = abstention(
        labelled_emb, test_emb, external_emb, y_test, test_predicted, predicted, labelled_labels=labelled_y
    )
    if args.adabn:
        # The other lab's cells through the same weights with batch-norm statistics of their own
        # (AdaBN): its 351 images, no label. Our cells keep the statistics fine-tuning left.
        dataset = torch.utils.data.TensorDataset(images, torch.arange(len(images)))
        theirs = batchnorm_for_source(backbone, dataset)  # type: ignore[arg-type]
        external_emb = normalise(raw_features(theirs, images))
        predicted = np.asarray(model.predict(external_emb)).astype(str)
        out["external_adabn"] = external_report(truth, predicted)
        out["abstention_adabn"] = abstention(
            labelled_emb,
            test_emb,
            external_emb,
            y_test,
            test_predicted,
            predicted,
            labelled_labels=labelled_y,
        )
    return out


def brief(report: dict[str, Any]) -> str:
    src = report.get("per_source_macro_f1") or {}
    return (
        f"F1 {report['macro_f1']:.3f} pbc {src.get('pbc', float('nan')):.3f} "
        f"blast {report['per_class_recall'].get('blast', float('nan')):.3f} "
        f"attr {report.get('attribute_mean_macro_f1') or float('nan'):.3f} "
        f"ece {report.get('ece', float('nan')):.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument(
        "--encoder", type=Path, default=None, help="pretraining checkpoint (default: ImageNet)"
    )
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument(
        "--crop", choices=CROP_MODES, default="cell", help="runs before the cell crop used 'centre'"
    )
    parser.add_argument("--per-class", type=int, default=90)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed, first-seed + 1 ...")
    parser.add_argument("--recipes", default="supervised,lpft,semi")
    parser.add_argument("--epochs", type=float, default=30.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--semi-threshold", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--image-cache", type=Path, default=Path("var/cache"))
    parser.add_argument(
        "--external", type=Path, default=None, help="another lab's manifest, scored, never trained on"
    )
    parser.add_argument(
        "--adabn", action="store_true", help="also score --external with its own batch-norm statistics"
    )
    parser.add_argument(
        "--wise",
        type=lambda text: [float(v) for v in text.split(",") if v],
        default=[],
        help="also score the weights averaged with the start's (WiSE-FT), e.g. 0.25,0.5,0.75",
    )
    parser.add_argument(
        "--save-features",
        type=Path,
        default=None,
        help="folder: save each run's fine-tuned features of the labelled and test cells (.npz)",
    )
    parser.add_argument(
        "--adapt-labels",
        type=int,
        default=0,
        help="with --external: label N of its cells, chosen by each --adapt-strategies, and fine-tune on",
    )
    parser.add_argument("--adapt-epochs", type=float, default=10.0)
    parser.add_argument(
        "--adapt-strategies", type=lambda text: [v for v in text.split(",") if v], default=["hybrid"]
    )
    parser.add_argument(
        "--adapt-sampling",
        type=lambda text: [v for v in text.split(",") if v],
        default=["plain"],
        help="plain (classes balanced) and/or site (the new site's cells as often as the old ones)",
    )
    parser.add_argument(
        "--site-half",
        action="store_true",
        help="split --external in two halves (seeded): the semi_site recipes train on half A without "
        "its labels, and every recipe's external figures are on half B",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    pool, test = read_manifest(args.pool), read_manifest(args.test)
    problem = build_problem(pool, test)
    pool_images = CellImageDataset(pool, args.image_size, crop=args.crop).preload(cache_dir=args.image_cache)
    test_images = CellImageDataset(test, args.image_size, crop=args.crop).preload(cache_dir=args.image_cache)
    external = None
    if args.external is not None:
        ext_records = read_manifest(args.external)
        ext_images = CellImageDataset(ext_records, args.image_size, crop=args.crop).preload()
        external = (ext_images, np.array([str(r.label) for r in ext_records]))
    index = {r.id: i for i, r in enumerate(pool)}
    runs: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows = np.array(sorted(index[r.id] for r in sample_per_class(pool, args.per_class, seed=seed)))
        scored, site_unlabelled = external, None
        if external is not None and args.site_half:
            # Stratified halves, so that half B keeps the lab's class mix to score on.
            half_a = np.sort(
                np.concatenate(
                    [
                        np.random.default_rng(seed + 211).permutation(np.flatnonzero(external[1] == c))[
                            : int((external[1] == c).sum()) // 2
                        ]
                        for c in np.unique(external[1])
                    ]
                )
            )
            half_b = np.setdiff1d(np.arange(len(external[1])), half_a)
            site_unlabelled = external[0][torch.from_numpy(half_a)]
            scored = (external[0][torch.from_numpy(half_b)], external[1][half_b])
        for name in args.recipes.split(","):
            run = run_recipe(
                name, args, problem, pool_images, test_images, rows, seed, scored, site_unlabelled
            )
            runs.append(run)
            print(
                f"{name} seed {seed}: {run['epochs_done']} epochs in {run['finetune_seconds']} s | "
                f"head {brief(run['head'])} | product {brief(run['product'])}"
                + (
                    f" | external F1 (>= 20 cells) {run['external']['macro_f1_min20']:.3f}, "
                    f"blast {run['external']['predicted_share'].get('blast', 0.0):.1%}"
                    if "external" in run
                    else ""
                ),
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {
                        "command": " ".join(sys.argv),
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "load_average_end": os.getloadavg(),
                        "runs": runs,
                    },
                    indent=1,
                )
            )


if __name__ == "__main__":
    main()
