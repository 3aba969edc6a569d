"""Full supervised fine-tuning of a backbone on the labelled cells.

Frozen self-supervised embeddings plus a light head (:mod:`learning.classifiers`) are what the platform
runs between labelling rounds. Once a few hundred labels exist, training every weight of the encoder
on them usually separates the classes better. :func:`finetune` does that: a new linear head on
``forward_features``, cross-entropy, AdamW with the encoder at ``lr`` and the freshly initialised head
at ten times that (the head starts from nothing while the encoder only needs nudging; the usual
fine-tuning recipe, e.g. Kornblith et al., "Do Better ImageNet Models Transfer Better?", CVPR 2019),
a short warm-up then a cosine decay over the budget, the blood-smear augmentation of
:mod:`learning.transforms` on whole batches, and class-balanced sampling (blood-cell label sets are
skewed: a few basophils against thousands of neutrophils).

What the platform keeps is the backbone: after fine-tuning it re-embeds every cell with
:func:`learning.embeddings.extract_embeddings` (``forward_features``, L2-normalised), rebuilds the
search index and refits its light classifiers on the new embeddings. The head returned here is the
training objective's by-product; it is handy for :func:`predict_proba` and for checking the run, but
it scores raw (not normalised) features and is not the platform's classifier.

Two optional signals join the cross-entropy when they exist (the default, without them, is the plain
supervised fine-tuning above, step for step):

- ``unlabelled`` cells: FixMatch-style consistency (:mod:`learning.semi`): each step also takes
  ``ratio`` unlabelled cells per labelled one, pseudo-labels their weak (geometric) views where the
  head is at least ``threshold`` confident, and trains the strong (colour, zoom, Cutout) views towards
  those labels with weight ``lambda_u``. The unlabelled pool is most of a project early on, and this is
  how its cells shape the encoder besides the few hundred labels.
- ``attributes`` of the labelled cells: one softmax head per morphological attribute
  (:class:`models_zoo.heads.MultiAttributeHead`) on the same features, with a masked cross-entropy:
  attributes nobody annotated add nothing. WBCAtt-style attributes (granules, chromatin, nucleus shape)
  describe what separates the classes, so they push the encoder towards the same evidence.

Never imports Django.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learning.semi import SemiSupervised, TwoViews, attribute_loss, consistency_loss, pseudo_labels
from learning.training import (
    EpochEnd,
    ProgressCallback,
    ProgressReporter,
    TrainingBudget,
    backward_step,
    check_budget,
    device_generator,
    lr_factor,
    resolve_device,
    run_budgeted,
    scale_learning_rates,
)
from learning.transforms import AugmentConfig, BloodSmearAugment, to_float
from models_zoo.heads import MultiAttributeHead

Balance = Literal["sampler", "loss", "none"]
BALANCE_MODES: Final[tuple[str, ...]] = ("sampler", "loss", "none")


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`.

    Attributes:
        backbone: the fine-tuned backbone (the same object that was passed in, trained in place), in
            eval mode on the training device; ``forward_features`` gives the new embedding.
        head: ``nn.Linear(num_features, n_classes)`` over ``backbone.forward_features`` (raw features).
        epochs_done: optimisation steps / steps per epoch (fractional when the time budget ran out).
        steps_done: optimisation steps taken.
        seconds: wall-clock time of the call.
        history: one dict per (possibly partial) epoch: ``epoch``, ``loss`` and ``accuracy`` (means over
            that epoch's augmented training batches), ``seconds`` since the start.
        stopped_by: ``"epochs"`` or ``"minutes"``.
        device: where it trained.
        attribute_head: the :class:`~models_zoo.heads.MultiAttributeHead` trained with ``attributes``
            (raw features -> attribute -> logits), else None.
        unlabelled_cells: how many unlabelled cells were given (0: supervised only).
        attribute_cells: labelled cells with at least one attribute label.
        pseudo_label_rate: fraction of the unlabelled views whose pseudo-label passed the threshold,
            over the whole run (None without unlabelled cells).
        unlabelled_seen: unlabelled views trained on (with or without a pseudo-label).

    With unlabelled cells or attributes, each ``history`` entry also holds the epoch means of
    ``loss_x`` (supervised), ``loss_u`` (consistency, unweighted), ``mask_rate`` (pseudo-labels kept)
    and ``loss_attr`` (attributes, unweighted).
    """

    backbone: nn.Module
    head: nn.Linear
    epochs_done: float
    steps_done: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "epochs"
    device: str = "cpu"
    attribute_head: MultiAttributeHead | None = None
    unlabelled_cells: int = 0
    attribute_cells: int = 0
    pseudo_label_rate: float | None = None
    unlabelled_seen: int = 0


def release_inference_tensors(module: nn.Module) -> int:
    """Replace parameters and buffers that are inference tensors by ordinary copies; returns how many.

    A module converted inside ``torch.inference_mode`` (``extract_embeddings`` on CPU calls
    ``model.to(memory_format=torch.channels_last)`` there) ends up with inference-tensor weights, which
    autograd refuses to save ("Inference tensors cannot be saved for backward"): the encoder that just
    embedded the cells could be neither fine-tuned nor explained. Values, ``requires_grad`` and buffer
    persistence are kept; run this before building an optimizer (parameters are new objects).
    """
    replaced = 0
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if param.is_inference():
                setattr(sub, name, nn.Parameter(param.clone(), requires_grad=param.requires_grad))
                replaced += 1
        for name, buf in list(sub.named_buffers(recurse=False)):
            if buf.is_inference():
                setattr(sub, name, buf.clone())
                replaced += 1
    return replaced


def _check_inputs(images: Tensor, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Validate shapes and label range; returns the indices of the labelled rows (label >= 0)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"label {labels.max()} out of range for n_classes={n_classes}")
    keep = np.flatnonzero(labels >= 0)
    if len(keep) < 2:
        raise ValueError("need at least two labelled cells (batch norm needs batches of two)")
    return keep


def _check_extras(
    images: Tensor,
    unlabelled: Tensor | None,
    attributes: np.ndarray | None,
    attribute_schema: Mapping[str, int] | None,
) -> None:
    """Validate the optional unlabelled cells and attribute targets against the labelled images."""
    if unlabelled is not None:
        if (
            unlabelled.ndim != 4
            or unlabelled.dtype != torch.uint8
            or unlabelled.shape[1:] != images.shape[1:]
        ):
            raise ValueError(
                f"unlabelled must be uint8 (M, {', '.join(map(str, images.shape[1:]))}), "
                f"got {unlabelled.dtype} {tuple(unlabelled.shape)}"
            )
        if len(unlabelled) == 0:
            raise ValueError("unlabelled is empty: pass None for supervised fine-tuning")
    if (attributes is None) != (attribute_schema is None):
        raise ValueError("attributes and attribute_schema go together")
    if attributes is not None and attribute_schema is not None:
        if attributes.shape != (images.shape[0], len(attribute_schema)):
            raise ValueError(
                f"attributes must be ({images.shape[0]}, {len(attribute_schema)}), got {attributes.shape}"
            )
        if not np.issubdtype(attributes.dtype, np.integer):
            raise ValueError(f"attributes must be integer value indices, got {attributes.dtype}")
        sizes = np.array(list(attribute_schema.values()))
        if attributes.size and ((attributes >= sizes[None, :]) | (attributes < -1)).any():
            raise ValueError("an attribute value index is out of range of attribute_schema (-1 = missing)")


class _Cycle:
    """Endless random order over ``n`` items: each pass is a fresh permutation."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def take(self, k: int) -> Tensor:
        parts: list[Tensor] = []
        while k > 0:
            if self.position >= len(self.order):
                self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
            part = self.order[self.position : self.position + k]
            self.position += len(part)
            k -= len(part)
            parts.append(part)
        return torch.cat(parts)


def finetune(
    backbone: nn.Module,
    images: Tensor,
    labels: np.ndarray,
    n_classes: int,
    *,
    epochs: float | None = None,
    minutes: float | None = None,
    batch_size: int = 64,
    lr: float = 1e-4,
    head_lr: float | None = None,
    weight_decay: float = 1e-4,
    augment: str | AugmentConfig | None = "reference",
    balance: Balance = "sampler",
    label_smoothing: float = 0.0,
    warmup: float = 0.05,
    head: nn.Linear | None = None,
    device: str | torch.device | None = None,
    channels_last: bool | None = None,
    recalibrate_bn: bool = True,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    progress_interval: float = 1.0,
    unlabelled: Tensor | None = None,
    semi: SemiSupervised | None = None,
    attributes: np.ndarray | None = None,
    attribute_schema: Mapping[str, int] | None = None,
    attribute_weight: float = 1.0,
    probe_heads: bool = False,
    sample_groups: np.ndarray | None = None,
) -> FinetuneResult:
    """Fine-tune every trainable weight of ``backbone`` plus a new linear head on labelled cells.

    Args:
        backbone: a ``models_zoo`` backbone (``forward_features``: (B, 3, S, S) in [0, 1] -> (B, D)),
            e.g. a self-supervised encoder from :func:`learning.selfsup.load_encoder`. Trained in place;
            parameters with ``requires_grad=False`` stay frozen.
        images: uint8 (N, 3, S, S), decoded as for embedding (:class:`learning.data.CellImageDataset`).
            Moved to the training device once, whole.
        labels: (N,) int class indices in [0, n_classes); rows with -1 (unlabelled, as
            :func:`learning.data.label_indices` marks them) are left out.
        n_classes: size of the head; classes without any label simply never win.
        epochs: number of passes over the labelled cells (may be fractional).
        minutes: wall-clock budget of the call; training stops mid-epoch when it runs out. At least one
            of ``epochs`` and ``minutes``; with both, whichever ends first.
        batch_size: cells per step (capped at the number of labelled cells; an epoch is
            ``max(1, N // batch_size)`` steps).
        lr: AdamW learning rate of the backbone. 1e-4 suits pretrained (ImageNet or self-supervised)
            weights; a randomly initialised backbone trains faster with ~1e-3.
        head_lr: learning rate of the head, default ``10 * lr``.
        augment: a preset of :data:`learning.transforms.AUGMENT_PRESETS` (default the reference
            method's flips, rotation, zoom, shift and colour jitter), a config, or None for none.
        balance: ``"sampler"`` (default) draws every batch with probability 1 / count(class) per cell,
            so each class is seen equally often; ``"loss"`` keeps uniform epochs and weights the
            cross-entropy by N / (K * count); ``"none"`` does neither.
        label_smoothing: passed to the cross-entropy.
        warmup: fraction of the budget with a linearly rising learning rate.
        head: continue with an existing head instead of a fresh ``nn.Linear``.
        device: default CUDA when available, else CPU.
        channels_last: NHWC layout, default on CPU (faster oneDNN convolutions).
        recalibrate_bn: after training, recompute the batch-norm statistics of the final weights with
            one pass over the labelled cells without augmentation (``torch.optim.swa_utils.update_bn``).
            The running averages kept during training mix earlier weights and augmented colours; after
            a short run (tens of steps) they are far enough off that eval-mode predictions collapse to
            one class although the training batches are mostly right.
        seed: seeds the head's initialisation, the sampling and the augmentation.
        progress: called as ``progress(fraction in [0, 1], message)`` at the start, at most every
            ``progress_interval`` seconds during training, after each epoch and once with 1.0 at
            the end (e.g. to update a Celery task's state).
        unlabelled: uint8 (M, 3, S, S) cells without labels for the FixMatch-style consistency term
            (moved to the device whole). None (default): supervised fine-tuning only, exactly as
            without these options.
        semi: settings of that term (:class:`learning.semi.SemiSupervised`; default its defaults).
            With unlabelled cells the batch-norm recalibration runs over the labelled cells and as many
            unlabelled ones.
        attributes: (N, A) int value indices per row of ``images`` (-1: not annotated), in the order
            of ``attribute_schema``; trains a :class:`~models_zoo.heads.MultiAttributeHead` jointly.
        attribute_schema: attribute name -> number of values (each >= 2).
        attribute_weight: weight of the attribute loss next to the cross-entropy.
        probe_heads: LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features and
            Underperform Out-of-Distribution", ICLR 2022): before training, fit the heads (cell type,
            and attributes) as linear probes on the frozen features of the labelled cells (L-BFGS, no
            augmentation), so the first backbone steps follow a sensible head instead of a random
            one. Counted in the time budget.
        sample_groups: (N,) int group of each row (e.g. 1 for a new site's cells, 0 for the others). With
            ``balance="sampler"`` each class's draws are then split equally between the groups present
            in that class, so 30 cells of a new site are drawn as often as 300 of the old ones. None
            (default): classes only.

    Returns:
        :class:`FinetuneResult`; re-embed the cells with ``result.backbone``.
    """
    t_start = time.perf_counter()
    check_budget(epochs, minutes)
    if balance not in BALANCE_MODES:
        raise ValueError(f"unknown balance {balance!r}; choose from {BALANCE_MODES}")
    labels = np.asarray(labels)
    keep = _check_inputs(images, labels, n_classes)
    if attributes is not None:
        attributes = np.asarray(attributes)
    _check_extras(images, unlabelled, attributes, attribute_schema)
    if unlabelled is not None and semi is None:
        semi = SemiSupervised()
    extended = unlabelled is not None or attributes is not None
    dev = resolve_device(device)
    use_cl = dev.type == "cpu" if channels_last is None else channels_last
    torch.manual_seed(seed)

    data = images[torch.from_numpy(keep)].to(dev)
    targets = torch.from_numpy(labels[keep].astype(np.int64)).to(dev)
    n = len(keep)
    class_weight, sample_weight = _class_balance(targets, n_classes, balance)
    if sample_groups is not None:
        if len(sample_groups) != len(images):
            raise ValueError(f"sample_groups has {len(sample_groups)} rows for {len(images)} images")
        if sample_weight is not None:
            sample_weight = group_balanced_weights(targets, torch.from_numpy(np.asarray(sample_groups)[keep]))

    backbone.to(dev)
    release_inference_tensors(backbone)
    if use_cl:
        backbone.to(memory_format=torch.channels_last)
    dim = int(getattr(backbone, "num_features", 0)) or _embedding_dim(backbone, data[:2])
    linear = _head(head, dim, n_classes).to(dev)
    features = _features_fn(backbone)
    base_lrs: tuple[float, ...] = (lr, head_lr if head_lr is not None else 10.0 * lr)
    groups: list[dict[str, object]] = [
        {"params": [p for p in backbone.parameters() if p.requires_grad], "lr": base_lrs[0]},
        {"params": list(linear.parameters()), "lr": base_lrs[1]},
    ]
    attr_head: MultiAttributeHead | None = None
    attr_targets: Tensor | None = None
    if attributes is not None and attribute_schema is not None:
        attr_head = MultiAttributeHead(dim, attribute_schema).to(dev)
        attr_targets = torch.from_numpy(attributes[keep].astype(np.int64)).to(dev)
        groups.append({"params": list(attr_head.parameters()), "lr": base_lrs[1]})
        base_lrs = (*base_lrs, base_lrs[1])
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    if probe_heads:
        if recalibrate_bn:
            # The probe must see the features training will start from: in train mode batch norm uses the
            # batch's statistics, which for cells are far from the ImageNet running averages, so a probe
            # fitted on those averages starts the fine-tune from a head that no longer fits its features.
            _recalibrate_batch_norm(backbone, data, max(batch_size, 2), use_cl)
        _probe(backbone, data, targets, linear, class_weight, attr_head, attr_targets, use_cl, batch_size)
    udata: Tensor | None = None
    views: TwoViews | None = None
    ucycle: _Cycle | None = None
    if unlabelled is not None and semi is not None:
        udata = unlabelled.to(dev)
        views = TwoViews(semi, device_generator(dev, seed + 104729))
        ucycle = _Cycle(len(udata), torch.Generator().manual_seed(seed + 15485863))

    bsz = min(batch_size, n)
    ubsz = max(2, round(semi.ratio * bsz)) if semi is not None else 0
    budget = TrainingBudget(epochs=epochs, minutes=minutes, steps_per_epoch=max(1, n // bsz), started=t_start)
    augmenter = (
        BloodSmearAugment(augment, generator=device_generator(dev, seed)) if augment is not None else None
    )
    sampler_gen = torch.Generator().manual_seed(seed + 7919)
    report = ProgressReporter(progress, budget, interval=progress_interval)
    report(f"fine-tuning on {n} cells, {budget.steps_per_epoch} steps per epoch", force=True)
    history: list[dict[str, float]] = []
    epoch = _EpochTally()
    parts = _Parts()
    totals = {"kept": 0, "seen": 0}

    def start_epoch() -> None:
        if sample_weight is not None:
            size = budget.steps_per_epoch * bsz
            epoch.start(torch.multinomial(sample_weight, size, True, generator=sampler_gen))
        else:
            epoch.start(torch.randperm(n, generator=sampler_gen))

    def step(position: int) -> float:
        idx = epoch.order[position * bsz : (position + 1) * bsz].to(dev)
        x = to_float(data[idx])
        if augmenter is not None:
            x = augmenter(x)
        if use_cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets[idx]
        scale_learning_rates(optimizer, base_lrs, lr_factor(budget.fraction(), warmup=warmup))
        logits = linear(features(x))
        loss = F.cross_entropy(logits, y, weight=class_weight, label_smoothing=label_smoothing)
        value = backward_step(optimizer, loss, step=budget.steps_done)
        epoch.count(logits.detach().argmax(dim=1) == y)
        return value

    def extended_step(position: int) -> float:
        """A step with unlabelled cells and/or attributes (the plain ``step`` stays as it was)."""
        idx = epoch.order[position * bsz : (position + 1) * bsz].to(dev)
        x = to_float(data[idx])
        if augmenter is not None:
            x = augmenter(x)
        y = targets[idx]
        scale_learning_rates(optimizer, base_lrs, lr_factor(budget.fraction(), warmup=warmup))
        mask: Tensor | None = None
        if udata is not None and views is not None and ucycle is not None and semi is not None:
            weak, strong = views(to_float(udata[ucycle.take(ubsz).to(dev)]))
            with torch.no_grad():
                weak_logits = linear(features(_layout(weak, use_cl)))
            pseudo, mask = pseudo_labels(weak_logits, semi.threshold)
            feats = features(_layout(torch.cat([x, strong]), use_cl))
            logits_all = linear(feats)
            logits, strong_logits = logits_all[: len(y)], logits_all[len(y) :]
            feats = feats[: len(y)]
        else:
            feats = features(_layout(x, use_cl))
            logits = linear(feats)
        loss_x = F.cross_entropy(logits, y, weight=class_weight, label_smoothing=label_smoothing)
        loss = loss_x
        values = {"loss_x": float(loss_x.detach())}
        if mask is not None and semi is not None:
            loss_u = consistency_loss(strong_logits, pseudo, mask)
            loss = loss + semi.lambda_u * loss_u
            values.update(loss_u=float(loss_u.detach()), mask_rate=float(mask.float().mean()))
            totals["kept"] += int(mask.sum())
            totals["seen"] += len(mask)
        if attr_head is not None and attr_targets is not None:
            loss_attr = attribute_loss(attr_head(feats), attr_targets[idx])
            loss = loss + attribute_weight * loss_attr
            values["loss_attr"] = float(loss_attr.detach())
        value = backward_step(optimizer, loss, step=budget.steps_done)
        epoch.count(logits.detach().argmax(dim=1) == y)
        parts.add(values)
        return value

    def end_epoch(end: EpochEnd) -> None:
        entry = {
            "epoch": end.epoch,
            "loss": end.loss,
            "accuracy": epoch.accuracy,
            "seconds": round(end.seconds, 3),
        }
        if extended:
            entry.update(parts.means())
        history.append(entry)
        report(f"epoch {entry['epoch']:.2f}: loss {entry['loss']:.4f}", force=True)

    backbone.train()
    linear.train()
    if attr_head is not None:
        attr_head.train()
    stopped_by = run_budgeted(
        budget,
        extended_step if extended else step,
        start_epoch=start_epoch,
        end_epoch=end_epoch,
        report=report,
    )
    if recalibrate_bn and budget.steps_done > 0:
        # With unlabelled cells, statistics over as many of them, drawn at random, as there are labelled
        # cells: closer to the pool the encoder will embed, and the pass after the time budget stays at
        # most twice the supervised one (on 2 busy cores it took ~100 s for 2,250 cells at 96 px).
        stats = data
        if udata is not None:
            pick = torch.randperm(len(udata), generator=torch.Generator().manual_seed(seed + 31))[: len(data)]
            stats = torch.cat([data, udata[pick.to(udata.device)]])
        _recalibrate_batch_norm(backbone, stats, bsz, use_cl)
    backbone.eval()
    linear.eval()
    if attr_head is not None:
        attr_head.eval()
    report.finished(f"done: {budget.steps_done} steps, stopped by {stopped_by}")
    return FinetuneResult(
        backbone=backbone,
        head=linear,
        epochs_done=budget.epochs_done,
        steps_done=budget.steps_done,
        seconds=budget.elapsed(),
        history=history,
        stopped_by=stopped_by,
        device=str(dev),
        attribute_head=attr_head,
        unlabelled_cells=0 if unlabelled is None else len(unlabelled),
        attribute_cells=0 if attr_targets is None else int((attr_targets >= 0).any(dim=1).sum()),
        pseudo_label_rate=totals["kept"] / totals["seen"] if totals["seen"] else None,
        unlabelled_seen=totals["seen"],
    )


@torch.no_grad()
def _frozen_features(backbone: nn.Module, data: Tensor, batch_size: int, channels_last: bool) -> Tensor:
    was_training = backbone.training
    backbone.eval()
    forward = _features_fn(backbone)
    try:
        return torch.cat(
            [
                forward(_layout(to_float(data[i : i + batch_size]), channels_last)).float()
                for i in range(0, len(data), batch_size)
            ]
        )
    finally:
        backbone.train(was_training)


def _fit_linear(
    head: nn.Linear, feats: Tensor, targets: Tensor, weight: Tensor | None, *, l2: float = 1e-3
) -> None:
    """Fit ``head`` on fixed ``feats`` by L-BFGS (weighted cross-entropy + l2 * ||W||^2); rows with a
    negative target are left out."""
    keep = targets >= 0
    if int(keep.sum()) < 2:
        return
    x, y = feats[keep], targets[keep]
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x), y, weight=weight) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)


def _probe(
    backbone: nn.Module,
    data: Tensor,
    targets: Tensor,
    linear: nn.Linear,
    class_weight: Tensor | None,
    attr_head: MultiAttributeHead | None,
    attr_targets: Tensor | None,
    channels_last: bool,
    batch_size: int,
) -> None:
    """LP-FT's first stage: every head fitted as a linear probe on the frozen features."""
    feats = _frozen_features(backbone, data, max(batch_size, 64), channels_last)
    counts = torch.bincount(targets, minlength=linear.out_features).float()
    weight = class_weight
    if weight is None:  # the probe always balances the classes (the sampler does it during training)
        weight = torch.where(counts > 0, len(targets) / (linear.out_features * counts.clamp_min(1.0)), 0.0)
    _fit_linear(linear, feats, targets, weight)
    if attr_head is not None and attr_targets is not None:
        for j, head in enumerate(attr_head.heads.values()):
            assert isinstance(head, nn.Linear)
            _fit_linear(head, feats, attr_targets[:, j], None)


def _layout(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class _Parts:
    """Per-epoch means of the loss terms of an extended step."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        out = {key: self.sums[key] / self.counts[key] for key in self.sums}
        self.sums, self.counts = {}, {}
        return out


class _EpochTally:
    """One epoch's sampling order and training accuracy (predictions on the augmented batches)."""

    def __init__(self) -> None:
        self.order = torch.empty(0, dtype=torch.long)
        self.correct = 0
        self.seen = 0

    def start(self, order: Tensor) -> None:
        self.order, self.correct, self.seen = order, 0, 0

    def count(self, hits: Tensor) -> None:
        self.correct += int(hits.sum())
        self.seen += len(hits)

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen


def _class_balance(targets: Tensor, n_classes: int, balance: Balance) -> tuple[Tensor | None, Tensor | None]:
    """(cross-entropy class weights, per-cell sampling weights), each None unless ``balance`` asks."""
    n = len(targets)
    counts = torch.bincount(targets, minlength=n_classes).float()
    if balance == "loss":
        return torch.where(counts > 0, n / (n_classes * counts.clamp_min(1.0)), 0.0), None
    if balance == "sampler":
        return None, (1.0 / counts)[targets].cpu()
    return None, None


def group_balanced_weights(targets: Tensor, groups: Tensor) -> Tensor:
    """Per-cell sampling weights giving every class the same total and, within a class, every group in
    it the same share: 1 / (count(class, group) * groups in the class)."""
    targets, groups = targets.cpu(), groups.cpu().long()
    if len(groups) != len(targets):
        raise ValueError(f"groups has {len(groups)} rows for {len(targets)} labelled cells")
    width = int(groups.max()) + 1
    pair = targets * width + groups  # one id per (class, group)
    pairs, inverse, pair_counts = torch.unique(pair, return_inverse=True, return_counts=True)
    pair_class = pairs // width
    groups_in_class = torch.bincount(pair_class)[pair_class]
    return 1.0 / (pair_counts * groups_in_class)[inverse].float()


def _head(head: nn.Linear | None, dim: int, n_classes: int) -> nn.Linear:
    """A fresh ``nn.Linear(dim, n_classes)``, or the given head when its shape fits."""
    if head is None:
        return nn.Linear(dim, n_classes)
    if head.in_features != dim or head.out_features != n_classes:
        raise ValueError(f"head is {head.in_features}->{head.out_features}, need {dim}->{n_classes}")
    return head


def _recalibrate_batch_norm(backbone: nn.Module, data: Tensor, batch_size: int, channels_last: bool) -> None:
    """Exact batch-norm statistics of ``backbone`` on ``data`` (uint8 (N, 3, S, S), N >= 2)."""
    # Nearly equal chunks: never a batch of one, which batch norm in train mode can reject.
    chunks = torch.tensor_split(data, max(1, math.ceil(len(data) / batch_size)))

    def batches() -> Iterator[Tensor]:
        for chunk in chunks:
            x = to_float(chunk)
            yield x.contiguous(memory_format=torch.channels_last) if channels_last else x

    torch.optim.swa_utils.update_bn(batches(), backbone)


def _features_fn(backbone: nn.Module) -> Callable[[Tensor], Tensor]:
    """``backbone.forward_features``, or the backbone itself for a plain embedding network."""
    forward: Callable[[Tensor], Tensor] = getattr(backbone, "forward_features", backbone)
    return forward


def _embedding_dim(backbone: nn.Module, sample: Tensor) -> int:
    """Embedding size of a backbone without ``num_features``: one forward pass of two cells."""
    forward = _features_fn(backbone)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = int(forward(to_float(sample)).shape[1])
    backbone.train(was_training)
    return dim


@torch.inference_mode()
def predict_proba(
    backbone: nn.Module,
    head: nn.Module,
    images: Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities ``softmax(head(backbone.forward_features(x)))`` for uint8 (N, 3, S, S) images.

    Runs in eval mode (the modes are restored) on ``device``, default the backbone's own device.

    Returns:
        float32 (N, n_classes); rows sum to 1.
    """
    if device is None:
        param = next(backbone.parameters(), None)
        dev = param.device if param is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    features = _features_fn(backbone)
    modes = (backbone.training, head.training)
    backbone.eval().to(dev)
    head.eval().to(dev)
    chunks: list[np.ndarray] = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size].to(dev))
            logits = head(features(x))
            chunks.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    finally:
        backbone.train(modes[0])
        head.train(modes[1])
    if not chunks:
        out_features = int(getattr(head, "out_features", 0))
        return np.zeros((0, out_features), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


__all__ = [
    "BALANCE_MODES",
    "Balance",
    "FinetuneResult",
    "ProgressCallback",
    "SemiSupervised",
    "finetune",
    "group_balanced_weights",
    "predict_proba",
    "release_inference_tensors",
]
