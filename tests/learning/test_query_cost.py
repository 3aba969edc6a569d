"""Cost- and risk-aware acquisition on hand-built pools: the value per expected second by hand, cheaper
classes preferred at equal uncertainty, weighted classes preferred at equal cost, and the hybrid's own
choice when nothing is known."""

from __future__ import annotations

import numpy as np
import pytest

from learning.query import STRATEGIES, select, uncertain_diverse, value_per_second
from learning.query.cost import class_vector, cost_aware, deal_by_seconds


def test_value_per_second_by_hand() -> None:
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    seconds = np.array([10.0, 2.0])
    weights = np.array([3.0, 1.0])
    # expected weight / expected seconds: (0.5*3 + 0.5*1) / (0.5*10 + 0.5*2) = 2 / 6, 3 / 10, 1.5 / 4
    assert value_per_second(probs, seconds, weights) == pytest.approx([2 / 6, 3 / 10, 1.5 / 4])
    assert value_per_second(probs, None, None) == pytest.approx([1.0, 1.0, 1.0])
    assert value_per_second(probs, seconds, None) == pytest.approx([1 / 6, 1 / 10, 1 / 4])


@pytest.mark.parametrize(
    ("seconds", "weights", "message"),
    [
        (np.array([1.0]), None, "class_seconds"),
        (np.array([1.0, 0.0]), None, "class_seconds"),
        (None, np.array([1.0, -1.0]), "class_weights"),
    ],
)
def test_bad_seconds_or_weights_are_refused(
    seconds: np.ndarray | None, weights: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        value_per_second(np.full((2, 2), 0.5), seconds, weights)


def two_groups(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Half the pool predicted class 0, half class 1, every cell equally uncertain (margin 0.1). Large
    enough that the hybrid's 10 x n candidates fit in one half."""
    rng = np.random.default_rng(0)
    probs = np.empty((n, 2))
    probs[: n // 2] = [0.55, 0.45]
    probs[n // 2 :] = [0.45, 0.55]
    return probs, rng.normal(size=(n, 8)).astype(np.float32)


def test_at_equal_uncertainty_the_cheaper_class_is_bought() -> None:
    probs, emb = two_groups()
    picked = cost_aware(probs, emb, 20, labelled=None, rng=0, class_seconds=np.array([12.0, 3.0]))
    assert len(picked) == 20 and len(set(picked.tolist())) == 20
    assert (picked >= 500).mean() == 1.0  # all from the class predicted cheaper


def test_at_equal_cost_the_weighted_class_is_bought() -> None:
    probs, emb = two_groups()
    picked = cost_aware(probs, emb, 20, labelled=None, rng=0, class_weights=np.array([3.0, 1.0]))
    assert (picked < 500).mean() == 1.0


def test_knowing_nothing_it_is_the_hybrid() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=300)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    labelled = np.zeros(300, dtype=bool)
    labelled[:30] = True
    ours = select("cost_aware", n=24, embeddings=emb, probs=probs, labelled_mask=labelled, rng=5)
    hybrid = uncertain_diverse(probs, emb, 24, labelled=labelled, rng=5)
    assert ours.tolist() == hybrid.tolist()
    assert not set(ours.tolist()) & set(range(30))
    assert STRATEGIES["cost_aware"].needs_model


def test_class_vector_fills_unnamed_classes() -> None:
    assert class_vector({"blast": 3}, ["blast", "ig"], default=1.0).tolist() == [3.0, 1.0]
    assert class_vector(None, ["blast"], default=2.0).tolist() == [2.0]


def brute_force_least_seconds(expected: np.ndarray, sizes: list[int]) -> float:
    """The least total of ``expected`` (N, P) over every way to give ``sizes[p]`` cells to annotator p."""
    from itertools import permutations

    owners = [p for p, size in enumerate(sizes) for _ in range(size)]
    return min(
        float(sum(expected[cell, owner] for cell, owner in enumerate(order)))
        for order in set(permutations(owners))
    )


@pytest.mark.parametrize("seed", range(5))
def test_deal_by_seconds_is_the_cheapest_deal_of_all(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(4, 0.3), size=8)
    seconds = rng.uniform(1.0, 12.0, size=(3, 4))
    sizes = [3, 3, 2]
    dealt = deal_by_seconds(probs, seconds, sizes)
    assert [len(d) for d in dealt] == sizes
    assert sorted(np.concatenate(dealt).tolist()) == list(range(8))  # every cell once
    assert all((np.diff(d) > 0).all() for d in dealt)  # the strategy's order kept
    expected = probs @ seconds.T
    total = sum(float(expected[d, p].sum()) for p, d in enumerate(dealt))
    assert total == pytest.approx(brute_force_least_seconds(expected, sizes))
    # ...and round-robin, the deal without costs, is never cheaper.
    round_robin = sum(float(expected[p::3, p].sum()) for p in range(3))
    assert total <= round_robin + 1e-9


def test_each_annotator_gets_the_classes_they_are_quick_at() -> None:
    # Half the cells look like class 0, half like class 1; ana labels class 0 in 2 s and class 1 in 10 s,
    # ben the other way round.
    probs = np.array([[0.9, 0.1], [0.1, 0.9]] * 4)
    ana, ben = deal_by_seconds(probs, np.array([[2.0, 10.0], [10.0, 2.0]]), [4, 4])
    assert (probs[ana].argmax(axis=1) == 0).all() and (probs[ben].argmax(axis=1) == 1).all()


def test_where_nobody_is_quicker_the_deal_is_round_robins() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(3, 0.5), size=9)
    # Annotators alike on classes 0 and 2; only class 1 tells them apart, and these cells are not class 1.
    probs[:, 1] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    dealt = deal_by_seconds(probs, np.array([[4.0, 1.0, 6.0], [4.0, 9.0, 6.0], [4.0, 5.0, 6.0]]), [3, 3, 3])
    assert [d.tolist() for d in dealt] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


@pytest.mark.parametrize(
    ("seconds", "sizes", "message"),
    [
        (np.ones((2, 3)), [1, 1], "seconds must be"),
        (np.array([[1.0, 0.0], [1.0, 1.0]]), [1, 1], "seconds must be"),
        (np.ones((2, 2)), [2, 1], "sizes must be"),
        (np.ones((2, 2)), [1], "sizes must be"),
    ],
)
def test_bad_deals_are_refused(seconds: np.ndarray, sizes: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deal_by_seconds(np.full((2, 2), 0.5), seconds, sizes)
