"""train_vit.py end to end on the built synthetic sample (CPU, tiny ViTs, a few steps), and its parts.

Training runs in-process through hema.cli.train.main (an import of torch and transformers per test would
cost more than the training); the two command lines that only a fresh process can show (torchrun
with two CPU processes, the push against the local Hub) run as subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import evaluate
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import ViTConfig, ViTForImageClassification, pipeline

from hema.cli import train as train_cli
from hema.dataset.sources.mll23 import CELL_CLASSES
from hema.model import classifier, inputs, optimisation
from hema.model import folder as model_folder
from hema.model.metrics import CELL_CLASSIFICATION

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = set(model_folder.PUBLISHED)
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding only config.json: training starts from random weights."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    ViTConfig(**TINY).save_pretrained(folder)
    return folder


def run(argv: list[str]) -> int:
    return train_cli.main([*argv, "--report-to", "none"])


def results(folder: Path) -> dict:
    return json.loads((folder / "all_results.json").read_text())


def test_training_on_a_built_folder_writes_a_publishable_model_folder(built: Path, tmp_path: Path, capsys) -> None:
    # A local checkpoint with a 3-class head: the head is replaced by an 18-class one.
    source = tmp_path / "vit-3-classes"
    ViTForImageClassification(ViTConfig(**TINY, num_labels=3)).save_pretrained(source)
    out = tmp_path / "model"
    assert train_cli.main(["--dataset", str(built), "--model", str(source), "--output-dir", str(out),
                           "--max-steps", "6", "--batch-size", "16", "--eval-every", "3",
                           "--checkpoint-every", "2", "--checkpoints-total-limit", "1",
                           "--learning-rate", "1e-3"]) == 0
    assert "3-class head" in capsys.readouterr().out

    files = {p.name for p in out.iterdir() if p.is_file()}
    assert files == PUBLISHED
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_4"]  # pruned to the last one
    assert (out / "runs").is_dir()  # TensorBoard, through accelerator.init_trackers
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(18)] == list(CELL_CLASSES)
    assert "token" not in json.loads((out / "training_args.json").read_text())
    scores = results(out)
    assert 0 <= scores["test_macro_f1"] <= 1 and scores["best_step"] in (3, 6)
    assert np.asarray(scores["test_confusion_matrix"]).sum() == datasets.load_dataset(str(built), split="test").num_rows

    # The card: YAML and model-index parse back, tied to the dataset, config and split.
    card = ModelCard.load(out / "README.md")
    indexed = {r.metric_type: r for r in card.data.eval_results}
    assert set(indexed) == {"accuracy", "f1", "balanced_accuracy"}
    assert indexed["f1"].metric_value == round(scores["test_macro_f1"], 4)
    assert indexed["accuracy"].metric_value == round(scores["test_accuracy"], 4)
    assert {(r.dataset_config, r.dataset_split, r.task_type) for r in indexed.values()} == {
        ("default", "test", "image-classification")}
    assert card.data.pipeline_tag == "image-classification" and card.data.library_name == "transformers"
    assert "not for diagnosis" in card.text and "pipeline(" in card.text and "confusion_matrix.png" in card.text
    assert "synthetic" in card.data.tags

    # pipeline() on a 288x288 cell: class names back, and the same answer as our evaluation transform.
    test_split = datasets.load_dataset(str(built), split="test")
    image = test_split[0]["image"]
    assert image.size == (288, 288)
    predictions = pipeline("image-classification", model=str(out), top_k=3)(image)
    assert {p["label"] for p in predictions} <= set(CELL_CLASSES)
    model = ViTForImageClassification.from_pretrained(out).eval()
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    pixels = torch.from_numpy(inputs.decode_resized(buffer.getvalue(), 32))[None]
    with torch.no_grad():
        ours = model(pixel_values=inputs.BatchTransform([0.5] * 3, [0.5] * 3).evaluate(pixels)).logits
    assert predictions[0]["label"] == CELL_CLASSES[int(ours.argmax())]


def test_demo_without_arguments_draws_builds_trains_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_cli, "DEMO_PER_CLASS", 8)  # the real demo draws 40 per class
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["--max-steps", "3"]) == 0  # the demo's other defaults, as `python train_vit.py`
    out = tmp_path / "outputs" / "vit-mll23-demo"
    assert PUBLISHED <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 96  # hema/model/configs/vit-tiny-demo
    assert (tmp_path / "hema-cache" / "demo-build").is_dir()
    assert "Trained from random initialisation" in (out / "README.md").read_text()


def test_resumed_run_ends_with_the_same_weights_and_metrics(built: Path, tiny_config: Path, tmp_path: Path) -> None:
    args = ["--dataset", str(built), "--model", str(tiny_config), "--max-steps", "9", "--batch-size", "16",
            "--eval-every", "2", "--checkpoint-every", "4", "--checkpoints-total-limit", "5",
            "--balanced-sampler", "--class-weighting", "inverse", "--learning-rate", "3e-3"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run([*args, "--output-dir", str(whole)]) == 0
    # The interrupted run: what was on disk right after step 4's checkpoint (the run crosses an epoch after it).
    shutil.copytree(whole / "checkpoints" / "step_4", resumed / "checkpoints" / "step_4")
    AcceleratorState._reset_state(True)
    assert run([*args, "--output-dir", str(resumed), "--resume-from-checkpoint", "auto"]) == 0

    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = results(whole), results(resumed)
    assert {k: v for k, v in ra.items() if k != "train_seconds"} == {k: v for k, v in rb.items() if k != "train_seconds"}


def test_class_weighting_changes_the_loss() -> None:
    labels = np.array([0] * 8 + [1] * 2 + [2] * 1)
    none = optimisation.class_weights(labels, 4, "none")
    inverse = optimisation.class_weights(labels, 4, "inverse")
    sqrt = optimisation.class_weights(labels, 4, "sqrt-inverse")
    assert none is None
    for weights in (inverse, sqrt):
        assert weights[3] == 0  # absent from training
        assert float((weights[labels]).mean()) == pytest.approx(1.0)  # the loss keeps its scale
    assert inverse[2] / inverse[0] == pytest.approx(8.0) and sqrt[2] / sqrt[0] == pytest.approx(8**0.5)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]] * 11)  # always confident in the frequent class
    target = torch.as_tensor(labels)
    losses = [float(optimisation.classification_loss(logits, target, w, 0.0)) for w in (none, sqrt, inverse)]
    assert losses[0] < losses[1] < losses[2]  # weighting makes the missed rare classes cost more


def test_bad_inputs_fail_with_one_line_and_status_2(built: Path, tiny_config: Path, tmp_path: Path, capsys,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    unlabelled = tmp_path / "unlabelled"
    for split in ("train", "validation", "test"):
        rows = datasets.load_dataset(str(built), split=split).select(range(4))
        rows.cast_column("label", datasets.Value("int64")).to_parquet(str(unlabelled / "data" / f"{split}.parquet"))
    common = ["--model", str(tiny_config), "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    cases = {
        "ClassLabel column 'label'": ["--dataset", str(unlabelled), *common],
        "no such folder": ["--dataset", str(built), *common[2:], "--model", str(tmp_path / "no-such-model")],
        "no Hugging Face token": ["--dataset", str(built), *common, "--push-to-hub", "hema-org/vit"],
        "not a model folder": ["--dataset", str(built), *common[2:], "--model", str(built)],
    }
    for expected, argv in cases.items():
        AcceleratorState._reset_state(True)
        assert run(argv) == 2, expected
        err = capsys.readouterr().err  # above the error line: only progress bars of datasets
        assert err.splitlines()[-1].startswith("error: ") and expected in err.splitlines()[-1], err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_cell_classification_metric_loads_offline_and_counts_every_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    metric = evaluate.load(str(CELL_CLASSIFICATION), keep_in_memory=True)
    r = metric.compute(predictions=[0, 1, 1, 2, 2], references=[0, 1, 0, 2, 1], class_names=["a", "b", "c", "d"])
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert r["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)  # d has no support
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert r["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 * 1 / 2 + 2 / 3) / 5)
    assert r["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert [c["support"] for c in r["per_class"]] == [2, 2, 1, 0] and r["per_class"][3]["class"] == "d"


def confusion_oracle(pred: np.ndarray, ref: np.ndarray, classes: int) -> dict[str, float]:
    """The headline numbers written out from one confusion matrix (the module's numpy code before it used
    scikit-learn): macro-F1 over the classes in the references or the predictions, 0 for 0/0."""
    confusion = np.bincount(ref * classes + pred, minlength=classes * classes).reshape(classes, classes)
    support, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    ratio = lambda a, b: np.divide(a, b, out=np.zeros(len(a)), where=b > 0)  # noqa: E731
    precision, recall = ratio(hits, predicted), ratio(hits, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    return {"accuracy": hits.sum() / len(ref), "balanced_accuracy": recall[support > 0].mean(),
            "macro_f1": f1[(support > 0) | (predicted > 0)].mean(), "weighted_f1": (f1 * support).sum() / len(ref)}


def test_cell_classification_metric_equals_the_confusion_matrix_numbers_it_had_before_scikit_learn() -> None:
    metric = evaluate.load(str(CELL_CLASSIFICATION), keep_in_memory=True)
    rng = np.random.default_rng(0)
    for case in range(200):
        classes, n = int(rng.integers(2, 19)), int(rng.integers(1, 400))
        ref = rng.integers(0, classes, n) if case % 2 else rng.zipf(1.6, n).clip(max=classes) - 1  # imbalanced
        pred = np.where(rng.random(n) < rng.random(), ref, rng.integers(0, classes, n))
        got = metric.compute(predictions=pred, references=ref, num_classes=classes)
        for name, expected in confusion_oracle(pred, ref, classes).items():
            assert got[name] == pytest.approx(expected, abs=1e-12), (case, name)


def test_compile_friendly_forward_matches_the_transformers_forward() -> None:
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**TINY, num_labels=5)).eval()
    net = classifier.classifier_module(model)
    assert isinstance(net, classifier.ViTClassifier)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(pixels), model(pixel_values=pixels).logits)
    classifier.resize_position_embeddings(model, 48)  # other input size: interpolated positions
    pixels = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(net(pixels), model(pixel_values=pixels).logits)


def crops_on_cpu(images: torch.Tensor, boxes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The CPU path with an identity colour map: the crops alone."""
    n = len(images)
    return inputs._augment_per_image(images, boxes, codes, torch.ones(n, 3, 1, 1), torch.zeros(n, 3, 1, 1), 32)


def test_device_batch_transforms_agree_and_replay(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    boxes = torch.tensor([[3, 5, 20, 17]] * 8)
    codes = torch.arange(8)  # every flip/rotation combination
    gpu_path = inputs._crop_resize_grid(images.float(), boxes, codes, 32)
    assert (crops_on_cpu(images, boxes, codes) - gpu_path)[..., 2:-2, 2:-2].abs().max() <= 1.0  # uint8 rounding
    identity = crops_on_cpu(images, torch.tensor([[0, 0, 32, 32]] * 8), codes)
    assert torch.equal(identity[1], images[1].flip(-1).float())
    assert torch.equal(identity[4], images[4].transpose(-1, -2).float())

    transform = inputs.BatchTransform([0.5] * 3, [0.25] * 3)
    torch.testing.assert_close(transform.evaluate(images), (images.float() / 255 - 0.5) / 0.25)
    first = transform.train(images, inputs.batch_generator(1, 0, 5, 0))
    again = transform.train(images, inputs.batch_generator(1, 0, 5, 0))
    other = transform.train(images, inputs.batch_generator(1, 0, 6, 0))
    assert torch.equal(first, again) and not torch.equal(first, other)

    sampler = inputs.EpochSampler(10, seed=3)
    sampler.set_epoch(2)
    order = list(sampler)
    assert sorted(order) == list(range(10)) and list(sampler) == order
    sampler.set_epoch(3)
    assert list(sampler) != order


def test_decode_cache_is_reused_and_keyed_by_size(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = datasets.load_dataset(str(built), split="validation")
    first = inputs.decoded_images(split, "image", 32, tmp_path)
    assert first.shape == (len(split), 3, 32, 32) and first.dtype == np.uint8

    def no_second_decode(*_):
        raise AssertionError("decoded again")

    monkeypatch.setattr(inputs, "_write_cache", no_second_decode)
    assert np.array_equal(inputs.decoded_images(split, "image", 32, tmp_path), first)
    monkeypatch.undo()
    assert inputs.decoded_images(split, "image", 40, tmp_path).shape[-1] == 40
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_two_cpu_processes_under_torchrun(built: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HEMA_CACHE": str(tmp_path / "cache")}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train_vit.py",
         "--dataset", str(built), "--model", str(tiny_config), "--output-dir", str(out), "--max-steps", "4",
         "--batch-size", "8", "--eval-every", "2", "--report-to", "none"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 processes" in completed.stdout
    scores = results(out)
    # gather_for_metrics: every test image counted once, although 2 processes shared them
    assert np.asarray(scores["test_confusion_matrix"]).sum() == datasets.load_dataset(str(built), split="test").num_rows


def test_push_to_the_hub_then_pipeline_by_repo_id(run_with_hub, hub, built: Path, sample_dir: Path,
                                                  tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "pushed"
    completed = run_with_hub(argv=["train_vit.py", "--dataset", str(built), "--model", str(tiny_config),
                                   "--output-dir", str(out), "--max-steps", "2", "--batch-size", "16",
                                   "--checkpoint-every", "1", "--push-to-hub", "hema-org/vit-cells",
                                   "--hub-private", "--report-to", "none"],
                             env={"HEMA_CACHE": str(tmp_path / "cache")})
    assert "pushed:" in completed.stdout
    repo = hub.state.repos[("model", "hema-org/vit-cells")]
    assert repo.private
    assert set(repo.resolve("main").files) - {".gitattributes"} == PUBLISHED  # no checkpoints, logs or pickles
    assert (out / "checkpoints").is_dir()
    # The user's one-liner, through the Hub: class names come back for a cell image.
    cell = sorted((sample_dir / "basophil").glob("*.TIF"))[0]
    classify = run_with_hub(argv=["-c", "import json, sys\nfrom transformers import pipeline\n"
                                  "top = pipeline('image-classification', model='hema-org/vit-cells')(sys.argv[1], top_k=3)\n"
                                  "print(json.dumps(top))", str(cell)])
    top = json.loads(classify.stdout.strip().splitlines()[-1])
    assert len(top) == 3 and all(t["label"] in CELL_CLASSES for t in top)
