"""The morphological attributes' heads: the embedding and the cell's measurements, each heard.

One class-balanced logistic regression per attribute on the embedding, one on the cell's measurements
(:mod:`learning.morphometry`: sizes, nucleus shape, colours), their probabilities averaged with
``measurement_weight``. Why two heads and not one on both: the (version-1) measurements were 20 columns
beside the embedding's 1,280, and a single regularised regression on the concatenation barely uses them (mean
attribute macro-F1 0.842 against 0.838 for the embedding alone, 4 fine-tunes on 810 labels,
``bench/attribute_features.py``), while each alone is right where the other is weak: the measurements on
cytoplasm colour (0.78 against 0.69) and nucleus shape (0.58 against 0.56), the embedding on cell shape,
vacuoles and granules. Averaged at 0.5: 0.857 (0.853-0.862 over the 4; 0.3: 0.848, 0.7: 0.853).

One weight for every attribute is a compromise: the measurements are the better voice on cytoplasm colour,
the embedding on cell shape. ``measurement_weight="cross-validated"`` chooses each attribute's weight from
:data:`WEIGHT_CHOICES` by the macro-F1 of out-of-fold predictions on the labelled cells, and keeps
:data:`MEASUREMENT_WEIGHT` unless another weight wins by :data:`CHOICE_MARGIN` (folds of a few hundred
cells are noisy: without the margin, the gain on cytoplasm colour was lost to chance picks elsewhere).
With the version-2 measurements, 4 fine-tunes on 810 labels (``bench/results/attribute_features_v2.json``):
0.862 at 0.5, 0.866 chosen (0.858 with the version-1 measurements at 0.5); cytoplasm colour 0.768 ->
0.807, nucleus shape 0.611 -> 0.628. Choosing costs 5 folds of 22 regressions (4.1-4.6 s against
0.6-1.0 s for one weight at about 435 cells, beside a running benchmark), so the product chooses when
the embedding changes and passes the chosen mapping to each retrain's heads.

``measurement_kind`` picks the measurement head (:mod:`learning.classifiers`' kinds): boosted trees
score 0.870 against 0.864 for the logistic one at 811 labels (3 loop runs, ``bench/loop_attribute_heads.py``)
but take 29 s to fit where the logistic heads take 0.7 s. The measurement heads do not depend on the
embedding, so they can be fitted once, away from the retrain that needs them
(:func:`fit_measurement_heads`), and handed to :meth:`FusedAttributeHeads.fit` as
``measurement_heads``: only the embedding heads are then fitted there. Choosing the weights with boosted
heads costs 5 folds of them (162-217 s against 4 s); ``weights_kind`` chooses them with logistic
measurement heads instead, and the boosted heads score as well with those weights (0.8741 against 0.8739
on the loop run where both were measured; 0.871 on the mean of 5 runs at 811 labels, against 0.866 for
the logistic heads: bench/README.md "Boosted measurement heads in the product"). The product
(:data:`PRODUCT_MEASUREMENT_KIND`, :data:`PRODUCT_WEIGHTS_KIND`) and its benchmark use that pair.

``attributes`` follow :class:`learning.classifiers.MultiTaskClassifier`'s convention: attribute -> (N,)
str, ``''`` where a cell has no value for it (that cell is left out of that head). Without
measurements (``None``) the heads are the embedding's alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final, Literal, Self

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold, StratifiedKFold

from learning.classifiers import MISSING, AlignedClassifier, ClassifierKind

# Measured on 4 fine-tunes of 810 labels (bench/attribute_features.py, bench/README.md).
MEASUREMENT_WEIGHT: Final = 0.5
# Inverse regularisation: a few hundred cells carry attributes at the label counts the loop works at.
ATTRIBUTE_C: Final = 0.1
# "cross-validated": the weights tried, the folds they are scored on, the margin a weight other than
# MEASUREMENT_WEIGHT must win by, and the fewest labelled cells an attribute needs before its weight is
# chosen (below it a fold holds a dozen cells, and MEASUREMENT_WEIGHT stands). Folds and margin were
# picked on the 4 fine-tunes of bench/results/attribute_features_v2.json (bench/README.md "Version-2
# measurements and a weight per attribute" says how far that makes its figure optimistic).
WEIGHT_CHOICES: Final = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
CHOICE_FOLDS: Final = 5
CHOICE_MARGIN: Final = 0.01
MIN_CELLS_TO_CHOOSE: Final = 60
# The product's measurement head, and the one its weights are chosen with (see the module docstring).
PRODUCT_MEASUREMENT_KIND: Final[ClassifierKind] = "boosted"
PRODUCT_WEIGHTS_KIND: Final[ClassifierKind] = "logreg"

# One weight for every attribute, "cross-validated", or attribute -> weight (chosen earlier; an
# attribute it does not name gets MEASUREMENT_WEIGHT).
WeightSetting = float | Literal["cross-validated"] | Mapping[str, float]


class FusedAttributeHeads:
    """Per attribute, an embedding head and a measurement head whose probabilities are averaged.

    ``schema``: attribute -> its values (the order of the probability columns). ``measurement_weight``:
    see :data:`WeightSetting` and the module docstring. ``measurement_kind``: the measurement head;
    ``weights_kind``: the measurement head ``"cross-validated"`` weights are chosen with
    (``measurement_kind`` when None). Fitted state: ``trained_`` (the attributes that
    had at least one labelled cell), ``weights_`` (attribute -> the weight used, where measurements were
    given).
    """

    def __init__(
        self,
        schema: Mapping[str, Sequence[str]],
        *,
        measurement_weight: WeightSetting = MEASUREMENT_WEIGHT,
        C: float = ATTRIBUTE_C,
        measurement_kind: ClassifierKind = "logreg",
        weights_kind: ClassifierKind | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(measurement_weight, Mapping):
            given = list(measurement_weight.values())
        else:
            given = [] if measurement_weight == "cross-validated" else [measurement_weight]
        if not all(isinstance(w, float | int) and 0.0 <= w <= 1.0 for w in given):
            raise ValueError('measurement_weight must lie in [0, 1] or be "cross-validated"')
        self.schema = {name: list(values) for name, values in schema.items()}
        self.measurement_weight = measurement_weight
        self.C = C
        self.measurement_kind = measurement_kind
        self.weights_kind = weights_kind or measurement_kind
        self.seed = seed

    def _head(self, values: list[str]) -> AlignedClassifier:
        return AlignedClassifier(values, "logreg", C=self.C, class_weight="balanced", seed=self.seed)

    def _measurement_head(self, values: list[str], kind: ClassifierKind | None = None) -> AlignedClassifier:
        return AlignedClassifier(
            values, kind or self.measurement_kind, C=self.C, class_weight="balanced", seed=self.seed
        )

    def _weight(
        self, name: str, values: list[str], embeddings: np.ndarray, measurements: np.ndarray, y: np.ndarray
    ) -> float:
        setting = self.measurement_weight
        if isinstance(setting, Mapping):
            return float(setting.get(name, MEASUREMENT_WEIGHT))
        if setting == "cross-validated":
            return self._chosen_weight(values, embeddings, measurements, y)
        return float(setting)

    def _chosen_weight(
        self, values: list[str], embeddings: np.ndarray, measurements: np.ndarray, y: np.ndarray
    ) -> float:
        """The weight of :data:`WEIGHT_CHOICES` whose out-of-fold averaged probabilities score the best
        macro-F1 on ``y``, if it beats :data:`MEASUREMENT_WEIGHT` by :data:`CHOICE_MARGIN`."""
        if len(y) < MIN_CELLS_TO_CHOOSE:
            return MEASUREMENT_WEIGHT
        _, counts = np.unique(y, return_counts=True)
        folds = (
            StratifiedKFold(CHOICE_FOLDS, shuffle=True, random_state=self.seed)
            if counts.min() >= CHOICE_FOLDS
            else KFold(CHOICE_FOLDS, shuffle=True, random_state=self.seed)
        )
        from_embedding = np.zeros((len(y), len(values)))
        from_measurements = np.zeros((len(y), len(values)))
        for train, held_out in folds.split(embeddings, y):
            emb_head = self._head(values).fit(embeddings[train], y[train])
            from_embedding[held_out] = emb_head.predict_proba(embeddings[held_out])
            meas_head = self._measurement_head(values, self.weights_kind).fit(measurements[train], y[train])
            from_measurements[held_out] = meas_head.predict_proba(measurements[held_out])
        names = np.asarray(values, dtype=object)
        scores = {
            w: float(
                f1_score(
                    y,
                    names[((1 - w) * from_embedding + w * from_measurements).argmax(axis=1)].astype(str),
                    average="macro",
                )
            )
            for w in WEIGHT_CHOICES
        }
        best = max(WEIGHT_CHOICES, key=lambda w: (round(scores[w], 6), -abs(w - MEASUREMENT_WEIGHT)))
        return best if scores[best] >= scores[MEASUREMENT_WEIGHT] + CHOICE_MARGIN else MEASUREMENT_WEIGHT

    def fit(
        self,
        embeddings: np.ndarray,
        measurements: np.ndarray | None,
        attributes: Mapping[str, np.ndarray | Sequence[str]],
        *,
        measurement_heads: Mapping[str, AlignedClassifier] | None = None,
    ) -> Self:
        """``embeddings`` (N, D), ``measurements`` (N, M) or None, ``attributes`` as the module says.

        ``measurement_heads``: attribute -> a measurement head fitted earlier
        (:func:`fit_measurement_heads`, possibly on other cells), used as it is instead of one fitted
        here; a head whose values are not the schema's is refused. Not with ``"cross-validated"``
        weights, which score heads fitted on folds of these cells."""
        prefitted = dict(measurement_heads or {})
        if prefitted and self.measurement_weight == "cross-validated":
            raise ValueError('prefitted measurement heads need given weights, not "cross-validated"')
        for name, head in prefitted.items():
            if list(head.classes) != self.schema.get(name):
                raise ValueError(f"{name}: the prefitted head's values are not the schema's")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if measurements is not None and len(measurements) != len(embeddings):
            raise ValueError(f"{len(measurements)} measurement rows for {len(embeddings)} embeddings")
        unknown = set(attributes) - self.schema.keys()
        if unknown:
            raise ValueError(f"attributes {sorted(unknown)} are not in the schema")
        self.embedding_heads_: dict[str, AlignedClassifier] = {}
        self.measurement_heads_: dict[str, AlignedClassifier] = {}
        self.trained_: list[str] = []
        self.weights_: dict[str, float] = {}
        m = None if measurements is None else np.asarray(measurements, dtype=np.float32)
        for name, values, y, keep in _carried(self.schema, attributes, len(embeddings), "rows"):
            self.embedding_heads_[name] = self._head(values).fit(embeddings[keep], y[keep])
            if m is not None:
                self.measurement_heads_[name] = prefitted.get(name) or self._measurement_head(values).fit(
                    m[keep], y[keep]
                )
                self.weights_[name] = self._weight(name, values, embeddings[keep], m[keep], y[keep])
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
                w = self.weights_[name]
                p = (1 - w) * p + w * head.predict_proba(np.asarray(measurements, dtype=np.float32))
            out[name] = p
        return out

    def predict(self, embeddings: np.ndarray, measurements: np.ndarray | None) -> dict[str, np.ndarray]:
        """Attribute -> (N,) the most probable value."""
        return {
            name: np.asarray(self.schema[name], dtype=object)[p.argmax(axis=1)].astype(str)
            for name, p in self.predict_proba(embeddings, measurements).items()
        }


def fit_measurement_heads(
    schema: Mapping[str, Sequence[str]],
    measurements: np.ndarray,
    attributes: Mapping[str, np.ndarray | Sequence[str]],
    *,
    kind: ClassifierKind,
    C: float = ATTRIBUTE_C,
    seed: int = 0,
) -> dict[str, AlignedClassifier]:
    """Attribute -> the measurement head :class:`FusedAttributeHeads` of ``measurement_kind=kind`` would
    fit on these cells, for the attributes at least one of them carries (``measurements`` (N, M),
    ``attributes`` as the module says)."""
    heads = FusedAttributeHeads(schema, C=C, measurement_kind=kind, seed=seed)
    m = np.asarray(measurements, dtype=np.float32)
    return {
        name: heads._measurement_head(values).fit(m[keep], y[keep])
        for name, values, y, keep in _carried(heads.schema, attributes, len(m), "measurement rows")
    }


def _carried(
    schema: Mapping[str, list[str]], attributes: Mapping[str, np.ndarray | Sequence[str]], n: int, rows: str
) -> Iterator[tuple[str, list[str], np.ndarray, np.ndarray]]:
    """(attribute, its values, the (N,) str targets, the mask of cells with one of those values) for
    each attribute of ``schema`` that ``attributes`` gives and at least one of the ``n`` cells carries;
    a column of another length is refused (``rows`` names what it was measured against)."""
    for name, values in schema.items():
        given = attributes.get(name)
        if given is None:
            continue
        y = np.asarray(given, dtype=object).astype(str)
        if len(y) != n:
            raise ValueError(f"{name}: {len(y)} values for {n} {rows}")
        keep = (y != MISSING) & np.isin(y, values)
        if keep.any():
            yield name, values, y, keep


__all__ = [
    "ATTRIBUTE_C",
    "CHOICE_MARGIN",
    "MEASUREMENT_WEIGHT",
    "MIN_CELLS_TO_CHOOSE",
    "PRODUCT_MEASUREMENT_KIND",
    "PRODUCT_WEIGHTS_KIND",
    "WEIGHT_CHOICES",
    "FusedAttributeHeads",
    "WeightSetting",
    "fit_measurement_heads",
]
