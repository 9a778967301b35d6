import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from models import FULL_FRAME, MNIST_FRAMING, load_checkpoint
from models.layout import checkpoint_versions
from training import data as data_module
from training.cli import main


def test_dry_run_trains_saves_and_plots(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifacts"
    assert main(["train", "--dataset", "all", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    for name in ("mnist", "fashion-mnist"):
        checkpoint = load_checkpoint(out / name)
        card = checkpoint.card
        assert card.dataset == name and card.provenance["dry_run"] and card.pretraining == "greedy"
        assert card.recipe_name == "default" and card.recipe["max_shift"] == (2 if name == "mnist" else 0)
        assert card.framing == (MNIST_FRAMING if name == "mnist" else FULL_FRAME)
        stages = [s["name"] for s in card.provenance["stages"]]
        assert stages == ["pretrain 784-400", "pretrain 784-400-256", "fine-tune", "refit decoders"]
        assert set(card.metrics.reconstruction_error_percentiles) == {"p50", "p90", "p99", "p99.9"}
        assert len(card.metrics.confusion_matrix) == 10
        provenance = card.provenance
        assert (
            provenance["data_md5"]["train-images-idx3-ubyte"] and provenance["torch_version"] and provenance["created"]
        )
        for plot in ("loss_curves.png", "confusion_matrix.png", "reconstructions.png"):
            assert (out / name / "1" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in capsys.readouterr().out


def test_if_missing_keeps_a_verified_checkpoint(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifacts"
    args = ["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu", "--if-missing"]
    assert main(args) == 0
    created = json.loads((out / "mnist" / "1" / "card.json").read_text())["provenance"]["created"]
    assert main(args) == 0
    assert "present and verified; not retraining" in capsys.readouterr().out
    assert json.loads((out / "mnist" / "1" / "card.json").read_text())["provenance"]["created"] == created
    assert sorted(p.name for p in (out / "mnist").iterdir()) == ["1"]


def test_if_missing_with_a_recipe_trains_when_the_newest_version_is_another_recipes(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run RECIPE=best`: a `default` checkpoint is not what was asked for, so `best` becomes the newest."""
    out = tmp_path / "artifacts"
    args = ["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu", "--if-missing"]
    assert main(args) == 0
    assert main([*args, "--recipe", "best"]) == 0
    assert "was trained by recipe 'default', not 'best'" in capsys.readouterr().out
    assert load_checkpoint(out / "mnist").card.recipe_name == "best"
    assert main([*args, "--recipe", "best"]) == 0 and main(args) == 0  # the newest is kept by either
    assert capsys.readouterr().out.count("present and verified; not retraining") == 2
    assert sorted(p.name for p in (out / "mnist").iterdir()) == ["1", "2"]


def test_train_writes_where_the_service_reads(
    tiny_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --out, training finds (and would write) the checkpoints in $SAE_ARTIFACTS_DIR, as sae-serve does."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SAE_ARTIFACTS_DIR", str(tiny_artifacts))
    assert main(["train", "--dataset", "all", "--if-missing", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist"):
        assert f"{name}: checkpoint in {tiny_artifacts / name} is present and verified; not retraining" in out
    assert not (elsewhere / "artifacts").exists()


def test_evaluate_reproduces_the_card(tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "artifacts"
    main(["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu"])
    capsys.readouterr()
    assert main(["evaluate", str(out / "mnist"), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    card = json.loads((out / "mnist" / "1" / "card.json").read_text())
    assert metrics["test_accuracy"] == card["metrics"]["test_accuracy"]  # dry-run evaluates all 64 tiny test images
    assert metrics["reconstruction_mse"] == pytest.approx(card["metrics"]["reconstruction_mse"])


def test_training_again_writes_the_next_version_and_keeps_the_others(
    tiny_artifacts: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flat checkpoint (the layout before versions) is version 1: the next training writes 2/, then 3/."""
    out = tmp_path / "versioned"
    shutil.copytree(tiny_artifacts / "mnist", out / "mnist")
    flat = {p.name: p.read_bytes() for p in (out / "mnist").iterdir()}
    args = ["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0 and main([*args, "--seed", "1"]) == 0
    assert f"-> {out / 'mnist' / '3'}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "mnist").iterdir() if p.is_file()} == flat
    assert sorted(checkpoint_versions(out / "mnist")) == [1, 2, 3]
    seeds = [load_checkpoint(out / "mnist" / v).card.provenance["seed"] for v in ("2", "3")]
    assert seeds == [0, 1]
    assert load_checkpoint(out / "mnist").path == out / "mnist" / "3"  # the model's folder: its newest version


def test_ablation_prints_a_row_per_scheme(tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablation", "--dataset", "mnist", "--dry-run", "--device", "cpu"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mnist |")]
    assert [row.split(" | ")[2] for row in rows] == ["greedy", "end-to-end", "none"]


def test_ablation_over_seeds_and_recipes_gives_mean_and_spread(
    tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["ablation", "--dataset", "mnist", "--dry-run", "--device", "cpu", "--schemes", "greedy"]
    assert main([*args, "--recipes", "seed", "default", "--seeds", "0", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "over seeds 0, 1, 2" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| mnist |")]
    assert [row[1] for row in rows] == ["seed", "default"]
    accuracy, ece = rows[0][3], rows[0][4]
    assert " ± " in accuracy and ece.count(" ± ") == 2  # three seeds: a mean and a spread


def test_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "sae-train: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--pretrain", "sideways"])


def test_fetch_updates_apt_lists_only_when_asked_and_only_when_needed(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library never changes the system by itself; `--apt-update` makes that an explicit step of the CLI."""
    source = tiny_data_dir / "mnist"
    known = {"lists": False}
    updates: list[str] = []

    def debian(spec: data_module.DatasetSpec, target: Path, work: Path) -> dict[str, Path]:
        if not known["lists"]:
            raise data_module.DataError("apt-get knows no such package")
        return data_module._from_folder(source)

    def update() -> None:
        updates.append("apt-get update")
        known["lists"] = True

    spec = data_module.DATASETS["mnist"]
    only_debian = replace(spec, sources=("existing", "debian-download"))
    monkeypatch.setitem(data_module.DATASETS, "mnist", only_debian)
    monkeypatch.setitem(data_module.SOURCES, "debian-download", debian)
    monkeypatch.setattr("training.cli.update_package_lists", update)
    empty = tmp_path / "empty"
    assert main(["--data-dir", str(empty), "fetch", "--dataset", "mnist"]) == 1
    assert updates == []
    assert main(["--data-dir", str(empty), "fetch", "--dataset", "mnist", "--apt-update"]) == 0
    assert updates == ["apt-get update"] and (empty / "mnist" / "train-images-idx3-ubyte").is_file()
    assert main(["--data-dir", str(empty), "fetch", "--dataset", "mnist", "--apt-update"]) == 0
    assert updates == ["apt-get update"]  # the data is there now: nothing to update for


def test_the_debian_source_says_how_to_update_apt_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def unknown_package(cmd: list[str], cwd: Path) -> None:
        raise data_module.DataError(f"'{' '.join(cmd)}' failed: E: Unable to locate package")

    monkeypatch.setattr(data_module, "_run", unknown_package)
    with pytest.raises(data_module.DataError, match=r"sae-train fetch --apt-update"):
        data_module.SOURCES["debian-download"](data_module.DATASETS["fashion-mnist"], tmp_path, tmp_path)
