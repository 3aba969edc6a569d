"""The morphological attributes' heads: the embedding and the cell's measurements, each heard.

One class-balanced logistic regression per attribute on the embedding, one on the cell's measurements
(:mod:`learning.morphometry`: sizes, nucleus shape, colours), their probabilities averaged with
``measurement_weight``. Why two heads and not one on both: the measurements are 20 columns beside the
embedding's 1,280, and a single regularised regression on the concatenation barely uses them (mean
attribute macro-F1 0.842 against 0.838 for the embedding alone, 4 fine-tunes on 810 labels,
``bench/attribute_features.py``), while each alone is right where the other is weak: the measurements on
cytoplasm colour (0.78 against 0.69) and nucleus shape (0.58 against 0.56), the embedding on cell shape,
vacuoles and granules. Averaged at 0.5: 0.857 (0.853-0.862 over the 4; 0.3: 0.848, 0.7: 0.853).

``attributes`` follow :class:`learning.classifiers.MultiTaskClassifier`'s convention: attribute -> (N,)
str, ``''`` where a cell has no value for it (that cell is left out of that head). Without
measurements (``None``) the heads are the embedding's alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Self

import numpy as np

from learning.classifiers import MISSING, AlignedClassifier

# Measured on 4 fine-tunes of 810 labels (bench/attribute_features.py, bench/README.md).
MEASUREMENT_WEIGHT: Final = 0.5
# Inverse regularisation: a few hundred cells carry attributes at the label counts the loop works at.
ATTRIBUTE_C: Final = 0.1


class FusedAttributeHeads:
    """Per attribute, an embedding head and a measurement head whose probabilities are averaged.

    ``schema``: attribute -> its values (the order of the probability columns). Fitted state:
    ``trained_`` (the attributes that had at least one labelled cell).
    """

    def __init__(
        self,
        schema: Mapping[str, Sequence[str]],
        *,
        measurement_weight: float = MEASUREMENT_WEIGHT,
        C: float = ATTRIBUTE_C,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= measurement_weight <= 1.0:
            raise ValueError("measurement_weight must lie in [0, 1]")
        self.schema = {name: list(values) for name, values in schema.items()}
        self.measurement_weight = measurement_weight
        self.C = C
        self.seed = seed

    def _head(self, values: list[str]) -> AlignedClassifier:
        return AlignedClassifier(values, "logreg", C=self.C, class_weight="balanced", seed=self.seed)

    def fit(
        self,
        embeddings: np.ndarray,
        measurements: np.ndarray | None,
        attributes: Mapping[str, np.ndarray | Sequence[str]],
    ) -> Self:
        """``embeddings`` (N, D), ``measurements`` (N, M) or None, ``attributes`` as the module says."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if measurements is not None and len(measurements) != len(embeddings):
            raise ValueError(f"{len(measurements)} measurement rows for {len(embeddings)} embeddings")
        unknown = set(attributes) - self.schema.keys()
        if unknown:
            raise ValueError(f"attributes {sorted(unknown)} are not in the schema")
        self.embedding_heads_: dict[str, AlignedClassifier] = {}
        self.measurement_heads_: dict[str, AlignedClassifier] = {}
        self.trained_: list[str] = []
        for name, values in self.schema.items():
            given = attributes.get(name)
            if given is None:
                continue
            y = np.asarray(given, dtype=object).astype(str)
            if len(y) != len(embeddings):
                raise ValueError(f"{name}: {len(y)} values for {len(embeddings)} rows")
            keep = (y != MISSING) & np.isin(y, values)
            if not keep.any():
                continue
            self.embedding_heads_[name] = self._head(values).fit(embeddings[keep], y[keep])
            if measurements is not None:
                m = np.asarray(measurements, dtype=np.float32)
                self.measurement_heads_[name] = self._head(values).fit(m[keep], y[keep])
            self.trained_.append(name)
        return self

    def predict_proba(self, embeddings: np.ndarray, measurements: np.ndarray | None) -> dict[str, np.ndarray]:
        """Attribute -> (N, len(values)) probabilities, for the trained attributes only."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        out: dict[str, np.ndarray] = {}
        for name in self.trained_:
            p = self.embedding_heads_[name].predict_proba(embeddings)
            head = self.measurement_heads_.get(name)
            if head is not None and measurements is not None:
                w = self.measurement_weight
                p = (1 - w) * p + w * head.predict_proba(np.asarray(measurements, dtype=np.float32))
            out[name] = p
        return out

    def predict(self, embeddings: np.ndarray, measurements: np.ndarray | None) -> dict[str, np.ndarray]:
        """Attribute -> (N,) the most probable value."""
        return {
            name: np.asarray(self.schema[name], dtype=object)[p.argmax(axis=1)].astype(str)
            for name, p in self.predict_proba(embeddings, measurements).items()
        }


__all__ = ["ATTRIBUTE_C", "MEASUREMENT_WEIGHT", "FusedAttributeHeads"]
