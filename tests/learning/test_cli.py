"""End to end on ~200 real cells: split -> pretrain -> embed -> benchmark, through ``python -m learning``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from learning.__main__ import main
from learning.benchmark import initial_stratified

pytestmark = pytest.mark.realdata


@pytest.fixture
def small_manifest(data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path) -> Path:
    taken: dict[str, int] = {}
    rows = []
    for row in manifest_rows:
        if taken.get(row["label"], 0) < 22:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            rows.append({**row, "path": str(data_dir / row["path"])})
    path = tmp_path / "small.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(manifest_rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_pretrain_embed_benchmark_end_to_end(
    small_manifest: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = run(
        [
            "split",
            "--data",
            str(small_manifest),
            "--test-fraction",
            "0.25",
            "--out-dir",
            str(tmp_path / "split"),
        ],
        capsys,
    )
    assert split["pool"] + split["test"] == 9 * 22  # type: ignore[operator]

    pretrained = run(
        [
            "pretrain",
            "--data",
            str(tmp_path / "split" / "pool.csv"),
            "--method",
            "simclr",
            "--backbone",
            "lightcnn",
            "--backbone-kw",
            "width=8",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--out",
            str(tmp_path / "enc.pt"),
            "--quiet",
        ],
        capsys,
    )
    assert pretrained["method"] == "simclr"
    assert (tmp_path / "enc.pt").is_file()

    embedded = run(
        [
            "embed",
            "--encoder",
            str(tmp_path / "enc.pt"),
            "--data",
            str(tmp_path / "split" / "test.csv"),
            "--out",
            str(tmp_path / "emb"),
        ],
        capsys,
    )
    emb = np.load(tmp_path / "emb" / "embeddings.npy")
    assert emb.shape == (split["test"], embedded["dim"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)

    # Another lab's cells: every 12th of external_bccd (its five classes, basophil with none or one).
    bccd = tmp_path / "bccd.csv"
    external_root = data_dir.parent / "external_bccd"
    with (external_root / "manifest.csv").open(newline="") as handle:
        ext_rows = list(csv.DictReader(handle))[::12]
    with bccd.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ext_rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(external_root / r["path"])} for r in ext_rows)

    out = tmp_path / "bench"
    result = run(
        [
            "benchmark",
            "--external",
            str(bccd),
            "--adapt-labels",
            "5",
            "--pool",
            str(tmp_path / "split" / "pool.csv"),
            "--test",
            str(tmp_path / "split" / "test.csv"),
            "--encoder",
            str(tmp_path / "enc.pt"),
            "--strategies",
            "random,margin,typiclust",
            "--batch",
            "9",
            "--rounds",
            "2",
            "--seeds",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ],
        capsys,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategies"]) == {"random", "margin", "typiclust"}
    assert 0.0 <= summary["full_label_macro_f1"] <= 1.0
    for entry in summary["strategies"].values():
        assert set(entry["labels_to_reach"]) == {"0.95", "0.99"}
        assert 0.0 <= entry["final_test"]["macro_f1"] <= 1.0
        assert "per_source_macro_f1" in entry["final_test"]
        assert "attribute_mean_macro_f1" in entry["final_test"]
        ext = entry["final_test"]["external"]
        assert 0.0 <= ext["macro_f1_all"] <= 1.0
        assert set(ext["per_class_recall"]) == {r["label"] for r in ext_rows}
        assert sum(ext["predicted_share"].values()) == pytest.approx(1.0)
        assert entry["final_test"]["adapted"]["labels"] == 5
        for seed_report in entry["final_test_per_seed"]:
            assert seed_report["external"]["cells"] == len(ext_rows)
            adapted = seed_report["adapted"]
            assert sum(adapted["picked_per_class"].values()) == 5
            assert adapted["site_after"]["cells"] == adapted["site_before"]["cells"] == len(ext_rows) - 5
            # The model before adapting is the final model scored above.
            assert adapted["test_before"] == pytest.approx(seed_report["macro_f1"])
            assert adapted["forgetting"] == pytest.approx(adapted["test_before"] - adapted["test_after"])
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2 * 3  # strategies x seeds x (rounds + 1)
    assert sorted({int(r["labels"]) for r in rows}) == [9, 18, 27]
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert result["full_label_macro_f1"] == summary["full_label_macro_f1"]


def test_stratified_start_spreads_over_classes() -> None:
    y = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 1)
    picked = initial_stratified(y, 7, np.random.default_rng(0))
    assert len(set(picked.tolist())) == 7
    counts = {c: int((y[picked] == c).sum()) for c in "abc"}
    assert counts == {"a": 3, "b": 3, "c": 1}


def test_unknown_command_and_strategy_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["nonsense"]) == 2
    with pytest.raises(SystemExit):
        main(
            [
                "benchmark",
                "--pool",
                "p.csv",
                "--test",
                "t.csv",
                "--strategies",
                "magic",
                "--out",
                str(tmp_path),
            ]
        )
    assert "unknown strategies" in capsys.readouterr().err


def test_final_arrays_need_a_fine_tuned_loop_scored_on_another_lab(
    small_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--save-final-arrays saves the last round of --finetune-every runs with --external; without either
    it is refused before anything is embedded."""
    common = [
        "benchmark",
        "--pool",
        str(small_manifest),
        "--test",
        str(small_manifest),
        "--out",
        str(tmp_path),
    ]
    for extra in (["--finetune-every", "2"], ["--external", str(small_manifest)]):
        with pytest.raises(SystemExit):
            main([*common, *extra, "--save-final-arrays", str(tmp_path / "arrays")])
        assert "--save-final-arrays needs --finetune-every and --external" in capsys.readouterr().err
    assert not (tmp_path / "arrays").exists()


def test_split_keeps_byte_identical_images_on_one_side(
    data_dir: Path, manifest_rows: list[dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shared set's cross-class duplicate pair plus a handful of other cells.
    pair = {"images/eosinophil/EO_225902.jpg", "images/neutrophil/BNE_191112.jpg"}
    rows = [r for r in manifest_rows if r["path"] in pair]
    rows += [
        r for r in manifest_rows if r["label"] in {"eosinophil", "neutrophil"} and r["path"] not in pair
    ][:20]
    path = tmp_path / "dup.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(manifest_rows[0].keys()))
        writer.writeheader()
        writer.writerows({**r, "path": str(data_dir / r["path"])} for r in rows)
    for seed in range(6):
        result = run(
            [
                "split",
                "--data",
                str(path),
                "--test-fraction",
                "0.5",
                "--seed",
                str(seed),
                "--out-dir",
                str(tmp_path / f"s{seed}"),
            ],
            capsys,
        )
        assert result["duplicate_groups_kept_together"] == 1
        sides = []
        for side in ("pool", "test"):
            with (tmp_path / f"s{seed}" / f"{side}.csv").open() as handle:
                names = {Path(r["path"]).name for r in csv.DictReader(handle)}
            sides.append(len(names & {Path(p).name for p in pair}))
        assert sorted(sides) == [0, 2]
