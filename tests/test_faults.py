"""Faults and hostile input: never destroy, never leak, never hang (issue 22).

Each test is one way a careless user, an attacker or the machine breaks a run, and asserts what must
hold: OUT and everything beside it byte-identical after a refused or failed build, nothing from
outside the data folder in any Parquet file, one line and exit status 2 for every user mistake, no
command running past a bound, no process left behind. Everything that could block runs in a
subprocess with a timeout.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hema.base import atomic
from hema.dataset.download import plan_extraction
from hema.model.configs import VIT_TINY_DEMO
from hema.base.errors import HemaError
from hema.base.files import printable
from hema.base.imaging import BadImageError, decode_rgb, pixel_sha256
from hema.dataset.scan import scan_class_folders
from tests.hostile import black_png

REPO = Path(__file__).resolve().parents[1]
BOUND_S = 240  # no command of these tests may run longer


# ------------------------------------------------------------------ helpers


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with what it is: a file's SHA-256, a link's target, 'dir', 'fifo'."""
    seen = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            seen[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            seen[rel] = "dir"
        elif path.is_fifo():
            seen[rel] = "fifo"
        else:
            seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def run_cli(*args: str | Path, code: str | None = None, timeout: float = BOUND_S, env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    """`hema_dataset.py ARGS` (or `python -c code`, ARGS in sys.argv) in its own session, bounded in time."""
    command = [sys.executable, *(["-c", code] if code else [str(REPO / "hema_dataset.py")]), *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else os.environ | env, start_new_session=True)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for word in words:
        assert word in last, (word, last)
    return last


def processes_in_session(sid: int) -> list[str]:
    """Live processes (not zombies) of session `sid`: what a run left behind."""
    import psutil

    left = []
    for process in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:80]}")
        except (ProcessLookupError, PermissionError):
            continue
    return left


def write_tiff(path: Path, seed: int, side: int = 96) -> np.ndarray:
    """A cell-sized RGB TIFF of seeded noise (its pixels are found nowhere else); its pixels."""
    rgb = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="TIFF")
    return rgb


def parquet_rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "data").glob("*.parquet"))
            for r in pq.read_table(f, columns=["image_id", "pixel_sha256"]).to_pylist()]


@pytest.fixture
def raw(sample_dir: Path, tmp_path: Path) -> Path:
    """A small raw folder in the MLL23 layout: 4 images of 5 classes, copied from the sample."""
    folder = tmp_path / "raw"
    for cell_class in ("basophil", "eosinophil", "lymphocyte", "monocyte", "myeloblast"):
        (folder / cell_class).mkdir(parents=True)
        for path in sorted((sample_dir / cell_class).glob("*.TIF"))[:4]:
            shutil.copyfile(path, folder / cell_class / path.name)
    return folder


@pytest.fixture(scope="module")
def previous_build(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build of a few sample images, to copy as the OUT that a later build or push must not damage."""
    folder = tmp_path_factory.mktemp("prev-raw") / "raw"
    for cell_class in ("basophil", "eosinophil", "lymphocyte"):
        (folder / cell_class).mkdir(parents=True)
        for path in sorted((sample_dir / cell_class).glob("*.TIF"))[:4]:
            shutil.copyfile(path, folder / cell_class / path.name)
    out = tmp_path_factory.mktemp("prev") / "out"
    assert run_cli("build", "--data-dir", folder, "--output-dir", out, "--num-proc", "1").returncode == 0
    return out


# ------------------------------------------------------------------ 1. OUT replaced only when provably a build


def _looks_like_a_project(out: Path, _: Path) -> None:
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("my project\n")
    (out / "src").mkdir()
    (out / "src" / "important.py").write_text("keep = True\n")


def _a_build_with_a_file_of_the_user(out: Path, previous: Path) -> None:
    shutil.copytree(previous, out)
    (out / "notes.txt").write_text("mine\n")


def _a_forged_build_info(out: Path, _: Path) -> None:
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("x\n")
    (out / "build_info.json").write_text("{}\n")


def _a_fifo_for_build_info(out: Path, _: Path) -> None:
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("x\n")
    os.mkfifo(out / "build_info.json")


@pytest.mark.parametrize("make", [_looks_like_a_project, _a_build_with_a_file_of_the_user, _a_forged_build_info,
                                  _a_fifo_for_build_info])
def test_a_folder_that_is_not_provably_a_build_is_never_replaced(raw: Path, previous_build: Path, tmp_path: Path,
                                                                 make) -> None:
    out = tmp_path / "out"
    make(out, previous_build)
    before = snapshot(tmp_path)
    result = run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1")
    assert_one_line_error(result, "not a previous build", "refusing to replace it")
    assert snapshot(tmp_path) == before  # OUT, the raw folder and everything beside them


def test_a_previous_build_is_replaced(raw: Path, previous_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(previous_build, out)
    assert run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1").returncode == 0
    assert {r["image_id"].split("/")[0] for r in parquet_rows(out)} == {p.name for p in raw.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_sample_and_train_outputs_are_never_a_users_folder(tmp_path: Path, built: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "README.md").write_text("my project\n")
    (proj / "src.py").write_text("keep\n")
    before = snapshot(tmp_path)
    assert_one_line_error(run_cli("sample", "--output-dir", proj, "--per-class", "2", "--overwrite"), "refusing")
    trained = run_cli("--dataset", built, "--output-dir", proj, "--max-steps", "1",
                      code="import sys; from hema.cli.train import main; sys.exit(main(sys.argv[1:]))")
    assert_one_line_error(trained, "hema-train does not write", "src.py")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 2. nothing outside the data folder is read


def test_links_that_leave_the_data_folder_are_skipped_listed_and_never_published(raw: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    outside = [pixel_sha256(write_tiff(elsewhere / "cell.TIF", 1))]
    outside += [pixel_sha256(write_tiff(elsewhere / "dir" / f"c{i}.TIF", 10 + i)) for i in range(3)]
    (raw / "basophil" / "link.TIF").symlink_to(elsewhere / "cell.TIF")  # a file out
    (raw / "plasma_cell").symlink_to(elsewhere / "dir", target_is_directory=True)  # a class folder out
    inside = sorted((raw / "eosinophil").glob("*.TIF"))[0]
    (raw / "eosinophil" / "alias.TIF").symlink_to(inside)  # a link within the folder: read as usual
    out = tmp_path / "out"
    result = run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("basophil/link.TIF", "plasma_cell"):
        assert f"skipping {name}: a link to a place outside the data folder" in result.stderr
    rows = parquet_rows(out)
    assert not {r["pixel_sha256"] for r in rows} & set(outside)
    assert "eosinophil/alias.TIF" in {r["image_id"] for r in rows}
    card = (out / "README.md").read_text()
    assert "| `basophil/link.TIF` | a link to a place outside the data folder |" in card
    assert "| `plasma_cell` | a link to a place outside the data folder |" in card


def test_fifos_and_devices_are_skipped_without_being_opened(raw: Path, tmp_path: Path) -> None:
    os.mkfifo(raw / "basophil" / "pipe.TIF")  # opened for reading, it would wait for a writer forever
    (raw / "basophil" / "via_link.TIF").symlink_to(raw / "basophil" / "pipe.TIF")
    (raw / "eosinophil" / "zero.TIF").symlink_to("/dev/zero")  # read whole, it would never end
    out = tmp_path / "out"
    result = run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert "| `basophil/pipe.TIF` | not a regular file (a FIFO) |" in card
    assert "| `basophil/via_link.TIF` | not a regular file (a FIFO) |" in card
    assert "| `eosinophil/zero.TIF` | a link to a place outside the data folder |" in card
    assert len(parquet_rows(out)) == 20


# ------------------------------------------------------------------ 3. a build never hangs


_DIE_IN_A_WORKER = """
import os, signal, sys
import hema.dataset.catalog as catalog
parent, decode = os.getpid(), catalog._decode_batch
def dying(*args, **kwargs):
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer ends a process
    return decode(*args, **kwargs)
catalog._decode_batch = dying
import hema_dataset
sys.exit(hema_dataset.main(["build", *sys.argv[1:]]))
"""


def test_a_worker_killed_as_the_oom_killer_would_ends_the_build_in_one_line(sample_dir: Path, previous_build: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(previous_build, out)
    before = snapshot(tmp_path)
    process = subprocess.Popen([sys.executable, "-c", _DIE_IN_A_WORKER, "--data-dir", str(sample_dir), "--output-dir",
                                str(out), "--num-proc", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=BOUND_S)
    finally:
        process.kill()
    assert_one_line_error(subprocess.CompletedProcess([], process.returncode, "", stderr), "worker process died")
    assert "BrokenPipeError" not in stderr
    assert processes_in_session(process.pid) == []  # no orphan holds the lock or the scratch
    assert snapshot(tmp_path) == before  # the previous build as it was, no scratch left


_SLOW_WORKERS = """
import os, sys, time
import hema.dataset.catalog as catalog
parent, decode = os.getpid(), catalog._decode_batch
def slow(*args, **kwargs):
    if os.getpid() != parent:
        os.write(1, b"decoding\\n")  # one write: two workers' lines never interleave
        time.sleep(120)  # a long decode: Ctrl-C comes in the middle of it
    return decode(*args, **kwargs)
catalog._decode_batch = slow
import hema_dataset
sys.exit(hema_dataset.main(["build", *sys.argv[1:]]))
"""


def test_ctrl_c_during_decode_exits_130_at_once_with_every_worker_gone(sample_dir: Path, previous_build: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(previous_build, out)
    before = snapshot(tmp_path)
    for _ in range(5):  # it hung in 2 of 7 tries
        process = subprocess.Popen([sys.executable, "-c", _SLOW_WORKERS, "--data-dir", str(sample_dir), "--output-dir",
                                    str(out), "--num-proc", "2"], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            line = process.stdout.readline()  # a worker is busy: press Ctrl-C
            if line.strip() != "decoding":
                process.kill()
                raise AssertionError(f"no decode began: {line!r} {process.communicate(timeout=30)[1][-3000:]}")
            os.killpg(process.pid, signal.SIGINT)  # the terminal sends it to the whole foreground group
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 130, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "interrupted: nothing was replaced"
        assert "Traceback" not in stderr and "Error" not in stderr
        assert processes_in_session(process.pid) == []
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 4. one file cannot take unbounded memory


def test_an_image_that_declares_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    black_png(tmp_path / "bomb.png", 30000, 30000)  # 900 megapixels in a few MB: 2.7 GB as RGB
    black_png(tmp_path / "large.png", 12000, 12000)  # 144 megapixels: under PIL's own refusal, over our limit
    assert (tmp_path / "bomb.png").stat().st_size < 5e6
    code = f"""
from pathlib import Path
from hema.base.imaging import BadImageError, decode_rgb
for name in ("bomb.png", "large.png"):
    try:
        decode_rgb(Path({str(tmp_path)!r}, name).read_bytes())
        print("decoded")
    except BadImageError as exc:
        print("refused:", exc)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # this program's own peak
print("peak MB", int(peak.split()[1]) // 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=BOUND_S)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused: too many pixels"), result.stderr[-2000:]  # PIL's own limit, first
    assert lines[1] == "refused: 12000 x 12000 pixels, over the limit of 100 megapixels"
    assert int(lines[2].split()[-1]) < 600  # megabytes: nothing was decoded


def test_images_over_the_limits_are_skipped_by_the_build_with_their_reason(raw: Path, tmp_path: Path) -> None:
    black_png(raw / "basophil" / "bomb.png", 12000, 12000)
    write_tiff(raw / "eosinophil" / "large.TIF", 3, side=700)  # 1.5 MB
    out = tmp_path / "out"
    result = run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1", "--max-file-mb", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert "| `basophil/bomb.png` | 12000 x 12000 pixels, over the limit of 100 megapixels |" in card
    assert "| `eosinophil/large.TIF` | 1.5 MB, over the limit of 1 MB a file |" in card


# ------------------------------------------------------------------ 5 and 10. names


def test_names_that_are_not_utf8_or_break_lines_are_shown_escaped(raw: Path, tmp_path: Path) -> None:
    good = next((raw / "basophil").glob("*.TIF")).read_bytes()
    with open(os.fsencode(raw / "basophil") + b"/bad\xff.TIF", "wb") as f:  # Latin-1, as old archives hold
        f.write(good)
    (raw / "eosinophil" / "two\nlines.TIF").write_bytes(b"")
    (raw / "eosinophil" / "pipe|in.TIF").write_bytes(b"")
    out = tmp_path / "out"
    result = run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping basophil/bad\\xff.TIF: its name is not valid UTF-8" in result.stderr
    card = (out / "README.md").read_text()
    left_out = card[card.index("## Files left out"):card.index("## Limitations")]
    table = [line for line in left_out.splitlines() if line.startswith("| `")]
    assert table == ["| `basophil/bad\\xff.TIF` | its name is not valid UTF-8 |",
                     "| `eosinophil/pipe\\|in.TIF` | empty file |",
                     "| `eosinophil/two\\nlines.TIF` | empty file |"]
    assert "3 file(s) of the source folder could not be used" in card


# ------------------------------------------------------------------ 6. the Space


_SPACE = """
import glob, json, os, sys, tempfile
sys.path.insert(0, "space")
import app
files = sys.argv[1:]
for _ in range(3):
    label, summary, table, csv_path, problems = app.classify(files)
print(json.dumps({"label": label, "rows": [r[0] for r in table["value"]], "problems": problems,
                  "tables": len(glob.glob(os.path.join(tempfile.gettempdir(), "hema-space-*")))}))
"""


def test_the_space_answers_each_bad_upload_and_keeps_the_others_results(trained_model: Path, sample_dir: Path,
                                                                         tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    cell = shutil.copyfile(next(sample_dir.glob("basophil/*.TIF")), uploads / "cell.TIF")
    black_png(uploads / "bomb.png", 20000, 20000)
    (uploads / "empty.png").write_bytes(b"")
    (uploads / "words.png").write_text("hello")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"HEMA_MODEL": str(trained_model), "HF_HUB_OFFLINE": "1", "TMPDIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False"}
    files = [str(uploads / n) for n in ("bomb.png", "cell.TIF", "empty.png", "words.png")]
    result = run_cli(*files, code=_SPACE, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["rows"] == [cell.name] and answer["label"]
    assert "`bomb.png`: the image has far too many pixels for a single cell" in answer["problems"]
    assert "`empty.png`: the file is empty" in answer["problems"]
    assert "`words.png`: this is not an image that can be read" in answer["problems"]
    assert answer["tables"] == 1  # one folder for the app's life, not one per request
    assert list(temp.glob("hema-space-*")) == []  # removed when the app ended


@pytest.fixture(scope="module")
def trained_model(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 3 steps on the sample, with its checkpoints."""
    out = tmp_path_factory.mktemp("faults-model") / "model"
    code = "import sys; from hema.cli.train import main; sys.exit(main(sys.argv[1:]))"
    result = run_cli("--dataset", built, "--model", VIT_TINY_DEMO, "--output-dir", out,
                     "--max-steps", "3", "--batch-size", "16", "--checkpoint-every", "1", "--report-to", "none",
                     code=code)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# ------------------------------------------------------------------ 7. narrow windows


def test_a_folder_is_swapped_in_one_step_where_the_kernel_can(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (target / "checkpoints").mkdir()
    real_replace = os.replace

    def never_moves_the_target(src, dst):
        assert Path(src) != target and Path(dst) != target, "OUT was renamed away: a window without OUT"
        real_replace(src, dst)

    with atomic.scratch_dir(target) as scratch:
        (scratch / atomic.STAGING).mkdir()
        (scratch / atomic.STAGING / "new.txt").write_text("new")
        monkeypatch.setattr(os, "replace", never_moves_the_target)
        atomic.replace_dir(scratch, target, carry=["checkpoints"])
    assert sorted(p.name for p in target.iterdir()) == ["checkpoints", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_readers_of_a_folder_being_rebuilt_always_load_a_whole_build(raw: Path, tmp_path: Path) -> None:
    """Rebuilt from the same files, a build keeps its file names (its fingerprint), and the swap never
    leaves OUT absent: load_dataset(OUT) in a loop beside four rebuilds never fails, never mixes."""
    import datasets

    out = tmp_path / "out"
    assert run_cli("build", "--data-dir", raw, "--output-dir", out, "--num-proc", "1").returncode == 0
    expected = sorted(r["image_id"] for r in parquet_rows(out))
    loop = "import sys, hema_dataset\nfor _ in range(4):\n    assert hema_dataset.main(['build', *sys.argv[1:]]) == 0"
    rebuilding = subprocess.Popen([sys.executable, "-c", loop, "--data-dir", str(raw), "--output-dir", str(out),
                                   "--num-proc", "1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
    loads = 0
    try:
        while rebuilding.poll() is None:
            ds = datasets.load_dataset(str(out))
            assert sorted(i for split in ds.values() for i in split["image_id"]) == expected
            loads += 1
        assert rebuilding.wait(timeout=BOUND_S) == 0, rebuilding.stderr.read()[-2000:]
    finally:
        rebuilding.kill()
    assert loads >= 2


_KILLED_AT = """
import os, signal, sys
from hema.base import atomic
when, exchange = sys.argv[1], atomic.exchange
def kill_around(a, b):
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    swapped = exchange(a, b)
    os.kill(os.getpid(), signal.SIGKILL)
atomic.exchange = kill_around
from hema.cli.train import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_model_folder_is_never_a_mix_of_two_runs(built: Path, tmp_path: Path) -> None:
    """Killed just before or just after the swap of its files, OUT holds one run's files, whole."""
    out = tmp_path / "model"

    def train(seed: str, killed: str | None = None) -> subprocess.CompletedProcess:
        args = ["--dataset", built, "--model", VIT_TINY_DEMO, "--output-dir", out,
                "--max-steps", "2", "--batch-size", "16", "--report-to", "none", "--seed", seed]
        code = _KILLED_AT if killed else "import sys; from hema.cli.train import main; sys.exit(main(sys.argv[1:]))"
        return run_cli(*([killed] if killed else []), *args, code=code)

    def published() -> dict[str, str]:
        return {k: v for k, v in snapshot(out).items() if "/" not in k and not k.startswith(("checkpoints", "runs"))}

    assert train("1").returncode == 0
    first = published()
    assert train("2", killed="before").returncode == -signal.SIGKILL
    assert published() == first
    assert train("3", killed="after").returncode == -signal.SIGKILL
    third = published()
    assert third != first and set(third) == set(first)  # the new run's files, all of them
    assert json.loads((out / "training_args.json").read_text())["seed"] == 3
    atomic.sweep_abandoned(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_checkpoints_carried_by_a_run_killed_mid_swap_are_given_back(tmp_path: Path) -> None:
    target = tmp_path / "model"
    (target / "checkpoints" / "step_2").mkdir(parents=True)
    (target / "README.md").write_text("old card")
    code = f"""
import os, signal
from pathlib import Path
from hema.base import atomic
atomic.exchange = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
target = Path({str(target)!r})
with atomic.scratch_dir(target) as scratch:
    (scratch / atomic.STAGING).mkdir()
    (scratch / atomic.STAGING / "README.md").write_text("new card")
    atomic.replace_dir(scratch, target, carry=["checkpoints"])
"""
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=BOUND_S).returncode == -signal.SIGKILL
    assert not (target / "checkpoints").exists()  # carried into the staging folder, then the kill
    assert len(atomic.sweep_abandoned(tmp_path)) == 1
    assert (target / "checkpoints" / "step_2").is_dir() and (target / "README.md").read_text() == "old card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ------------------------------------------------------------------ 8. one line, not a traceback


_FAILING_WRITE = """
import errno, os, sys
import hema.dataset.shards as shards
code = getattr(errno, sys.argv[1])
def failing(*args, **kwargs):
    raise OSError(code, os.strerror(code))
shards._write_file = failing
import hema_dataset
sys.exit(hema_dataset.main(["build", *sys.argv[2:]]))
"""


@pytest.mark.parametrize("code, words", [("ENOSPC", ("no space left", "needs up to", "are free")),
                                         ("EROFS", ("read-only file system",))])
def test_a_failed_write_is_one_line(raw: Path, previous_build: Path, tmp_path: Path, code: str, words) -> None:
    out = tmp_path / "out"
    shutil.copytree(previous_build, out)
    before = snapshot(tmp_path)
    result = run_cli(code, "--data-dir", raw, "--output-dir", out, "--num-proc", "1", code=_FAILING_WRITE)
    assert_one_line_error(result, *words)
    assert snapshot(tmp_path) == before


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_full_or_read_only_disk_for_real(raw: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("mounting a tmpfs is not permitted here (the simulated test above covers the code path)")
    try:
        result = run_cli("build", "--data-dir", raw, "--output-dir", disk / "out", "--num-proc", "1")
        last = assert_one_line_error(result, "no space left", str(disk))
        assert "needs up to" in last
        assert list(disk.iterdir()) == []
        assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
        result = run_cli("build", "--data-dir", raw, "--output-dir", disk / "out", "--num-proc", "1")
        assert_one_line_error(result, "read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_no_room_for_the_signatures_is_one_line_not_a_crash(tmp_path: Path) -> None:
    """The build's signature files are given their disk before their mapped pages are written: a disk
    with room for the images (tiny PNGs) but not for their signatures (6.6 KB each) is the one-line
    error, where writing a sparse file's mapped pages killed the build (SIGBUS)."""
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for cell_class in ("basophil", "eosinophil"):
        (raw / cell_class).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(raw / cell_class / f"{i}.png")
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "128k"):  # the PNGs take 20 KB, their signatures 270 KB
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        result = run_cli("build", "--data-dir", raw, "--output-dir", disk / "out", "--num-proc", "1")
        assert_one_line_error(result, "no space left", str(disk))
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)])


_TRAIN = "import sys; from hema.cli.train import main; sys.exit(main(sys.argv[1:]))"
_EVALUATE = "import sys; from hema.cli.evaluate import main; sys.exit(main(sys.argv[1:]))"


def test_corrupt_or_foreign_model_files_are_one_line(trained_model: Path, built: Path, tmp_path: Path) -> None:
    corrupt = shutil.copytree(trained_model, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not safetensors" * 100)
    evaluated = run_cli("--model", corrupt, "--dataset", built, code=_EVALUATE)
    assert_one_line_error(evaluated, "cannot load it")
    trained = run_cli("--model", corrupt, "--dataset", built, "--output-dir", tmp_path / "m1", "--max-steps", "1",
                      code=_TRAIN)
    assert_one_line_error(trained, "cannot load it")

    other_head = shutil.copytree(trained_model, tmp_path / "other-head")
    config = json.loads((other_head / "config.json").read_text())
    config["id2label"] = {str(i): f"class{i}" for i in range(5)}
    config["label2id"] = {f"class{i}": i for i in range(5)}
    (other_head / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("--model", other_head, "--dataset", built, code=_EVALUATE), "cannot load it")


def test_resuming_from_a_corrupt_or_foreign_checkpoint_is_one_line(trained_model: Path, built: Path,
                                                                   tmp_path: Path) -> None:
    out = shutil.copytree(trained_model, tmp_path / "model")
    args = ["--dataset", built, "--model", VIT_TINY_DEMO, "--output-dir", out,
            "--max-steps", "4", "--batch-size", "16", "--report-to", "none", "--resume-from-checkpoint", "auto"]
    resized = run_cli(*args, "--image-size", "32", code=_TRAIN)  # trained at the demo config's 64
    assert_one_line_error(resized, "image_size 64", "this run has 32")
    latest = sorted((out / "checkpoints").iterdir())[-1]
    for weights in latest.rglob("*.safetensors"):
        weights.write_bytes(b"\0" * 64)
    assert_one_line_error(run_cli(*args, code=_TRAIN), "cannot be resumed from")


class _NotTheHub(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>a captive portal</html>")

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


def test_a_hub_that_answers_html_is_one_line_and_out_untouched(previous_build: Path, tmp_path: Path) -> None:
    out = shutil.copytree(previous_build, tmp_path / "out")
    before = snapshot(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_TOKEN": "hf_someToken", "HF_HOME": str(tmp_path.parent / "hf")}
        result = run_cli("push", "--output-dir", out, "--repo-id", "hema-org/mll23", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line_error(result, "not the Hub's JSON")
    assert snapshot(tmp_path) == before


def test_a_zip_whose_names_clash_as_file_and_folder_is_refused_whole(zenodo, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("basophil/basophil_0001.TIF", b"a cell")
        archive.writestr("basophil/basophil_0001.TIF/inner.TIF", b"a cell inside a cell")
    zenodo.files["basophil.zip"] = buffer.getvalue()
    out = tmp_path / "raw"
    result = run_cli("download", "--output-dir", out, "--classes", "basophil", env={"HEMA_ZENODO_URL": zenodo.url})
    assert_one_line_error(result, "both as a file and as a folder")
    assert not (out / "basophil").exists()


# ------------------------------------------------------------------ 9. a failed push never edits OUT


def test_a_failed_push_leaves_out_byte_identical(previous_build: Path, run_with_hub, tmp_path: Path) -> None:
    out = shutil.copytree(previous_build, tmp_path / "out")
    before = snapshot(tmp_path)
    for repo_id, token in (("not a repo id!", None), ("hema-org/mll23", "hf_wrongToken")):
        code = f"import sys, hema_dataset; sys.exit(hema_dataset.main(['push', '--output-dir', {str(out)!r}, '--repo-id', {repo_id!r}]))"
        result = run_with_hub(code, token=token or run_with_hub.hub.token, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ fuzz


def _seed_images() -> dict[str, bytes]:
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    encoded = {}
    for name, kwargs in {"tiff": {"format": "TIFF"}, "tiff_lzw": {"format": "TIFF", "compression": "tiff_lzw"},
                         "png": {"format": "PNG"}, "jpeg": {"format": "JPEG", "quality": 90}}.items():
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, **kwargs)
        encoded[name] = buffer.getvalue()
    return encoded


@pytest.mark.parametrize("kind", ["tiff", "tiff_lzw", "png", "jpeg"])
def test_decoding_mangled_files_only_ever_says_bad_image(kind: str) -> None:
    """Seeded mutations of a valid file (flipped bytes, cut, spliced, huge header numbers): decode_rgb
    returns RGB within the limits or raises BadImageError, nothing else."""
    from hema.base.imaging import ImageLimits

    original = _seed_images()[kind]
    rng = np.random.default_rng(sum(map(ord, kind)))
    limits = ImageLimits(max_megapixels=1)
    outcomes = {"decoded": 0, "refused": 0}
    for case in range(300):
        data = bytearray(original)
        how = case % 4
        if how == 0:
            for at in rng.integers(0, len(data), rng.integers(1, 8)):
                data[at] = int(rng.integers(0, 256))
        elif how == 1:
            data = data[: int(rng.integers(0, len(data)))]
        elif how == 2:
            at = int(rng.integers(0, len(data) - 4))
            data[at : at + 4] = struct.pack("<I", int(rng.integers(2**16, 2**32)))
        else:
            at = int(rng.integers(0, len(data)))
            data = data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:]
        try:
            rgb = decode_rgb(bytes(data), limits).rgb
        except BadImageError:
            outcomes["refused"] += 1
            continue
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] * rgb.shape[1] <= 1e6
        outcomes["decoded"] += 1
    assert outcomes["refused"] > 0 and outcomes["decoded"] > 0, outcomes


def test_scanning_hostile_names_never_fails_and_shows_each_on_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    alphabet = [b"a", b"Z", b"0", b" ", b".", b"-", b"\n", b"\r", b"\t", b"|", b"`", b"\x01", b"\x7f", b"\xff", b"\xc3",
                "é".encode(), "细胞".encode(), b"\\"]
    folder = tmp_path / "raw" / "basophil"
    folder.mkdir(parents=True)
    made = set()
    for _ in range(200):
        name = b"".join(alphabet[i] for i in rng.integers(0, len(alphabet), rng.integers(1, 12))) + b".TIF"
        if name.startswith(b".") or name in made:
            continue
        made.add(name)
        with open(os.fsencode(folder) + b"/" + name, "wb") as f:
            f.write(b"x")
    found = scan_class_folders(tmp_path / "raw", None)
    assert len(found.entries) + len(found.skipped) == len(made)
    for entry in found.entries:
        entry.image_id.encode("utf-8")  # every published id is valid UTF-8
        assert "\n" not in printable(entry.image_id) and "|" not in printable(entry.image_id).replace("\\|", "")
    for skipped in found.skipped:
        assert skipped.reason == "its name is not valid UTF-8" and "\n" not in skipped.image_id


def test_planning_hostile_zip_members_never_fails_but_in_one_line() -> None:
    rng = np.random.default_rng(5)
    parts = ["basophil", "x.TIF", "..", ".", "", "C:", "a\\..\\b", "/", "__MACOSX", ".hidden", "dir", "é"]
    for _ in range(500):
        names = ["/".join(parts[i] for i in rng.integers(0, len(parts), rng.integers(1, 5))) for _ in range(rng.integers(1, 6))]
        infos = [zipfile.ZipInfo(name or "empty") for name in names]
        try:
            planned = plan_extraction(infos, "basophil", "basophil.zip")
        except HemaError:
            continue
        for _, relpath in planned:
            assert not relpath.startswith("/") and ".." not in relpath.split("/") and ":" not in relpath[:2]
        assert len({r for _, r in planned}) == len(planned)


def test_errno_of_a_worker_survives_the_trip_to_the_parent() -> None:
    """A full disk in a forked writer reaches the build as OSError(ENOSPC), so it can say so."""
    from hema.base.forked import fork_map

    def fail(_: None, item: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        fork_map(fail, None, [1, 2, 3], 2)
    assert raised.value.errno == errno.ENOSPC
