"""BADGE: Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds", ICLR 2020.

Each pool point gets the gradient of the cross-entropy loss, at the model's own predicted label
y_hat, with respect to the last linear layer: g_x = (p_x - e_{y_hat}) (outer) h_x, with p_x (C,) the
softmax output and h_x (D,) the penultimate embedding, so g_x is C * D long. BADGE then runs
k-means++ seeding (Arthur & Vassilvitskii 2007) on the g_x: first the largest gradient norm, then
points drawn with probability proportional to their squared distance to the nearest chosen one.

The (N, C * D) gradient matrix is never built. For outer products,
    <g_x, g_y> = <a_x, a_y> <h_x, h_y>   and   ||g_x||^2 = ||a_x||^2 ||h_x||^2   (a = p - e_{y_hat}),
so each seeding step needs one (N, D) @ (D,) and one (N, C) @ (C,) product and O(N) memory.
"""

from __future__ import annotations

import numpy as np

from learning.query.base import (
    RngLike,
    as_float32,
    as_mask,
    as_rng,
    budget,
    check_probs,
    fill_random,
    sq_norms,
)


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """The class factor a = p - onehot(argmax p) of BADGE's gradient embedding. (N, C) -> (N, C)."""
    p = check_probs(probs).copy()
    p[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    return p


def gradient_embedding(probs: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Explicit BADGE gradient embedding (N, C * D) -- for tests and small pools only; the strategy
    itself works from the factors. ``probs``: (N, C), ``embeddings``: (N, D)."""
    a = gradient_factors(probs)
    h = as_float32(embeddings)
    return (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)


def badge(
    probs: np.ndarray,
    embeddings: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None,
    rng: RngLike,
) -> np.ndarray:
    """BADGE selection (Ash et al., ICLR 2020) over the unlabelled rows.

    ``probs``: (N, C) predicted class probabilities; ``embeddings``: (N, D) penultimate features the
    classifier's last linear layer reads (the frozen embedding for our linear heads).
    Returns (min(n, n_unlabelled),) int64 row indices in seeding order.
    """
    h_all = as_float32(embeddings)
    a_all = gradient_factors(probs)
    if len(a_all) != len(h_all):
        raise ValueError(f"probs has {len(a_all)} rows but embeddings has {len(h_all)}")
    mask = as_mask(labelled, len(h_all))
    k = budget(n, mask)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    generator = as_rng(rng)
    pool = np.flatnonzero(~mask)
    h = h_all if len(pool) == len(h_all) else h_all[pool]
    a = a_all if len(pool) == len(a_all) else a_all[pool]
    h_sq = sq_norms(h)
    a_sq = sq_norms(a)
    g_sq = h_sq * a_sq  # ||g_x||^2, (M,)
    first = int(np.argmax(g_sq))
    picks = [first]
    d2 = np.maximum(g_sq + g_sq[first] - 2.0 * (a @ a[first]) * (h @ h[first]), 0.0)
    d2[first] = 0.0
    while len(picks) < k:
        cdf = np.cumsum(d2, dtype=np.float64)
        total = float(cdf[-1])
        if total <= 0.0:  # every remaining point coincides with a centre
            break
        # Inverse-CDF draw with probability d2 / total; zero-probability rows (centres) are never hit.
        c = min(int(np.searchsorted(cdf, generator.random() * total, side="right")), len(d2) - 1)
        picks.append(c)
        new = g_sq + g_sq[c] - 2.0 * (a @ a[c]) * (h @ h[c])
        np.minimum(d2, np.maximum(new, 0.0), out=d2)
        d2[c] = 0.0
    return fill_random(pool[np.asarray(picks, dtype=np.int64)], k, mask, generator)
