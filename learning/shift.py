"""Shift detection per source: do a source's cells look like the labelled ones, and does the model
behave on them as it does on the cells it was checked on?

Three signals, each against the project's own reference, so that a figure means the same on any
encoder:

- **distance**: the median cosine distance from each of the source's cells to its nearest labelled cell,
  over the same figure for the labelled cells themselves (each to its nearest *other* labelled cell).
  A ratio near 1: the source sits among the labels; well above: it lies where no expert has labelled.
- **class mix**: the total-variation distance between the classes the model predicts on the source and
  the class mix of the labelled cells (0: the same mix, 1: no class in common). A healthy smear of another
  lab predicted as a third blasts moves this.
- **confidence drop**: the model's mean top probability (calibrated) on the validation cells minus that
  on the source's cells.
- **unlike share**: the share of the source's cells farther from every labelled cell than
  :data:`ABSTAIN_RATIO` units of :class:`LabelledNeighbourhood` (the cells the page withholds its
  suggestion on). Unlike the median ratio it keeps its meaning on a fine-tuned embedding, whose labelled
  cells sit in tight class clusters: there another lab's cells lie only 1.5-1.6x as far as labelled cells
  from each other (below "caution"), while 55-65% of them are unlike every labelled cell against 2-5% of
  held-out cells of the training sources (bench/README.md, "Shift report per source").

Levels (``ok``, ``caution``, ``untrusted``) come from fixed thresholds on those three, chosen from the
shared data (``bench/shift_report.py``): held-out cells of the big training source stay ``ok``, cells of
another lab come out ``untrusted``. They are a warning for people, not a statistical test, and were set
on one encoder (ImageNet features): a project's own encoder may need others.

Never imports Django.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np

from learning.evaluation import macro_f1
from learning.index import EmbeddingIndex

# (caution, untrusted) thresholds of each signal, from bench/shift_report.py (bench/README.md): on
# ImageNet Lite0 features held-out pbc cells gave a distance ratio of 0.95, held-out munich_aml cells
# (fewer labelled neighbours) 1.9, another lab's cells 4.0.
DISTANCE_RATIO: Final = (2.0, 3.0)
# The class mix alone never makes a source untrusted: a source may truly have another mix (the AML
# cohort's cells are half blasts, a distance of 0.68 from the labelled mix while the model is right).
MIX_DISTANCE: Final = (0.35, float("inf"))
# The same data showed the model *more* confident on the other lab's cells (0.81 against 0.70), so a drop
# is a warning when it happens but its absence proves nothing.
CONFIDENCE_DROP: Final = (0.08, 0.15)
# Share of a source's cells the model abstains on: 2-5% on held-out cells of the training sources, about
# half or more of another lab's on frozen and fine-tuned embeddings alike.
UNLIKE_SHARE: Final = (0.15, 0.30)
LEVELS: Final = ("ok", "caution", "untrusted")
# Per cell: one whose nearest labelled cell lies farther away than ABSTAIN_RATIO units is unlike anything
# an expert labelled, and the model abstains there instead of forcing a class. The unit
# (LabelledNeighbourhood.reference_distance) is the distance within which ABSTAIN_QUANTILE of the
# labelled cells have their nearest labelled neighbour, over ABSTAIN_RATIO: the rule is "farther than
# 98% of labelled cells lie from each other", whatever the embedding. The first unit, the median of those
# distances, held on frozen ImageNet features (bench/cell_crop.py: 1.8% of held-out cells abstained on,
# 45% of another lab's) but not on a fine-tuned embedding, whose labelled cells sit in tight class
# clusters: there it abstained on no cell of the other lab and let 22.8% of them be called blasts; with
# the quantile unit 2.6% of held-out cells and 46% of the other lab's are abstained on, and 5.4% of the
# other lab's are called blasts on one fine-tune (10.8% over three; bench/README.md).
# A second rule holds per class: a cell the model calls c must also lie as close to its CLASS_NEIGHBOURS-th
# nearest labelled c cell as 98% of the labelled c cells do to theirs (LabelledNeighbourhood.by_class).
# A cell near some labelled cell but among no labelled blasts is not answered "blast". The third
# neighbour, not the first: one stray labelled blast near another lab's cells no longer vouches for them.
# On the fine-tuned embedding (810 labels, 3 fine-tunes) the other lab's healthy cells answered "blast"
# fell from 10.8% to 2.9% (first neighbour: 7.3%), for 4.4% of held-out cells abstained on instead of
# 2.6% (bench/abstention_rules.py, bench/README.md); in the product's own loop at 811 labels (5 seeds)
# from 30.7% to 7.9%, for 1.0% of held-out cells abstained on instead of 0.6%; with the confidence
# threshold below as well, as the page and the exports apply it, 5.2% for 3.6% of held-out cells (five
# more runs, bench/loop_abstention_rules.py). Classes with CLASS_NEIGHBOURS labelled cells or fewer have
# only the global rule.
ABSTAIN_RATIO: Final = 2.5
ABSTAIN_QUANTILE: Final = 0.98
CLASS_NEIGHBOURS: Final = 3
# Below this calibrated confidence the model does not answer either (Project.suggestion_min_confidence's
# default: the labelling page shows no suggestion, the exports say it abstained).
SUGGESTION_MIN_CONFIDENCE: Final = 0.6


@dataclass(frozen=True)
class SourceShift:
    source: str
    cells: int
    labelled: int
    median_distance: float
    distance_ratio: float
    predicted_mix: dict[str, float]
    mix_distance: float
    mean_confidence: float
    confidence_drop: float
    level: str
    reasons: list[str]
    unlike_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShiftReference:
    """What every source is compared with: the labelled cells' embeddings and classes, and the model's
    mean top probability on the validation cells."""

    embeddings: np.ndarray
    labels: Sequence[str]
    validation_confidence: float
    classes: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.embeddings) < 2:
            raise ValueError("the shift report needs at least two labelled cells")
        if len(self.labels) != len(self.embeddings):
            raise ValueError(f"{len(self.embeddings)} embeddings for {len(self.labels)} labels")

    def mix(self) -> dict[str, float]:
        return class_mix(self.labels, self.classes)


def class_mix(labels: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    counts = dict.fromkeys(classes, 0)
    for name in labels:
        counts[name] = counts.get(name, 0) + 1
    total = max(sum(counts.values()), 1)
    return {name: counts[name] / total for name in counts}


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    names = set(a) | set(b)
    return 0.5 * sum(abs(a.get(n, 0.0) - b.get(n, 0.0)) for n in names)


def nearest_other_distance(
    index: EmbeddingIndex, queries: np.ndarray, query_ids: np.ndarray, k: int = 1
) -> np.ndarray:
    """Cosine distance from each query to its k-th nearest indexed vector that is not itself (same id);
    2 (the largest) where the index holds fewer than k others."""
    if not len(queries):
        return np.zeros(0, dtype=np.float32)
    scores, ids = index.search(queries, k=k + 1)
    own = ids == np.asarray(query_ids)[:, None]
    # Drop each query's own entry (at most one), else the last: the k-th of the rest is column k - 1.
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones(scores.shape, dtype=bool)
    keep[np.arange(len(scores)), drop] = False
    kth = scores[keep].reshape(len(scores), k)[:, k - 1]
    return np.clip(1.0 - kth, 0.0, 2.0)


def _level(value: float, thresholds: tuple[float, float]) -> int:
    return 2 if value >= thresholds[1] else 1 if value >= thresholds[0] else 0


def source_shift(
    *,
    reference: ShiftReference,
    reference_index: EmbeddingIndex,
    reference_distance: float,
    source: str,
    embeddings: np.ndarray,
    cell_ids: np.ndarray,
    probabilities: np.ndarray,
    labelled: int = 0,
    labelled_cells: LabelledNeighbourhood | None = None,
) -> SourceShift:
    """The report of one source's cells (``embeddings`` L2-normalised, ``probabilities`` over
    ``reference.classes``). ``reference_index`` holds the labelled cells under their cell ids and
    ``reference_distance`` is :func:`reference_median_distance` of it; ``labelled_cells`` (the same
    cells as a :class:`LabelledNeighbourhood`, with their classes for the per-class rule) adds the unlike
    share: the share of the source's cells the model abstains on, as the labelling page does."""
    if len(embeddings) == 0:
        raise ValueError(f"source {source!r} has no cells in the index")
    distances = nearest_other_distance(reference_index, embeddings, cell_ids)
    distance = float(np.median(distances))
    ratio = distance / max(reference_distance, 1e-6)
    predicted = [reference.classes[i] for i in probabilities.argmax(axis=1)]
    unlike = (
        float((labelled_cells.ratios(embeddings, cell_ids, predicted=predicted) > ABSTAIN_RATIO).mean())
        if labelled_cells is not None
        else None
    )
    mix = class_mix(predicted, reference.classes)
    mix_distance = total_variation(mix, reference.mix())
    confidence = float(probabilities.max(axis=1).mean())
    drop = reference.validation_confidence - confidence
    grades = {
        "distance": _level(ratio, DISTANCE_RATIO),
        "mix": _level(mix_distance, MIX_DISTANCE),
        "confidence": _level(drop, CONFIDENCE_DROP),
        "unlike": _level(unlike, UNLIKE_SHARE) if unlike is not None else 0,
    }
    reasons = []
    if grades["unlike"]:
        reasons.append(
            f"{unlike:.0%} of its cells are unlike the labelled cells, or those of the class the model "
            "calls them (the model withholds its suggestion on those)"
        )
    if grades["distance"]:
        reasons.append(
            f"its cells lie {ratio:.1f}x as far from the nearest labelled cell as labelled cells lie "
            "from each other"
        )
    if grades["mix"]:
        top = max(mix, key=lambda n: mix[n] - reference.mix().get(n, 0.0))
        reasons.append(
            f"the model calls {mix[top]:.0%} of them {top} against {reference.mix().get(top, 0.0):.0%} "
            "among the labelled cells"
        )
    if grades["confidence"]:
        reasons.append(
            f"the model's mean confidence is {confidence:.0%} here against "
            f"{reference.validation_confidence:.0%} on the validation cells"
        )
    return SourceShift(
        source=source,
        cells=len(embeddings),
        labelled=labelled,
        median_distance=round(distance, 4),
        distance_ratio=round(ratio, 3),
        predicted_mix={n: round(v, 4) for n, v in mix.items()},
        mix_distance=round(mix_distance, 4),
        mean_confidence=round(confidence, 4),
        confidence_drop=round(drop, 4),
        level=LEVELS[max(grades.values())],
        reasons=reasons,
        unlike_share=round(unlike, 4) if unlike is not None else None,
    )


def reference_median_distance(index: EmbeddingIndex, embeddings: np.ndarray, ids: np.ndarray) -> float:
    """Median distance from each labelled cell to its nearest other labelled cell."""
    return float(np.median(nearest_other_distance(index, embeddings, ids)))


@dataclass(frozen=True)
class LabelledNeighbourhood:
    """The labelled cells as a neighbourhood to measure other cells against: a FAISS index of their
    embeddings under their ids, and the unit of distance its ratios are in (:data:`ABSTAIN_QUANTILE`
    of the labelled cells' distances to their nearest labelled neighbour, over :data:`ABSTAIN_RATIO`).
    ``by_class``: the same per labelled class (classes with at least two labelled cells), so that a
    cell is also measured against the labelled cells of the class the model calls it.

    The one place that builds this, for the loop's batch (suggestions withheld on unlike cells), the
    exported predictions (``abstained``) and the abstention benchmark, so the three agree on the rule."""

    index: EmbeddingIndex
    reference_distance: float
    by_class: Mapping[str, LabelledNeighbourhood] = field(default_factory=dict)
    neighbour: int = 1  # which nearest labelled cell a cell is measured to (1: the nearest)

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        ids: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        neighbour: int = 1,
    ) -> LabelledNeighbourhood | None:
        """From the labelled cells' L2-normalised embeddings (``ids``: their cell ids, default 0..N-1;
        ``labels``: their class names, for the per-class rule; ``neighbour``: which nearest labelled cell
        to measure to); None with ``neighbour`` cells or fewer, where no such distance between labelled
        cells exists."""
        if len(embeddings) <= neighbour:
            return None
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        keys = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        index = EmbeddingIndex.build(vectors, keys)
        by_class: dict[str, LabelledNeighbourhood] = {}
        if labels is not None:
            names = np.asarray(labels).astype(str)
            for name in np.unique(names):
                hood = cls.build(vectors[names == name], keys[names == name], neighbour=CLASS_NEIGHBOURS)
                if hood is not None:  # too few labelled cells of the class: the global rule only
                    by_class[str(name)] = hood
        unit = cls.unit(nearest_other_distance(index, vectors, keys, neighbour))
        return cls(index, unit, by_class, neighbour)

    @staticmethod
    def unit(own_distances: np.ndarray) -> float:
        """The unit of distance from the labelled cells' distances to their nearest labelled neighbour."""
        return float(np.quantile(own_distances, ABSTAIN_QUANTILE)) / ABSTAIN_RATIO

    def ratios(
        self,
        embeddings: np.ndarray,
        cell_ids: np.ndarray | None = None,
        predicted: Sequence[str] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Each cell's distance to its nearest labelled cell in this neighbourhood's unit (above
        :data:`ABSTAIN_RATIO`: abstain); ``cell_ids`` name cells that may be labelled ones (never their
        own neighbour); None: cells outside the labelled set. With ``predicted`` (the class the model
        calls each cell) and classes in :attr:`by_class`, the larger of that and the cell's ratio
        against the labelled cells of its predicted class (to the :data:`CLASS_NEIGHBOURS`-th nearest),
        in that class's unit."""
        ids = np.full(len(embeddings), -1, dtype=np.int64) if cell_ids is None else np.asarray(cell_ids)
        distance = nearest_other_distance(self.index, embeddings, ids, self.neighbour)
        ratios = distance.astype(np.float64) / max(self.reference_distance, 1e-6)
        if predicted is None or not self.by_class or not len(embeddings):
            return ratios
        names = np.asarray(predicted).astype(str)
        for name, hood in self.by_class.items():
            asked = names == name
            if asked.any():
                ratios[asked] = np.maximum(ratios[asked], hood.ratios(embeddings[asked], ids[asked]))
        return ratios


# The ratios an abstention report scores, around the product's ABSTAIN_RATIO.
ABSTAIN_RATIOS: Final = (1.5, 2.0, 2.5, 3.0)


def abstention(
    labelled: np.ndarray,
    test: np.ndarray,
    external: np.ndarray,
    y_test: np.ndarray,
    pred_test: np.ndarray,
    pred_external: np.ndarray,
    labelled_labels: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """How abstaining on cells unlike every labelled one plays out (``labelled``, ``test``, ``external``:
    L2-normalised embeddings): per rule, the share of test and external cells abstained on, the test
    macro-F1 over the cells answered, the share of the test blasts abstained on, and the share of all
    external cells answered "blast" (another lab's healthy cells called blasts: the false alarm that
    matters).

    Rules: ``"product"``, :class:`LabelledNeighbourhood` as the platform uses it (per class too when
    ``labelled_labels`` are given); ``"global"``, the same without the per-class rule; ``"median:<r>"``
    for r in :data:`ABSTAIN_RATIOS`, the earlier unit (abstain beyond r median labelled-to-labelled
    distances); ``"labelled_q<q>"``, beyond the q-quantile of the labelled cells' own distances to their
    nearest labelled neighbour (the global rule is q = :data:`ABSTAIN_QUANTILE`); ``"held_out_q<q>"``,
    beyond that quantile of half the test cells' distances (the other half scored)."""
    if len(labelled) < 2:
        raise ValueError("abstention needs at least two labelled cells")
    vectors = np.ascontiguousarray(labelled, dtype=np.float32)
    keys = np.arange(len(vectors), dtype=np.int64)
    hood = LabelledNeighbourhood.build(vectors, keys, labelled_labels)
    assert hood is not None  # two labelled cells or more
    index = hood.index  # the global rule's: every labelled cell, nearest neighbour
    own = nearest_other_distance(index, vectors, keys)

    def distances(cells: np.ndarray) -> np.ndarray:  # cells outside the labelled set: id -1
        return nearest_other_distance(index, cells, np.full(len(cells), -1, dtype=np.int64))

    test_distance, external_distance = distances(test), distances(external)
    every = np.ones(len(test), dtype=bool)

    def answered(kept: np.ndarray, external_kept: np.ndarray, scored: np.ndarray = every) -> dict[str, float]:
        return abstention_row(kept, external_kept, y_test, pred_test, pred_external, scored)

    def row(limit: float, scored: np.ndarray = every) -> dict[str, float]:
        limits = {"distance_limit": round(float(limit), 4)}
        return limits | answered(test_distance <= limit, external_distance <= limit, scored)

    out = {
        "product": answered(
            hood.ratios(test, predicted=pred_test) <= ABSTAIN_RATIO,
            hood.ratios(external, predicted=pred_external) <= ABSTAIN_RATIO,
        ),
        "global": row(ABSTAIN_RATIO * LabelledNeighbourhood.unit(own)),
    }
    median = float(np.median(own))
    out |= {f"median:{r:g}": row(r * median) for r in ABSTAIN_RATIOS}
    half = np.random.default_rng(0).permutation(len(test)) < len(test) // 2
    for q in (0.95, 0.98, 0.99):
        out[f"labelled_q{q:g}"] = row(float(np.quantile(own, q)))
        out[f"held_out_q{q:g}"] = row(float(np.quantile(test_distance[half], q)), ~half)
    return out


def abstention_row(
    test_kept: np.ndarray,
    external_kept: np.ndarray,
    y_test: np.ndarray,
    pred_test: np.ndarray,
    pred_external: np.ndarray,
    scored: np.ndarray | None = None,
) -> dict[str, float]:
    """One rule's figures from the cells it answers (``test_kept``, ``external_kept``: True where the
    model answers): shares of test (``scored`` ones only, default all) and external cells abstained on,
    the test macro-F1 over the cells answered, the share of the test blasts abstained on, and the share of
    all external cells answered "blast"."""
    y_test, pred_test, pred_external = np.asarray(y_test), np.asarray(pred_test), np.asarray(pred_external)
    scored = np.ones(len(y_test), dtype=bool) if scored is None else scored
    kept, blasts = test_kept & scored, (y_test == "blast") & scored
    return {
        "test_abstain": round(float(1 - test_kept[scored].mean()), 4),
        "test_macro_f1_answered": round(macro_f1(y_test[kept], pred_test[kept]), 4)
        if kept.any()
        else float("nan"),  # every test cell abstained on: nothing answered to score
        "test_blasts_abstained": round(float(1 - test_kept[blasts].mean()), 4) if blasts.any() else 0.0,
        "external_abstain": round(float(1 - external_kept.mean()), 4),
        "external_answered_blast": round(float((external_kept & (pred_external == "blast")).mean()), 4),
    }


def warning_text(shift: SourceShift) -> str:
    """One plain sentence for the dashboard."""
    if shift.level == "ok":
        return f"{shift.source}: the model behaves here as on the cells it was checked on."
    verdict = (
        "do not trust the model's calls here yet"
        if shift.level == "untrusted"
        else "check the model's calls here before relying on them"
    )
    return f"{shift.source}: {verdict}: " + "; ".join(shift.reasons) + ". Label some of these cells."
