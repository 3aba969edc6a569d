"""The benchmark of the loop with fine-tuning: fine-tunes on schedule, re-embeds, keeps querying on the new
embedding, passes the unlabelled sample and the attributes, and reports the issue's metrics per round."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learning.__main__ import main
from learning.benchmark import ALProblem, initial_stratified
from learning.calibration import apply_temperature
from learning.classifiers import AlignedClassifier
from learning.finetune_benchmark import (
    FinetunePlan,
    against_targets,
    attribute_matrix,
    held_out_confident,
    normalise,
    raw_features,
    run_finetune_loop,
)
from learning.semi import SemiSupervised
from models_zoo import create_model

CLASSES = ["blast", "lymphocyte", "neutrophil"]
SIZE = 24


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Colour-coded cells of three classes, two sources, one attribute on the lymphocytes only."""
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % 3
    base = torch.tensor([[200.0, 60, 60], [60, 200, 60], [60, 60, 200]])[torch.from_numpy(y)]
    images = (base.view(n, 3, 1, 1) + torch.rand(n, 3, SIZE, SIZE, generator=g) * 80).clamp(0, 255)
    sources = np.where(y == 0, "munich_aml", "pbc")
    size = np.where(y == 1, np.where(np.arange(n) % 2 == 0, "small", "big"), "")
    return images.to(torch.uint8), np.asarray(CLASSES)[y], sources, {"cell_size": size}


@pytest.fixture(scope="module")
def problem_and_images() -> tuple[ALProblem, torch.Tensor, torch.Tensor, torch.nn.Module]:
    torch.manual_seed(0)
    encoder = create_model("lightcnn", width=8)
    pool_images, pool_y, _pool_sources, pool_attrs = synthetic(60, seed=0)
    test_images, test_y, test_sources, test_attrs = synthetic(30, seed=1)
    problem = ALProblem(
        pool_x=normalise(raw_features(encoder, pool_images)),
        pool_y=pool_y,
        test_x=normalise(raw_features(encoder, test_images)),
        test_y=test_y,
        classes=CLASSES,
        test_sources=test_sources,
        pool_attributes=pool_attrs,
        test_attributes=test_attrs,
        attribute_classes={"cell_size": ["big", "small"]},
    )
    return problem, pool_images, test_images, encoder


def test_the_loop_fine_tunes_on_schedule_and_queries_on_the_new_embedding(
    problem_and_images: tuple[ALProblem, torch.Tensor, torch.Tensor, torch.nn.Module],
) -> None:
    problem, pool_images, test_images, encoder = problem_and_images
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    plan = FinetunePlan(
        every=2, minutes=None, epochs=1, semi=SemiSupervised(threshold=0.0), batch_size=6, lr=1e-3
    )
    run = run_finetune_loop(
        problem,
        pool_images,
        test_images,
        encoder,
        plan,
        strategy="margin",
        seed=0,
        batch=6,
        rounds=4,
        n_boot=20,
    )
    assert [r["labels"] for r in run.rounds] == [6, 12, 18, 24, 30]
    assert [r["encoder_version"] for r in run.rounds] == [0, 0, 1, 1, 2]  # after batches 2 and 4
    assert [bool(r.get("finetuned")) for r in run.rounds] == [False, False, True, False, True]
    assert [f["labels"] for f in run.finetunes] == [18, 30]
    # 4x the labelled count from the unlabelled pool, as far as it goes (42 then 30 cells left).
    assert [f["unlabelled_cells"] for f in run.finetunes] == [42, 30]
    assert all(f["pseudo_label_rate"] == 1.0 for f in run.finetunes)
    assert all(f["attribute_cells"] > 0 for f in run.finetunes)  # the labelled lymphocytes' cell_size
    assert all("head_test" in f and 0.0 <= f["head_test"]["macro_f1"] <= 1.0 for f in run.finetunes)
    # The last fine-tune re-embeds only what is read again: the labelled pool cells and the test cells.
    assert [f["reembedded"] for f in run.finetunes] == ["pool and test", "labelled pool cells and test"]
    assert (
        isinstance(run.finetunes[0]["knn20_macro_f1"], float) and run.finetunes[1]["knn20_macro_f1"] is None
    )
    for r in run.rounds:
        lo, hi = r["macro_f1_ci"]
        assert lo <= r["macro_f1"] <= hi or lo == hi
        assert set(r["per_source_macro_f1"]) == {"munich_aml", "pbc"}
        assert set(r["per_class_recall"]) == set(CLASSES)
        assert 0.0 <= r["ece"] <= 1.0 and r["attribute_mean_macro_f1"] is not None
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # the input is copied

    supervised = run_finetune_loop(
        problem,
        pool_images,
        test_images,
        encoder,
        FinetunePlan(every=1, minutes=None, epochs=1, attributes=False, batch_size=6),
        strategy="random",
        seed=1,
        batch=6,
        rounds=1,
        n_boot=20,
    )
    assert (
        supervised.finetunes[0]["unlabelled_cells"] == 0 and supervised.finetunes[0]["attribute_cells"] == 0
    )


def test_a_label_budget_cuts_the_last_batch_and_fine_tunes_where_it_is_reached(
    problem_and_images: tuple[ALProblem, torch.Tensor, torch.Tensor, torch.nn.Module],
) -> None:
    """As Project.label_budget in the loop: never more labels than the budget, and the model the budget
    buys is fine-tuned on all of it, whatever the schedule (here every 3 batches)."""
    problem, pool_images, test_images, encoder = problem_and_images
    run = run_finetune_loop(
        problem,
        pool_images,
        test_images,
        encoder,
        FinetunePlan(every=3, minutes=None, epochs=1, attributes=False, batch_size=6),
        strategy="margin",
        seed=0,
        batch=6,
        rounds=10,
        n_boot=20,
        label_budget=22,
    )
    assert [r["labels"] for r in run.rounds] == [6, 12, 18, 22]  # the last batch cut from 6 to 4
    assert [bool(r.get("finetuned")) for r in run.rounds] == [False, False, False, True]
    assert [f["labels"] for f in run.finetunes] == [22]


def test_a_cold_start_picks_the_first_batch_without_labels(
    problem_and_images: tuple[ALProblem, torch.Tensor, torch.Tensor, torch.nn.Module],
) -> None:
    """As a new project starts: the hybrid has no model yet, so its cold start (TypiClust) picks the first
    batch on the initial embedding, where the default start draws it stratified by the true classes."""
    problem, pool_images, test_images, encoder = problem_and_images
    plan = FinetunePlan(every=5, minutes=None, epochs=1, attributes=False, batch_size=6)

    def first_round(start: str = "stratified") -> dict[str, object]:
        run = run_finetune_loop(
            problem,
            pool_images,
            test_images,
            encoder,
            plan,
            strategy="hybrid",
            seed=3,
            batch=6,
            rounds=0,
            n_boot=20,
            start=start,
        )
        return run.rounds[0]

    cold, stratified = first_round("cold"), first_round()
    assert (cold["labels"], cold["ran_as"]) == (6, "typiclust")
    assert (stratified["labels"], stratified["ran_as"]) == (6, "stratified")
    with pytest.raises(ValueError, match="start"):
        first_round("warm")


def test_another_labs_cells_are_scored_every_round_on_the_current_encoder(
    problem_and_images: tuple[ALProblem, torch.Tensor, torch.Tensor, torch.nn.Module], tmp_path: Path
) -> None:
    """External cells (two of the three classes, never trained on) get a report every round, on the
    embedding of the encoder of that round; the product's abstention adds the per-class rule to the
    global one, so it never abstains on fewer cells."""
    problem, pool_images, test_images, encoder = problem_and_images
    external_images, external_y, _sources, _attrs = synthetic(12, seed=7)
    keep = external_y != "blast"
    external_images, external_y = external_images[torch.from_numpy(keep)], external_y[keep]
    external_x = normalise(raw_features(encoder, external_images))
    with_external = dataclasses.replace(problem, external_x=external_x, external_y=external_y)
    run = run_finetune_loop(
        with_external,
        pool_images,
        test_images,
        encoder,
        FinetunePlan(every=2, minutes=None, epochs=1, attributes=False, batch_size=6),
        strategy="margin",
        seed=0,
        batch=6,
        rounds=2,
        n_boot=20,
        external_images=external_images,
        save_final_arrays=tmp_path,
    )
    assert [r["encoder_version"] for r in run.rounds] == [0, 0, 1]
    # The last round's arrays: the initial embeddings as given, the round's own differ (fine-tuned),
    # and its probabilities give the external figures the round reported.
    saved = np.load(tmp_path / "margin_seed0.npz")
    assert list(saved["labels"]) == list(problem.pool_y[saved["labelled"]])
    assert np.array_equal(saved["external_x0"], external_x) and not np.allclose(
        saved["external_x"], external_x
    )
    assert np.array_equal(saved["labelled_x0"], problem.pool_x[saved["labelled"]])
    called = saved["classes"][saved["external_probs"].argmax(axis=1)]
    last = run.rounds[-1]["external"]["predicted_share"]
    assert {c: float((called == c).mean()) for c in set(called)} == pytest.approx(
        {c: v for c, v in last.items() if v > 0}
    )
    for r in run.rounds:
        ext = r["external"]
        assert ext["cells"] == 8 and set(ext["per_class_recall"]) == {"lymphocyte", "neutrophil"}
        assert sum(ext["predicted_share"].values()) == pytest.approx(1.0)
        assert set(r["abstention"]) == {
            "product",
            "global",
            "held_out_q0.98",
            "held_out_q0.95",
            "class_held_out_q0.98",
            "initial",
            "product_and_initial",
            "product_confident",
        }
        product, global_rule = r["abstention"]["product"], r["abstention"]["global"]
        assert product["test_abstain"] >= global_rule["test_abstain"]
        assert product["external_abstain"] >= global_rule["external_abstain"]
        assert product["external_answered_blast"] <= ext["predicted_share"].get("blast", 0.0) + 1e-9
        # Answered only where both rules answer: never fewer abstentions than either alone.
        both, initial = r["abstention"]["product_and_initial"], r["abstention"]["initial"]
        for key in ("test_abstain", "external_abstain"):
            assert both[key] >= max(product[key], initial[key])
        assert both["external_answered_blast"] <= min(
            product["external_answered_blast"], initial["external_answered_blast"]
        )
        # The confidence threshold only takes answers away (the external cells are scored whole by both).
        confident = r["abstention"]["product_confident"]
        assert confident["external_abstain"] >= product["external_abstain"]
        assert confident["external_answered_blast"] <= product["external_answered_blast"]
    # Before the first fine-tune the initial embedding is the current one: the rows agree.
    for r in run.rounds[:2]:
        assert r["abstention"]["initial"] == r["abstention"]["product"]
        assert r["abstention"]["product_and_initial"] == r["abstention"]["product"]
    # Round 0 scores the external cells on the initial embedding: the same as fitting by hand.
    labelled = np.zeros(len(problem.pool_x), dtype=bool)
    labelled[initial_stratified(problem.pool_y, 6, np.random.default_rng(10_000))] = True
    by_hand = (
        AlignedClassifier(CLASSES, "logreg", class_weight="balanced", seed=0)
        .fit(problem.pool_x[labelled], problem.pool_y[labelled])
        .predict(external_x)
    )
    recall = {
        c: float((np.asarray(by_hand)[external_y == c] == c).mean()) for c in ("lymphocyte", "neutrophil")
    }
    assert run.rounds[0]["external"]["per_class_recall"] == pytest.approx(recall)
    with pytest.raises(ValueError, match="initial embeddings"):
        run_finetune_loop(
            problem,
            pool_images,
            test_images,
            encoder,
            FinetunePlan(every=2, minutes=None, epochs=1, attributes=False, batch_size=6),
            strategy="margin",
            seed=0,
            batch=6,
            rounds=1,
            external_images=external_images,
        )


def test_attribute_matrix_and_targets() -> None:
    attrs = {
        "cell_size": np.array(["big", "", "small", "huge"]),
        "granularity": np.array(["yes", "no", "", ""]),
    }
    schema = {
        "cell_size": ["big", "small"],
        "granularity": ["no", "yes"],
        "cell_shape": ["round", "irregular"],
    }
    out = attribute_matrix(attrs, schema, np.array([0, 1, 2, 3]))
    assert out.tolist() == [[0, 1, -1], [-1, 0, -1], [1, -1, -1], [-1, -1, -1]]  # unknown value: missing
    report = {
        "macro_f1": 0.96,
        "per_source_macro_f1": {"pbc": 0.92},
        "per_class_recall": {"blast": 0.97},
        "attribute_mean_macro_f1": None,
    }
    targets = against_targets(report)
    assert targets["macro_f1"]["met"] is True and targets["pbc_macro_f1"]["met"] is False
    assert targets["pbc_macro_f1"]["gap"] == pytest.approx(-0.01)
    assert targets["blast_recall"]["met"] is True and targets["attribute_mean_macro_f1"]["met"] is None


def test_plan_is_validated() -> None:
    with pytest.raises(ValueError, match="every"):
        FinetunePlan(every=0)
    with pytest.raises(ValueError, match="minutes, epochs"):
        FinetunePlan(every=1, minutes=None, epochs=None)


@pytest.mark.realdata
def test_benchmark_cli_with_fine_tuning(
    data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {}
    for name, (skip, take) in {"pool": (0, 8), "test": (8, 3)}.items():
        seen: dict[str, int] = {}
        rows = []
        for row in manifest_rows:
            k = seen[row["label"]] = seen.get(row["label"], 0) + 1
            if skip < k <= skip + take:
                rows.append({**row, "path": str(data_dir / row["path"])})
        paths[name] = tmp_path / f"{name}.csv"
        with paths[name].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(manifest_rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    # Another lab's cells: every 30th of external_bccd, scored each round on the current encoder.
    external_root = data_dir.parent / "external_bccd"
    if not (external_root / "manifest.csv").exists():
        pytest.skip("../shared/data/external_bccd is not there")
    with (external_root / "manifest.csv").open(newline="") as handle:
        external_rows = list(csv.DictReader(handle))[::30]
    paths["external"] = tmp_path / "external.csv"
    with paths["external"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(external_rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(external_root / r["path"])} for r in external_rows)
    out = tmp_path / "bench"
    argv = [
        "benchmark",
        *("--pool", str(paths["pool"]), "--test", str(paths["test"]), "--external", str(paths["external"])),
        *("--backbone", "lightcnn", "--image-size", "32", "--strategies", "hybrid"),
        *("--batch", "9", "--rounds", "2", "--seeds", "1"),
        *("--finetune-every", "1", "--finetune-minutes", "0.2", "--finetune-epochs", "1", "--semi"),
        *("--reference-minutes", "0.01", "--reference-product-classifier", "--threads", "1"),
        *("--cache-dir", str(tmp_path / "emb"), "--image-cache", str(tmp_path / "img"), "--out", str(out)),
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["plan"]["semi"]["threshold"] == 0.95
    final = summary["final"]["hybrid"]
    assert final["labels"] == 27 and set(final["against_targets"]) == {
        "macro_f1",
        "pbc_macro_f1",
        "blast_recall",
        "attribute_mean_macro_f1",
    }
    assert printed["final"]["hybrid"]["macro_f1"] == final["macro_f1"]
    external = final["external"]
    assert set(external["per_class_recall"]) == {r["label"] for r in external_rows}
    assert 0.0 <= external["macro_f1_all"] <= 1.0 and 0.0 <= external["predicted_blast"] <= 1.0
    for rule in ("abstention_product", "abstention_global"):
        assert set(external[rule]) >= {"test_abstain", "external_abstain", "external_answered_blast"}
    rounds = summary["runs"][0]["rounds"]
    assert all(r["external"]["cells"] == len(external_rows) for r in rounds)
    last = rounds[-1]
    assert external["abstention_product"]["external_answered_blast"] == pytest.approx(
        last["abstention"]["product"]["external_answered_blast"]
    )
    finetunes = summary["runs"][0]["finetunes"]
    assert [f["unlabelled_cells"] for f in finetunes] == [
        54,
        45,
    ]  # 4 x 18 and 4 x 27, capped by the unlabelled pool
    reference = summary["reference"]
    assert (
        reference["labels"] == 72 and "macro_f1" in reference["test"] and "macro_f1" in reference["head_test"]
    )
    assert printed["reference"]["head_test"]["macro_f1"] == reference["head_test"]["macro_f1"]
    with (out / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["labels"]) for r in rows] == [9, 18, 27]
    assert [r["encoder_version"] for r in rows] == ["0", "1", "2"]
    assert all(r["blast_recall"] != "" and r["pbc_macro_f1"] != "" for r in rows)


def test_held_out_confident_fits_the_temperature_on_the_calibrating_cells_only() -> None:
    """Confident where the calibrated top probability reaches the threshold; the temperature comes from
    the calibrating cells (here: the model is right on them with 0.6, so T = 1 and 0.6 passes at 0.6)."""
    classes = ["a", "b"]
    test_probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.55, 0.45], [0.9, 0.1]])
    test_y = np.array(["a", "b", "b", "a"])
    calibrating = np.array([True, True, False, False])
    external_probs = np.array([[0.59, 0.41], [0.2, 0.8]])
    test_sure, external_sure, temperature = held_out_confident(
        test_probs, external_probs, test_y, classes, calibrating, 0.6
    )
    # Right on both calibrating cells at 0.6: the NLL falls as T falls, to its lower bound.
    assert temperature < 1.0
    sharpened = apply_temperature(test_probs, temperature).max(axis=1)
    assert list(test_sure) == list(sharpened >= 0.6)
    assert list(external_sure) == list(apply_temperature(external_probs, temperature).max(axis=1) >= 0.6)
    # Wrong with confidence on the calibrating cells: T rises and fewer cells stay sure.
    _, external_flat, flat = held_out_confident(
        test_probs, external_probs, np.array(["b", "a", "b", "a"]), classes, calibrating, 0.6
    )
    assert flat > 1.0 and external_flat.sum() <= external_sure.sum()
