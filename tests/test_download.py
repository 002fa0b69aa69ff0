"""Downloading MLL23 from (an emulated) Zenodo: layout, resume, retries, checksums, safe extraction, re-runs."""

from __future__ import annotations

import io
import socket
import zipfile
from pathlib import Path

import pytest

from hema.dataset.download import MARKER_NAME, WORK_DIR_NAME, plan_extraction
from hema.dataset.sources.mll23 import download as download_mll23
from hema.base.errors import HemaError
from hema.dataset.sources.mll23 import CELL_CLASSES
from tests.zenodo_emulator import ZenodoEmulator, class_zip, tiny_tifs

BASOPHILS = tiny_tifs("basophil", 3)
EOSINOPHILS = tiny_tifs("eosinophil", 2)


@pytest.fixture
def record(zenodo: ZenodoEmulator) -> ZenodoEmulator:
    """Two classes: basophil zipped under a top folder with macOS litter, eosinophil flat."""
    litter = {"__MACOSX/basophil/._basophil_0001.TIF": b"resource fork", "basophil/.DS_Store": b"finder"}
    zenodo.files["basophil.zip"] = class_zip("basophil", BASOPHILS, extra=litter)
    zenodo.files["eosinophil.zip"] = class_zip("eosinophil", EOSINOPHILS, top_folder=False)
    zenodo.files["labels_MLL23.csv"] = b"not a class zip, ignored"
    return zenodo


class Sleeps(list):
    """Records the backoff waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def fetch(out: Path, classes=("basophil", "eosinophil"), **kwargs) -> Sleeps:
    sleeps = Sleeps()
    download_mll23(out, list(classes), sleep=sleeps, **kwargs)
    return sleeps


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expected_tree(marker: bool = True) -> dict[str, bytes]:
    files = {f"basophil/{k}": v for k, v in BASOPHILS.items()} | {f"eosinophil/{k}": v for k, v in EOSINOPHILS.items()}
    return files | ({MARKER_NAME: ...} if marker else {})


def assert_layout(out: Path) -> None:
    got = tree(out)
    assert MARKER_NAME in got
    del got[MARKER_NAME]
    assert got == expected_tree(marker=False)  # no __MACOSX, no hidden files, no work dir left behind


def file_downloads(zenodo: ZenodoEmulator) -> list[tuple[str, str, str | None]]:
    return [r for r in zenodo.requests if r[1].endswith("/content")]


def test_download_gives_the_layout_build_reads(record: ZenodoEmulator, tmp_path: Path) -> None:
    out = tmp_path / "mll23"
    sleeps = fetch(out)
    assert_layout(out)
    assert sleeps == []
    assert not (out / WORK_DIR_NAME).exists()


def test_only_requested_classes_are_downloaded(record: ZenodoEmulator, tmp_path: Path) -> None:
    fetch(tmp_path, ["eosinophil"])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["eosinophil"]
    assert [r[1].split("/")[-2] for r in file_downloads(record)] == ["eosinophil.zip"]


def test_unknown_class_lists_the_valid_ones_before_any_request(record: ZenodoEmulator, tmp_path: Path) -> None:
    with pytest.raises(HemaError) as err:
        fetch(tmp_path, ["basophil", "platelet"])
    message = str(err.value)
    assert "platelet" in message and all(c in message for c in CELL_CLASSES) and "\n" not in message
    assert record.requests == []


def test_class_missing_from_the_record_is_a_clear_error(record: ZenodoEmulator, tmp_path: Path) -> None:
    with pytest.raises(HemaError, match="no zip for: monocyte"):
        fetch(tmp_path, ["basophil", "monocyte"])


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "server-ignores-range"])
def test_resume_after_a_dropped_connection(record: ZenodoEmulator, tmp_path: Path, ignore_range: bool) -> None:
    record.ignore_range = ignore_range
    size = len(record.files["basophil.zip"])
    record.drop_after["basophil.zip"] = size // 2
    with pytest.raises(HemaError, match="connection closed after"):  # no retries: the run stops ...
        fetch(tmp_path, ["basophil"], retries=0)
    part = tmp_path / WORK_DIR_NAME / "basophil.zip.part"
    assert part.stat().st_size == size // 2  # ... keeping what it got, and nothing extracted
    assert not (tmp_path / "basophil").exists()

    fetch(tmp_path)  # the next run resumes from the part
    assert_layout(tmp_path)
    ranges = [r[2] for r in file_downloads(record) if "basophil" in r[1]]
    assert ranges == [None, f"bytes={size // 2}-"]


def test_retries_with_exponential_backoff(record: ZenodoEmulator, tmp_path: Path) -> None:
    record.fail_next = 3  # the record JSON is answered 503 three times
    record.drop_after["eosinophil.zip"] = 10
    sleeps = fetch(tmp_path, retries=3)
    assert sleeps == [1.0, 2.0, 4.0, 1.0]
    assert_layout(tmp_path)


def test_gives_up_with_one_line_after_the_retries(record: ZenodoEmulator, tmp_path: Path) -> None:
    record.fail_next = 100
    with pytest.raises(HemaError) as err:
        fetch(tmp_path, retries=2)
    assert "after 3 tries" in str(err.value) and "503" in str(err.value) and "\n" not in str(err.value)
    assert not tmp_path.joinpath("basophil").exists()


def test_checksum_mismatch_deletes_the_download_and_says_so(record: ZenodoEmulator, tmp_path: Path) -> None:
    record.bad_checksum.add("eosinophil.zip")
    with pytest.raises(HemaError) as err:
        fetch(tmp_path)
    assert "eosinophil.zip: checksum mismatch" in str(err.value) and "deleted" in str(err.value)
    assert not any((tmp_path / WORK_DIR_NAME).iterdir())
    assert not (tmp_path / "eosinophil").exists()
    assert (tmp_path / "basophil").is_dir()  # the class before it is complete and kept


@pytest.mark.parametrize("evil", ["../escaped.TIF", "basophil/../../escaped.TIF", "/tmp/escaped.TIF", "C:/escaped.TIF"])
def test_zip_slip_is_refused_and_nothing_extracted(zenodo: ZenodoEmulator, tmp_path: Path, evil: str) -> None:
    zenodo.files["basophil.zip"] = class_zip("basophil", BASOPHILS, extra={evil: b"payload"})
    out = tmp_path / "out"
    with pytest.raises(HemaError, match="refusing to extract unsafe entry"):
        fetch(out, ["basophil"])
    assert not (out / "basophil").exists()
    assert not list(tmp_path.rglob("escaped.TIF"))
    assert not [p for p in (out / WORK_DIR_NAME).iterdir() if p.is_dir()]  # no staging folder left


def test_symlink_entries_are_refused() -> None:
    link = zipfile.ZipInfo("basophil/link.TIF")
    link.external_attr = 0o120777 << 16
    with pytest.raises(HemaError, match="unsafe entry"):
        plan_extraction([link], "basophil", "basophil.zip")


def test_no_network_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    sleeps = Sleeps()
    with pytest.raises(HemaError) as err:
        download_mll23(tmp_path / "out", base_url=url, retries=2, sleep=sleeps)
    message = str(err.value)
    assert message.startswith(f"cannot reach Zenodo record 14277609 at {url}") and "\n" not in message
    assert sleeps == [1.0, 2.0]
    assert not (tmp_path / "out").exists()


def test_rerun_skips_finished_classes_and_never_rewrites(record: ZenodoEmulator, tmp_path: Path) -> None:
    fetch(tmp_path)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.TIF")}

    fetch(tmp_path)  # marker says done: only the record JSON is fetched
    assert len(file_downloads(record)) == 2

    (tmp_path / MARKER_NAME).unlink()  # forget: zips are fetched again, identical files stay untouched
    (tmp_path / "eosinophil" / "eosinophil_0002.TIF").write_bytes(b"damaged")
    fetch(tmp_path)
    assert len(file_downloads(record)) == 4
    assert_layout(tmp_path)
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.TIF")}
    changed = {p.name for p in before if before[p] != after[p]}
    assert changed == {"eosinophil_0002.TIF"}


def test_plan_strips_only_a_top_folder_named_after_the_class() -> None:
    def plan(names: list[str]) -> list[str]:
        return [rel for _, rel in plan_extraction([zipfile.ZipInfo(n) for n in names], "basophil", "basophil.zip")]

    assert plan(["basophil/", "basophil/a.TIF", "basophil/b.TIF"]) == ["a.TIF", "b.TIF"]
    assert plan(["a.TIF", "__MACOSX/._a.TIF", ".hidden"]) == ["a.TIF"]
    assert plan(["other/a.TIF"]) == ["other/a.TIF"]
    with pytest.raises(HemaError, match="no cell images"):
        plan(["__MACOSX/._a.TIF"])


# ----------------------------------------------------------------------------- Acevedo20 from Mendeley Data


def pbc_zip(files: dict[str, bytes]) -> bytes:
    """The PBC archive's shape: the 8 class folders inside one top folder, with macOS litter."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"PBC_dataset_normal_DIB/{name}", content)
        archive.writestr("__MACOSX/PBC_dataset_normal_DIB/._basophil", b"resource fork")
    return buffer.getvalue()


def test_acevedo20_download_resumes_verifies_and_builds(zenodo: ZenodoEmulator, tmp_path: Path, monkeypatch) -> None:
    from hema.dataset.sources.acevedo20 import download as download_acevedo20
    from hema.dataset.sources.acevedo20 import Acevedo20

    monkeypatch.setenv("HEMA_MENDELEY_URL", zenodo.url)
    cells = {}
    for folder, prefix in (("basophil", "BA"), ("neutrophil", "SNE"), ("ig", "MY")):
        for name, data in tiny_tifs(folder, 3, size=16).items():
            cells[f"{folder}/{prefix}_{name.split('_')[-1].replace('.TIF', '.png')}"] = data
    zenodo.files["PBC_dataset_normal_DIB.zip"] = pbc_zip(cells)
    zenodo.files["readme.txt"] = b"not the archive"
    zenodo.drop_after["PBC_dataset_normal_DIB.zip"] = 500  # the first try breaks off: the next one resumes
    out = tmp_path / "acevedo20"
    download_acevedo20(out, sleep=Sleeps())
    got = tree(out)
    del got[MARKER_NAME]
    assert got == cells  # the top folder dropped, no __MACOSX, no work dir left
    ranges = [r[2] for r in zenodo.requests if r[1].endswith("/file_downloaded")]
    assert ranges == [None, "bytes=500-"]
    download_acevedo20(out, sleep=Sleeps())  # a re-run downloads nothing
    assert len([r for r in zenodo.requests if r[1].endswith("/file_downloaded")]) == 2

    zenodo.bad_checksum.add("PBC_dataset_normal_DIB.zip")
    with pytest.raises(HemaError, match="checksum mismatch"):
        download_acevedo20(tmp_path / "again", sleep=Sleeps())

    zenodo.bad_checksum.clear()
    builder = Acevedo20(cache_dir=str(tmp_path / "cache"))  # no data_dir: the builder downloads first
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert sum(len(ds[s]) for s in ds) == len(cells)
