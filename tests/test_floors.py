"""The lower bounds of requirements.txt are true: pinned exactly, they install together and run.

.venv-floors is made by tests/envs/make.sh from constraints-floors.txt (every floor, exactly). In it,
as separate processes like a user's: draw the sample, build it, load and stream every config, train
3 steps, classify a cell with transformers' pipeline and score the model's frozen features.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = REPO / ".venv-floors" / "bin" / "python"
CONSTRAINTS = REPO / "constraints-floors.txt"

pytestmark = pytest.mark.skipif(not FLOORS.exists(), reason="no .venv-floors: run tests/envs/make.sh")


def pinned() -> dict[str, str]:
    lines = [l.split("#")[0].strip() for l in CONSTRAINTS.read_text().splitlines()]
    return dict(l.split("==") for l in lines if l)


def floors(*argv: str, env: dict[str, str], cwd: Path = REPO) -> str:
    result = subprocess.run([str(FLOORS), *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    assert result.returncode == 0, f"{argv[:2]} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_requirements_floors_are_the_constraints() -> None:
    floors_in_requirements = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, bound = line.split(">=")
            floors_in_requirements[name] = bound
    constraints = pinned()
    assert set(floors_in_requirements) == set(constraints)
    for name, bound in floors_in_requirements.items():
        if name != "torch":  # pinned to the local CPU build, above its floor
            assert constraints[name].startswith(bound), name


def test_floors_install_build_load_train_and_classify(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HEMA_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": str(REPO)}
    versions = json.loads(floors("-c", "import json, importlib.metadata as m, sys; "
                                 "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))", *pinned(), env=env))
    for name, version in pinned().items():
        assert versions[name].split("+")[0] == version, name

    raw, built, model = tmp_path / "raw", tmp_path / "built", tmp_path / "model"
    floors("hema_dataset.py", "sample", "--output-dir", str(raw), "--per-class", "6", env=env)
    floors("hema_dataset.py", "build", "--data-dir", str(raw), "--output-dir", str(built), env=env)
    seen = json.loads(floors(str(REPO / "tests" / "envs" / "read_configs.py"), str(built), env=env, cwd=tmp_path))
    assert set(seen["configs"]) == {"default", "deduplicated", "harmonised"}
    for splits in seen["configs"].values():
        assert all(s["loaded"] == s["streamed"] and s["loaded"] for s in splits.values())

    floors("train_vit.py", "--dataset", str(built), "--model", str(REPO / "hema" / "model" / "configs" / "vit-tiny-demo"),
           "--output-dir", str(model), "--max-steps", "3", "--batch-size", "8", "--report-to", "none", env=env)
    cell = next(raw.glob("basophil/*.TIF"))
    top = json.loads(floors("-c", "import json, sys; from transformers import pipeline; "
                            "print(json.dumps(pipeline('image-classification', model=sys.argv[1])(sys.argv[2], top_k=3)))",
                            str(model), str(cell), env=env))
    names = json.loads((model / "config.json").read_text())["id2label"].values()
    assert len(top) == 3 and all(p["label"] in names for p in top)

    scores = tmp_path / "scores"  # the trained model as a frozen backbone: scikit-learn's floor fits every classifier
    floors("-m", "hema.cli.benchmark", "--backbone", str(model), "--dataset", str(built), "--protocols", "fixed,cv",
           "--folds", "3", "--bootstrap", "20", "--output-dir", str(scores), env=env)
    rows = json.loads((scores / "results.json").read_text())
    assert {(r["protocol"], r["classifier"]) for r in rows if r["metric"] == "macro_f1"} == {
        (p, c) for p in ("fixed_split", "cv_image", "cv_group", "cv_leakage") for c in ("knn1", "knn20", "knn20_cosine", "probe")}
