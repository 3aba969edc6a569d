"""FAISS index wrapper: exact and IVF search, range search, persistence, near-duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learning.index import EmbeddingIndex, default_nlist, find_near_duplicates, l2_normalize


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, d)))


def test_l2_normalize_rows_have_unit_norm_and_zero_rows_stay_zero() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_exact_search_returns_self_first_with_caller_ids() -> None:
    x = _unit(200, 16)
    ids = np.arange(1000, 1200)
    index = EmbeddingIndex.build(x, ids)
    assert not index.is_ivf and len(index) == 200 and index.dim == 16
    sims, got = index.search(x[:5], k=3)
    assert sims.shape == got.shape == (5, 3)
    np.testing.assert_array_equal(got[:, 0], ids[:5])
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # decreasing similarity


def test_search_matches_brute_force_cosine() -> None:
    x = _unit(300, 8, seed=1)
    q = _unit(7, 8, seed=2)
    sims, ids = EmbeddingIndex.build(x).search(q, k=5)
    brute = q @ x.T
    expected = np.argsort(-brute, axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(brute, expected, axis=1), atol=1e-5)


def test_search_pads_when_k_exceeds_pool() -> None:
    index = EmbeddingIndex.build(_unit(3, 4))
    sims, ids = index.search(_unit(2, 4, seed=5), k=5)
    assert ids.shape == (2, 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(sims[:, 3:]).all()


def test_ivf_path_above_threshold_and_exact_with_full_probe() -> None:
    x = _unit(2000, 16, seed=3)
    index = EmbeddingIndex.build(x, ivf_threshold=1000, nlist=20)
    assert index.is_ivf
    index.set_nprobe(20)  # visiting every list makes IVF exact
    flat = EmbeddingIndex.build(x)
    q = x[:50]
    _, got = index.search(q, k=4)
    _, want = flat.search(q, k=4)
    np.testing.assert_array_equal(got, want)


def test_default_nlist_grows_like_sqrt() -> None:
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(10) == 1


def test_add_appends_rows_with_ids() -> None:
    x = _unit(50, 8)
    index = EmbeddingIndex.build(x[:40], np.arange(40) * 10)
    index.add(x[40:], np.arange(40, 50) * 10)
    assert len(index) == 50
    _, ids = index.search(x[45:46], k=1)
    assert ids[0, 0] == 450


def test_range_search_matches_brute_force() -> None:
    x = _unit(400, 6, seed=4)
    index = EmbeddingIndex.build(x)
    lims, sims, ids = index.range_search(x[:10], 0.8)
    brute = x[:10] @ x.T
    for i in range(10):
        got = set(ids[lims[i] : lims[i + 1]].tolist())
        assert got == set(np.flatnonzero(brute[i] > 0.8).tolist())
        assert np.all(sims[lims[i] : lims[i + 1]] > 0.8)


@pytest.mark.parametrize("ivf", [False, True])
def test_save_load_roundtrip(tmp_path: Path, ivf: bool) -> None:
    x = _unit(600, 12, seed=6)
    index = EmbeddingIndex.build(x, np.arange(600) + 7, ivf_threshold=500 if ivf else 10_000, nprobe=5)
    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.is_ivf == ivf and len(loaded) == 600 and loaded.nprobe == 5
    np.testing.assert_array_equal(loaded.ids_, index.ids_)
    a = index.search(x[:20], k=3)
    b = loaded.search(x[:20], k=3)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0])


def test_reconstruct_returns_stored_vectors() -> None:
    x = _unit(30, 4)
    index = EmbeddingIndex.build(x, np.arange(30)[::-1].copy())
    np.testing.assert_allclose(index.reconstruct(np.array([29, 0])), x[[0, 29]], atol=1e-6)


def _brute_pairs(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    sims = x @ x.T
    i, j = np.nonzero(np.triu(sims > threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("k", [None, 5])
def test_near_duplicates_finds_planted_copies(k: int | None) -> None:
    rng = np.random.default_rng(7)
    x = _unit(300, 32, seed=8)
    copies = x[[3, 50, 120]] + 0.01 * rng.standard_normal((3, 32)).astype(np.float32)
    pool = np.concatenate([x, copies])  # rows 300, 301, 302 duplicate 3, 50, 120
    pairs, sims = find_near_duplicates(pool, threshold=0.98, k=k, block_size=64)
    assert {tuple(p) for p in pairs.tolist()} == {(3, 300), (50, 301), (120, 302)}
    assert np.all(sims > 0.98) and np.all(np.diff(sims) <= 0)
    assert _brute_pairs(l2_normalize(pool), 0.98) == {tuple(p) for p in pairs.tolist()}


def test_near_duplicates_use_caller_ids_and_ivf_index() -> None:
    x = _unit(1200, 8, seed=9)
    x[1100] = x[10]
    ids = np.arange(1200) + 5000
    index = EmbeddingIndex.build(x, ids, ivf_threshold=1000, nlist=10)
    index.set_nprobe(10)
    pairs, _ = find_near_duplicates(x, threshold=0.999, ids=ids, index=index)
    assert [5010, 6100] in pairs.tolist()
    assert np.all(pairs[:, 0] < pairs[:, 1])


def test_near_duplicates_none_found() -> None:
    pairs, sims = find_near_duplicates(np.eye(5, dtype=np.float32), threshold=0.5)
    assert pairs.shape == (0, 2) and sims.shape == (0,)
