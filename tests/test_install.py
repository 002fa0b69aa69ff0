"""`pip install .` gives a working library: a wheel of the checkout runs from an empty folder, the checkout gone.

The wheel is built from a copy of the tracked files, the copy is deleted, and the wheel is installed
into a fresh virtual environment whose own site-packages hold nothing but hema (its dependencies come
from this interpreter's through a .pth file, so no download is needed). Its console scripts then
draw the sample, build it and train the demo, which needs every piece of package data: the card
templates, the metric module and the demo model config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True)
    if result.returncode:
        pytest.skip("not a git checkout: cannot tell the checkout's files")
    return [f for f in result.stdout.split("\0") if f and (REPO / f).exists()]


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install")
    checkout = root / "checkout"
    for name in tracked_files():
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target, follow_symlinks=False)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(checkout)], check=True, capture_output=True, timeout=600)
    shutil.rmtree(checkout)
    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((root / "dist").glob("hema-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, timeout=600)
    return env


def run(env: Path, *argv: str, cwd: Path) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HEMA_CACHE": str(cwd / "cache")}
    result = subprocess.run([str(env / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=environ, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_wheel_runs_the_command_lines_from_an_empty_folder(fresh_env: Path, tmp_path: Path) -> None:
    where = run(fresh_env, "python", "-c", "import hema, hema.dataset.card as c; print(hema.__file__); print(c.TEMPLATE)", cwd=tmp_path)
    module, template = where.split()
    assert module.startswith(str(fresh_env)) and Path(template).is_file()

    run(fresh_env, "hema-dataset", "sample", "--output-dir", "raw", "--per-class", "6", cwd=tmp_path)
    built = run(fresh_env, "hema-dataset", "build", "--data-dir", "raw", "--output-dir", "built", "--seed", "3", cwd=tmp_path)
    assert "Built 108 images of the SYNTHETIC sample" in built
    assert json.loads((tmp_path / "built" / "build_info.json").read_text())["seed"] == 3
    assert "MLL23" in (tmp_path / "built" / "README.md").read_text()

    run(fresh_env, "hema-train", "--max-steps", "2", "--report-to", "none", cwd=tmp_path)  # the demo
    model = tmp_path / "outputs" / "vit-mll23-demo"
    assert json.loads((model / "config.json").read_text())["hidden_size"] == 96  # the packaged demo config
    assert "test_macro_f1" in json.loads((model / "all_results.json").read_text())
    assert "Trained from random initialisation" in (model / "README.md").read_text()  # the packaged template

    scored = run(fresh_env, "hema-evaluate", "--model", str(model), "--dataset", "built", cwd=tmp_path)
    assert "macro_f1" in scored and "basophil" in scored


def test_console_scripts_give_one_line_errors(fresh_env: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(fresh_env / "bin" / "hema-dataset"), "build", "--data-dir", "absent", "--output-dir", "out"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data dir absent does not exist")
    result = subprocess.run([str(fresh_env / "bin" / "hema-benchmark"), "--backbone", "absent/", "--dataset", "absent/"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
