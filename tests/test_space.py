"""The Space demo: started as a Space starts it, driven in headless Chromium; and published with hema-space push."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.hostile import black_png

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "space"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed (tests/envs/make.sh installs them)"
)

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def test_space_readme_has_the_yaml_a_space_needs() -> None:
    header = yaml.safe_load((SPACE / "README.md").read_text().split("---")[1])
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py" and (SPACE / header["app_file"]).is_file()
    assert str(header["sdk_version"]).count(".") == 2 and header["license"] and header["short_description"]
    assert header["models"] and header["datasets"]
    examples = sorted((SPACE / "examples").glob("*.png"))
    assert len(examples) == 36 and all(p.stat().st_size < 100_000 for p in examples)  # two small synthetic cells per class


@pytest.fixture(scope="module")
def trained_model(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from accelerate.state import AcceleratorState

    from hema.cli import train as train_cli
    from hema.model.configs import VIT_TINY_DEMO

    out = tmp_path_factory.mktemp("space-model") / "model"
    AcceleratorState._reset_state(True)
    assert train_cli.main(["--dataset", str(built), "--model", str(VIT_TINY_DEMO), "--output-dir", str(out),
                           "--max-steps", "3", "--batch-size", "16", "--report-to", "none"]) == 0
    AcceleratorState._reset_state(True)
    return out


@pytest.fixture(scope="module")
def results_dataset(built: Path, trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local copy of a results dataset: two pushes of hema-benchmark's rows for two backbones, the later
    one a rerun of the trained model (which must replace its earlier row on the board)."""
    from transformers import ViTConfig, ViTModel

    from hema.benchmark import results
    from hema.cli import benchmark as benchmark_cli

    root = tmp_path_factory.mktemp("results")
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64), add_pooling_layer=False).save_pretrained(root / "random-vit")
    dataset = root / "hema-org--blood-cell-benchmark"
    for run, backbones in enumerate(([trained_model, root / "random-vit"], [trained_model])):
        argv = [a for b in backbones for a in ("--backbone", str(b))]  # the rerun draws other bootstrap samples
        assert benchmark_cli.main([*argv, "--dataset", str(built), "--protocols", "fixed,cv", "--bootstrap", "50",
                                   "--seed", str(run),
                                   "--output-dir", str(root / f"out{run}"), "--cache-dir", str(root / "cache")]) == 0
        results.add_to_results_dataset(dataset, results.read_rows(root / f"out{run}" / results.RESULTS_JSON),
                                       "hema-org/blood-cell-benchmark")
    return dataset


@pytest.fixture
def app(trained_model: Path, results_dataset: Path, tmp_path: Path):
    """`python app.py` with HEMA_MODEL and GRADIO_SERVER_PORT set, as a Space runs it; its URL once it serves."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {
        "HEMA_MODEL": str(trained_model), "HEMA_RESULTS": str(results_dataset), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
        "PYTHONUNBUFFERED": "1", "TMPDIR": str(temp),
    }
    process = subprocess.Popen([sys.executable, str(SPACE / "app.py")], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in process.stdout:  # the app says when it serves: no polling, no sleep
            seen.append(line)
            if "Running on local URL" in line:
                break
        else:
            raise AssertionError("the app exited before serving:\n" + "".join(seen[-30:]))
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()  # SIGTERM, as a Space is stopped
        process.wait(timeout=30)
    assert list(temp.glob("hema-space-*")) == []  # the app's one temporary folder went with it


def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def upload(driver, paths: Path | str) -> None:
    """Into the page's file input, as a person choosing files does (several: newline-separated)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(paths))


@needs_browser
def test_uploading_a_cell_in_chromium_shows_the_models_top_class(app: str, trained_model: Path, sample_dir: Path,
                                                                tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import pipeline

    cell = next(sample_dir.glob("neutrophil_segmented/*.TIF"))
    expected = pipeline("image-classification", model=str(trained_model))(str(cell), top_k=1)[0]["label"]
    junk = tmp_path / "not_a_cell.png"
    junk.write_text("hello")
    bomb = tmp_path / "bomb.png"
    black_png(bomb, 20000, 20000)  # a few MB that declare 400 megapixels
    driver = browser(tmp_path)
    try:
        driver.get(app)
        wait = WebDriverWait(driver, 120)
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        assert "not for diagnosis" in driver.find_element(By.ID, "notice").text
        assert "macro-F1" in driver.find_element(By.ID, "model").text
        upload(driver, cell)
        wait.until(seen.text_to_be_present_in_element((By.ID, "top-class"), f"Top class: {expected}"))
        assert expected in driver.find_element(By.ID, "top-classes").text
        driver.get(app)  # several images at once: a table of all, downloadable as CSV
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        others = sorted(sample_dir.glob("basophil/*.TIF"))[:2]
        upload(driver, "\n".join(str(p) for p in others))
        wait.until(seen.text_to_be_present_in_element((By.ID, "table"), others[1].name))
        wait.until(lambda d: "predictions.csv" in d.find_element(By.ID, "csv").get_attribute("innerHTML"))
        driver.get(app)  # a fresh page: each bad upload gets its sentence, the good one still its answer
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        upload(driver, "\n".join(map(str, (junk, bomb, cell))))
        wait.until(seen.text_to_be_present_in_element((By.ID, "problems"), "not an image"))
        assert "far too many pixels" in driver.find_element(By.ID, "problems").text
        wait.until(seen.text_to_be_present_in_element((By.ID, "top-class"), f"Top class: {expected}"))
        assert "Traceback" not in driver.page_source
    finally:
        driver.quit()


@needs_browser
def test_the_leaderboard_tab_shows_the_latest_benchmark_scores_best_first(app: str, results_dataset: Path,
                                                                         tmp_path: Path) -> None:
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    pushed = pd.concat([pd.read_parquet(f) for f in sorted(results_dataset.glob("data/*.parquet"))])
    latest = pushed.drop_duplicates(["backbone", "protocol", "classifier", "metric"], keep="last")
    fixed = latest[(latest.protocol == "fixed_split") & (latest.metric == "macro_f1")].sort_values("value", ascending=False)
    assert len(fixed) == 8 and set(fixed.backbone) == {"model", "random-vit"}  # 2 backbones x 4 classifiers
    first = pushed.drop_duplicates(["backbone", "protocol", "classifier", "metric"], keep="first")
    assert list(first[first.backbone == "model"].interval_low) != list(latest[latest.backbone == "model"].interval_low)
    driver = browser(tmp_path)
    try:
        driver.get(app)
        wait = WebDriverWait(driver, 120)
        tab = wait.until(seen.element_to_be_clickable((By.XPATH, "//button[@role='tab'][contains(., 'leaderboard')]")))
        tab.click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "leaderboard-note"), "group-aware folds"))
        wait.until(seen.text_to_be_present_in_element((By.ID, "leaderboard"), "random-vit"))
        shown = [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")]
                 for row in driver.find_elements(By.CSS_SELECTOR, "#leaderboard [role=row].virtual-row")]
        assert [(r[0], r[3], r[5], r[6]) for r in shown] == [
            (b, c, _shown(v), f"{lo:.3f} – {hi:.3f}")
            for b, c, v, lo, hi in zip(fixed.backbone, fixed.classifier, fixed.value, fixed.interval_low, fixed.interval_high)
        ]  # one row per backbone and classifier, the rerun's interval, best first
        assert "Traceback" not in driver.page_source
    finally:
        driver.quit()


def _shown(value: float) -> str:
    """A rounded float as the page prints it (0.3, not 0.300)."""
    return f"{round(value, 3):.3f}".rstrip("0").rstrip(".")


def test_hema_space_push_publishes_the_space_serving_the_model(run_with_hub, hub) -> None:
    code = ("import sys; from hema.cli.space import main; "
            "sys.exit(main(['push', '--model', 'hema-org/vit-cells', '--space', 'hema-org/blood-cells']))")
    result = run_with_hub(code)
    assert "hema-org/blood-cells" in result.stdout
    repo = hub.state.repos[("space", "hema-org/blood-cells")].resolve("main")
    files = set(repo.files)
    assert {"app.py", "leaderboard.py", "README.md", "requirements.txt", "examples/basophil_1.png"} <= files
    readme = hub.state.read_object(repo.files["README.md"].sha256).decode()
    header = yaml.safe_load(readme.split("---")[1])
    assert header["models"] == ["hema-org/vit-cells"] and header["sdk"] == "gradio"
    refused = run_with_hub(code, token="hf_wrong", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
