"""The fused attribute heads: the embedding's and the measurements' probabilities, averaged."""

from __future__ import annotations

import numpy as np
import pytest

from learning.attribute_heads import (
    MEASUREMENT_WEIGHT,
    MIN_CELLS_TO_CHOOSE,
    WEIGHT_CHOICES,
    FusedAttributeHeads,
    fit_measurement_heads,
)
from learning.classifiers import AlignedClassifier

SCHEMA = {"cell_size": ["small", "big"], "granularity": ["yes", "no"]}


def problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The embedding knows granularity, the measurements know the size; one cell in five has no size."""
    rng = np.random.default_rng(seed)
    n = 200
    size = rng.integers(0, 2, n)
    grain = rng.integers(0, 2, n)
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    emb[:, 0] += 3 * grain
    meas = rng.normal(size=(n, 4)).astype(np.float32)
    meas[:, 0] += 3 * size
    sizes = np.array(["small", "big"])[size].astype(object)
    sizes[::5] = ""
    return emb, meas, {"cell_size": sizes.astype(str), "granularity": np.array(["no", "yes"])[grain]}


def test_the_weight_chooses_between_the_two_heads() -> None:
    emb, meas, attrs = problem()
    only_emb = FusedAttributeHeads(SCHEMA, measurement_weight=0.0).fit(emb, meas, attrs)
    only_meas = FusedAttributeHeads(SCHEMA, measurement_weight=1.0).fit(emb, meas, attrs)
    half = FusedAttributeHeads(SCHEMA, measurement_weight=0.5).fit(emb, meas, attrs)
    p0, p1, ph = (h.predict_proba(emb, meas) for h in (only_emb, only_meas, half))
    for name in SCHEMA:
        np.testing.assert_allclose(ph[name], (p0[name] + p1[name]) / 2, atol=1e-6)
        np.testing.assert_allclose(ph[name].sum(axis=1), 1.0, atol=1e-6)
    # Each head is right where its input knows the answer.
    truth = attrs["cell_size"] != ""
    size_meas = (only_meas.predict(emb, meas)["cell_size"] == attrs["cell_size"])[truth].mean()
    size_emb = (only_emb.predict(emb, meas)["cell_size"] == attrs["cell_size"])[truth].mean()
    assert size_meas > 0.9 and size_emb < 0.75
    assert (half.predict(emb, meas)["cell_size"] == attrs["cell_size"])[truth].mean() > size_emb


def test_the_embedding_head_is_the_plain_balanced_regression() -> None:
    emb, _meas, attrs = problem(1)
    heads = FusedAttributeHeads(SCHEMA, measurement_weight=0.5, C=0.1).fit(emb, None, attrs)
    keep = attrs["cell_size"] != ""
    plain = AlignedClassifier(SCHEMA["cell_size"], "logreg", C=0.1, class_weight="balanced").fit(
        emb[keep], attrs["cell_size"][keep]
    )
    # Without measurements (None at fit or at predict) only the embedding speaks.
    fused = heads.predict_proba(emb, None)["cell_size"]
    np.testing.assert_allclose(fused, plain.predict_proba(emb), atol=1e-6)


def test_unlabelled_attributes_are_not_trained_and_bad_input_is_refused() -> None:
    emb, meas, attrs = problem()
    heads = FusedAttributeHeads(SCHEMA).fit(emb, meas, {"cell_size": attrs["cell_size"]})
    assert heads.trained_ == ["cell_size"] and set(heads.predict(emb, meas)) == {"cell_size"}
    with pytest.raises(ValueError, match="not in the schema"):
        FusedAttributeHeads(SCHEMA).fit(emb, meas, {"colour": attrs["cell_size"]})
    with pytest.raises(ValueError, match="measurement rows"):
        FusedAttributeHeads(SCHEMA).fit(emb, meas[:10], attrs)
    with pytest.raises(ValueError, match="measurement_weight"):
        FusedAttributeHeads(SCHEMA, measurement_weight=1.5)


def test_cross_validated_weights_lean_on_the_head_that_knows_each_attribute() -> None:
    emb, meas, attrs = problem(2)
    chosen = FusedAttributeHeads(SCHEMA, measurement_weight="cross-validated").fit(emb, meas, attrs)
    # Size is in the measurements only: the out-of-fold scores push its weight to their side.
    assert chosen.weights_["cell_size"] > MEASUREMENT_WEIGHT
    # Granularity is in the embedding only, and the uninformed measurement head cannot flip a two-valued
    # answer at any weight: no weight wins by the margin, and the default stands.
    assert chosen.weights_["granularity"] == MEASUREMENT_WEIGHT
    assert set(chosen.weights_.values()) <= set(WEIGHT_CHOICES)
    # And what predict uses is the chosen weight.
    only_emb = FusedAttributeHeads(SCHEMA, measurement_weight=0.0).fit(emb, meas, attrs)
    only_meas = FusedAttributeHeads(SCHEMA, measurement_weight=1.0).fit(emb, meas, attrs)
    w = chosen.weights_["cell_size"]
    expected = (1 - w) * only_emb.predict_proba(emb, meas)["cell_size"] + w * only_meas.predict_proba(
        emb, meas
    )["cell_size"]
    np.testing.assert_allclose(chosen.predict_proba(emb, meas)["cell_size"], expected, atol=1e-6)


def test_too_few_labelled_cells_keep_the_default_weight() -> None:
    emb, meas, attrs = problem(4)
    few = {name: values[: MIN_CELLS_TO_CHOOSE - 10] for name, values in attrs.items()}
    heads = FusedAttributeHeads(SCHEMA, measurement_weight="cross-validated").fit(
        emb[: MIN_CELLS_TO_CHOOSE - 10], meas[: MIN_CELLS_TO_CHOOSE - 10], few
    )
    assert heads.weights_ == dict.fromkeys(SCHEMA, MEASUREMENT_WEIGHT)
    # Without measurements there is nothing to weigh.
    assert (
        FusedAttributeHeads(SCHEMA, measurement_weight="cross-validated").fit(emb, None, attrs).weights_ == {}
    )


def test_a_boosted_measurement_head_reads_what_a_linear_one_cannot() -> None:
    # "Vacuolated" only where both measurements are high or both low (an interaction, XOR-like): no
    # linear head can read it, shallow trees can. The embedding knows nothing of it.
    rng = np.random.default_rng(3)
    n = 400
    meas = rng.normal(size=(n, 3)).astype(np.float32)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    value = np.where((meas[:, 0] > 0) == (meas[:, 1] > 0), "yes", "no")
    schema = {"vacuoles": ["yes", "no"]}
    train, test = slice(0, 300), slice(300, n)

    def accuracy(kind: str) -> float:
        heads = FusedAttributeHeads(schema, measurement_weight=1.0, measurement_kind=kind)  # type: ignore[arg-type]
        heads.fit(emb[train], meas[train], {"vacuoles": value[train]})
        return float((heads.predict(emb[test], meas[test])["vacuoles"] == value[test]).mean())

    assert accuracy("logreg") < 0.65
    assert accuracy("boosted") > 0.85


def test_measurement_heads_fitted_earlier_are_used_as_they_are() -> None:
    emb, meas, attrs = problem(5)
    # Fitted on the first half only, as heads fitted a batch ago know fewer cells.
    early = fit_measurement_heads(
        SCHEMA, meas[:100], {name: values[:100] for name, values in attrs.items()}, kind="logreg"
    )
    assert set(early) == set(SCHEMA)
    weights = {"cell_size": 0.7, "granularity": 0.5}
    given = FusedAttributeHeads(SCHEMA, measurement_weight=weights).fit(
        emb, meas, attrs, measurement_heads=early
    )
    assert given.measurement_heads_["cell_size"] is early["cell_size"]
    # The embedding heads are still fitted on every cell: the fusion is those with the early heads.
    own = FusedAttributeHeads(SCHEMA, measurement_weight=0.0).fit(emb, meas, attrs)
    expected = 0.3 * own.predict_proba(emb, meas)["cell_size"] + 0.7 * early["cell_size"].predict_proba(meas)
    np.testing.assert_allclose(given.predict_proba(emb, meas)["cell_size"], expected, atol=1e-6)
    # Heads fitted here on every cell differ from the early ones: the early heads were not refitted.
    refitted = FusedAttributeHeads(SCHEMA, measurement_weight=weights).fit(emb, meas, attrs)
    assert not np.allclose(
        refitted.predict_proba(emb, meas)["cell_size"], given.predict_proba(emb, meas)["cell_size"]
    )
    # An attribute without an early head gets one fitted here.
    partial = FusedAttributeHeads(SCHEMA, measurement_weight=weights).fit(
        emb, meas, attrs, measurement_heads={"cell_size": early["cell_size"]}
    )
    assert set(partial.measurement_heads_) == set(SCHEMA)


def test_early_heads_must_match_the_schema_and_given_weights() -> None:
    emb, meas, attrs = problem(6)
    early = fit_measurement_heads(SCHEMA, meas, attrs, kind="logreg")
    with pytest.raises(ValueError, match="cross-validated"):
        FusedAttributeHeads(SCHEMA, measurement_weight="cross-validated").fit(
            emb, meas, attrs, measurement_heads=early
        )
    other = {"cell_size": ["small", "medium", "big"], "granularity": ["yes", "no"]}
    with pytest.raises(ValueError, match="not the schema"):
        FusedAttributeHeads(other).fit(emb, meas, attrs, measurement_heads=early)
    with pytest.raises(ValueError, match="measurement rows"):
        fit_measurement_heads(SCHEMA, meas[:10], attrs, kind="logreg")
    # Only attributes some cell carries get a head.
    assert set(fit_measurement_heads(SCHEMA, meas, {"granularity": attrs["granularity"]}, kind="logreg")) == {
        "granularity"
    }


def test_weights_can_be_chosen_with_one_head_and_used_with_another() -> None:
    emb, meas, attrs = problem(7)
    logistic = FusedAttributeHeads(SCHEMA, measurement_weight="cross-validated").fit(emb, meas, attrs)
    boosted = FusedAttributeHeads(SCHEMA, measurement_weight="cross-validated", measurement_kind="boosted")
    boosted.fit(emb, meas, attrs)
    mixed = FusedAttributeHeads(
        SCHEMA, measurement_weight="cross-validated", measurement_kind="boosted", weights_kind="logreg"
    ).fit(emb, meas, attrs)
    # The weights are the logistic chooser's, the heads that answer are the boosted ones.
    assert mixed.weights_ == logistic.weights_
    assert all(head.kind == "boosted" for head in mixed.measurement_heads_.values())
    np.testing.assert_allclose(
        mixed.predict_proba(emb, meas)["cell_size"],
        FusedAttributeHeads(SCHEMA, measurement_weight=mixed.weights_, measurement_kind="boosted")
        .fit(emb, meas, attrs)
        .predict_proba(emb, meas)["cell_size"],
        atol=1e-6,
    )
    # Chosen with boosted heads, the out-of-fold scores differ, and so may the weights; the chooser ran.
    assert set(boosted.weights_) == set(SCHEMA)
