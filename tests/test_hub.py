"""Pushing to and loading from (an emulated) Hub through the real huggingface_hub, datasets and transformers.

Each round trip runs in a subprocess pointed at the emulator (see conftest.py for why); the
`run_with_hub` fixture also fails the test if a token shows up in any output, in the emulator's
storage, in HF_HOME or under tmp_path.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import huggingface_hub
import pytest

from hema.base.errors import HemaError
from hema.base.hub import resolve_token
from tests.conftest import HubRunner, token_leaks
from tests.hub_emulator import HubEmulator

UPLOAD_PATHS = ("/api/repos/create", "/preupload/", "/commit/", "/info/lfs/", "/lfs-upload/", "/branch/")

DATASET_ROUND_TRIP = r'''
import json, logging, sys
from pathlib import Path

import datasets, huggingface_hub, numpy as np
from PIL import Image

from hema.base.hub import push_folder, resolve_token
from hema.dataset.sources.mll23 import CELL_CLASSES

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)  # the most a user could log must hold no token
huggingface_hub.utils.logging.set_verbosity_debug()
folder, repo = Path(sys.argv[1]), "hema-org/mll23-mini"

features = datasets.Features(
    image=datasets.Image(mode="RGB"), label=datasets.ClassLabel(names=list(CELL_CLASSES)),
    image_id=datasets.Value("string"), dup_group=datasets.Value("int64"), dup_representative=datasets.Value("bool"),
)
rng = np.random.default_rng(0)
for split, n in (("train", 6), ("validation", 2), ("test", 2)):
    rows = {
        "image": [Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)) for _ in range(n)],
        "label": [i % 3 for i in range(n)],
        "image_id": [f"{CELL_CLASSES[i % 3]}/{split}_{i:04d}.TIF" for i in range(n)],
        "dup_group": [i // 2 for i in range(n)],
        "dup_representative": [i % 2 == 0 for i in range(n)],
    }
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    ds.filter(lambda r: r["dup_representative"]).to_parquet(str(folder / "data" / "deduplicated" / f"{split}-00000-of-00001.parquet"))
configs = "".join(
    f"- config_name: {name}\n  data_files:\n"
    + "".join(f"  - split: {s}\n    path: {prefix}{s}-*\n" for s in ("train", "validation", "test"))
    for name, prefix in (("default", "data/"), ("deduplicated", "data/deduplicated/"))
)
(folder / "README.md").write_text(f"---\nlicense: cc-by-4.0\nconfigs:\n{configs}---\n# MLL23 mini\n")

def rows(dataset_dict):
    return {split: [{**r, "image": np.asarray(r["image"]).tolist()} for r in ds] for split, ds in dataset_dict.items()}

url = push_folder(folder, repo, repo_type="dataset", token=resolve_token(), commit_message="MLL23 mini: 10 images")
result = {"url": url, "configs": {}}
for config in ("default", "deduplicated"):
    remote, local = datasets.load_dataset(repo, config), datasets.load_dataset(str(folder), config)
    assert {s: d.features for s, d in remote.items()} == {s: d.features for s, d in local.items()}, config
    assert rows(remote) == rows(local), config
    result["configs"][config] = {s: d.num_rows for s, d in remote.items()}

(folder / "NOTES.md").write_text("only on the branch\n")
result["branch_url"] = push_folder(folder, repo, repo_type="dataset", token=resolve_token(), revision="v2", commit_message="v2")
result["branch_files"] = sorted(huggingface_hub.list_repo_files(repo, repo_type="dataset", revision="v2"))
result["main_files"] = sorted(huggingface_hub.list_repo_files(repo, repo_type="dataset"))
assert rows(datasets.load_dataset(repo, revision="v2")) == rows(datasets.load_dataset(str(folder)))

pushed = datasets.load_dataset(str(folder), "deduplicated")
pushed.push_to_hub("hema-org/pushed-by-datasets")
assert rows(datasets.load_dataset("hema-org/pushed-by-datasets")) == rows(pushed)
print("RESULT " + json.dumps(result))
'''

MODEL_ROUND_TRIP = r'''
import json, sys
from pathlib import Path

import huggingface_hub, numpy as np, transformers
from PIL import Image

from hema.base.hub import check_write_access, push_folder, resolve_token

folder, repo = Path(sys.argv[1]), "hema-org/vit-mini"
names = ["basophil", "eosinophil", "monocyte"]
config = transformers.ViTConfig(
    image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
    id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
)
transformers.ViTForImageClassification(config).save_pretrained(folder)
transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)

token = resolve_token()
check_write_access(repo, token)  # what train_vit.py --push-to-hub does before training
url = push_folder(folder, repo, repo_type="model", token=token, commit_message="ViT mini", private=True)

image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
remote = transformers.pipeline("image-classification", model=repo)(image)
local = transformers.pipeline("image-classification", model=str(folder))(image)
assert remote == local, (remote, local)
assert not huggingface_hub.file_exists(repo, "tokenizer.json")
try:
    huggingface_hub.hf_hub_download(repo, "missing.bin")
except huggingface_hub.errors.EntryNotFoundError:
    pass
else:
    raise AssertionError("a missing file must be EntryNotFound")
print("RESULT " + json.dumps({"url": url, "predictions": remote}))
'''

REJECTIONS = r'''
import json, os, sys
from pathlib import Path

from hema.base.errors import HemaError
from hema.base.hub import check_write_access, push_folder

folder = Path(sys.argv[1])
(folder / "config.json").write_text("{}")
write, read = os.environ["HF_TOKEN"], os.environ["READ_TOKEN"]
cases = {
    "unknown": ("hf_notAKnownToken000000000000000", "hema-org/model"),
    "read-only": (read, "hema-org/model"),
    "foreign": (write, "someone-else/model"),
    "bad-repo-id": (write, "not a repo id"),
}
messages = {}
for case, (token, repo) in cases.items():
    try:
        push_folder(folder, repo, repo_type="model", token=token, commit_message="must not happen")
    except HemaError as err:
        messages[case] = str(err)
check_write_access("hema-org/model", write, "model")  # the user's org and ...
check_write_access("hema-tester/model", write, "dataset")  # ... own namespace are writable
print("RESULT " + json.dumps(messages))
'''


def result_of(completed) -> dict:
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def upload_requests(hub: HubEmulator) -> list[dict]:
    return [r for r in hub.requests if any(p in r["path"] for p in UPLOAD_PATHS)]


def test_dataset_push_then_load_dataset_returns_the_same_rows(run_with_hub: HubRunner, hub: HubEmulator, tmp_path: Path) -> None:
    folder = tmp_path / "built"
    (folder / "data" / "deduplicated").mkdir(parents=True)
    result = result_of(run_with_hub(argv=["-c", DATASET_ROUND_TRIP, str(folder)]))

    assert result["url"] == f"{hub.url}/datasets/hema-org/mll23-mini"
    assert result["configs"] == {
        "default": {"train": 6, "validation": 2, "test": 2},
        "deduplicated": {"train": 3, "validation": 1, "test": 1},
    }
    assert result["branch_url"].endswith("/tree/v2")
    assert "NOTES.md" in result["branch_files"] and "NOTES.md" not in result["main_files"]
    repo = hub.state.repos[("dataset", "hema-org/mll23-mini")]
    files = repo.resolve("main").files
    assert files["README.md"].lfs is False and files["data/train-00000-of-00001.parquet"].lfs is True
    assert any(r["method"] == "PUT" and r["path"].startswith("/lfs-upload/") for r in hub.requests)
    assert {r["auth"] for r in hub.requests} <= {"valid", "none"}
    # Written out here as well as in the fixture: the debug logs above are where a token would show.
    assert not token_leaks(hub.token, [hub.root, run_with_hub.hf_home, tmp_path], run_with_hub.outputs)


def test_model_push_then_pipeline_classifies_with_class_names(run_with_hub: HubRunner, hub: HubEmulator, tmp_path: Path) -> None:
    result = result_of(run_with_hub(argv=["-c", MODEL_ROUND_TRIP, str(tmp_path / "vit")]))

    assert result["url"] == f"{hub.url}/hema-org/vit-mini"
    assert {p["label"] for p in result["predictions"]} == {"basophil", "eosinophil", "monocyte"}
    assert hub.state.repos[("model", "hema-org/vit-mini")].private
    assert hub.state.repos[("model", "hema-org/vit-mini")].resolve("main").files["model.safetensors"].lfs


def test_rejected_tokens_fail_with_one_line_before_any_upload(run_with_hub: HubRunner, hub: HubEmulator, tmp_path: Path) -> None:
    tmp_path.joinpath("model").mkdir()
    completed = run_with_hub(argv=["-c", REJECTIONS, str(tmp_path / "model")], env={"READ_TOKEN": hub.read_token})
    messages = result_of(completed)

    assert "rejected the token (401 Unauthorized)" in messages["unknown"]
    assert "read-only" in messages["read-only"]
    assert "cannot write to namespace 'someone-else'" in messages["foreign"]
    assert "invalid repo id" in messages["bad-repo-id"]
    for message in messages.values():
        assert "\n" not in message and "hf_" not in message
    assert upload_requests(hub) == []
    assert not hub.state.repos


def test_token_comes_from_argument_then_hf_token_then_login_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    login_cache = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(login_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(HemaError) as err:
        resolve_token()
    assert str(err.value) == "no Hugging Face token found: pass --token, set HF_TOKEN, or run `hf auth login`"

    login_cache.parent.mkdir()
    login_cache.write_text("hf_fromLoginCache")
    assert resolve_token() == "hf_fromLoginCache"
    monkeypatch.setenv("HF_TOKEN", "hf_fromEnvironment")
    assert resolve_token() == "hf_fromEnvironment"
    assert resolve_token("hf_fromArgument") == "hf_fromArgument"


def test_push_of_an_empty_folder_is_refused_before_contacting_the_hub(tmp_path: Path) -> None:
    from hema.base.hub import push_folder

    with pytest.raises(HemaError, match="nothing to push"):
        push_folder(tmp_path, "hema-org/x", repo_type="dataset", token="hf_unused", commit_message="m")


def test_token_leak_scan_finds_names_contents_and_outputs(tmp_path: Path) -> None:
    (tmp_path / "clean.txt").write_text("nothing here")
    (tmp_path / "deep" / "dir").mkdir(parents=True)
    (tmp_path / "deep" / "dir" / "log.bin").write_bytes(b"\x00Authorization: Bearer hf_secret123\x00")
    (tmp_path / "hf_secret123.lock").touch()
    assert token_leaks("hf_secret123", [tmp_path], ["ok", "printed hf_secret123"]) == [
        "output #1", str(tmp_path / "deep" / "dir" / "log.bin"), str(tmp_path / "hf_secret123.lock"),
    ]
    assert token_leaks("hf_secret123", [tmp_path / "absent"], ["ok"]) == []


def test_unreachable_hub_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hema.base.hub import check_write_access

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)  # HfApi reads it when created
    monkeypatch.setattr(huggingface_hub.constants, "AGENT_HARNESSES_PATH", str(tmp_path / "harnesses.json"))
    with pytest.raises(HemaError) as err:
        check_write_access("hema-org/x", "hf_unused")
    assert str(err.value).startswith(f"checking the token for model hema-org/x: cannot reach the Hub at {url}")
    assert "\n" not in str(err.value) and "hf_unused" not in str(err.value)
