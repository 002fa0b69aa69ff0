"""Session fixtures around the synthetic sample: drawn once, built once, shared by every test file."""

from __future__ import annotations

from pathlib import Path

import pytest

import hema_dataset
from hema.synthetic import SampleManifest, draw_sample, read_manifest

#: Small enough to build in seconds, large enough for 3 groups per class (every class in every split).
SAMPLE_PER_CLASS = 8


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raw synthetic sample in the MLL23 layout (treat as read-only)."""
    root = tmp_path_factory.mktemp("sample") / "mll23_raw"
    draw_sample(root, per_class=SAMPLE_PER_CLASS, seed=0)
    return root


@pytest.fixture(scope="session")
def sample_manifest(sample_dir: Path) -> SampleManifest:
    manifest = read_manifest(sample_dir)
    assert manifest is not None
    return manifest


@pytest.fixture(scope="session")
def built(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hema_dataset.py build` of the sample, default options (treat as read-only)."""
    out = tmp_path_factory.mktemp("built") / "mll23"
    hema_dataset.build_dataset(sample_dir, out)
    return out
