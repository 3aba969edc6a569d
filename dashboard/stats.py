"""Pure functions behind the dashboard: the stopping rule, annotator speed and inter-annotator agreement.

No database access here, so each rule can be tested on constructed numbers.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# --- Stopping rule ------------------------------------------------------------------------------------

WINDOW = 3  # classifier versions looked at
MIN_GAIN = 0.01  # macro-F1 the window must gain for labelling to still pay off
MIN_BATCHES = 2  # batches of labels the window must span, so a plateau is not a single noisy step
MAX_WIDTH = 0.2  # a wider 95% interval on the newest score: too few validation cells to call a plateau


def stopping_rule_text(
    window: int = WINDOW,
    min_gain: float = MIN_GAIN,
    min_batches: int = MIN_BATCHES,
    max_width: float = MAX_WIDTH,
) -> str:
    return (
        f"Stop labelling when the last {window} classifier versions together improved validation macro-F1 "
        f"by less than {min_gain:g} (newest minus the one {window - 1} versions earlier) while at least "
        f"{min_batches} batches of labels were added between them, and the newest version's 95% bootstrap "
        f"interval is at most {max_width:g} wide (a wider one means too few validation cells to tell a "
        "plateau from noise: add validation cells); also stop when the label budget is spent."
    )


STOPPING_RULE = stopping_rule_text()


@dataclass(frozen=True)
class CurvePoint:
    """One classifier version on the learning curve."""

    version: int
    labels: int
    macro_f1: float | None
    interval: tuple[float, float] | None = None  # 95% bootstrap interval of macro_f1


def stopping_signal(
    points: Sequence[CurvePoint],
    *,
    batch_size: int,
    budget_left: int | None = None,
    window: int = WINDOW,
    min_gain: float = MIN_GAIN,
    min_batches: int = MIN_BATCHES,
    max_width: float = MAX_WIDTH,
) -> dict[str, Any]:
    """Apply the stopping rule to the learning curve (any order; sorted by version here).

    Returns ``{"state": "stop" | "continue" | "too-early" | "too-noisy", "reason", "rule", "gain",
    "labels_added", "window": [versions]}``. Versions without a validation score are left out; a newest
    version without an interval is not held back by ``max_width``. ``budget_left`` <= 0 stops whatever
    the curve says.
    """
    rule = stopping_rule_text(window, min_gain, min_batches, max_width)
    scored = sorted((p for p in points if p.macro_f1 is not None), key=lambda p: p.version)
    out: dict[str, Any] = {"rule": rule, "gain": None, "labels_added": None, "window": []}
    if budget_left is not None and budget_left <= 0:
        return {**out, "state": "stop", "reason": "the label budget is spent"}
    if len(scored) < window:
        return {
            **out,
            "state": "too-early",
            "reason": f"{len(scored)} scored classifier version(s); the rule needs {window}",
        }
    last = scored[-window:]
    first_f1, last_f1 = float(last[0].macro_f1 or 0.0), float(last[-1].macro_f1 or 0.0)
    gain = last_f1 - first_f1
    added = last[-1].labels - last[0].labels
    needed = min_batches * max(batch_size, 1)
    out.update(gain=round(gain, 6), labels_added=added, window=[p.version for p in last])
    versions = f"v{last[0].version}→v{last[-1].version}"
    if added < needed:
        return {
            **out,
            "state": "continue",
            "reason": f"only {added} labels were added over {versions}; the rule needs {needed} "
            f"({min_batches} batches of {batch_size}) before calling a plateau",
        }
    width = last[-1].interval[1] - last[-1].interval[0] if last[-1].interval else None
    if gain < min_gain and width is not None and width > max_width:
        return {
            **out,
            "state": "too-noisy",
            "reason": f"macro-F1 changed by {gain:+.3f} over {versions}, but the newest score's 95% interval "
            f"is {width:.2f} wide (more than {max_width:g}): too few validation cells to tell a plateau "
            "from noise",
        }
    if gain < min_gain:
        return {
            **out,
            "state": "stop",
            "reason": f"macro-F1 changed by {gain:+.3f} over {versions} while {added} labels were added "
            f"(less than {min_gain:g}): the curve has flattened",
        }
    return {
        **out,
        "state": "continue",
        "reason": f"macro-F1 rose by {gain:+.3f} over {versions} with {added} labels: still learning",
    }


# --- Annotators -----------------------------------------------------------------------------------------

SESSION_GAP_SECONDS = 600.0  # a pause longer than this starts a new working session
MIN_SESSION_SECONDS = 60.0

ANNOTATOR_RULES = (
    "Labels per hour: an annotator's labels divided by their active time, the span of each working "
    f"session (a pause over {SESSION_GAP_SECONDS / 60:g} minutes starts a new one) plus the time spent on "
    f"its first label, at least {MIN_SESSION_SECONDS:g} s per session. Median seconds: the time the "
    "labelling page measured per label. Agreement: Cohen's kappa per pair of annotators over the cells "
    "both labelled (current labels, unsure flags left out); an annotator's kappa and raw agreement are "
    "the means over their pairs weighted by shared cells. Gold accuracy: of the gold cells hidden in an "
    "annotator's batches (a reviewer decided their label) that they labelled, the share they gave the "
    "reviewer's class (an unsure flag counts as not correct)."
)


@dataclass(frozen=True)
class LabelEvent:
    annotator: str
    created_at: datetime
    seconds_spent: float | None


def active_seconds(events: Sequence[LabelEvent]) -> float:
    """Working time of one annotator's labels (see ``ANNOTATOR_RULES``)."""
    ordered = sorted(events, key=lambda e: e.created_at)
    total = 0.0
    start: LabelEvent | None = None
    previous: LabelEvent | None = None
    for event in [*ordered, None]:
        if event is not None and previous is not None:
            gap = (event.created_at - previous.created_at).total_seconds()
            if gap <= SESSION_GAP_SECONDS:
                previous = event
                continue
        if start is not None and previous is not None:
            span = (previous.created_at - start.created_at).total_seconds() + (start.seconds_spent or 0.0)
            total += max(span, MIN_SESSION_SECONDS)
        start = previous = event
    return total


def annotator_speed(events: Sequence[LabelEvent]) -> dict[str, dict[str, Any]]:
    """{annotator: {"labels", "active_hours", "labels_per_hour", "median_seconds"}}."""
    by_person: dict[str, list[LabelEvent]] = defaultdict(list)
    for event in events:
        by_person[event.annotator].append(event)
    out: dict[str, dict[str, Any]] = {}
    for person, rows in sorted(by_person.items()):
        seconds = active_seconds(rows)
        timed = [e.seconds_spent for e in rows if e.seconds_spent is not None]
        out[person] = {
            "labels": len(rows),
            "active_hours": round(seconds / 3600.0, 4),
            "labels_per_hour": round(len(rows) / (seconds / 3600.0), 2) if seconds > 0 else None,
            "median_seconds": round(statistics.median(timed), 3) if timed else None,
        }
    return out


def pairwise_kappa(labels: Mapping[int, Mapping[str, str]], *, min_shared: int = 2) -> list[dict[str, Any]]:
    """Cohen's kappa for each pair of annotators over the cells both labelled.

    ``labels``: cell id -> {annotator: label}. Pairs sharing fewer than ``min_shared`` cells are left out.
    Kappa is None when undefined (both gave one and the same class to every shared cell).
    Returns ``[{"a", "b", "shared", "agreement", "kappa"}]`` sorted by pair.
    """
    from sklearn.metrics import cohen_kappa_score

    people = sorted({person for row in labels.values() for person in row})
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(people, 2):
        shared = sorted(cell for cell, row in labels.items() if a in row and b in row)
        if len(shared) < min_shared:
            continue
        la = [labels[cell][a] for cell in shared]
        lb = [labels[cell][b] for cell in shared]
        agreement = sum(x == y for x, y in zip(la, lb, strict=True)) / len(shared)
        kappa: float | None
        if len(set(la) | set(lb)) < 2:
            kappa = None  # chance agreement is 1: kappa is 0/0
        else:
            value = float(cohen_kappa_score(la, lb))
            kappa = None if math.isnan(value) else round(value, 6)
        pairs.append(
            {"a": a, "b": b, "shared": len(shared), "agreement": round(agreement, 6), "kappa": kappa}
        )
    return pairs


def mean_kappa_per_annotator(pairs: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Each annotator's kappa averaged over their pairs, weighted by shared cells (None: no defined pair)."""
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, int] = defaultdict(int)
    people: set[str] = set()
    for pair in pairs:
        people.update((pair["a"], pair["b"]))
        if pair["kappa"] is None:
            continue
        for person in (pair["a"], pair["b"]):
            sums[person] += pair["kappa"] * pair["shared"]
            weights[person] += pair["shared"]
    return {p: (round(sums[p] / weights[p], 6) if weights[p] else None) for p in sorted(people)}


def mean_agreement_per_annotator(pairs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each annotator's raw agreement over their pairs, weighted by shared cells."""
    agreed: dict[str, float] = defaultdict(float)
    shared: dict[str, int] = defaultdict(int)
    for pair in pairs:
        for person in (pair["a"], pair["b"]):
            agreed[person] += pair["agreement"] * pair["shared"]
            shared[person] += pair["shared"]
    return {p: round(agreed[p] / shared[p], 6) for p in sorted(shared) if shared[p]}
