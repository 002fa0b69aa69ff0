"""Killed runs: the previous output stays intact, and the next run removes what they left, only theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hema_dataset
from hema.base import atomic

REPO = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*"))


def killed_build(sample_dir: Path, out: Path, after: str) -> subprocess.CompletedProcess:
    """`build` in a fresh process that SIGKILLs itself right after hema.dataset.publish's step `after` returns."""
    code = f"""
import os, signal, sys
import hema.dataset.publish as build
step = getattr(build, {after!r})
def then_die(*args, **kwargs):
    result = step(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(build, {after!r}, then_die)
import hema_dataset
sys.exit(hema_dataset.main(["build", "--data-dir", {str(sample_dir)!r}, "--output-dir", {str(out)!r}, "--seed", "3"]))
"""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("after", ["write_shards", "write_dedup_report"])
def test_killed_build_keeps_the_old_output_and_the_next_build_sweeps(sample_dir: Path, built: Path, tmp_path: Path, after: str) -> None:
    out = tmp_path / "out"
    hema_dataset.build_dataset(sample_dir, out)
    before = tree(out)
    result = killed_build(sample_dir, out, after)
    assert result.returncode == -9, result.stderr[-2000:]
    litter = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert litter and all(atomic.SCRATCH_MARK in name for name in litter)  # what a kill leaves...
    assert tree(out) == before  # ...never touches OUT
    hema_dataset.build_dataset(sample_dir, out, seed=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # ...and the next build removes it


def test_a_run_killed_between_the_two_renames_is_undone_by_the_next(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "README.md").write_text("the previous build")
    code = f"""
import os, signal
from pathlib import Path
from hema.base import atomic
target = Path({str(target)!r})
with atomic.scratch_dir(target) as scratch:
    os.replace(target, scratch / "previous")  # replace_dir's first rename, then the kill
    os.kill(os.getpid(), signal.SIGKILL)
"""
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == -9
    assert not target.exists()
    removed = atomic.sweep_abandoned(tmp_path)
    assert len(removed) == 1
    assert (target / "README.md").read_text() == "the previous build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_live_runs_scratch_is_never_touched(tmp_path: Path) -> None:
    """Another process holds its scratch folder (it waits on stdin): sweeping leaves it alone."""
    code = f"""
import sys
from pathlib import Path
from hema.base import atomic
with atomic.scratch_dir(Path({str(tmp_path / 'out')!r})) as scratch:
    (scratch / "work").write_text("in progress")
    print(scratch, flush=True)
    sys.stdin.readline()
"""
    live = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        scratch = Path(live.stdout.readline().strip())
        assert atomic.sweep_abandoned(tmp_path) == []
        with atomic.scratch_dir(tmp_path / "out") as mine:
            assert mine != scratch
        assert (scratch / "work").read_text() == "in progress"
    finally:
        live.communicate("\n", timeout=60)
    assert live.returncode == 0 and not scratch.exists()  # removed by its own run at the end


def test_replace_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path: Path, monkeypatch) -> None:
    """Where the kernel cannot exchange two folders: two renames, the old folder put back if the second fails."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = os.replace
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)

    with atomic.scratch_dir(target) as scratch:
        staging = scratch / atomic.STAGING
        staging.mkdir()

        def failing_second_rename(src, dst):
            if Path(src) == staging:
                raise OSError("disk gone")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", failing_second_rename)
        with pytest.raises(OSError, match="disk gone"):
            atomic.replace_dir(scratch, target)
        monkeypatch.setattr(os, "replace", real_replace)
    assert (target / "old.txt").read_text() == "old"
