"""Light classifiers on frozen embeddings, with probability columns aligned to a fixed class list.

The reference method (HemoSight preprint, stage 2) fits ``StandardScaler + SVC(kernel="linear",
probability=True)`` on the frozen self-supervised embedding, once for the cell type and once per
morphological attribute. This module offers that head and faster ones behind one interface:

- ``fit(X, y) -> self`` with ``X`` (N, D) float and ``y`` (N,) str labels from ``classes``;
- ``predict_proba(X) -> (N, C)`` with C = ``len(classes)`` in the order given, so arrays stay aligned
  with the project's taxonomy whatever subset of classes the labels happen to cover; a class never
  seen in training gets a column of zeros;
- ``predict(X) -> (N,)`` str.

Kinds (:data:`CLASSIFIER_KINDS`):

- ``"logreg"``: StandardScaler + multinomial logistic regression (L-BFGS). Calibrated by construction,
  robust with one example per class, fastest. The default.
- ``"svm"``: the reference's head: StandardScaler + ``SVC(kernel="linear")`` (libsvm) with Platt
  sigmoid calibration (Platt 1999) fit on ``min(3, smallest class count)``-fold cross-validated
  decision values and one final SVM on all labels (``CalibratedClassifierCV(..., ensemble=False)``,
  what scikit-learn 1.9 recommends in place of the deprecated ``probability=True``). When a class has
  a single example there is nothing held out to calibrate on, and a softmax of the one-vs-rest
  decision values is used instead. libsvm is quadratic in the number of labels: fine up to a few
  thousand; ``liblinear``'s LinearSVC was tried and is far slower here (hundreds of dual iterations
  on separable, standardised 512-d embeddings).
- ``"mlp"``: StandardScaler + one-hidden-layer ``MLPClassifier`` (ReLU, Adam, L2 ``alpha``).
- ``"boosted"``: ``HistGradientBoostingClassifier`` (shallow trees, 200 rounds at 0.05, L2 1): for a
  few dozen hand-made columns (the cell's measurements), where thresholds and interactions between
  columns carry what a linear head cannot (a vacuole share matters only inside the cytoplasm ring).
  Not for embeddings: trees on 1,280 correlated columns are slow and no better than a linear head.
- ``"forest"``: ``RandomForestClassifier`` (200 trees, 2 cells per leaf): the same use, a sixth of the
  boosted trees' fitting time on a few hundred cells.

Multi-task (:class:`MultiTaskClassifier`): the 9-way cell type plus one head per morphological
attribute (WBCAtt, Tsutsui et al., NeurIPS 2023); a cell without a value for a task (``''``) is
left out of that head's training set.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, Self

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

ClassifierKind = Literal["logreg", "svm", "mlp", "boosted", "forest"]
CLASSIFIER_KINDS: Final[tuple[str, ...]] = ("logreg", "svm", "mlp", "boosted", "forest")
CELL_TYPE_TASK: Final = "cell_type"
MISSING: Final = ""


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LinearKernelSVC(SVC):
    """``SVC(kernel="linear")`` whose decision function uses the primal weights, ``X @ coef_.T +
    intercept_``, instead of kernel evaluations against every support vector: the same values (checked
    in the tests) in O(N * D * pairs) rather than O(N * D * n_support), which makes re-scoring a 16k
    pool ~100x cheaper. Overrides scikit-learn's private ``_decision_function`` hook."""

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        if self.kernel != "linear":
            return np.asarray(super()._decision_function(X))
        X = self._validate_for_predict(X)
        dec = np.asarray(X @ np.asarray(self.coef_).T) + self.intercept_  # (N, n_classes * (n_classes-1) / 2)
        # For two classes scikit-learn stores coef_/intercept_ already sign-flipped and returns (N,).
        return dec.ravel() if len(self.classes_) == 2 else dec


class AlignedClassifier:
    """One classification head on frozen embeddings with ``predict_proba`` over fixed ``classes``.

    ``classes``: the full label list (e.g. the project's 9 cell types), in column order.
    ``kind``: see the module docstring. ``C``: inverse regularisation for logreg/svm.
    ``hidden``/``alpha``: MLP settings. ``max_iter``: solver iterations (logreg: L-BFGS steps, default
    1000; mlp: epochs, default 100, which bounds a refit on a few thousand labels to ~1-2 s).
    ``class_weight``: passed to the linear models (``"balanced"`` helps with skewed label sets).
    Fitted state: ``estimator_``, ``seen_`` (indices into ``classes`` of the labels seen in
    training), ``calibrated_``.
    """

    def __init__(
        self,
        classes: Sequence[str],
        kind: ClassifierKind = "logreg",
        *,
        C: float = 1.0,
        class_weight: str | None = None,
        hidden: tuple[int, ...] = (256,),
        alpha: float = 1e-3,
        max_iter: int | None = None,
        seed: int = 0,
    ) -> None:
        self.classes = list(classes)
        self.kind = kind
        self.C = C
        self.class_weight = class_weight
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.seed = seed

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _encode(self, y: np.ndarray) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(v) for v in y} - lookup.keys())
        if unknown:
            raise ValueError(f"labels {unknown} are not in the class list {self.classes}")
        return np.array([lookup[str(v)] for v in y], dtype=np.int64)

    def _make_estimator(self, counts: np.ndarray) -> tuple[BaseEstimator, bool]:
        """The sklearn estimator for this kind; second value: whether it outputs calibrated probs."""
        if self.kind == "logreg":
            iters = self.max_iter if self.max_iter is not None else 1000
            lr = LogisticRegression(C=self.C, max_iter=iters, class_weight=self.class_weight)
            return make_pipeline(StandardScaler(), lr), True
        if self.kind == "svm":
            svm = LinearKernelSVC(
                kernel="linear", C=self.C, class_weight=self.class_weight, random_state=self.seed
            )
            folds = int(min(3, counts.min()))
            if folds < 2:
                return make_pipeline(StandardScaler(), svm), False
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=cv, ensemble=False)
            return make_pipeline(StandardScaler(), calibrated), True
        if self.kind == "mlp":
            mlp = MLPClassifier(
                hidden_layer_sizes=self.hidden,
                alpha=self.alpha,
                max_iter=self.max_iter if self.max_iter is not None else 100,
                random_state=self.seed,
            )
            return make_pipeline(StandardScaler(), mlp), True
        if self.kind == "boosted":
            boosted = HistGradientBoostingClassifier(
                max_depth=3,
                learning_rate=0.05,
                max_iter=200,
                l2_regularization=1.0,
                # sklearn's 20 cells per leaf from 200 labels up; fewer below, or no tree could split.
                min_samples_leaf=int(min(20, max(2, counts.sum() // 10))),
                class_weight=self.class_weight,
                random_state=self.seed,
            )
            return boosted, True
        if self.kind == "forest":
            forest = RandomForestClassifier(
                n_estimators=200,
                min_samples_leaf=2,
                class_weight=self.class_weight,
                random_state=self.seed,
                n_jobs=1,
            )
            return forest, True
        raise ValueError(f"unknown classifier kind {self.kind!r}; choose from {CLASSIFIER_KINDS}")

    def fit(self, X: np.ndarray, y: np.ndarray | Sequence[str]) -> Self:
        """Fit on embeddings ``X`` (N, D) and labels ``y`` (N,) drawn from ``classes``."""
        X = np.asarray(X, dtype=np.float32)
        y_arr = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y_arr):
            raise ValueError(f"X must be (N, D) with N = len(y); got {X.shape} and {y_arr.shape}")
        if len(y_arr) == 0:
            raise ValueError("cannot fit on zero labels")
        codes = self._encode(y_arr)
        seen, counts = np.unique(codes, return_counts=True)
        self.seen_ = seen
        if len(seen) == 1:  # one class only: every cell is that class
            self.estimator_: BaseEstimator | None = None
            self.calibrated_ = True
            return self
        estimator, calibrated = self._make_estimator(counts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X, codes)
        self.estimator_ = estimator
        self.calibrated_ = calibrated
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (N, len(classes)); zero columns for classes never seen in training."""
        X = np.asarray(X, dtype=np.float32)
        out = np.zeros((len(X), self.n_classes), dtype=np.float32)
        if self.estimator_ is None:
            out[:, self.seen_[0]] = 1.0
            return out
        if self.calibrated_:
            p = self.estimator_.predict_proba(X)
            cols = np.asarray(self.estimator_.classes_, dtype=np.int64)
        else:
            d = self.estimator_.decision_function(X)
            p = _softmax(np.stack([-d, d], axis=1) / 2.0 if d.ndim == 1 else d)
            cols = np.asarray(self.estimator_.classes_, dtype=np.int64)
        out[:, cols] = p
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class name per row, (N,) str."""
        return np.asarray(self.classes, dtype=object)[self.predict_proba(X).argmax(axis=1)].astype(str)


def make_classifier(kind: ClassifierKind, classes: Sequence[str], **options: Any) -> AlignedClassifier:
    """Factory: ``AlignedClassifier(classes, kind, **options)``."""
    return AlignedClassifier(classes, kind, **options)


class MultiTaskClassifier:
    """Cell type plus one head per morphological attribute, each an :class:`AlignedClassifier`.

    ``cell_classes``: the cell-type list; ``attribute_classes``: attribute name -> its value list (the
    WBCAtt schema, say). ``fit(X, y_cell, attributes)``: ``y_cell`` (N,) str and ``attributes`` a dict
    attribute -> (N,) str; ``''`` marks a missing label and masks that cell out of that head. A head
    with no labels at all predicts a uniform distribution (listed in ``untrained_``).
    """

    def __init__(
        self,
        cell_classes: Sequence[str],
        attribute_classes: Mapping[str, Sequence[str]],
        kind: ClassifierKind = "logreg",
        **options: Any,
    ) -> None:
        if CELL_TYPE_TASK in attribute_classes:
            raise ValueError(f"{CELL_TYPE_TASK!r} is reserved for the cell-type head")
        self.cell_classes = list(cell_classes)
        self.attribute_classes = {k: list(v) for k, v in attribute_classes.items()}
        self.kind = kind
        self.options = options

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Task name -> class list, cell type first."""
        return {CELL_TYPE_TASK: self.cell_classes, **self.attribute_classes}

    def fit(
        self,
        X: np.ndarray,
        y_cell: np.ndarray | Sequence[str] | None,
        attributes: Mapping[str, np.ndarray | Sequence[str]] | None = None,
    ) -> Self:
        """Fit every head on the rows that carry its label. ``X``: (N, D)."""
        X = np.asarray(X, dtype=np.float32)
        labels: dict[str, np.ndarray | Sequence[str] | None] = {CELL_TYPE_TASK: y_cell}
        unknown = set(attributes or {}) - self.attribute_classes.keys()
        if unknown:
            raise ValueError(f"attributes {sorted(unknown)} are not in the schema")
        labels.update(attributes or {})
        self.heads_: dict[str, AlignedClassifier] = {}
        self.untrained_: list[str] = []
        for task, classes in self.tasks.items():
            y = labels.get(task)
            y_arr = np.full(len(X), MISSING, dtype=object) if y is None else np.asarray(y, dtype=object)
            if len(y_arr) != len(X):
                raise ValueError(f"{task}: {len(y_arr)} labels for {len(X)} rows")
            keep = np.array([v is not None and str(v) != MISSING for v in y_arr], dtype=bool)
            if not keep.any():
                self.untrained_.append(task)
                continue
            head = AlignedClassifier(classes, self.kind, **self.options)
            self.heads_[task] = head.fit(X[keep], y_arr[keep].astype(str))
        return self

    def predict_proba(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Task name -> (N, C_task) probabilities aligned with that task's class list."""
        out: dict[str, np.ndarray] = {}
        for task, classes in self.tasks.items():
            head = self.heads_.get(task)
            if head is None:
                out[task] = np.full((len(X), len(classes)), 1.0 / len(classes), dtype=np.float32)
            else:
                out[task] = head.predict_proba(X)
        return out

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Task name -> (N,) str predictions."""
        probs = self.predict_proba(X)
        return {
            task: np.asarray(self.tasks[task], dtype=object)[p.argmax(axis=1)].astype(str)
            for task, p in probs.items()
        }


__all__ = [
    "CELL_TYPE_TASK",
    "CLASSIFIER_KINDS",
    "MISSING",
    "AlignedClassifier",
    "ClassifierKind",
    "LinearKernelSVC",
    "MultiTaskClassifier",
    "make_classifier",
]
