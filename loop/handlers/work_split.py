"""Split work (``Project.split_work``): one batch per annotator from the same ranking.

Each annotator without an open batch gets one. The strategy chooses the query cells for all of them in one
run (so the diversity term spreads them over the pool and no two annotators get the same cell), and the
picks are dealt round-robin, so every batch has some of the top-ranked cells. With the cost-aware
strategy they are dealt by each annotator's own seconds per class instead (``learning.query.cost.
deal_by_seconds``): the team's fewest expected seconds for the same cells. Then each batch gets:

- an **agreement sample** (``overlap_fraction``): cells another annotator has in a batch (this job's
  fresh ones first, then their open batches, then their submitted ones), each shown to one second
  annotator at most. Two labels of the same cell say how far annotators agree, and a disagreement goes to
  the reviewer queue (``annotation.labels``);
- **gold cells** (``gold_fraction``): cells a reviewer decided, which this annotator has not labelled, to
  measure their accuracy. Their reviewer decision stays final, so a gold label trains nothing new.

Both are mixed in at random positions among the query cells and look like them on the page (the purpose
is recorded on the item and shown to leads only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from annotation.models import Annotation, Cell, Membership, Project
from jobs.models import Job
from loop.handlers.querying import Choice
from loop.handlers.training_set import rows_of
from loop.models import QueryBatch, QueryItem


@dataclass(frozen=True)
class Shares:
    """How one batch of ``size`` cells divides: query cells, agreement cells, gold cells."""

    query: int
    overlap: int
    gold: int

    @classmethod
    def of(cls, project: Project) -> Shares:
        size = project.query_batch_size
        # At least one cell of every batch comes from the strategy, so the loop keeps learning.
        gold = min(round(project.gold_fraction * size), size - 1)
        overlap = min(round(project.overlap_fraction * size), size - 1 - gold)
        return cls(query=size - overlap - gold, overlap=overlap, gold=gold)


def recipients(project: Project, job: Job) -> list[int]:
    """Who gets a batch now: every member not paused and without an open batch of their own, among the
    project's annotators, the member whose submit (or page) asked for this job, and the members named in
    its ``for_users``. Reviewers, leads and admins label too, but get a batch only when they ask for one,
    so that nobody's queue holds cells for someone who does not label."""
    members = {
        m.user_id: m
        for m in Membership.objects.filter(project=project, labelling_paused=False).only("user_id", "role")
    }
    wanted = {uid for uid, m in members.items() if m.role == Membership.Role.ANNOTATOR}
    asked = [job.created_by_id, *(job.params or {}).get("for_users", [])]
    wanted.update(int(uid) for uid in asked if uid is not None and int(uid) in members)
    busy = set(
        QueryBatch.objects.filter(
            project=project, assignee_id__in=wanted, submitted_at__isnull=True
        ).values_list("assignee_id", flat=True)
    )
    return sorted(wanted - busy)


def deal(rows: np.ndarray, people: int) -> list[np.ndarray]:
    """The strategy's picks dealt round-robin in its order: every batch gets some top-ranked cells."""
    return [rows[i::people] for i in range(people)]


@dataclass
class OverlapPool:
    """Cells that may be shown to a second annotator, in the order they are offered, with the annotator
    who has them; each is given out once."""

    offers: list[tuple[int, int]]  # (cell id, annotator who has it)
    given: set[int]

    @classmethod
    def build(cls, project: Project, fresh: Mapping[int, Sequence[int]]) -> OverlapPool:
        """``fresh``: this job's query cells per annotator, offered first; then the cells of the others'
        open batches (newest first), then their submitted ones. A cell already in two annotators'
        batches, or a reviewer already decided, is not offered."""
        offers: list[tuple[int, int]] = []
        for user_id, cells in fresh.items():
            offers.extend((int(c), user_id) for c in cells)
        items = (
            QueryItem.objects.filter(
                batch__project=project, batch__assignee__isnull=False, skipped_at__isnull=True
            )
            .order_by("batch__submitted_at", "-batch__number", "rank")  # open ones (NULL) first
            .values_list("cell_id", "batch__assignee_id", "batch__submitted_at")
        )
        counts: dict[int, int] = {}
        rows = list(items)
        for cell_id, _user, _submitted in rows:
            counts[cell_id] = counts.get(cell_id, 0) + 1
        decided = set(
            Annotation.objects.filter(
                cell__project=project, origin=Annotation.Origin.REVIEW, superseded_by__isnull=True
            ).values_list("cell_id", flat=True)
        )
        open_rows = [r for r in rows if r[2] is None]
        submitted_rows = [r for r in rows if r[2] is not None]
        for cell_id, user_id, _submitted in [*open_rows, *submitted_rows]:
            if counts[cell_id] == 1 and cell_id not in decided:
                offers.append((int(cell_id), int(user_id)))
        return cls(offers, set())

    def take(self, user_id: int, n: int, refuse: set[int]) -> list[int]:
        """Up to ``n`` cells someone else has, none in ``refuse`` (this annotator's own)."""
        taken: list[int] = []
        for cell_id, owner in self.offers:
            if len(taken) == n:
                break
            if owner == user_id or cell_id in self.given or cell_id in refuse:
                continue
            taken.append(cell_id)
            self.given.add(cell_id)
        return taken


def gold_candidates(project: Project) -> np.ndarray:
    """Pool cells whose label a reviewer decided (a current ``review`` annotation with an active class)."""
    return np.array(
        sorted(
            set(
                Annotation.objects.filter(
                    cell__project=project,
                    cell__role=Cell.Role.POOL,
                    origin=Annotation.Origin.REVIEW,
                    superseded_by__isnull=True,
                    label__retired_at__isnull=True,
                ).values_list("cell_id", flat=True)
            )
        ),
        dtype=np.int64,
    )


def seen_by(project: Project, user_id: int) -> set[int]:
    """Cells this annotator labelled or has in a batch: never offered to them as agreement or gold."""
    labelled = Annotation.objects.filter(cell__project=project, annotator_id=user_id).values_list(
        "cell_id", flat=True
    )
    queued = QueryItem.objects.filter(batch__project=project, batch__assignee_id=user_id).values_list(
        "cell_id", flat=True
    )
    return set(labelled) | set(queued)


@dataclass(frozen=True)
class PlannedBatch:
    assignee: int
    choice: Choice
    purposes: list[str]  # QueryItem.Purpose of each row of ``choice.rows``


# rows -> (scores, suggested class indices, confidences, distance ratios), each None without a model
Describe = Callable[
    [np.ndarray], tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]
]


def plan_batches(
    *,
    project: Project,
    people: list[int],
    query_rows: np.ndarray,
    strategy: str,
    ids: np.ndarray,
    describe: Describe,
    seed: int,
    dealt: list[np.ndarray] | None = None,
) -> list[PlannedBatch]:
    """One batch per annotator in ``people``. ``query_rows``: the strategy's picks for all of them (rows
    of the index ``ids``), in its order. ``describe(rows)`` gives the model's view of any rows: scores,
    suggested class indices, confidences and distance ratios (each None without a model). ``dealt``:
    each person's share of ``query_rows`` when dealt otherwise than round-robin (by seconds, with the
    cost-aware strategy)."""
    shares = Shares.of(project)
    dealt = deal(query_rows, len(people)) if dealt is None else dealt
    fresh = {user: [int(ids[r]) for r in rows] for user, rows in zip(people, dealt, strict=True)}
    overlap = OverlapPool.build(project, fresh) if shares.overlap else None
    gold = gold_candidates(project) if shares.gold else np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    planned = []
    for user, rows in zip(people, dealt, strict=True):
        seen = seen_by(project, user) | set(fresh[user])
        extra_cells: list[tuple[int, str]] = []
        if overlap is not None:
            extra_cells += [(c, QueryItem.Purpose.OVERLAP) for c in overlap.take(user, shares.overlap, seen)]
        if len(gold):
            unseen = np.array([c for c in gold if int(c) not in seen], dtype=np.int64)
            picked = rng.choice(unseen, size=min(shares.gold, len(unseen)), replace=False)
            extra_cells += [(int(c), QueryItem.Purpose.GOLD) for c in picked]
        extra_ids = np.array([c for c, _ in extra_cells], dtype=np.int64)
        extra_rows, found = rows_of(ids, extra_ids) if len(extra_ids) else (extra_ids, extra_ids.astype(bool))
        extra_purposes = [p for (_, p), ok in zip(extra_cells, found, strict=True) if ok]
        # The extra cells go to random places among the query cells, which keep the strategy's order.
        merged_rows: list[int] = [int(r) for r in rows]
        merged_purposes = [str(QueryItem.Purpose.QUERY)] * len(rows)
        total = len(merged_rows) + len(extra_rows)
        slots = np.sort(rng.choice(total, size=len(extra_rows), replace=False))
        for slot, row, purpose in zip(slots, extra_rows, extra_purposes, strict=True):
            merged_rows.insert(int(slot), int(row))
            merged_purposes.insert(int(slot), str(purpose))
        all_rows = np.asarray(merged_rows, dtype=np.int64)
        scores, suggestions, confidences, ratios = describe(all_rows)
        planned.append(
            PlannedBatch(
                user, Choice(strategy, all_rows, scores, suggestions, confidences, ratios), merged_purposes
            )
        )
    return planned
