"""Fixtures for tests that train in-process (hema.cli.train.main): fresh Accelerate state, private caches."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fresh_accelerate_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each in-process run gets its own Accelerate singletons and a private decode/sample cache."""
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("HEMA_CACHE", str(tmp_path / "hema-cache"))
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)
