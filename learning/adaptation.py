"""Adapting a model to a new site with a few of its cells labelled, and what that costs the old sites.

What the loop does when a lead points the query at a new source (``Project.query_source``): the project's
strategy runs over that source's cells only, with the current model's probabilities, and the chosen cells
are labelled and added to the training set. Here, as a measurement: choose ``n`` of the new site's cells
(by the strategy, or at random for comparison), refit the classifier on the old labels plus these, and
score it on the new site's *other* cells and on the old sites' test cells. The old sites' score before
minus after is the forgetting.

Never imports Django.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from learning.classifiers import AlignedClassifier
from learning.evaluation import external_report, macro_f1
from learning.query import select


def adapt_to_site(
    make_classifier: Callable[[], AlignedClassifier],
    *,
    labelled_x: np.ndarray,
    labelled_y: np.ndarray,
    site_x: np.ndarray,
    site_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n: int,
    strategy: str = "hybrid",
    seed: int = 0,
    strategy_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Before and after labelling ``n`` of the new site's cells chosen by ``strategy``.

    Args:
        make_classifier: a new, unfitted classifier (the loop's kind and options).
        labelled_x, labelled_y: the labels so far (old sites), (L, D) and (L,).
        site_x, site_y: every cell of the new site, (S, D) and (S,); ``site_y`` is the oracle's answer for
            the chosen cells and the truth for the others.
        test_x, test_y: the old sites' held-out cells.
        n: labels of the new site to buy (at most S - 1, so that something is left to score).
        strategy_options: passed to the strategy (``{"class_balanced": True}`` for the hybrid).

    Returns:
        ``{"labels": n, "strategy", "picked_per_class", "site_before", "site_after"`` (each
        :func:`learning.evaluation.external_report` over the cells not picked), ``"test_before"``,
        ``"test_after"`` (macro-F1 on the old sites), ``"forgetting"`` (before minus after)``}``.
    """
    if not 0 < n < len(site_x):
        raise ValueError(f"n must be between 1 and {len(site_x) - 1} (the site has {len(site_x)} cells)")
    before = make_classifier().fit(labelled_x, labelled_y)
    picked = select(
        strategy,
        n=n,
        embeddings=site_x,
        probs=np.asarray(before.predict_proba(site_x)),
        labelled_mask=np.zeros(len(site_x), dtype=bool),
        rng=seed,
        **(strategy_options or {}),
    )
    rest = np.setdiff1d(np.arange(len(site_x)), picked)
    after = make_classifier().fit(
        np.concatenate([labelled_x, site_x[picked]]), np.concatenate([labelled_y, site_y[picked]])
    )

    def predicted(model: AlignedClassifier, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x)).astype(str)

    test_before = macro_f1(test_y, predicted(before, test_x))
    test_after = macro_f1(test_y, predicted(after, test_x))
    return {
        "labels": len(picked),
        "strategy": strategy,
        "strategy_options": dict(strategy_options or {}),
        "picked_per_class": {c: int((site_y[picked] == c).sum()) for c in sorted(set(site_y.tolist()))},
        "site_before": external_report(site_y[rest], predicted(before, site_x[rest])),
        "site_after": external_report(site_y[rest], predicted(after, site_x[rest])),
        "test_before": test_before,
        "test_after": test_after,
        "forgetting": test_before - test_after,
    }


__all__ = ["adapt_to_site"]
