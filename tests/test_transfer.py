"""Does it transfer? Evaluation on other datasets after training and with hema-evaluate; calibration; field of view."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

from hema.base.errors import HemaError
from hema.cli import evaluate as evaluate_cli
from hema.cli import train as train_cli
from hema.dataset.sources.acevedo20 import Acevedo20
from hema.dataset.sources.mll23 import MLL23
from hema.model import calibration, data, evaluation
from hema.model.configs import VIT_TINY_DEMO

REPO = Path(__file__).resolve().parents[1]
ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"


def test_ece_of_known_cases() -> None:
    sure_and_right = calibration.reliability(np.ones(10), np.ones(10, dtype=bool))
    assert sure_and_right.ece == 0.0 and sure_and_right.counts[-1] == 10
    sure_and_wrong = calibration.reliability(np.full(4, 0.95), np.zeros(4, dtype=bool))
    assert sure_and_wrong.ece == pytest.approx(0.95)
    # Two bins: 0.3 confident and right 1 of 2 (gap 0.2); 0.9 confident and right 2 of 2 (gap 0.1).
    mixed = calibration.reliability(np.array([0.3, 0.3, 0.9, 0.9]), np.array([True, False, True, True]))
    assert mixed.ece == pytest.approx((2 * 0.2 + 2 * 0.1) / 4)
    assert len(mixed.counts) == calibration.ECE_BINS == 15


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def other_build(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second dataset with the harmonised classes: real Acevedo20 cells when ../shared is there, else the sample again."""
    out = tmp_path_factory.mktemp("other") / "other"
    if ACEVEDO.is_dir():
        subset = tmp_path_factory.mktemp("acevedo") / "acevedo20"
        for path in sorted(ACEVEDO.glob("*/*.jpg"))[::6]:
            target = subset / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)  # a copy: links out of the data folder are never read
        Acevedo20.build_folder(subset, out)
    else:
        MLL23.build_folder(sample_dir, out, seed=11)
    return out


def train(built: Path, out: Path, *extra: str) -> int:
    return train_cli.main(["--dataset", str(built), "--dataset-config", "harmonised", "--model", str(VIT_TINY_DEMO),
                           "--output-dir", str(out), "--max-steps", "4", "--batch-size", "16", "--report-to", "none", *extra])


def test_training_evaluates_other_datasets_and_the_card_says_how_far_it_transfers(
    built: Path, other_build: Path, sample_dir: Path, tmp_path: Path, capsys
) -> None:
    model = tmp_path / "model"
    assert train(built, model, "--eval-dataset", str(other_build), "--compare-field", "--stain-standardise") == 0
    results = json.loads((model / "all_results.json").read_text())
    entries = results["datasets"]
    assert set(entries) == {built.name, other_build.name}
    for entry in entries.values():
        assert 0 <= entry["macro_f1"] <= 1 and 0 <= entry["ece"] <= 1
    assert entries[built.name]["in_domain"] and not entries[other_build.name].get("in_domain")
    card = ModelCard.load(model / "README.md")
    indexed = {(r.dataset_type, r.dataset_config, r.dataset_split) for r in card.data.eval_results}
    assert indexed == {(built.name, "harmonised", "test"), (other_build.name, "harmonised", "test")}
    section = (model / "README.md").read_text().split("<!-- hema:domain-shift -->")[1]
    other_name = entries[other_build.name]["dataset_name"]
    assert other_name in section and ("Acevedo20" in other_name or not ACEVEDO.is_dir())
    other = entries[other_build.name]
    assert 0 <= other["stain_standardised"]["macro_f1"] <= 1
    assert ("as_stored" in other) == (other["crop_fraction"] < 1)  # a crop was made: the uncropped score beside it
    assert f"{other['stain_standardised']['macro_f1']:.4f} |" in section
    figures = other["figures"]
    assert all((model / f).is_file() for f in figures)
    config = json.loads((model / "config.json").read_text())
    assert config[evaluation.FIELD_ATTRIBUTE] == pytest.approx(25.0, rel=0.01)  # MLL23's 288 px at 0.0868 um
    assert len(config[evaluation.COLOUR_ATTRIBUTE]["mean"]) == 3

    # hema-evaluate adds a third dataset to the same card and results.
    third = tmp_path / "third"
    MLL23.build_folder(sample_dir, third, seed=5)
    assert evaluate_cli.main(["--model", str(model), "--dataset", str(third), "--dataset-config", "harmonised",
                              "--update-card", "--stain-standardise"]) == 0
    assert "macro_f1" in capsys.readouterr().out
    entries = json.loads((model / "all_results.json").read_text())["datasets"]
    assert set(entries) == {built.name, other_build.name, third.name}
    card = ModelCard.load(model / "README.md")
    assert {r.dataset_type for r in card.data.eval_results} == {built.name, other_build.name, third.name}
    assert (model / "README.md").read_text().count("(in domain)") == 1


def test_a_class_mismatch_is_one_line_before_any_training(built: Path, other_build: Path, tmp_path: Path, capsys) -> None:
    split = data.open_split(str(other_build), "harmonised", "test")
    with pytest.raises(HemaError, match="has classes"):
        evaluation.check_classes(("basophil", "eosinophil"), split)
    if ACEVEDO.is_dir():  # through the command line: Acevedo20's own 8 classes are not MLL23's 18
        out = tmp_path / "model"
        assert train_cli.main(["--dataset", str(built), "--model", str(VIT_TINY_DEMO), "--output-dir", str(out),
                               "--max-steps", "2", "--report-to", "none", "--eval-dataset", str(other_build)]) == 2
        assert "has classes" in capsys.readouterr().err.strip().splitlines()[-1]
        assert not out.exists()


def test_field_of_view_crop(other_build: Path) -> None:
    split = data.open_split(str(other_build), "harmonised", "test")
    field = split.field_um
    assert field is not None
    assert evaluation.crop_fraction(field, split) == pytest.approx(1.0)
    assert evaluation.crop_fraction(field / 2, split) == pytest.approx(0.5)
    assert evaluation.crop_fraction(field * 2, split) == 1.0  # a wider field cannot be made up
    assert evaluation.crop_fraction(None, split) == 1.0


def test_hema_evaluate_is_a_console_command_with_one_line_errors(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", "import sys; from hema.cli.evaluate import main; sys.exit(main())",
                             "--model", str(tmp_path / "absent"), "--dataset", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such folder" in result.stderr.strip().splitlines()[-1]
    shutil.rmtree(tmp_path, ignore_errors=True)
