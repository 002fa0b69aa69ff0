"""hema-benchmark: frozen backbones, their feature cache, the protocols, the scores and where they go.

Backbones here are tiny and random (no download): a ViT folder with weights, the demo's config-only ViT,
and DINOv2-format checkpoints written in DinoBloom's layout. The datasets are builds of the synthetic
sample, one with every image planted three times, and a foreign image folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier

import hema_dataset
from hema.benchmark import backbones, protocols
from hema.benchmark.features import FeatureSet
from hema.benchmark.scoring import Evaluation, score
from hema.cli import benchmark as benchmark_cli
from hema.dataset import BUILDERS
from hema.model.configs import VIT_TINY_DEMO
from hema.synthetic import draw_sample

REPO = Path(__file__).resolve().parents[1]
FAST = ["--bootstrap", "200", "--shots", "1,2", "--draws", "2"]


def bench(*args: str | Path, cache: Path) -> int:
    return benchmark_cli.main([*map(str, args), "--cache-dir", str(cache)])


def results(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


def pick(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("backbone") / "tiny-vit"
    torch.manual_seed(1)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64), add_pooling_layer=False).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ DinoBloom's checkpoints


def dinobloom_checkpoint(path: Path, swiglu: bool, layers: int = 2, hidden: int = 64, grid: int = 2) -> dict:
    """A DINOv2 teacher checkpoint in DinoBloom's layout and shapes (backbone. prefix, heads beside it)."""
    g = torch.Generator().manual_seed(3)

    def t(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state = {"cls_token": t(1, 1, hidden), "pos_embed": t(1, grid * grid + 1, hidden), "mask_token": t(1, hidden),
             "patch_embed.proj.weight": t(hidden, 3, 14, 14), "patch_embed.proj.bias": t(hidden),
             "norm.weight": 1 + t(hidden), "norm.bias": t(hidden)}
    mlp = (int(hidden * 4 * 2 / 3) + 7) // 8 * 8 if swiglu else hidden * 4
    for i in range(layers):
        b = f"blocks.{i}."
        state |= {b + "norm1.weight": 1 + t(hidden), b + "norm1.bias": t(hidden), b + "norm2.weight": 1 + t(hidden),
                  b + "norm2.bias": t(hidden), b + "attn.qkv.weight": t(3 * hidden, hidden), b + "attn.qkv.bias": t(3 * hidden),
                  b + "attn.proj.weight": t(hidden, hidden), b + "attn.proj.bias": t(hidden),
                  b + "ls1.gamma": 1 + t(hidden), b + "ls2.gamma": 1 + t(hidden)}
        if swiglu:
            state |= {b + "mlp.w12.weight": t(2 * mlp, hidden), b + "mlp.w12.bias": t(2 * mlp),
                      b + "mlp.w3.weight": t(hidden, mlp), b + "mlp.w3.bias": t(hidden)}
        else:
            state |= {b + "mlp.fc1.weight": t(mlp, hidden), b + "mlp.fc1.bias": t(mlp),
                      b + "mlp.fc2.weight": t(hidden, mlp), b + "mlp.fc2.bias": t(hidden)}
    teacher = {f"backbone.{k}": v for k, v in state.items()} | {"dino_head.mlp.0.weight": t(8, hidden)}
    torch.save({"teacher": teacher, "iteration": 12499}, path)
    return state


def reference_class_token(state: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2's forward written out from its state dict: the class token after the final norm."""
    hidden = state["cls_token"].shape[-1]
    x = F.conv2d(pixels, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=14)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1) + state["pos_embed"]
    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        b = f"blocks.{i}."
        h = F.layer_norm(x, (hidden,), state[b + "norm1.weight"], state[b + "norm1.bias"], 1e-6)
        q, k, v = (h @ state[b + "attn.qkv.weight"].T + state[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        q, k, v = (z.reshape(len(x), -1, heads, hidden // heads).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5, -1) @ v
        a = a.transpose(1, 2).reshape(len(x), -1, hidden) @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        x = x + state[b + "ls1.gamma"] * a
        h = F.layer_norm(x, (hidden,), state[b + "norm2.weight"], state[b + "norm2.bias"], 1e-6)
        if b + "mlp.w12.weight" in state:
            x1, x2 = (h @ state[b + "mlp.w12.weight"].T + state[b + "mlp.w12.bias"]).chunk(2, dim=-1)
            m = (F.silu(x1) * x2) @ state[b + "mlp.w3.weight"].T + state[b + "mlp.w3.bias"]
        else:
            m = F.gelu(h @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"]) @ state[b + "mlp.fc2.weight"].T
            m = m + state[b + "mlp.fc2.bias"]
        x = x + state[b + "ls2.gamma"] * m
        i += 1
    return F.layer_norm(x, (hidden,), state["norm.weight"], state["norm.bias"], 1e-6)[:, 0]


@pytest.mark.parametrize("swiglu", [False, True], ids=["mlp", "swiglu (giant)"])
def test_a_dinobloom_checkpoint_is_dinov2_in_transformers(tmp_path: Path, swiglu: bool) -> None:
    path = tmp_path / "DinoBloom-T.pth"
    state = dinobloom_checkpoint(path, swiglu)
    backbone = backbones.describe(str(path))
    assert backbone.checkpoint and backbone.name == "DinoBloom-T" and backbone.image_size == 224
    model = backbones.load(backbone, tmp_path / "cache")
    assert type(model.model).__name__ == "Dinov2Model"
    pixels = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model(pixels)
    assert torch.allclose(ours, reference_class_token(state, pixels, heads=1), atol=1e-5)
    again = backbones.load(backbone, tmp_path / "cache")  # converted once, then read from the cache
    assert torch.equal(again(pixels).detach(), ours)
    assert len(list((tmp_path / "cache" / "dinov2").iterdir())) == 1


def test_a_dinobloom_checkpoint_runs_the_whole_benchmark(built: Path, tmp_path: Path) -> None:
    path = tmp_path / "DinoBloom-T.pth"
    dinobloom_checkpoint(path, swiglu=False)
    out = tmp_path / "out"
    assert bench("--backbone", path, "--dataset", built, "--protocols", "fixed", "--image-size", "28",
                 "--output-dir", out, *FAST, cache=tmp_path / "cache") == 0
    rows = pick(results(out), protocol="fixed_split", metric="macro_f1")
    assert {r["classifier"] for r in rows} == set(protocols.CLASSIFIERS) and rows[0]["backbone"] == "DinoBloom-T"


# ------------------------------------------------------------------ what anyone refitting the features gets


def test_exported_features_refit_with_scikit_learn_give_the_same_scores(built: Path, tiny_vit: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert bench("--backbone", tiny_vit, "--dataset", built, "--protocols", "fixed", "--export-features",
                 "--output-dir", out, *FAST, cache=tmp_path / "cache") == 0
    exported = {p.name.split("__")[-1].removesuffix(".npz"): np.load(p) for p in (out / "features").glob("*.npz")}
    assert set(exported) == {"train", "validation", "test"}
    train, test = exported["train"], exported["test"]
    m, c = train["X"].shape[1], len(np.unique(train["y"]))
    refit = {
        "knn1": KNeighborsClassifier(n_neighbors=1).fit(train["X"], train["y"]).predict(test["X"]),
        "knn20": KNeighborsClassifier(n_neighbors=20).fit(train["X"], train["y"]).predict(test["X"]),
        "probe": LogisticRegression(C=1 / (100 / (m * c)), max_iter=1000).fit(train["X"], train["y"]).predict(test["X"]),
    }
    rows = results(out)
    for classifier, predicted in refit.items():
        expected = {"macro_f1": f1_score(test["y"], predicted, average="macro"),
                    "weighted_f1": f1_score(test["y"], predicted, average="weighted"),
                    "balanced_accuracy": balanced_accuracy_score(test["y"], predicted),
                    "accuracy": accuracy_score(test["y"], predicted)}
        for metric, value in expected.items():
            (row,) = pick(rows, protocol="fixed_split", classifier=classifier, metric=metric)
            assert row["value"] == pytest.approx(value, abs=1e-12), (classifier, metric)
            assert row["interval_low"] <= row["value"] <= row["interval_high"]


def test_dinos_cosine_knn_is_the_temperature_weighted_vote_of_the_20_most_similar() -> None:
    rng = np.random.default_rng(0)
    train, labels, test = rng.normal(size=(700, 24)), rng.integers(0, 5, 700), rng.normal(size=(300, 24))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(test) @ unit(train).T
    expected = []
    for row in similarity:
        votes = np.zeros(5)
        for j in np.argsort(-row)[:20]:
            votes[labels[j]] += np.exp(row[j] / 0.07)
        expected.append(votes.argmax())
    sets = [FeatureSet(x.astype(np.float32), y, np.arange(len(x)), np.arange(len(x)).astype(str), tuple("abcde"), True)
            for x, y in ((train, labels), (test, np.zeros(len(test), dtype=np.int64)))]
    assert (protocols.fit_predict("knn20_cosine", *sets).predicted == np.array(expected)).all()


# ------------------------------------------------------------------ leakage


def planted_features(copies: int, seed: int = 0) -> FeatureSet:
    """Rows that come in groups of identical images (a cell exported `copies` times), weak class signal.

    The copies are far apart in row order, as duplicates are in a real build (sorted by file name), so
    DinoBloom's unshuffled StratifiedKFold puts them in different folds."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 30)
    cells = rng.normal(size=(len(labels), 16)) + 0.3 * np.eye(6, 16)[labels]
    return FeatureSet(np.tile(cells, (copies, 1)).astype(np.float32), np.tile(labels, copies),
                      np.tile(np.arange(len(labels)), copies), np.arange(len(labels) * copies).astype(str),
                      tuple("abcdef"), grouped=True)


def test_group_aware_folds_are_not_fooled_by_duplicates_that_image_level_folds_reward() -> None:
    scores = {}
    for outcome in protocols.cross_validation(planted_features(copies=3)):
        scores[outcome.protocol, outcome.classifier] = score(outcome.evaluations, 6, bootstrap=100, seed=0)["macro_f1"].value
    for classifier in protocols.CLASSIFIERS:
        assert scores["cv_group", classifier] <= scores["cv_image", classifier], classifier
    assert scores["cv_image", "knn1"] > 0.95 and scores["cv_group", "knn1"] < 0.5  # copies found across folds, or not


ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"
PLANTED_CLASSES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "erythroblast")


@pytest.fixture(scope="module")
def planted_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build where every image is there twice (exact copies, one dup_group each): 60 real Acevedo20 cells
    of 5 classes where ../shared is present, else 40 synthetic cells of 5 classes."""
    raw = tmp_path_factory.mktemp("planted") / "raw"
    if ACEVEDO.is_dir():
        source = "acevedo20"
        images = {c: sorted((ACEVEDO / c).glob("*.jpg"))[:60] for c in PLANTED_CLASSES}
    else:
        source = "mll23"
        draw_sample(raw.parent / "sample", per_class=40, seed=1)
        images = {c: sorted((raw.parent / "sample" / c).glob("*.TIF")) for c in ("basophil", "eosinophil",
                                                                               "lymphocyte", "monocyte", "myeloblast")}
    for cell_class, paths in images.items():
        (raw / cell_class).mkdir(parents=True)
        for path in paths:
            prefix, number = path.name.split("_", 1)
            shutil.copyfile(path, raw / cell_class / path.name)
            shutil.copyfile(path, raw / cell_class / f"{prefix}_9{number}")  # far from its original, as in real data
    out = raw.parent / "built"
    BUILDERS[source].build_folder(raw, out, num_proc=1)
    return out


def test_the_leakage_is_the_difference_of_the_two_cross_validations(planted_build: Path, tiny_vit: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert bench("--backbone", tiny_vit, "--dataset", planted_build, "--protocols", "cv", "--output-dir", out, *FAST,
                 cache=tmp_path / "cache") == 0
    rows = results(out)
    for classifier in protocols.CLASSIFIERS:
        for metric in ("macro_f1", "accuracy"):
            (image,) = pick(rows, protocol="cv_image", classifier=classifier, metric=metric)
            (group,) = pick(rows, protocol="cv_group", classifier=classifier, metric=metric)
            (leak,) = pick(rows, protocol="cv_leakage", classifier=classifier, metric=metric)
            assert leak["value"] == pytest.approx(image["value"] - group["value"], abs=1e-12)
            assert group["value"] <= image["value"], (classifier, metric)  # copies sit across image-level folds
            assert leak["interval_low"] <= leak["value"] <= leak["interval_high"]
    (knn1,) = pick(rows, protocol="cv_leakage", classifier="knn1", metric="accuracy")
    assert knn1["value"] > 0.2  # a held-out image whose copy is in the training folds is its own nearest neighbour


# ------------------------------------------------------------------ intervals


def test_intervals_hold_the_estimate_and_shrink_with_more_data() -> None:
    widths = []
    for n in (150, 1500, 15000):
        rng = np.random.default_rng(n)
        truth = rng.integers(0, 5, n)
        predicted = np.where(rng.random(n) < 0.7, truth, rng.integers(0, 5, n))
        confidence = np.clip(0.7 + 0.1 * rng.standard_normal(n), 0, 1)
        scores = score([Evaluation(truth, predicted, np.arange(n) // 3, confidence)], 5, bootstrap=300, seed=1)
        for metric, s in scores.items():
            assert s.low <= s.value <= s.high, metric
        widths.append(scores["macro_f1"].high - scores["macro_f1"].low)
    assert widths[0] > widths[1] > widths[2] > 0


# ------------------------------------------------------------------ the feature cache


def test_a_second_run_reads_the_feature_cache_and_loads_no_model(built: Path, tiny_vit: Path, tmp_path: Path,
                                                                 monkeypatch, capsys) -> None:
    cache = tmp_path / "cache"
    assert bench("--backbone", tiny_vit, "--dataset", built, "--protocols", "fixed", "--output-dir", tmp_path / "a",
                 *FAST, cache=cache) == 0
    assert "(3 feature sets extracted, 0 read from the cache)" in capsys.readouterr().out

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(backbones, "load", no_model)
    assert bench("--backbone", tiny_vit, "--dataset", built, "--protocols", "fixed,few-shot", "--output-dir",
                 tmp_path / "b", *FAST, cache=cache) == 0
    assert "(0 feature sets extracted, 3 read from the cache)" in capsys.readouterr().out
    same = lambda folder: pick(results(folder), protocol="fixed_split", metric="macro_f1")  # noqa: E731
    assert [r["value"] for r in same(tmp_path / "a")] == [r["value"] for r in same(tmp_path / "b")]


def test_a_cache_of_another_revision_is_never_read(built: Path, tiny_vit: Path, tmp_path: Path, capsys) -> None:
    backbone = shutil.copytree(tiny_vit, tmp_path / "vit")
    cache = tmp_path / "cache"
    assert bench("--backbone", backbone, "--dataset", built, "--protocols", "fixed", "--output-dir", tmp_path / "a",
                 *FAST, cache=cache) == 0
    from transformers import ViTModel

    model = ViTModel.from_pretrained(backbone, add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.cls_token.add_(1.0)  # new weights in the same folder: another revision
    model.save_pretrained(backbone)
    capsys.readouterr()
    assert bench("--backbone", backbone, "--dataset", built, "--protocols", "fixed", "--output-dir", tmp_path / "a",
                 *FAST, cache=cache) == 0
    assert "(3 feature sets extracted, 0 read from the cache)" in capsys.readouterr().out
    revisions = {r["revision"] for r in results(tmp_path / "a")}
    assert len(revisions) == 1 and len(list((cache / "features").iterdir())) == 6


# ------------------------------------------------------------------ across datasets


@pytest.fixture(scope="module")
def second_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hema.synthetic import draw_sample

    root = tmp_path_factory.mktemp("second")
    draw_sample(root / "raw", per_class=6, seed=1)
    hema_dataset.build_dataset(root / "raw", root / "built", seed=3, num_proc=1)
    return root / "built"


def test_cross_dataset_gives_a_row_per_direction(built: Path, second_build: Path, tiny_vit: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert bench("--backbone", tiny_vit, "--dataset", built, "--dataset", second_build, "--protocols", "cross",
                 "--output-dir", out, *FAST, cache=tmp_path / "cache") == 0
    rows = pick(results(out), protocol="cross_dataset", metric="macro_f1")
    directions = {(r["train_dataset"], r["dataset"]) for r in rows}
    assert directions == {(built.name, second_build.name), (second_build.name, built.name)}
    for direction in directions:
        mine = [r for r in rows if (r["train_dataset"], r["dataset"]) == direction]
        assert {r["classifier"] for r in mine} == set(protocols.CLASSIFIERS)
        assert all(r["config"] == "harmonised" for r in mine)


# ------------------------------------------------------------------ where results go


def test_results_append_to_a_dataset_on_the_hub_that_load_dataset_reads(built: Path, tiny_vit: Path, run_with_hub,
                                                                         hub, tmp_path: Path) -> None:
    repo = "hema-org/backbone-benchmark"
    code = """
import sys
from hema.cli.benchmark import main
sys.exit(main(sys.argv[1:]))
"""
    counts = []
    for protocol in ("fixed", "few-shot"):
        out = tmp_path / protocol
        run_with_hub(argv=["-c", code, "--backbone", str(tiny_vit), "--dataset", str(built), "--protocols", protocol,
                           "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--push-results", repo,
                           *FAST])
        counts.append(len(results(out)))
    loaded = run_with_hub(f"""
import json
from datasets import load_dataset
ds = load_dataset({repo!r}, split="train")
print(json.dumps({{"rows": ds.num_rows, "columns": ds.column_names, "protocols": sorted(set(ds["protocol"]))}}))
""")
    seen = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert seen["rows"] == sum(counts)  # the second push appended
    assert seen["protocols"] == ["few_shot", "fixed_split"]
    assert {"backbone", "revision", "dataset", "config", "protocol", "metric", "value", "interval_low",
            "interval_high", "n", "date", "hema_version"} <= set(seen["columns"])
    files = hub.state.repos[("dataset", repo)].resolve("main").files
    assert len([f for f in files if f.startswith("data/") and f.endswith(".parquet")]) == 2 and "README.md" in files
    refused = run_with_hub(argv=["-c", code, "--backbone", str(tiny_vit), "--dataset", str(built), "--output-dir",
                                 str(tmp_path / "refused"), "--push-results", repo], token="hf_wrong", check=False)
    assert refused.returncode == 2 and not (tmp_path / "refused").exists()  # the token is checked before any work


def test_results_go_into_the_model_index_of_a_model_folder(built: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from hema.cli import train as train_cli

    model = tmp_path / "model"
    assert train_cli.main(["--dataset", str(built), "--model", str(VIT_TINY_DEMO), "--output-dir", str(model),
                           "--max-steps", "2", "--batch-size", "16", "--report-to", "none"]) == 0
    for protocols_run in ("fixed", "fixed,few-shot"):  # twice: the second replaces the first's entries
        assert bench("--backbone", model, "--dataset", built, "--protocols", protocols_run, "--update-card", model,
                     "--output-dir", tmp_path / "out", *FAST, cache=tmp_path / "cache") == 0
    card = ModelCard.load(model / "README.md")
    frozen = [r for r in card.data.eval_results if r.metric_name.endswith("(frozen features)")]
    rows = [r for r in results(tmp_path / "out") if r["metric"] in ("macro_f1", "accuracy")]
    assert len(frozen) == len(rows) and any(r.dataset_split == "test" for r in card.data.eval_results
                                            if not r.metric_name.endswith("(frozen features)"))  # training's kept
    assert card.text.count("<!-- hema:benchmark -->") == 1 and "Frozen-feature benchmark" in card.text


# ------------------------------------------------------------------ bad input


def imagefolder(root: Path, classes: tuple[str, ...]) -> Path:
    rng = np.random.default_rng(len(classes))
    for split, n in (("train", 8), ("validation", 3), ("test", 4)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / split / c / f"{c}{i}.png")
    return root


def test_a_foreign_image_folder_falls_back_to_image_level_folds_with_a_warning(tiny_vit: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert bench("--backbone", tiny_vit, "--dataset", imagefolder(tmp_path / "folder", ("a", "b")), "--protocols",
                 "fixed,cv", "--output-dir", out, *FAST, cache=tmp_path / "cache") == 0
    (row,) = pick(results(out), protocol="cv_group", classifier="probe", metric="macro_f1")
    assert "no field_group" in row["note"] and "no field_group" in (out / "summary.md").read_text()


def one_line(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    for word in words:
        assert word in err[-1], (word, err[-1])


def test_bad_inputs_are_one_line(built: Path, tiny_vit: Path, tmp_path: Path, capsys) -> None:
    from transformers import BertConfig, BertModel

    text = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=100)).save_pretrained(text)
    corrupt = tmp_path / "DinoBloom-B.pth"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    a = imagefolder(tmp_path / "a", ("x", "y"))
    b = imagefolder(tmp_path / "b", ("x", "z"))
    cache = tmp_path / "cache"
    cases = [
        (["--backbone", text, "--dataset", built, "--protocols", "fixed"], ("not a vision model",)),
        (["--backbone", corrupt, "--dataset", built, "--protocols", "fixed"], ("not a readable checkpoint",)),
        (["--backbone", tiny_vit, "--dataset", built, "--protocols", "cv", "--folds", "12"],
         ("12-fold", "basophil (8)")),
        (["--backbone", tiny_vit, "--dataset", a, "--dataset", b, "--protocols", "cross", "--cross-config", "default"],
         ("classes differ", "x, y", "x, z")),
        (["--backbone", tiny_vit, "--dataset", built, "--protocols", "cross"], ("two datasets",)),
        (["--backbone", tiny_vit, "--dataset", built, "--update-card", tmp_path / "elsewhere"], ("not one of the --backbone",)),
    ]
    for args, words in cases:
        assert bench(*args, "--output-dir", tmp_path / "out", *FAST, cache=cache) == 2, args
        one_line(capsys, *words)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    assert bench("--backbone", tiny_vit, "--dataset", built, "--output-dir", tmp_path / "notes", cache=cache) == 2
    one_line(capsys, "refusing to replace it")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_python_m_runs_the_command_as_the_notebook_does(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hema.cli.benchmark", "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and "--backbone" in result.stdout and "--push-results" in result.stdout
