"""Scoring a large pool a chunk at a time gives the probabilities of scoring it whole."""

from __future__ import annotations

import numpy as np
import pytest

from learning.calibration import TemperatureScaled
from learning.classifiers import AlignedClassifier
from loop.handlers import retraining


def test_pool_probabilities_in_chunks_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    emb = rng.standard_normal((100, 8)).astype(np.float32)
    labels = np.array(classes)[rng.integers(0, 3, 100)]
    clf = TemperatureScaled(AlignedClassifier(classes, "logreg").fit(emb, labels), 1.7)
    rows = np.sort(rng.choice(100, 61, replace=False))
    whole = clf.predict_proba(emb[rows])
    monkeypatch.setattr(retraining, "SCORE_CHUNK", 7)  # 9 chunks, the last one short
    chunked = retraining.pool_probabilities(clf, emb, rows)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    assert chunked.shape == (61, 3)
    assert retraining.pool_probabilities(clf, emb, rows[:0]).shape == (0, 3)
