"""Fetching sources that publish archives: a Zenodo record of one zip per class, or a Mendeley Data
dataset of one zip of class folders. Which record a source is, is declared with the source
(hema.dataset.sources: MLL23 on Zenodo, Acevedo20 on Mendeley Data).

Every step is built to be re-run: a download resumes from its `.part` file with an HTTP Range
request, each zip is checked against the checksum the repository publishes before anything is
extracted, extraction happens in a temporary folder that is moved into place only once complete, and
a zip already fetched is skipped (a marker file records what each zip held). The result is the layout
`build` reads: DIR/<class>/<files>. Only the standard library is used, so downloading needs nothing
the runtime does not already have.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin

from tqdm.auto import tqdm

from hema.base import atomic
from hema.base.errors import HemaError

log = logging.getLogger(__name__)

DEFAULT_ZENODO_URL = "https://zenodo.org"
ZENODO_URL_ENV = "HEMA_ZENODO_URL"

DEFAULT_MENDELEY_URL = "https://data.mendeley.com"
MENDELEY_URL_ENV = "HEMA_MENDELEY_URL"
ARCHIVE = "archive"  # the marker's key for a source published as a single zip

#: Hidden bookkeeping inside the output folder: partial downloads and the per-class marker.
WORK_DIR_NAME = ".mll23-download"
MARKER_NAME = ".mll23-download.json"

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60
_MAX_BACKOFF_S = 60.0
_USER_AGENT = "hema-mll23-download"


class _TransientError(Exception):
    """A failure worth retrying (network hiccup, dropped connection, server overload)."""


@dataclass(frozen=True)
class RecordFile:
    """One `<class>.zip` of the Zenodo record, as its metadata describes it."""

    cell_class: str
    key: str
    size: int
    checksum: str  # "<algo>:<hex>", e.g. "md5:..."
    url: str


# ----------------------------------------------------------------------------- pure logic


def zenodo_base_url(base_url: str | None = None) -> str:
    """The Zenodo server to use: the argument, else $HEMA_ZENODO_URL, else zenodo.org."""
    return (base_url or os.environ.get(ZENODO_URL_ENV) or DEFAULT_ZENODO_URL).rstrip("/")


def mendeley_base_url(base_url: str | None = None) -> str:
    """The Mendeley Data server to use: the argument, else $HEMA_MENDELEY_URL, else data.mendeley.com."""
    return (base_url or os.environ.get(MENDELEY_URL_ENV) or DEFAULT_MENDELEY_URL).rstrip("/")


def select_classes(classes: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    """Validate the requested classes against the `known` ones (all when None), in their order."""
    if classes is None:
        return list(known)
    unknown = sorted(set(classes) - set(known))
    if unknown:
        raise HemaError(f"unknown cell class(es) {', '.join(unknown)}; valid classes: {', '.join(known)}")
    if not classes:
        raise HemaError(f"no cell class requested; valid classes: {', '.join(known)}")
    return [c for c in known if c in set(classes)]


def parse_record(record: dict, base_url: str, record_id: str, known: Sequence[str]) -> dict[str, RecordFile]:
    """Map each `known` class to its `<class>.zip` in a Zenodo record's JSON (other files are ignored)."""
    files = record.get("files")
    if not isinstance(files, list):
        raise HemaError(f"Zenodo record {record_id} at {base_url} has no 'files' list; is this the right server?")
    by_class: dict[str, RecordFile] = {}
    for entry in files:
        key = entry.get("key") or entry.get("filename") or ""
        cell_class = key.removesuffix(".zip")
        if not key.endswith(".zip") or cell_class not in known:
            continue
        links = entry.get("links") or {}
        link = links.get("content") or links.get("self") or links.get("download")
        checksum = entry.get("checksum") or ""
        if not link or ":" not in checksum or not isinstance(entry.get("size"), int):
            raise HemaError(f"Zenodo record {record_id} lists {key} without a link, size or '<algo>:<hex>' checksum")
        by_class[cell_class] = RecordFile(cell_class, key, entry["size"], checksum, urljoin(base_url + "/", link))
    return by_class


def parse_mendeley_files(listing: list, base_url: str, dataset: str) -> RecordFile:
    """The dataset's zip in a Mendeley Data public-API file list (the largest, if there are several)."""
    zips = [f for f in listing if isinstance(f, dict) and str(f.get("filename", "")).lower().endswith(".zip")]
    if not zips:
        raise HemaError(f"Mendeley Data dataset {dataset} at {base_url} lists no zip archive")
    entry = max(zips, key=lambda f: f.get("size") or 0)
    details = entry.get("content_details") or {}
    url, sha256, size = details.get("download_url"), details.get("sha256_hash"), entry.get("size")
    if not url or not sha256 or not isinstance(size, int):
        raise HemaError(f"Mendeley Data lists {entry.get('filename')} without a download URL, size or sha256")
    return RecordFile(ARCHIVE, entry["filename"], size, f"sha256:{sha256}", urljoin(base_url + "/", url))


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def plan_extraction(infos: Iterable[zipfile.ZipInfo], top: str | None, zip_name: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """Pick the members to extract and their paths inside the destination, refusing any unsafe entry.

    Absolute paths, `..` components and symlinks could write outside the output folder (zip-slip),
    so one such entry refuses the whole archive before anything is written. macOS resource forks
    (`__MACOSX/`) and hidden files are not cell images and are skipped. A top folder named `top` (a
    class zip's class) is dropped so both `<class>/x.TIF` and flat `x.TIF` archives land in
    DIR/<class>/; with `top` None, a single top folder whatever its name is dropped (an archive of
    class folders wrapped in one folder).
    """
    kept: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        drive = any(len(part) > 1 and part[1] == ":" for part in path.parts)  # C:, D:x: a drive on Windows
        if name.startswith("/") or drive or ".." in path.parts or _is_symlink(info):
            raise HemaError(f"{zip_name}: refusing to extract unsafe entry {info.filename!r} (absolute path, '..' or link)")
        if info.is_dir() or not path.parts:
            continue
        if "__MACOSX" in path.parts or any(part.startswith(".") for part in path.parts):
            continue
        kept.append((info, path))
    first = top if top is not None else (kept[0][1].parts[0] if kept else None)
    if kept and all(len(p.parts) > 2 - (top is not None) and p.parts[0] == first for _, p in kept):
        kept = [(info, PurePosixPath(*p.parts[1:])) for info, p in kept]
    relpaths = [str(p) for _, p in kept]
    if not relpaths:
        raise HemaError(f"{zip_name}: the archive holds no cell images")
    if len(set(relpaths)) != len(relpaths):
        raise HemaError(f"{zip_name}: the archive holds the same file name twice")
    files = set(relpaths)
    for relpath in relpaths:
        folder = next((str(parent) for parent in PurePosixPath(relpath).parents if str(parent) in files), None)
        if folder is not None:
            raise HemaError(f"{zip_name}: the archive holds {folder!r} both as a file and as a folder (of {relpath!r})")
    return [(info, str(p)) for info, p in kept]


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff before retry number `attempt` (1, 2, 4, ... seconds, capped)."""
    return min(2.0 ** (attempt - 1), _MAX_BACKOFF_S)


# ----------------------------------------------------------------------------- I/O


def _retrying(action: Callable[[], object], what: str, retries: int, sleep: Callable[[float], None]):
    """Run `action`, retrying transient failures with exponential backoff; a HemaError once out of tries."""
    for attempt in range(1, retries + 2):
        try:
            return action()
        except _TransientError as err:
            if attempt > retries:
                raise HemaError(f"{what} failed after {attempt} tries: {err}") from None
            delay = backoff_seconds(attempt)
            log.warning("%s: %s; retrying in %.0f s (%d/%d)", what, err, delay, attempt, retries)
            sleep(delay)
    raise AssertionError("unreachable")


def _open(url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """GET `url`, turning network failures and retryable statuses into _TransientError."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code in (408, 429) or err.code >= 500:
            raise _TransientError(f"HTTP {err.code} {err.reason}") from None
        if err.code == 416:
            raise  # the caller restarts the download from zero
        raise HemaError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _TransientError(_reason(err)) from None


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def fetch_json(url: str, what: str, retries: int, sleep: Callable[[float], None]):
    """A repository API's JSON answer; `what` names the repository in errors."""

    def get():
        try:
            with _open(url, {"Accept": "application/json"}) as response:
                return json.loads(response.read())
        except (OSError, http.client.HTTPException) as err:
            raise _TransientError(_reason(err)) from None
        except ValueError:
            raise HemaError(f"{url} did not answer JSON; is it {what}?") from None

    return _retrying(get, f"cannot reach {what}", retries, sleep)


def _download_attempt(file: RecordFile, part: Path) -> None:
    """Append the missing bytes of `file` to `part`, resuming with a Range request."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > file.size:
        part.unlink()
        offset = 0
    if offset == file.size:
        return
    try:
        response = _open(file.url, {"Range": f"bytes={offset}-"} if offset else None)
    except urllib.error.HTTPError:  # 416: our part no longer matches the server's file
        part.unlink(missing_ok=True)
        raise _TransientError("the server refused to resume; restarting from zero") from None
    with response:
        resumed = response.status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
        if not resumed:
            offset = 0  # a plain 200 sends the whole file again
        with part.open("ab" if resumed else "wb") as out, tqdm(
            total=file.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=file.key, leave=False
        ) as bar:
            while chunk := _read_chunk(response, file.key):
                out.write(chunk)  # a failed write (disk full) is not the network's: not retried
                bar.update(len(chunk))
    received = part.stat().st_size
    if received < file.size:
        raise _TransientError(f"connection closed after {received} of {file.size} bytes of {file.key}")
    if received > file.size:
        part.unlink()
        raise _TransientError(f"{file.key} is larger than the record says; restarting from zero")


def _read_chunk(response: http.client.HTTPResponse, key: str) -> bytes:
    try:
        return response.read(_CHUNK_BYTES)
    except (OSError, http.client.HTTPException) as err:
        raise _TransientError(f"connection lost during {key} ({_reason(err)})") from None


def _file_digest(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, file: RecordFile) -> None:
    """Check a downloaded zip against the record's checksum; a mismatch deletes it and says so."""
    algo, expected = file.checksum.split(":", 1)
    try:
        actual = _file_digest(path, algo.lower())
    except ValueError:
        raise HemaError(f"{file.key}: unsupported checksum algorithm {algo!r} in the Zenodo record") from None
    if actual != expected.lower():
        path.unlink()
        raise HemaError(
            f"{file.key}: checksum mismatch (expected {algo}:{expected}, got {algo}:{actual}); "
            "the corrupt download was deleted, run the download again"
        )


def download_zip(file: RecordFile, work_dir: Path, retries: int, sleep: Callable[[float], None]) -> Path:
    """Download and verify one class zip into `work_dir`, resuming any earlier partial download."""
    final = work_dir / file.key
    if not final.exists():
        part = work_dir / f"{file.key}.part"
        _retrying(lambda: _download_attempt(file, part), f"downloading {file.key}", retries, sleep)
        os.replace(part, final)
    verify_checksum(final, file)
    return final


def _same_content(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and _file_digest(a, "sha256") == _file_digest(b, "sha256")


def extract_zip(zip_path: Path, top: str | None, destination: Path, work_dir: Path) -> list[str]:
    """Extract a zip into `destination` safely; returns the extracted paths (relative to it).

    `top` is the top folder to drop (plan_extraction).
    Everything is first written to a temporary folder beside the output, then moved in: a failure
    leaves no half-extracted class behind, and files already present with the same bytes are not
    rewritten (their inode and mtime stay as they were).
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        zip_path.unlink()
        raise HemaError(f"{zip_path.name} is not a valid zip archive; it was deleted, run the download again") from None
    with archive:
        plan = plan_extraction(archive.infolist(), top, zip_path.name)
        staging = Path(tempfile.mkdtemp(prefix=f"{destination.name}-", dir=work_dir))
        try:
            for info, relpath in plan:
                target = staging / relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK_BYTES)
            if not destination.exists():
                os.replace(staging, destination)
            else:
                for _, relpath in plan:
                    target = destination / relpath
                    if target.is_file() and _same_content(staging / relpath, target):
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / relpath, target)
        except zipfile.BadZipFile as err:
            raise HemaError(f"{zip_path.name} is corrupt ({err}); nothing was extracted") from None
        except OSError as err:  # a disk full or read-only, or a destination path taken by a folder
            raise HemaError(f"cannot extract {zip_path.name} into {destination}: {err.strerror or err}"
                            + (f" ({err.filename})" if err.filename else "")) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(relpath for _, relpath in plan)


def _read_marker(output_dir: Path, record: str) -> dict:
    try:
        marker = json.loads((output_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return marker.get("classes", {}) if marker.get("record") == record else {}


def _write_marker(output_dir: Path, record: str, classes: dict) -> None:
    atomic.write_text(output_dir / MARKER_NAME, json.dumps({"record": record, "classes": classes}, indent=1, sort_keys=True))


def _already_fetched(done: dict, file: RecordFile, destination: Path) -> bool:
    """A zip counts as fetched when the marker has the same checksum and all its files exist."""
    entry = done.get(file.cell_class)
    if not entry or entry.get("checksum") != file.checksum:
        return False
    return all((destination / relpath).is_file() for relpath in entry.get("files", []))


def download_zenodo_classes(
    output_dir: Path,
    record_id: str,
    known: Sequence[str],
    classes: Sequence[str] | None = None,
    *,
    base_url: str | None = None,
    retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download the `<class>.zip` files of Zenodo record `record_id` (the `known` classes, or those of
    `classes`) into output_dir/<class>/; returns output_dir.

    `sleep` is the backoff wait between retries (tests pass a no-op). Re-running is cheap: classes
    recorded as complete are skipped, and partial downloads resume.
    """
    wanted = select_classes(classes, known)
    base = zenodo_base_url(base_url)
    output_dir = Path(output_dir)
    record = fetch_json(f"{base}/api/records/{record_id}", f"Zenodo record {record_id} at {base}", retries, sleep)
    record_files = parse_record(record, base, record_id, known)
    missing = [c for c in wanted if c not in record_files]
    if missing:
        raise HemaError(f"Zenodo record {record_id} at {base} has no zip for: {', '.join(missing)}")
    _fetch_zips(output_dir, record_id, [(record_files[c], c, output_dir / c) for c in wanted], retries, sleep)
    return output_dir


def download_mendeley_archive(
    output_dir: Path, dataset: str, version: int, *, base_url: str | None = None, retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download the zip of Mendeley Data dataset `dataset` (its `version`) and extract its class
    folders into output_dir; returns output_dir."""
    base = mendeley_base_url(base_url)
    url = f"{base}/public-api/datasets/{dataset}/files?folder_id=root&version={version}"
    listing = fetch_json(url, f"Mendeley Data dataset {dataset} at {base}", retries, sleep)
    file = parse_mendeley_files(listing if isinstance(listing, list) else [], base, dataset)
    output_dir = Path(output_dir)
    _fetch_zips(output_dir, f"mendeley:{dataset}.{version}", [(file, None, output_dir)], retries, sleep)
    return output_dir


def _fetch_zips(
    output_dir: Path, record: str, zips: list[tuple[RecordFile, str | None, Path]], retries: int,
    sleep: Callable[[float], None],
) -> None:
    """Download, verify and extract each (file, top folder to drop, destination), skipping those already done."""
    try:
        _fetch_zips_into(output_dir, record, zips, retries, sleep)
    except OSError as err:  # writing: a disk full, a read-only or unwritable folder
        raise HemaError(f"cannot write the download into {output_dir}: {err.strerror or err}"
                        + (f" ({err.filename})" if err.filename else "")) from None


def _fetch_zips_into(
    output_dir: Path, record: str, zips: list[tuple[RecordFile, str | None, Path]], retries: int,
    sleep: Callable[[float], None],
) -> None:
    work_dir = output_dir / WORK_DIR_NAME
    work_dir.mkdir(parents=True, exist_ok=True)
    done = _read_marker(output_dir, record)
    for file, top, destination in zips:
        if _already_fetched(done, file, destination):
            log.info("%s: already downloaded, skipped", file.key)
            continue
        zip_path = download_zip(file, work_dir, retries, sleep)
        relpaths = extract_zip(zip_path, top, destination, work_dir)
        done[file.cell_class] = {"checksum": file.checksum, "files": relpaths}
        _write_marker(output_dir, record, done)
        zip_path.unlink()
        log.info("%s: %d files extracted", file.key, len(relpaths))
    if not any(work_dir.iterdir()):
        work_dir.rmdir()
