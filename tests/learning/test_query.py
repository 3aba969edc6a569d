"""Query strategies on small hand-built pools with known answers, plus contract checks for all."""

from __future__ import annotations

import numpy as np
import pytest

from learning.query import (
    STRATEGIES,
    badge,
    delta_ball_graph,
    entropy,
    entropy_sampling,
    estimate_delta,
    farthest_first,
    gradient_embedding,
    gradient_factors,
    k_center_greedy,
    kmeans_medoids,
    least_confidence,
    least_confidence_sampling,
    margin,
    margin_sampling,
    max_coverage_greedy,
    probcover,
    random_sampling,
    resolve_strategy,
    select,
    typicality,
    typiclust,
    uncertain_diverse,
)
from learning.query.base import PoolRows, as_mask, balanced_top_k, kmeans, min_sq_distances, top_k
from learning.query.probcover import partition_cells

PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # 0 confident
        [0.40, 0.35, 0.25],  # 1 margin 0.05, lc 0.60
        [0.34, 0.33, 0.33],  # 2 margin 0.01, lc 0.66, max entropy
        [0.50, 0.50, 0.00],  # 3 margin 0.00, lc 0.50
        [0.70, 0.20, 0.10],  # 4
        [1.00, 0.00, 0.00],  # 5 certain
    ],
    dtype=np.float32,
)


def blobs(
    sizes: list[int], dim: int = 16, spread: float = 0.05, seed: int = 0, scale: float = 5.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs whose first row is the exact blob centre.

    Returns (x (N, dim) float32, blob id (N,), index of each blob's centre row (B,))."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim)) * scale
    rows, ids, heads = [], [], []
    start = 0
    for b, size in enumerate(sizes):
        pts = centres[b] + spread * rng.standard_normal((size, dim))
        pts[0] = centres[b]
        rows.append(pts)
        ids.append(np.full(size, b))
        heads.append(start)
        start += size
    return np.concatenate(rows).astype(np.float32), np.concatenate(ids), np.array(heads)


def assert_valid(picks: np.ndarray, n: int, labelled: np.ndarray | None = None) -> None:
    assert picks.dtype == np.int64
    assert len(picks) == n
    assert len(np.unique(picks)) == n
    if labelled is not None:
        assert not labelled[picks].any()


# -- measures -------------------------------------------------------------------------------------------


def test_measures_match_hand_computed_values() -> None:
    np.testing.assert_allclose(least_confidence(PROBS), 1 - PROBS.max(axis=1), atol=1e-7)
    np.testing.assert_allclose(margin(PROBS), [0.85, 0.05, 0.01, 0.0, 0.5, 1.0], atol=1e-6)
    p = PROBS[1]
    assert entropy(PROBS)[1] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    assert entropy(PROBS)[5] == 0.0  # 0 log 0 = 0


def test_uncertainty_strategies_pick_known_rows() -> None:
    assert margin_sampling(PROBS, 2, labelled=None).tolist() == [3, 2]
    assert least_confidence_sampling(PROBS, 2, labelled=None).tolist() == [2, 1]
    assert entropy_sampling(PROBS, 1, labelled=None).tolist() == [2]


def test_uncertainty_strategies_skip_labelled_rows() -> None:
    labelled = np.zeros(6, dtype=bool)
    labelled[[2, 3]] = True
    assert margin_sampling(PROBS, 2, labelled=labelled).tolist() == [1, 4]
    assert margin_sampling(PROBS, 2, labelled=np.array([2, 3])).tolist() == [1, 4]


def test_class_balanced_spreads_over_predicted_classes() -> None:
    rng = np.random.default_rng(0)
    # 30 rows predicted class 0 that are all very uncertain, 10 rows each for classes 1 and 2.
    probs = np.zeros((50, 3), dtype=np.float32)
    probs[:30] = [0.36, 0.33, 0.31]
    probs[30:40] = [0.2, 0.6, 0.2]
    probs[40:] = [0.1, 0.2, 0.7]
    probs += rng.uniform(0, 0.01, probs.shape).astype(np.float32)
    plain = margin_sampling(probs, 6, labelled=None)
    balanced = margin_sampling(probs, 6, labelled=None, class_balanced=True)
    assert set(probs[plain].argmax(axis=1)) == {0}
    assert np.bincount(probs[balanced].argmax(axis=1), minlength=3).tolist() == [2, 2, 2]


def test_top_k_and_balanced_top_k_helpers() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    assert top_k(scores, 3, np.arange(5)).tolist() == [1, 3, 2]  # ties by lower index
    groups = np.array([0, 0, 1, 0, 1])
    assert balanced_top_k(scores, 4, np.arange(5), groups).tolist() == [1, 2, 3, 4]


def test_random_sampling_is_seeded_and_skips_labelled() -> None:
    labelled = np.zeros(100, dtype=bool)
    labelled[:50] = True
    a = random_sampling(None, 10, labelled=labelled, rng=3, n_pool=100)
    b = random_sampling(None, 10, labelled=labelled, rng=np.random.default_rng(3), n_pool=100)
    np.testing.assert_array_equal(a, b)
    assert_valid(a, 10, labelled)


# -- k-center greedy ------------------------------------------------------------------------------------


def test_k_center_picks_the_far_outlier_first() -> None:
    x, _, _ = blobs([40, 40], seed=1)
    outlier = np.full((1, x.shape[1]), 60.0, dtype=np.float32)
    pool = np.concatenate([x, outlier])
    labelled = as_mask(np.array([0]), len(pool))
    picks = k_center_greedy(pool, 2, labelled=labelled, rng=0)
    assert picks[0] == len(pool) - 1
    assert picks[1] >= 40  # then the other blob, far from the labelled one


def test_k_center_covers_every_blob_once() -> None:
    x, ids, _ = blobs([30, 30, 30, 30], seed=2)
    picks = k_center_greedy(x, 4, labelled=None, rng=0)
    assert sorted(ids[picks].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_k_center_equals_eager(seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((3000, 24)).astype(np.float32)
    dist, _ = min_sq_distances(x, x[:5])
    dist[:5] = -np.inf
    lazy = farthest_first(x, 40, min_dist=dist, lazy=True, front_size=16)
    eager = farthest_first(x, 40, min_dist=dist, lazy=False)
    np.testing.assert_array_equal(lazy, eager)


def test_min_sq_distances_blocked_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    x, c = rng.standard_normal((500, 8)), rng.standard_normal((30, 8))
    d, nearest = min_sq_distances(x, c, block_size=64)
    brute = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, brute.min(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(nearest, brute.argmin(axis=1))


# -- TypiClust / k-means medoids ------------------------------------------------------------------------


def test_typicality_is_highest_at_the_blob_centre() -> None:
    x, _, heads = blobs([60], dim=32, seed=3)
    assert int(np.argmax(typicality(x, 20))) == heads[0]


def test_typicality_subsampled_keeps_the_centre_on_top() -> None:
    x, _, heads = blobs([3000], dim=32, seed=4)
    typ = typicality(x, 20, max_points=500, eligible=np.arange(3000) < 1000, rng=0)
    assert int(np.argmax(typ)) == heads[0]
    assert np.isfinite(typ).sum() == 500 and not np.isfinite(typ[1000:]).any()


def test_typiclust_cold_start_picks_blob_centres() -> None:
    x, _, heads = blobs([50, 80, 65], dim=32, seed=5)
    picks = typiclust(x, 3, labelled=None, rng=0)
    assert sorted(picks.tolist()) == sorted(heads.tolist())


def test_typiclust_prefers_uncovered_clusters() -> None:
    x, ids, heads = blobs([50, 80, 65], dim=32, seed=5)
    labelled = as_mask(np.array([heads[1], heads[1] + 1]), len(x))  # blob 1 already has labels
    picks = typiclust(x, 2, labelled=labelled, rng=0, n_clusters=3)
    assert sorted(ids[picks].tolist()) == [0, 2]
    assert set(picks.tolist()) == {heads[0], heads[2]}


def test_kmeans_medoids_picks_blob_centres() -> None:
    x, _, heads = blobs([40, 70, 55], dim=32, seed=6)
    picks = kmeans_medoids(x, 3, labelled=None, rng=0)
    assert sorted(picks.tolist()) == sorted(heads.tolist())


def test_kmeans_recovers_separated_blobs_for_many_seeds() -> None:
    x, ids, _ = blobs([50, 50, 50], seed=7)
    for seed in range(10):
        _, assign = kmeans(x, 3, seed=seed)
        assert len({(a, b) for a, b in zip(assign.tolist(), ids.tolist(), strict=True)}) == 3


# -- ProbCover ------------------------------------------------------------------------------------------


def test_probcover_covers_separated_clusters_largest_first() -> None:
    x, ids, _ = blobs([20, 60, 40], dim=8, spread=0.05, seed=8)
    picks = probcover(x, 3, labelled=None, rng=0, delta=1.0)
    assert ids[picks].tolist() == [1, 2, 0]


def test_probcover_skips_covered_clusters_then_fills_randomly() -> None:
    x, ids, heads = blobs([20, 60, 40], dim=8, spread=0.05, seed=8)
    labelled = as_mask(np.array([heads[1]]), len(x))
    picks = probcover(x, 5, labelled=labelled, rng=0, delta=1.0)
    assert ids[picks[:2]].tolist() == [2, 0]
    assert_valid(picks, 5, labelled)


def test_delta_ball_graph_exact_matches_brute_force() -> None:
    x = np.random.default_rng(9).standard_normal((300, 6)).astype(np.float32)
    indptr, indices = delta_ball_graph(x, 2.0, block_size=50)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    for i in range(0, 300, 37):
        assert set(indices[indptr[i] : indptr[i + 1]].tolist()) == set(np.flatnonzero(d[i] < 2.0).tolist())


def _edges(indptr: np.ndarray, indices: np.ndarray) -> set[tuple[int, int]]:
    src = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return set(zip(src.tolist(), indices.tolist(), strict=True))


def test_cell_graph_recall_against_exact() -> None:
    x, _, _ = blobs([400] * 10, dim=32, spread=0.3, seed=10, scale=1.0)
    delta = 1.9
    exact = _edges(*delta_ball_graph(x, delta))
    cells = partition_cells(x, seed=0)
    approx = _edges(*delta_ball_graph(x, delta, cells=cells, nprobe=8))
    assert approx <= exact  # never a false edge
    assert len(approx) / len(exact) > 0.9
    assert all((j, i) in approx for i, j in list(approx)[:2000])  # symmetric by construction
    # With room for every cell the triangle-inequality pruning keeps the graph exact.
    assert _edges(*delta_ball_graph(x, delta, cells=cells, nprobe=len(cells.members))) == exact
    assert len(_edges(*delta_ball_graph(x, delta, cells=cells))) / len(exact) > 0.99


def test_probcover_large_pool_path_matches_exact_on_separated_data() -> None:
    x, ids, _ = blobs([300, 500, 400], dim=16, spread=0.05, seed=12)
    small = probcover(x, 3, labelled=None, rng=0, delta=1.0)
    large = probcover(x, 3, labelled=None, rng=0, delta=1.0, exact_threshold=100)
    assert ids[small].tolist() == ids[large].tolist() == [1, 2, 0]


def test_estimate_delta_gives_pure_balls() -> None:
    x, ids, _ = blobs([100, 100, 100, 100], dim=16, spread=0.05, seed=11)
    delta = estimate_delta(x, n_clusters=4, purity=0.95, max_degree=None, rng=0)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    impure = ((d < delta) & (ids[:, None] != ids[None, :])).any(axis=1).mean()
    assert delta > 0.3  # larger than any within-blob distance: whole blobs are pure balls
    assert impure <= 0.06
    capped = estimate_delta(x, n_clusters=4, purity=0.95, max_degree=10, rng=0)
    assert capped < 0.3  # the degree cap shrinks balls to ~10 points
    cells = partition_cells(x, n_cells=8, seed=0)
    assert estimate_delta(x, n_clusters=4, max_degree=None, rng=0, cells=cells) == pytest.approx(
        delta, rel=0.05
    )


def test_max_coverage_greedy_picks_the_hub() -> None:
    # Row 0 covers {0, 1, 2, 3}; row 4 covers {3, 4}; row 5 covers {5}.
    balls = [[0, 1, 2, 3], [1], [2], [3], [3, 4], [5]]
    indptr = np.cumsum([0] + [len(b) for b in balls])
    indices = np.concatenate(balls)
    covered = np.zeros(6, dtype=bool)
    picks = max_coverage_greedy(indptr, indices, 3, covered=covered, selectable=np.ones(6, dtype=bool))
    assert picks.tolist() == [0, 4, 5]
    assert covered.all()


# -- BADGE ----------------------------------------------------------------------------------------------


def test_badge_factorised_distances_equal_explicit_gradient_embedding() -> None:
    rng = np.random.default_rng(12)
    probs = rng.dirichlet(np.ones(4), size=30).astype(np.float32)
    h = rng.standard_normal((30, 5)).astype(np.float32)
    g = gradient_embedding(probs, h)
    assert g.shape == (30, 20)
    a = gradient_factors(probs)
    np.testing.assert_allclose((g**2).sum(1), (a**2).sum(1) * (h**2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(g @ g[3], (a @ a[3]) * (h @ h[3]), rtol=1e-4, atol=1e-5)


def test_badge_starts_at_the_largest_gradient_and_stays_valid() -> None:
    rng = np.random.default_rng(13)
    probs = rng.dirichlet(np.ones(3), size=200).astype(np.float32)
    h = rng.standard_normal((200, 8)).astype(np.float32)
    labelled = as_mask(np.arange(10), 200)
    picks = badge(probs, h, 12, labelled=labelled, rng=0)
    assert_valid(picks, 12, labelled)
    g_norm = (gradient_embedding(probs, h) ** 2).sum(1)
    g_norm[labelled] = -1
    assert picks[0] == int(np.argmax(g_norm))


def test_badge_spreads_over_gradient_clusters() -> None:
    x, ids, _ = blobs([50, 50, 50], dim=8, seed=14)
    probs = np.full((150, 3), 1 / 3, dtype=np.float32)
    probs[:, 0] += 0.01  # equally uncertain everywhere: diversity comes from h
    probs /= probs.sum(1, keepdims=True)
    picks = badge(probs, x, 3, labelled=None, rng=0)
    assert sorted(ids[picks].tolist()) == [0, 1, 2]


# -- hybrid ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("diversify", ["kmeans", "kcenter"])
def test_hybrid_diversifies_near_duplicate_uncertain_rows(diversify: str) -> None:
    x, ids, _ = blobs([40, 40, 120], dim=8, spread=0.01, seed=15)
    probs = np.zeros((200, 2), dtype=np.float32)
    probs[:40] = [0.50, 0.50]  # blob 0: most uncertain, near-duplicates
    probs[40:80] = [0.55, 0.45]  # blob 1: uncertain too
    probs[80:] = [0.99, 0.01]  # blob 2: confident
    probs[:80, 0] += np.linspace(0, 0.01, 80, dtype=np.float32)
    probs[:, 1] = 1 - probs[:, 0]
    assert set(ids[margin_sampling(probs, 2, labelled=None)].tolist()) == {0}
    picks = uncertain_diverse(probs, x, 2, labelled=None, rng=0, diversify=diversify, candidate_factor=40)
    assert sorted(ids[picks].tolist()) == [0, 1]


def test_hybrid_only_returns_top_candidates() -> None:
    rng = np.random.default_rng(16)
    probs = rng.dirichlet(np.ones(4), size=500).astype(np.float32)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    picks = uncertain_diverse(probs, x, 10, labelled=None, rng=0, candidate_factor=3)
    candidates = set(margin_sampling(probs, 30, labelled=None).tolist())
    assert set(picks.tolist()) <= candidates
    assert_valid(picks, 10)


def test_hybrid_class_balanced_candidates() -> None:
    rng = np.random.default_rng(17)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=600).astype(np.float32)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    picks = uncertain_diverse(probs, x, 9, labelled=None, rng=0, class_balanced=True, candidate_factor=1)
    assert np.bincount(probs[picks].argmax(1), minlength=3).tolist() == [3, 3, 3]


# -- dispatcher and the contract every strategy honours -------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, ids, _ = blobs([150, 100, 150, 100], dim=16, spread=1.0, seed=18, scale=1.0)
    rng = np.random.default_rng(19)
    logits = rng.standard_normal((len(x), 4)) + 2 * np.eye(4)[ids]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labelled = np.zeros(len(x), dtype=bool)
    labelled[rng.choice(len(x), 40, replace=False)] = True
    return x, probs.astype(np.float32), labelled


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_n_unique_unlabelled_rows(
    name: str, pool: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    x, probs, labelled = pool
    picks = select(name, n=25, embeddings=x, probs=probs, labelled_mask=labelled, rng=0)
    assert_valid(picks, 25, labelled)
    again = select(name, n=25, embeddings=x, probs=probs, labelled_mask=labelled, rng=0)
    np.testing.assert_array_equal(picks, again)  # deterministic given the seed


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_all_rows_when_budget_exceeds_pool(name: str) -> None:
    x, _, _ = blobs([6, 6], dim=4, seed=20)
    probs = np.full((12, 2), 0.5, dtype=np.float32)
    probs[:, 0] += np.linspace(0, 0.1, 12, dtype=np.float32)
    probs[:, 1] = 1 - probs[:, 0]
    labelled = as_mask(np.array([0, 7]), 12)
    picks = select(name, n=50, embeddings=x, probs=probs, labelled_mask=labelled, rng=0)
    assert sorted(picks.tolist()) == sorted(np.flatnonzero(~labelled).tolist())
    assert len(select(name, n=0, embeddings=x, probs=probs, labelled_mask=labelled, rng=0)) == 0


@pytest.mark.parametrize("name", ["margin", "entropy", "least_confidence", "badge", "hybrid"])
def test_model_strategies_fall_back_on_cold_start(name: str) -> None:
    x, _, heads = blobs([50, 80, 65], dim=32, seed=5)
    assert resolve_strategy(name, probs=None, labelled_mask=None, n_pool=len(x)) == "typiclust"
    no_model = select(name, n=3, embeddings=x, probs=None, labelled_mask=None, rng=0)
    np.testing.assert_array_equal(no_model, typiclust(x, 3, labelled=None, rng=np.random.default_rng(0)))
    uniform = np.full((len(x), 3), 1 / 3, dtype=np.float32)
    zero_labels = select(name, n=3, embeddings=x, probs=uniform, labelled_mask=np.zeros(len(x), bool), rng=0)
    assert sorted(zero_labels.tolist()) == sorted(heads.tolist())
    other = select(name, n=3, embeddings=x, labelled_mask=None, rng=0, cold_start="kmeans_medoids")
    assert sorted(other.tolist()) == sorted(heads.tolist())


def test_resolve_keeps_model_strategy_once_labelled() -> None:
    mask = np.zeros(10, dtype=bool)
    mask[0] = True
    probs = np.full((10, 2), 0.5)
    assert resolve_strategy("margin", probs=probs, labelled_mask=mask, n_pool=10) == "margin"
    assert resolve_strategy("coreset", probs=None, labelled_mask=None, n_pool=10) == "coreset"


def test_select_rejects_unknown_names_and_bad_cold_start() -> None:
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError):
        select("nope", n=1, embeddings=x, labelled_mask=None, rng=0)
    with pytest.raises(ValueError):
        select("margin", n=1, embeddings=x, labelled_mask=None, rng=0, cold_start="entropy")


def test_select_passes_options_through() -> None:
    rng = np.random.default_rng(21)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=300).astype(np.float32)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    mask = as_mask(np.array([0]), 300)
    picks = select("margin", n=6, embeddings=x, probs=probs, labelled_mask=mask, rng=0, class_balanced=True)
    assert np.bincount(probs[picks].argmax(1), minlength=3).tolist() == [2, 2, 2]


def test_registry_names_a_paper_for_every_strategy() -> None:
    for name, strategy in STRATEGIES.items():
        assert strategy.name == name and strategy.paper
        assert strategy.fn.__doc__ and strategy.inputs


# -- a pool's rows of a larger (memory-mapped) matrix ---------------------------------------------------


class RecordingMatrix:
    """A 2-D array that records how many rows each read asked for (what a memory map would page in)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.ndim = 2
        self.shape = data.shape
        self.reads: list[int] = []

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.reads.append(len(rows))
        return self.data[rows]


def test_pool_rows_indexes_like_the_gathered_rows() -> None:
    base = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows = np.array([7, 2, 9, 4, 0])
    view = PoolRows(base, rows)
    assert len(view) == 5 and view.shape == (5, 4)
    np.testing.assert_array_equal(view[np.array([3, 0, 2])], base[[4, 7, 9]])  # order kept
    np.testing.assert_array_equal(view[np.array([True, False, True, False, False])], base[[7, 9]])
    np.testing.assert_array_equal(np.asarray(view), base[rows])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_picks_the_same_through_a_pool_view(
    name: str, pool: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    x, probs, labelled = pool
    # the pool is every other row of a larger matrix, as validation and skipped cells leave the index
    base = np.zeros((2 * len(x), x.shape[1]), dtype=np.float32)
    base[1::2] = x
    view = PoolRows(base, np.arange(1, 2 * len(x), 2))
    direct = select(name, n=25, embeddings=x, probs=probs, labelled_mask=labelled, rng=0)
    through_view = select(name, n=25, embeddings=view, probs=probs, labelled_mask=labelled, rng=0)
    np.testing.assert_array_equal(through_view, direct)


def test_hybrid_reads_only_its_candidates_rows(pool: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, probs, labelled = pool
    matrix = RecordingMatrix(x)
    view = PoolRows(matrix, np.arange(len(x)))  # type: ignore[arg-type]
    picks = uncertain_diverse(probs, view, 10, labelled=labelled, rng=0, candidate_factor=5)
    assert_valid(picks, 10, labelled)
    assert matrix.reads == [50]  # the 5 x 10 candidates, once; never the pool's 500 rows


def test_typiclust_reads_only_a_sample_of_a_pool_over_max_rows(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """At a million cells the whole pool is 5 GB and k-means copies it: a large pool is clustered on a
    sample, read once, and the picks are still unlabelled rows of the whole pool."""
    x, _, labelled = pool
    whole = RecordingMatrix(x)
    typiclust(PoolRows(whole, np.arange(len(x))), 10, labelled=labelled, rng=0)  # type: ignore[arg-type]
    assert whole.reads == [500]  # under max_rows: every row, as before
    sampled = RecordingMatrix(x)
    picks = typiclust(
        PoolRows(sampled, np.arange(len(x))),  # type: ignore[arg-type]
        10,
        labelled=labelled,
        rng=0,
        max_rows=200,
    )
    assert_valid(picks, 10, labelled)
    assert sampled.reads == [200]  # the 40 labelled rows and 160 unlabelled ones, once
    assert len(set(picks.tolist())) == 10 and picks.max() < len(x)
