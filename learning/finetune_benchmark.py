"""Simulated active learning as the product runs it with fine-tuning: the classifier on frozen embeddings
is refit after every labelled batch, and every ``every`` rounds the encoder itself is fine-tuned on the
labels so far (optionally with a sample of the unlabelled pool, FixMatch-style, and with the labelled
cells' attributes), the pool and test cells are re-embedded, and querying continues on the new
embeddings. That is what ``Project.finetune_every`` does in the loop (``loop.handlers.finetuning``:
fine-tune the latest encoder, re-embed, re-index, retrain).

Per round it records the test-set report the issue's targets are stated in: macro-F1 with a bootstrap
interval, per-source macro-F1, per-class recall (blast recall), attribute mean macro-F1 (one logistic
regression per attribute on the same embedding, fitted on the labelled cells' attributes), and the
top-label ECE; after a fine-tune also the fine-tuned network's own heads (softmax cell-type and
attribute heads on the raw features). Optionally a full-label reference: the same fine-tuning on every
pool label.

Images are preloaded uint8 tensors; the oracle is the pool's labels and attributes; the test set is
never touched by the loop. No Django.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import recall_score
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from learning.benchmark import ALProblem, attribute_report, initial_stratified
from learning.calibration import apply_temperature, fit_temperature
from learning.classifiers import AlignedClassifier, ClassifierKind
from learning.evaluation import attribute_scores, evaluate, external_report, knn_macro_f1, macro_f1
from learning.finetune import FinetuneResult, finetune
from learning.query import STRATEGIES, resolve_strategy, select
from learning.semi import SemiSupervised
from learning.shift import (
    ABSTAIN_RATIO,
    CLASS_NEIGHBOURS,
    SUGGESTION_MIN_CONFIDENCE,
    LabelledNeighbourhood,
    abstention,
    abstention_row,
    nearest_other_distance,
)
from learning.transforms import to_float

Progress = Callable[[str], None]

# The targets at <= 5% of the set labelled (811 of 16,230 cells).
TARGETS: dict[str, float] = {
    "macro_f1": 0.95,
    "pbc_macro_f1": 0.93,
    "blast_recall": 0.97,
    "attribute_mean_macro_f1": 0.87,
}


@dataclass(frozen=True)
class FinetunePlan:
    """When and how the loop fine-tunes its encoder.

    Attributes:
        every: fine-tune after every ``every`` labelled batches (round r with r % every == 0, r >= 1).
        minutes, epochs: budget of each fine-tune (whichever ends first; at least one).
        semi: FixMatch settings; None for supervised fine-tuning on the labelled cells only.
        unlabelled_factor: unlabelled cells drawn at random from the pool per fine-tune, as a multiple
            of the labelled count (the loop's job does the same).
        attributes: train the attribute heads on the labelled cells' attributes.
        lr, batch_size: of :func:`learning.finetune.finetune`.
        continue_from_last: each fine-tune starts from the previous one's weights (as the loop does:
            it fine-tunes the latest encoder); False restarts from the initial encoder every time.
        full_reembed_last: after a fine-tune in the last round, re-embed the whole pool too. By default
            only the labelled pool cells and the test cells are re-embedded then: nothing is queried
            after the last round, so the unlabelled pool's new embedding would only feed the 20-NN
            probe (left out, ``None``), and on 2 CPU cores it costs minutes.
        probe_heads: start each fine-tune's heads from a linear probe (LP-FT, see
            :func:`learning.finetune.finetune`).
        augment: the fine-tunes' augmentation preset (:data:`learning.transforms.AUGMENT_PRESETS`).
    """

    every: int
    minutes: float | None = 4.0
    epochs: float | None = None
    semi: SemiSupervised | None = None
    unlabelled_factor: float = 4.0
    attributes: bool = True
    lr: float = 1e-4
    batch_size: int = 32
    continue_from_last: bool = True
    full_reembed_last: bool = False
    probe_heads: bool = False
    augment: str = "reference"

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.minutes is None and self.epochs is None:
            raise ValueError("give minutes, epochs or both")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["semi"] = self.semi.to_dict() if self.semi is not None else None
        return out


@dataclass
class LoopRun:
    """One learning curve of the fine-tuning loop: a report per round and one per fine-tune."""

    strategy: str
    seed: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    finetunes: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def raw_features(backbone: nn.Module, images: Tensor, *, batch_size: int = 256) -> np.ndarray:
    """``forward_features`` (not normalised) of uint8 (N, 3, S, S) images, in eval mode: float32 (N, D)."""
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    cl = dev.type == "cpu"
    forward = getattr(backbone, "forward_features", backbone)
    chunks: list[np.ndarray] = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size].to(dev))
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(forward(x).float().cpu().numpy())
    finally:
        backbone.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def normalise(features: np.ndarray) -> np.ndarray:
    """L2-normalised rows, as :func:`learning.embeddings.extract_embeddings` stores them."""
    return F.normalize(torch.from_numpy(features), dim=1).numpy()


def attribute_matrix(
    attributes: Mapping[str, np.ndarray], schema: Mapping[str, Sequence[str]], rows: np.ndarray
) -> np.ndarray:
    """(len(rows), A) value indices in ``schema`` order, -1 where the cell has no value (``''``)."""
    out = np.full((len(rows), len(schema)), -1, dtype=np.int64)
    for j, (name, values) in enumerate(schema.items()):
        lookup = {v: i for i, v in enumerate(values)}
        column = attributes.get(name)
        if column is None:
            continue
        out[:, j] = [lookup.get(str(v), -1) for v in column[rows]]
    return out


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Recall of every class present in ``y_true``."""
    labels = sorted({str(v) for v in y_true})
    values = recall_score(
        y_true.astype(str), y_pred.astype(str), labels=labels, average=None, zero_division=0
    )
    return {label: float(v) for label, v in zip(labels, values, strict=True)}


def score(
    problem: ALProblem,
    y_pred: np.ndarray,
    probs: np.ndarray | None,
    *,
    attribute_pred: Mapping[str, np.ndarray] | None = None,
    attributes: Mapping[str, Any] | None = None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The headline test-set report: macro-F1 + CI, accuracy, per-source macro-F1, per-class recall,
    ECE (with ``probs``) and attribute mean macro-F1 (with ``attribute_pred``, the test cells' predicted
    values, or ``attributes``, an :func:`learning.evaluation.attribute_scores` report)."""
    report = evaluate(
        problem.test_y,
        y_pred,
        probs=probs,
        classes=problem.classes if probs is not None else None,
        sources=problem.test_sources,
        n_boot=n_boot,
        seed=seed,
    )
    out: dict[str, Any] = {
        "macro_f1": report["macro_f1"],
        "macro_f1_ci": report["bootstrap"]["macro_f1"],
        "accuracy": report["accuracy"],
        "per_class_recall": per_class_recall(problem.test_y, y_pred),
        "per_class_f1": report["per_class_f1"],
    }
    if "ece" in report:
        out["ece"] = report["ece"]
    if "per_source" in report:
        out["per_source_macro_f1"] = {str(s): v["macro_f1"] for s, v in report["per_source"].items()}
    attrs = attributes
    if attrs is None and attribute_pred is not None and problem.test_attributes:
        attrs = attribute_scores(dict(problem.test_attributes), dict(attribute_pred))
    if attrs is not None:
        out["attribute_mean_macro_f1"] = attrs["mean_macro_f1"]
        out["attribute_macro_f1"] = {a: v["macro_f1"] for a, v in attrs["per_attribute"].items()}
        if "embedding_only" in attrs:
            out["attribute_mean_macro_f1_embedding_only"] = attrs["embedding_only"]["mean_macro_f1"]
    return out


def fit_and_score(
    problem: ALProblem,
    pool_x: np.ndarray,
    test_x: np.ndarray,
    labelled: np.ndarray,
    *,
    classifier: ClassifierKind,
    class_weight: str | None,
    seed: int,
    n_boot: int,
) -> tuple[dict[str, Any], AlignedClassifier]:
    """The product's classifier on the embedding (cell type, then one head per attribute), scored."""
    options: dict[str, Any] = {"class_weight": class_weight, "seed": seed}
    model = AlignedClassifier(problem.classes, classifier, **options).fit(
        pool_x[labelled], problem.pool_y[labelled]
    )
    probs = model.predict_proba(test_x)
    predicted = np.asarray(problem.classes)[probs.argmax(axis=1)]
    attributes = None
    if problem.pool_attributes:
        attributes = attribute_report(problem, pool_x, test_x, labelled, seed=seed)
    return score(problem, predicted, probs, attributes=attributes, n_boot=n_boot, seed=seed), model


def head_scores(
    problem: ALProblem, result: FinetuneResult, test_raw: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """The fine-tuned network's own heads on the raw test features, scored like the product's model."""
    with torch.no_grad():
        feats = torch.from_numpy(test_raw).to(next(result.head.parameters()).device)
        probs = torch.softmax(result.head(feats).float(), dim=1).cpu().numpy()
        attribute_pred = None
        if result.attribute_head is not None:
            logits = result.attribute_head(feats)
            attribute_pred = {
                a: np.asarray(problem.attribute_classes[a])[out.argmax(dim=1).cpu().numpy()]
                for a, out in logits.items()
                if a in problem.test_attributes
            }
    predicted = np.asarray(problem.classes)[probs.argmax(axis=1)]
    return score(problem, predicted, probs, attribute_pred=attribute_pred, n_boot=n_boot, seed=seed)


def _finetune_on(
    backbone: nn.Module,
    problem: ALProblem,
    pool_images: Tensor,
    labelled: np.ndarray,
    plan: FinetunePlan,
    *,
    seed: int,
    rng: np.random.Generator,
) -> tuple[FinetuneResult, dict[str, Any]]:
    """Fine-tune ``backbone`` in place on the labelled pool cells (+ an unlabelled sample, + attributes)."""
    rows = np.flatnonzero(labelled)
    lookup = {c: i for i, c in enumerate(problem.classes)}
    labels = np.array([lookup[str(v)] for v in problem.pool_y[rows]], dtype=np.int64)
    unlabelled = None
    if plan.semi is not None:
        free = np.flatnonzero(~labelled)
        n_u = min(len(free), round(plan.unlabelled_factor * len(rows)))
        if n_u > 0:
            picked = np.sort(rng.choice(free, size=n_u, replace=False))
            unlabelled = pool_images[torch.from_numpy(picked)]
    attributes = schema = None
    if plan.attributes and problem.attribute_classes:
        attributes = attribute_matrix(problem.pool_attributes, problem.attribute_classes, rows)
        if (attributes >= 0).any():
            schema = {a: len(v) for a, v in problem.attribute_classes.items()}
        else:
            attributes = None
    result = finetune(
        backbone,
        pool_images[torch.from_numpy(rows)],
        labels,
        len(problem.classes),
        minutes=plan.minutes,
        epochs=plan.epochs,
        lr=plan.lr,
        batch_size=plan.batch_size,
        seed=seed,
        unlabelled=unlabelled,
        semi=plan.semi,
        attributes=attributes,
        attribute_schema=schema,
        probe_heads=plan.probe_heads,
        augment=plan.augment,
    )
    info = {
        "labels": len(rows),
        "unlabelled_cells": result.unlabelled_cells,
        "attribute_cells": result.attribute_cells,
        "seconds": round(result.seconds, 2),
        "epochs_done": round(result.epochs_done, 3),
        "steps_done": result.steps_done,
        "stopped_by": result.stopped_by,
        "pseudo_label_rate": result.pseudo_label_rate,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "history": result.history,
    }
    return result, info


def external_round(
    problem: ALProblem,
    model: AlignedClassifier,
    pool_x: np.ndarray,
    test_x: np.ndarray,
    external_x: np.ndarray,
    labelled: np.ndarray,
) -> dict[str, Any]:
    """Another lab's cells under this round's classifier: scored over the classes they hold
    (``external``), and the product's abstention (:class:`learning.shift.LabelledNeighbourhood`, per
    class too) against the global rule alone (``abstention``: shares abstained on, of the test cells and
    of the lab's, and of the lab's cells answered "blast"; and the global rule with its limit from
    held-out cells, ``held_out_q<q>``)."""
    assert problem.external_y is not None
    # model.predict is the argmax of predict_proba: the probabilities are read once, for the confidence.
    test_probs, external_probs = model.predict_proba(test_x), model.predict_proba(external_x)
    predicted_test = np.asarray(model.classes)[test_probs.argmax(axis=1)].astype(str)
    predicted_external = np.asarray(model.classes)[external_probs.argmax(axis=1)].astype(str)
    labels = np.asarray(problem.pool_y[labelled]).astype(str)
    # The product's rule on this round's embedding, for the rows that combine it with another.
    current = near_labelled(pool_x[labelled], labels, test_x, external_x, predicted_test, predicted_external)
    rules = abstention(
        pool_x[labelled],
        test_x,
        external_x,
        np.asarray(problem.test_y).astype(str),
        predicted_test,
        predicted_external,
        labelled_labels=np.asarray(problem.pool_y[labelled]).astype(str),
    )
    return {
        "external": external_report(problem.external_y, predicted_external),
        # The held-out rules: the global rule's limit from half the test cells' own distances, a unit
        # that does not depend on how spread out the strategy's picks are.
        "abstention": {
            rule: rules[rule] for rule in ("product", "global", "held_out_q0.98", "held_out_q0.95")
        }
        | {"class_held_out_q0.98": class_rule_held_out(problem, pool_x, test_x, external_x, labelled, model)}
        | initial_encoder_rules(problem, labelled, current, predicted_test, predicted_external)
        | {
            "product_confident": product_confident_rule(
                problem, test_probs, external_probs, current, predicted_test, predicted_external
            )
        },
    }


def near_labelled(
    labelled_x: np.ndarray,
    labels: np.ndarray,
    test_x: np.ndarray,
    external_x: np.ndarray,
    predicted_test: np.ndarray,
    predicted_external: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the product's distance rule (:class:`LabelledNeighbourhood`, global and per class) lets the
    model answer: (test mask, external mask), on whichever embedding the arrays come from."""
    hood = LabelledNeighbourhood.build(labelled_x, labels=labels)
    assert hood is not None  # the loop labels far more than one cell
    return (
        hood.ratios(test_x, predicted=predicted_test) <= ABSTAIN_RATIO,
        hood.ratios(external_x, predicted=predicted_external) <= ABSTAIN_RATIO,
    )


def held_out_confident(
    test_probs: np.ndarray,
    external_probs: np.ndarray,
    test_y: np.ndarray,
    classes: Sequence[str],
    calibrating: np.ndarray,
    min_confidence: float = SUGGESTION_MIN_CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Which test and external cells the model is confident on, as the product decides it: a temperature
    fitted on the ``calibrating`` test cells (the project's validation cells play this part in the loop,
    ``learning.calibration``), then a calibrated top probability of at least ``min_confidence``.
    Returns (test mask, external mask, temperature)."""
    column = {str(c): i for i, c in enumerate(classes)}
    truth = np.array([column[str(y)] for y in np.asarray(test_y)[calibrating]])
    temperature = fit_temperature(test_probs[calibrating], truth)
    return (
        apply_temperature(test_probs, temperature).max(axis=1) >= min_confidence,
        apply_temperature(external_probs, temperature).max(axis=1) >= min_confidence,
        temperature,
    )


def product_confident_rule(
    problem: ALProblem,
    test_probs: np.ndarray,
    external_probs: np.ndarray,
    near: tuple[np.ndarray, np.ndarray],
    predicted_test: np.ndarray,
    predicted_external: np.ndarray,
) -> dict[str, float]:
    """What the product answers: cells near the labelled ones (:class:`LabelledNeighbourhood`, the
    ``"product"`` row) on which the calibrated confidence reaches the default
    ``suggestion_min_confidence``, where the labelling page shows a suggestion and the exports do not
    abstain. The temperature comes from half the test cells (as :func:`class_rule_held_out`); scored on
    the other half and on the external cells. ``near``: :func:`near_labelled` on this round's
    embedding."""
    half = (
        np.random.default_rng(0).permutation(len(test_probs)) < len(test_probs) // 2
    )  # as class_rule_held_out
    y_test = np.asarray(problem.test_y).astype(str)
    sure_test, sure_external, _ = held_out_confident(
        test_probs, external_probs, y_test, problem.classes, half
    )
    return abstention_row(
        near[0] & sure_test,
        near[1] & sure_external,
        y_test,
        predicted_test,
        predicted_external,
        scored=~half,
    )


def write_final_arrays(
    path: Path,
    problem: ALProblem,
    model: AlignedClassifier,
    pool_x: np.ndarray,
    test_x: np.ndarray,
    external_x: np.ndarray,
    labelled: np.ndarray,
) -> None:
    """The arrays bench/loop_abstention_rules.py scores abstention rules on, offline: the labelled,
    test and external cells' embeddings on this round's encoder (``*_x``) and on the initial one
    (``*_x0``), their classes, and the round's class probabilities on the test and external cells."""
    assert problem.external_x is not None and problem.external_y is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        labelled=np.flatnonzero(labelled),
        labels=np.asarray(problem.pool_y[labelled]).astype(str),
        test_y=np.asarray(problem.test_y).astype(str),
        external_y=np.asarray(problem.external_y).astype(str),
        labelled_x=pool_x[labelled],
        test_x=test_x,
        external_x=external_x,
        labelled_x0=problem.pool_x[labelled],
        test_x0=problem.test_x,
        external_x0=problem.external_x,
        test_probs=model.predict_proba(test_x),
        external_probs=model.predict_proba(external_x),
        classes=np.asarray(model.classes).astype(str),
    )


def initial_encoder_rules(
    problem: ALProblem,
    labelled: np.ndarray,
    current: tuple[np.ndarray, np.ndarray],
    predicted_test: np.ndarray,
    predicted_external: np.ndarray,
) -> dict[str, dict[str, float]]:
    """The product's rule (global and per class, :class:`LabelledNeighbourhood`) measured on the
    *initial* encoder's embeddings (``problem.pool_x`` / ``test_x`` / ``external_x``: the frozen features
    the loop starts on) with this round's predictions (``"initial"``), and together with the rule on this
    round's embeddings (``"product_and_initial"``: answered only where both answer). A fine-tune can pull
    another lab's cells into the blast cluster; the frozen features have not learned that. Measured, not
    the product. Before the first fine-tune both rows equal ``"product"``. ``current``:
    :func:`near_labelled` on this round's embedding."""
    assert problem.external_x is not None
    labels = np.asarray(problem.pool_y[labelled]).astype(str)
    y_test = np.asarray(problem.test_y).astype(str)
    initial = near_labelled(
        problem.pool_x[labelled],
        labels,
        problem.test_x,
        problem.external_x,
        predicted_test,
        predicted_external,
    )
    both = (initial[0] & current[0], initial[1] & current[1])
    return {
        name: abstention_row(test_kept, external_kept, y_test, predicted_test, predicted_external)
        for name, (test_kept, external_kept) in (("initial", initial), ("product_and_initial", both))
    }


def class_rule_held_out(
    problem: ALProblem,
    pool_x: np.ndarray,
    test_x: np.ndarray,
    external_x: np.ndarray,
    labelled: np.ndarray,
    model: AlignedClassifier,
    quantile: float = 0.98,
) -> dict[str, float]:
    """The product's two rules (global, and per class to the CLASS_NEIGHBOURS-th nearest labelled cell of
    the predicted class) with each limit taken from half the test cells (those predicted that class, for
    the class rule; at least 20 of them, else no class rule) instead of from the labelled cells'
    distances to each other; scored on the other half and on the external cells. Measured, not the
    product: a unit that does not loosen when the strategy's picks are spread out."""
    labels = np.asarray(problem.pool_y[labelled]).astype(str)
    hood = LabelledNeighbourhood.build(pool_x[labelled], labels=labels)
    assert hood is not None
    half = (
        np.random.default_rng(0).permutation(len(test_x)) < len(test_x) // 2
    )  # as learning.shift.abstention
    predicted = {"test": np.asarray(model.predict(test_x)).astype(str)}
    predicted["external"] = np.asarray(model.predict(external_x)).astype(str)
    cells = {"test": test_x, "external": external_x}
    distance = {k: nearest_other_distance(hood.index, v, np.full(len(v), -1)) for k, v in cells.items()}
    limit = float(np.quantile(distance["test"][half], quantile))
    kept = {k: d <= limit for k, d in distance.items()}
    for name, class_hood in hood.by_class.items():
        asked = {k: predicted[k] == name for k in cells}
        calibrating = half & asked["test"]
        if calibrating.sum() < 20:
            continue
        own = {
            k: nearest_other_distance(
                class_hood.index, cells[k][asked[k]], np.full(int(asked[k].sum()), -1), CLASS_NEIGHBOURS
            )
            for k in cells
        }
        class_limit = float(np.quantile(own["test"][half[asked["test"]]], quantile))
        for k in cells:
            kept[k][asked[k]] &= own[k] <= class_limit
    scored = ~half
    y_test = np.asarray(problem.test_y).astype(str)
    return {
        "test_abstain": round(float(1 - kept["test"][scored].mean()), 4),
        "test_macro_f1_answered": round(
            macro_f1(y_test[scored & kept["test"]], predicted["test"][scored & kept["test"]]), 4
        )
        if (scored & kept["test"]).any()
        else float("nan"),
        "external_abstain": round(float(1 - kept["external"].mean()), 4),
        "external_answered_blast": round(
            float((kept["external"] & (predicted["external"] == "blast")).mean()), 4
        ),
    }


def run_finetune_loop(
    problem: ALProblem,
    pool_images: Tensor,
    test_images: Tensor,
    encoder: nn.Module,
    plan: FinetunePlan,
    *,
    strategy: str,
    seed: int,
    batch: int,
    rounds: int,
    classifier: ClassifierKind = "logreg",
    class_weight: str | None = "balanced",
    n_boot: int = 200,
    progress: Progress | None = None,
    start: str = "stratified",
    label_budget: int | None = None,
    external_images: Tensor | None = None,
    save_final_arrays: Path | None = None,
) -> LoopRun:
    """One learning curve of the loop with fine-tuning, from a stratified first batch (``start``
    ``"stratified"``) or, as a new project starts, one the strategy's cold start picks without labels
    (``"cold"``: TypiClust for the model-based strategies, :data:`learning.query.DEFAULT_COLD_START`).

    ``problem.pool_x`` / ``test_x`` are the initial encoder's (normalised) embeddings; ``encoder`` is
    copied, never changed. Round 0 scores the first batch; round r >= 1 adds a queried batch, then, when
    ``r % plan.every == 0``, fine-tunes (the loop's fine-tune job runs after the batch that triggers
    it), re-embeds every pool and test cell and scores on the new embedding.

    ``label_budget`` (``Project.label_budget``): as the product's loop, the last batch is cut so that the
    labels never exceed it, the round that reaches it fine-tunes whatever the schedule says, and the run
    ends there (or after ``rounds``, whichever comes first).

    ``external_images`` (another lab's cells, with ``problem.external_x`` / ``external_y`` their
    initial embeddings and labels): every round scores them with the round's classifier, and reports
    the product's abstention on them and on the test cells (:func:`external_round`). Never trained on.
    ``save_final_arrays`` (with ``external_images``): a folder that gets the last round's arrays
    (:func:`save_final_arrays`).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    if len(pool_images) != len(problem.pool_x) or len(test_images) != len(problem.test_x):
        raise ValueError("pool/test images and embeddings disagree in length")
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    sample_rng = np.random.default_rng(seed + 20_011)
    initial = copy.deepcopy(encoder)
    backbone = copy.deepcopy(encoder)
    pool_x, test_x, external_x = problem.pool_x, problem.test_x, problem.external_x
    if external_images is not None and (external_x is None or len(external_x) != len(external_images)):
        raise ValueError("external images need their initial embeddings in problem.external_x")
    labelled = np.zeros(len(pool_x), dtype=bool)
    query_s, ran_as, version = 0.0, "stratified", 0
    if start == "cold":
        t0 = time.perf_counter()
        ran_as = resolve_strategy(strategy, probs=None, labelled_mask=labelled, n_pool=len(pool_x))
        labelled[
            select(strategy, n=batch, embeddings=pool_x, probs=None, labelled_mask=labelled, rng=rng)
        ] = True
        query_s = time.perf_counter() - t0
    elif start == "stratified":
        labelled[initial_stratified(problem.pool_y, batch, np.random.default_rng(10_000 + seed))] = True
    else:
        raise ValueError(f"start must be 'stratified' or 'cold', got {start!r}")
    run = LoopRun(strategy=strategy, seed=seed)
    finetune_total = embed_total = 0.0
    for r in range(rounds + 1):
        extra: dict[str, Any] = {}
        spent = label_budget is not None and int(labelled.sum()) >= label_budget
        last = r == rounds or spent
        if r >= 1 and (r % plan.every == 0 or spent):
            if not plan.continue_from_last:
                backbone = copy.deepcopy(initial)
            result, info = _finetune_on(
                backbone, problem, pool_images, labelled, plan, seed=seed * 1000 + r, rng=sample_rng
            )
            t0 = time.perf_counter()
            whole_pool = not last or plan.full_reembed_last
            test_raw = raw_features(result.backbone, test_images)
            if whole_pool:
                pool_x = normalise(raw_features(result.backbone, pool_images))
            else:  # last round: only the labelled rows are read again (stale rows are never used)
                rows = np.flatnonzero(labelled)
                pool_x = pool_x.copy()
                pool_x[rows] = normalise(raw_features(result.backbone, pool_images[torch.from_numpy(rows)]))
            test_x = normalise(test_raw)
            if external_images is not None:
                external_x = normalise(raw_features(result.backbone, external_images))
            embed_s = time.perf_counter() - t0
            finetune_total += result.seconds
            embed_total += embed_s
            version += 1
            info["knn20_macro_f1"] = None
            if whole_pool:
                with threadpool_limits(limits=1):
                    info["knn20_macro_f1"] = knn_macro_f1(
                        pool_x, problem.pool_y, test_x, problem.test_y, k=20
                    )
            info.update(
                round=r,
                version=version,
                embed_seconds=round(embed_s, 2),
                reembedded="pool and test" if whole_pool else "labelled pool cells and test",
            )
            info["head_test"] = head_scores(problem, result, test_raw, n_boot=n_boot, seed=seed)
            run.finetunes.append(info)
            extra = {
                "finetuned": True,
                "finetune_seconds": info["seconds"],
                "embed_seconds": info["embed_seconds"],
            }
            say(
                f"  fine-tune {version} on {info['labels']} labels (+{info['unlabelled_cells']} unlabelled, "
                f"{info['attribute_cells']} with attributes): {info['epochs_done']} epochs in "
                f"{info['seconds']} s, pseudo-label rate {info['pseudo_label_rate']}, "
                f"head macro-F1 {info['head_test']['macro_f1']:.4f}, 20-NN {info['knn20_macro_f1']}"
            )
        t0 = time.perf_counter()
        # One BLAS thread, as the loop's retrain job (loop.handlers.retraining) fits its classifier.
        with threadpool_limits(limits=1):
            report, model = fit_and_score(
                problem,
                pool_x,
                test_x,
                labelled,
                classifier=classifier,
                class_weight=class_weight,
                seed=seed,
                n_boot=n_boot,
            )
            pool_probs = model.predict_proba(pool_x) if not last else None
            if external_images is not None and external_x is not None:
                report |= external_round(problem, model, pool_x, test_x, external_x, labelled)
                if last and save_final_arrays is not None:
                    path = save_final_arrays / f"{strategy}_seed{seed}.npz"
                    write_final_arrays(path, problem, model, pool_x, test_x, external_x, labelled)
        retrain_s = time.perf_counter() - t0
        run.rounds.append(
            {
                "strategy": strategy,
                "seed": seed,
                "round": r,
                "labels": int(labelled.sum()),
                "encoder_version": version,
                "ran_as": ran_as,
                "query_seconds": round(query_s, 3),
                "retrain_and_score_seconds": round(retrain_s, 2),
                "finetune_seconds_so_far": round(finetune_total, 1),
                "embed_seconds_so_far": round(embed_total, 1),
                **extra,
                **report,
            }
        )
        blast = report["per_class_recall"].get("blast")
        say(
            f"{strategy} seed {seed} round {r}: {int(labelled.sum())} labels, encoder v{version}: "
            f"macro-F1 {report['macro_f1']:.4f} {report['macro_f1_ci']}, "
            f"per source {report.get('per_source_macro_f1')}, blast recall {blast}, "
            f"attributes {report.get('attribute_mean_macro_f1')}, ECE {report.get('ece')}"
        )
        if last:
            break
        n = batch if label_budget is None else min(batch, label_budget - int(labelled.sum()))
        t0 = time.perf_counter()
        ran_as = resolve_strategy(strategy, probs=pool_probs, labelled_mask=labelled, n_pool=len(pool_x))
        picked = select(strategy, n=n, embeddings=pool_x, probs=pool_probs, labelled_mask=labelled, rng=rng)
        query_s = time.perf_counter() - t0
        labelled[picked] = True
    return run


def full_label_reference(
    problem: ALProblem,
    pool_images: Tensor,
    test_images: Tensor,
    encoder: nn.Module,
    plan: FinetunePlan,
    *,
    minutes: float,
    classifier: ClassifierKind = "logreg",
    class_weight: str | None = "balanced",
    n_boot: int = 200,
    seed: int = 0,
    product_classifier: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` on every pool label (supervised, with attributes as in ``plan``)
    for ``minutes`` and score the network's own heads on the test cells (``head_test``). With
    ``product_classifier`` also re-embed the whole pool and score the loop's classifier fitted on every
    label (``test``, ``knn20_macro_f1``); that is a full re-embedding plus a fit on every pool label,
    minutes on 2 CPU cores."""
    say = progress or (lambda _msg: None)
    ref_plan = FinetunePlan(
        every=1,
        minutes=minutes,
        epochs=None,
        semi=None,
        attributes=plan.attributes,
        lr=plan.lr,
        batch_size=plan.batch_size,
        probe_heads=plan.probe_heads,
    )
    backbone = copy.deepcopy(encoder)
    everything = np.ones(len(problem.pool_x), dtype=bool)
    result, info = _finetune_on(
        backbone, problem, pool_images, everything, ref_plan, seed=seed, rng=np.random.default_rng(seed)
    )
    t0 = time.perf_counter()
    test_raw = raw_features(result.backbone, test_images)
    info["head_test"] = head_scores(problem, result, test_raw, n_boot=n_boot, seed=seed)
    info["test"] = info["knn20_macro_f1"] = None
    if product_classifier:
        pool_x, test_x = normalise(raw_features(result.backbone, pool_images)), normalise(test_raw)
        with threadpool_limits(limits=1):
            info["test"], _model = fit_and_score(
                problem,
                pool_x,
                test_x,
                everything,
                classifier=classifier,
                class_weight=class_weight,
                seed=seed,
                n_boot=n_boot,
            )
            info["knn20_macro_f1"] = knn_macro_f1(pool_x, problem.pool_y, test_x, problem.test_y, k=20)
    info["embed_and_score_seconds"] = round(time.perf_counter() - t0, 2)
    product = info["test"]["macro_f1"] if info["test"] is not None else None
    say(
        f"full-label reference ({info['labels']} labels, {info['epochs_done']} epochs "
        f"in {info['seconds']} s): head macro-F1 {info['head_test']['macro_f1']:.4f}, "
        f"product classifier {product}"
    )
    return info


def against_targets(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of the issue next to the measured value and the gap (measured - target)."""
    measured = {
        "macro_f1": report.get("macro_f1"),
        "pbc_macro_f1": (report.get("per_source_macro_f1") or {}).get("pbc"),
        "blast_recall": (report.get("per_class_recall") or {}).get("blast"),
        "attribute_mean_macro_f1": report.get("attribute_mean_macro_f1"),
    }
    out: dict[str, dict[str, Any]] = {}
    for key, target in TARGETS.items():
        value = measured[key]
        out[key] = {
            "target": target,
            "measured": value,
            "gap": None if value is None else round(float(value) - target, 4),
            "met": None if value is None else bool(value >= target),
        }
    return out


__all__ = [
    "TARGETS",
    "FinetunePlan",
    "LoopRun",
    "against_targets",
    "attribute_matrix",
    "fit_and_score",
    "full_label_reference",
    "head_scores",
    "normalise",
    "per_class_recall",
    "raw_features",
    "run_finetune_loop",
    "score",
]
