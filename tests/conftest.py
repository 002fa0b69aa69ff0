"""Shared fixtures: a local Hub and a local Zenodo, so download and push round trips run offline.

Hub clients run in a subprocess (`run_with_hub`) rather than in the pytest process:
huggingface_hub, datasets and transformers read HF_ENDPOINT once, at import, and copy it into
several module constants (huggingface_hub.constants.ENDPOINT and HUGGINGFACE_CO_URL_TEMPLATE,
datasets.config.HF_ENDPOINT and HUB_DATASETS_URL, ...). Patching an already imported process would
have to chase every copy and breaks silently when a release adds one; a fresh interpreter with the
environment set sees the emulator everywhere, gets its own HF_HOME (no cache or login shared with
the machine), and its whole output can be scanned for the token.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Hermetic: the suite behaves the same whatever the caller's Hugging Face settings (HF_HUB_OFFLINE,
# HF_TOKEN, HF_HOME, HF_ENDPOINT, ...) and hema cache. huggingface_hub, datasets and transformers
# read them once, at import, so they are replaced here, before any test module imports those.
for _name in [n for n in os.environ if n.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_", "TRANSFORMERS_"))]:
    del os.environ[_name]
_SESSION_HOME = tempfile.mkdtemp(prefix="hema-tests-")
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ["HF_HOME"] = os.path.join(_SESSION_HOME, "hf")  # no login, cache or token of the machine
os.environ["HEMA_CACHE"] = os.path.join(_SESSION_HOME, "hema")

# Idle OpenMP threads must sleep, not spin: on 2 shared cores spinning makes torch steps 10-20x slower.
# Set before any test module imports torch (train_vit.py does the same for its own runs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import secrets
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ("tests.sample_fixtures", "tests.training_fixtures")

from tests.hub_emulator import HubEmulator
from tests.zenodo_emulator import ZenodoEmulator

REPO_ROOT = Path(__file__).resolve().parents[1]

# Variables of the calling machine that would leak a real login, a real Hub or offline mode into a test.
_HF_ENV_DROPPED = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH", "HF_OIDC_RESOURCE",
    "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HOME",
    "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE",
)

#: `run_with_hub(..., token=HUB_TOKEN)` (the default) exports the emulator's write token as HF_TOKEN.
HUB_TOKEN = object()


def token_leaks(token: str, paths: Iterable[Path] = (), texts: Iterable[str] = ()) -> list[str]:
    """Where `token` appears: file names and contents under `paths`, and `texts`; empty when nowhere."""
    needle = token.encode()
    found = [f"output #{i}" for i, text in enumerate(texts) if token in text]
    for root in paths:
        for path in [root, *sorted(root.rglob("*"))] if root.exists() else []:
            if token in path.name or (path.is_file() and not path.is_symlink() and needle in path.read_bytes()):
                found.append(str(path))
    return found


class HubRunner:
    """Runs Python code or a script in a subprocess pointed at the emulated Hub.

    Every run's stdout and stderr are kept in `outputs`; at the end of the test the fixture checks
    that the token appears in none of them, nor in the emulator's storage, HF_HOME or tmp_path.
    """

    def __init__(self, hub: HubEmulator, hf_home: Path):
        self.hub, self.hf_home = hub, hf_home
        self.outputs: list[str] = []

    def env(self, token: str | None | object = HUB_TOKEN, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _HF_ENV_DROPPED}
        env |= self.hub.env() | {
            "HF_HOME": str(self.hf_home),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        if token is HUB_TOKEN:
            env["HF_TOKEN"] = self.hub.token
        elif token is not None:
            env["HF_TOKEN"] = str(token)
        return env | (extra or {})

    def __call__(
        self,
        code: str | None = None,
        *,
        argv: list[str] | None = None,
        token: str | None | object = HUB_TOKEN,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        """Run `python -c code` (or `python *argv`, e.g. ["hema_dataset.py", "push", ...]) in the repo root."""
        command = [sys.executable, *(argv if argv is not None else ["-c", code])]
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=self.env(token, env), capture_output=True, text=True, timeout=timeout
        )
        self.outputs += [result.stdout, result.stderr]
        if check and result.returncode != 0:
            raise AssertionError(f"{command[1:3]} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        return result


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    """A fresh emulated Hub: `hub.url`, `hub.token` (write, user hema-tester, org hema-org), `hub.read_token`."""
    root = tmp_path_factory.mktemp("hub")
    emulator = HubEmulator(root / "storage", token=f"hf_hemaW{secrets.token_hex(16)}", read_token=f"hf_hemaR{secrets.token_hex(16)}")
    with emulator:
        yield emulator
    assert not emulator.failures, f"the hub emulator failed on: {emulator.failures}"


@pytest.fixture
def run_with_hub(hub: HubEmulator, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubRunner]:
    """`run_with_hub(code)` -> CompletedProcess of `python -c code` against `hub`; the token must never leak."""
    runner = HubRunner(hub, tmp_path_factory.mktemp("hf-home"))
    yield runner
    for token in (hub.token, hub.read_token):
        leaks = token_leaks(token, [hub.root, runner.hf_home, tmp_path], runner.outputs)
        assert not leaks, f"a Hub token leaked into: {leaks}"


@pytest.fixture
def zenodo(monkeypatch: pytest.MonkeyPatch) -> Iterator[ZenodoEmulator]:
    """An emulated Zenodo record (empty: put `<class>.zip` bytes in `zenodo.files`), exported as HEMA_ZENODO_URL."""
    with ZenodoEmulator({}) as emulator:
        monkeypatch.setenv("HEMA_ZENODO_URL", emulator.url)
        yield emulator
