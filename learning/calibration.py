"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

One scalar ``T`` divides the classifier's logits, ``softmax(z / T)``; it is fitted by minimising the
negative log-likelihood of held-out cells. ``T > 1`` softens over-confident probabilities, ``T < 1``
sharpens under-confident ones, and the predicted class never changes (the ranking within a row is kept).

The classifiers here give probabilities, not logits; ``log p`` serves as the logits (a softmax of
``log p`` is ``p`` again), so ``softmax(log p / T)`` is ``p ** (1 / T)`` renormalised. A probability of
exactly 0 (a class the classifier never saw in training) stays 0 at every temperature.

- :func:`apply_temperature`: probabilities (N, C) and T -> calibrated probabilities;
- :func:`fit_temperature`: probabilities and true class indices -> T (bounded 1-D search over log T);
- :func:`calibrate`: the rule the loop applies at each retrain: fit on the validation cells when there
  are enough of them (else T = 1, with the reason), ECE and NLL before and after; a T that would raise
  the ECE is replaced by the T of least ECE (:func:`ece_temperature`);
- :class:`TemperatureScaled`: a fitted classifier whose ``predict_proba`` is calibrated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
from scipy.optimize import minimize_scalar

from learning.evaluation import expected_calibration_error

# Fewer validation cells than this (in all, or of one class present among them): T stays 1.
MIN_CELLS: Final = 20
MIN_PER_CLASS: Final = 2
# The search range of T. Beyond it the model is either nearly uniform or nearly one-hot anyway.
T_BOUNDS: Final = (0.05, 20.0)


def _log(probs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, dtype=np.float64))


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)  # exp(-inf) = 0: impossible classes stay impossible
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` row by row, in the dtype of ``probs``; T = 1 returns them unchanged."""
    p = np.asarray(probs)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature == 1.0 or p.size == 0:
        return p
    return _softmax_rows(_log(p) / temperature).astype(p.dtype, copy=False)


def _informative(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rows whose likelihood depends on T: the true class has a probability above 0 (a class never seen in
    training keeps 0 at every T) and the row is not one-hot (a one-hot row stays one-hot)."""
    p = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(p))
    valid = (truth >= 0) & (truth < p.shape[1])
    true_p = np.zeros(len(p))
    true_p[valid] = p[rows[valid], truth[valid]]
    return np.asarray(valid & (true_p > 0) & ((p > 0).sum(axis=1) > 1))


def negative_log_likelihood(probs: np.ndarray, truth: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true classes (indices) under ``apply_temperature(probs, T)``, over the rows that
    inform T (see :func:`fit_temperature`); 0.0 when there are none."""
    keep = _informative(probs, np.asarray(truth, dtype=np.int64))
    if not keep.any():
        return 0.0
    z = _log(np.asarray(probs)[keep]) / temperature
    z = z - z.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_norm = np.log(np.exp(z).sum(axis=1))
    true_z = z[np.arange(len(z)), np.asarray(truth, dtype=np.int64)[keep]]
    return float(np.mean(log_norm - true_z))


def fit_temperature(
    probs: np.ndarray, truth: np.ndarray | Sequence[int], *, bounds: tuple[float, float] = T_BOUNDS
) -> float:
    """The T in ``bounds`` that minimises the NLL of ``truth`` (class indices (N,)) under
    ``apply_temperature(probs, T)``: a bounded Brent search over log T (the NLL is smooth and, for a
    softmax, convex in 1 / T). Rows that cannot inform T (true class at probability 0, one-hot rows)
    are left out; with none left, T = 1."""
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if len(p) != len(t):
        raise ValueError(f"{len(p)} rows of probabilities for {len(t)} labels")
    if not _informative(p, t).any():
        return 1.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(p, t, float(np.exp(log_t))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    best = float(np.exp(result.x))
    # Brent's search never evaluates the ends exactly; keep T = 1 when it is no worse than the optimum.
    if negative_log_likelihood(p, t, 1.0) <= negative_log_likelihood(p, t, best):
        return 1.0
    return best


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` decided, JSON-able with :meth:`to_dict`.

    ``status``: ``"fitted"`` or ``"skipped"`` (then ``temperature`` is 1 and ``reason`` says why);
    ``ece_before``/``ece_after``: top-label ECE (15 bins) of the uncalibrated and calibrated
    probabilities on the same cells T was fitted on (an in-sample figure: it shows what the fit did,
    not how it generalises); likewise ``nll_before``/``nll_after``. ``criterion``: ``"nll"`` (T minimises
    the NLL, Guo et al.) or ``"ece"`` (that T raised the ECE, so the T of least ECE was taken instead).
    """

    temperature: float
    status: str
    reason: str
    n: int
    ece_before: float | None
    ece_after: float | None
    nll_before: float | None
    nll_after: float | None
    criterion: str = "nll"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("ece_before", "ece_after", "nll_before", "nll_after"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 6)
        out["temperature"] = round(float(out["temperature"]), 6)
        return out


def calibrate(
    probs: np.ndarray,
    y_true: np.ndarray | Sequence[str],
    classes: Sequence[str],
    *,
    min_cells: int = MIN_CELLS,
    min_per_class: int = MIN_PER_CLASS,
) -> Calibration:
    """Fit T on held-out cells: ``probs`` (N, C) with columns ``classes``, ``y_true`` (N,) labels.

    Skipped (T = 1) with fewer than ``min_cells`` cells, or when a class present among them has fewer
    than ``min_per_class``: too little to fit on, and a T fitted on a handful of cells moves every
    confidence the annotators see."""
    p = np.asarray(probs, dtype=np.float64)
    labels = [str(v) for v in np.asarray(y_true)]
    lookup = {c: i for i, c in enumerate(classes)}
    truth = np.array([lookup.get(v, -1) for v in labels], dtype=np.int64)
    n = len(labels)
    ece_before = expected_calibration_error(p, truth) if n else None
    nll_before = negative_log_likelihood(p, truth) if n else None
    counts = Counter(labels)
    reason = ""
    if n < min_cells:
        reason = f"{n} validation cells, fewer than {min_cells}"
    elif min(counts.values()) < min_per_class:
        few = sorted(c for c, k in counts.items() if k < min_per_class)
        reason = f"fewer than {min_per_class} validation cells of {', '.join(few)}"
    elif not _informative(p, truth).any():
        reason = "no validation cell informs the temperature (one class only, or unseen classes)"
    if reason:
        return Calibration(1.0, "skipped", reason, n, ece_before, ece_before, nll_before, nll_before)
    temperature = fit_temperature(p, truth)
    ece_after = expected_calibration_error(apply_temperature(p, temperature), truth)
    criterion = "nll"
    if ece_before is not None and ece_after > ece_before:
        # A model confidently wrong on some cells (few labels, many features): the NLL-optimal T flattens
        # every row to cut those cells' loss, and the model ends under-confident everywhere (the demo at
        # 144 labels: T 12, ECE 0.28 -> 0.47), so a confidence threshold hides every suggestion. The
        # confidences people read should match how often they are right: take the T of least ECE.
        temperature, ece_after = ece_temperature(p, truth)
        criterion = "ece"
    return Calibration(
        temperature,
        "fitted",
        "",
        n,
        ece_before,
        ece_after,
        nll_before,
        negative_log_likelihood(p, truth, temperature),
        criterion,
    )


def ece_temperature(
    probs: np.ndarray, truth: np.ndarray, *, bounds: tuple[float, float] = T_BOUNDS, steps: int = 121
) -> tuple[float, float]:
    """(T, ECE) of the T in ``bounds`` with the least top-label ECE, on a log-spaced grid that includes
    T = 1 (ECE is piecewise constant in T, so a grid, not a derivative-based search); ties go to the T
    closest to 1."""
    grid = np.unique(np.concatenate([np.geomspace(bounds[0], bounds[1], steps), [1.0]]))
    scores = np.array([expected_calibration_error(apply_temperature(probs, float(t)), truth) for t in grid])
    best = np.flatnonzero(scores <= scores.min() + 1e-12)
    t = float(grid[best[np.argmin(np.abs(np.log(grid[best])))]])
    return t, float(scores.min())


class TemperatureScaled:
    """A fitted classifier (e.g. :class:`learning.classifiers.AlignedClassifier`) with calibrated
    probabilities: ``predict_proba(X) = apply_temperature(base.predict_proba(X), temperature)``. Every
    other attribute (``classes``, ``kind``, ``estimator_`` ...) is the base's, so code that folds the
    model into a linear head reads ``temperature`` and divides the head by it
    (:func:`learning.saliency.linear_head_from_classifier`)."""

    def __init__(self, base: Any, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.base = base
        self.temperature = float(temperature)

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return apply_temperature(self.base.predict_proba(X), self.temperature)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Unchanged by the temperature; the base's own prediction."""
        return np.asarray(self.base.predict(X))


__all__ = [
    "MIN_CELLS",
    "MIN_PER_CLASS",
    "T_BOUNDS",
    "Calibration",
    "TemperatureScaled",
    "apply_temperature",
    "calibrate",
    "fit_temperature",
    "negative_log_likelihood",
]
