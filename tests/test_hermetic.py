"""The suite passes whatever Hugging Face settings the caller's shell has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Tests that a leaking setting would break: the Hub reached (offline mode refuses it), a token or
# cache of the caller's used, load_dataset served from the caller's cache.
PROBES = [
    "tests/test_hub.py::test_unreachable_hub_is_one_clear_line",
    "tests/test_hub.py::test_token_comes_from_argument_then_hf_token_then_login_cache",
    "tests/test_publish.py::test_push_then_load_every_config_by_repo_id",
    "tests/test_build.py::test_round_trip_columns_and_pixels",
]


def test_suite_ignores_the_callers_hf_environment(tmp_path: Path) -> None:
    hostile_home = tmp_path / "callers-hf-home"
    (hostile_home / "hub").mkdir(parents=True)
    (hostile_home / "token").write_text("hf_callersOwnTokenMustNotBeUsed")
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_TOKEN": "hf_callersOwnTokenMustNotBeUsed",
        "HF_HOME": str(hostile_home),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there
        "HEMA_CACHE": str(tmp_path / "callers-hema-cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PROBES],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"{len(PROBES)} passed" in result.stdout
    assert sorted(p.name for p in hostile_home.rglob("*")) == ["hub", "token"]  # the caller's HF_HOME untouched
    assert not (tmp_path / "callers-hema-cache").exists()
