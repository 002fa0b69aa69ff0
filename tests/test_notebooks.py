"""The Colab notebooks run headless, top to bottom, in smoke mode (HEMA_SMOKE=1), and are committed clean.

Smoke mode is the notebooks' own code on small inputs: the synthetic sample, built with hema_dataset and
pushed with `hema_dataset.py push` to the local Hub emulator as hema-org/mll23. 01 explores it, 02 trains
the tiny demo ViT for a few steps with train_vit.py and pushes it as hema-org/vit-mll23-demo, 03 pulls that
model back through `pipeline`, 04 tests a model trained on one build on another, 05 scores the tiny ViT's frozen
features on the pushed sample and a second build. Each notebook runs in a fresh kernel of this interpreter (whatever kernels
the machine has installed), whose environment points huggingface_hub, datasets and transformers at the
emulator before they are imported; its working directory is a temporary folder, so nothing is written
into the checkout.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import REPO_ROOT, HubRunner, token_leaks
from tests.hub_emulator import HubEmulator

NOTEBOOKS = ("01_explore_mll23", "02_finetune_vit", "03_classify_cells", "04_does_it_transfer", "05_benchmark_backbones")
DATASET_ID = "hema-org/mll23"
MODEL_ID = "hema-org/vit-mll23-demo"
#: The badge links to this very notebook on the main branch of the project's GitHub repository.
COLAB_BADGE = r"\(https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/notebooks/{name}\.ipynb\)"
CELL_TIMEOUT_S = 600
KERNEL = "hema-smoke"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def committed(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=nbformat.NO_CONVERT)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_opens_in_colab(name: str) -> None:
    nb = committed(name)
    nbformat.validate(nb)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    dirty = [i for i, c in code if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: cells {dirty} hold outputs or execution counts; strip them before committing"
    intro, install = nb.cells[0], nb.cells[1]
    badge = re.search(COLAB_BADGE.format(name=re.escape(name)), intro.source)
    assert intro.cell_type == "markdown" and "colab-badge.svg" in intro.source and badge, f"{name}: no Colab badge"
    assert "estimate" in intro.source and "T4" in intro.source, f"{name}: the intro states no time estimate on a T4"
    assert install.cell_type == "code" and "google.colab" in install.source, f"{name}: cell 2 installs nothing on Colab"
    parameters = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0] <= 3, f"{name}: want one parameters cell at the top, got {parameters}"
    assert "HEMA_SMOKE" in nb.cells[parameters[0]].source


@dataclass
class SmokeRun:
    notebook: nbformat.NotebookNode
    error: str | None
    seconds: float
    requests: list[dict]  # what the notebook asked of the Hub


def this_interpreter_kernel(kernels: Path) -> KernelSpecManager:
    """Kernelspecs holding one, KERNEL: this very interpreter (a `python3` installed elsewhere may run another)."""
    write_kernel_spec(kernels / KERNEL)
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def execute(name: str, env: dict[str, str], work: Path,
            specs: KernelSpecManager) -> tuple[nbformat.NotebookNode, str | None]:
    """Run every cell in a fresh kernel; the failing cell's source and traceback on error."""
    nb = committed(name)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(work)}})
    try:
        client.execute(env=env, cleanup_kc=True)  # the client shuts down only kernels it made itself
    except CellExecutionError as err:  # its message holds the cell's source, what it printed and the traceback
        return nb, _ANSI.sub("", str(err))
    return nb, None


@pytest.fixture(scope="module")
def smoke(built: Path, tmp_path_factory: pytest.TempPathFactory):
    """Push the built sample to a fresh emulated Hub, then run 01, 02 and 03 in order against it."""
    root = tmp_path_factory.mktemp("notebooks")
    hub = HubEmulator(root / "hub", token=f"hf_hemaW{secrets.token_hex(16)}",
                      read_token=f"hf_hemaR{secrets.token_hex(16)}")
    work = root / "work"
    work.mkdir()
    with hub:
        runner = HubRunner(hub, root / "hf-home")
        dataset = shutil.copytree(built, root / "mll23")
        runner(argv=["hema_dataset.py", "push", "--output-dir", str(dataset), "--repo-id", DATASET_ID])
        env = runner.env(extra={
            "HEMA_SMOKE": "1", "HEMA_DATASET_ID": DATASET_ID, "HEMA_MODEL_ID": MODEL_ID,
            "HEMA_REPO_DIR": str(REPO_ROOT), "HEMA_CACHE": str(root / "hema-cache"),
            "IPYTHONDIR": str(root / "ipython"), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        })
        specs, runs = this_interpreter_kernel(root / "kernels"), {}
        for name in NOTEBOOKS:
            seen, started = len(hub.requests), time.perf_counter()
            nb, error = execute(name, env, work, specs)
            runs[name] = SmokeRun(nb, error, time.perf_counter() - started, hub.requests[seen:])
        yield runs, hub
    assert not hub.failures, f"the hub emulator failed on: {hub.failures}"
    outputs = [nbformat.writes(run.notebook) for run in runs.values()] + runner.outputs
    for token in (hub.token, hub.read_token):
        leaks = token_leaks(token, [hub.root, runner.hf_home, work], outputs)
        assert not leaks, f"a Hub token leaked into: {leaks}"


def figures(nb: nbformat.NotebookNode) -> int:
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    return sum("image/png" in out.get("data", {}) for cell in code for out in cell.outputs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode_and_draws(name: str, smoke) -> None:
    runs, _ = smoke
    run = runs[name]
    assert run.error is None, f"{name} failed after {run.seconds:.0f} s:\n{run.error}"
    assert figures(run.notebook) >= 1, f"{name} drew no figure"


def test_finetune_pushes_the_model_and_classify_pulls_it(smoke) -> None:
    runs, hub = smoke
    if any(runs[n].error for n in NOTEBOOKS[1:]):
        pytest.skip("02 or 03 failed: see test_notebook_runs_in_smoke_mode_and_draws")
    files = set(hub.state.repos[("model", MODEL_ID)].resolve("main").files)
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "all_results.json",
            "confusion_matrix.png"} <= files
    assert not [f for f in files if f.startswith(("checkpoints/", "runs/"))], "checkpoints or logs were published"
    weights = re.compile(rf"/{MODEL_ID}/resolve/[^/]+/model\.safetensors")
    pulled = [r for r in runs["03_classify_cells"].requests if weights.fullmatch(r["path"]) and r["status"] == 200]
    assert pulled, "03 did not download the model that 02 pushed"
