"""A local stand-in for the repositories hema downloads from, with switches to fail the ways they can.

Zenodo's record API: `/api/records/<record>` (JSON of the shape zenodo.org answers: a `files` list
with key, size, "md5:" checksum and links.self) and each file at `links.self`. Mendeley Data's
public API: `/public-api/datasets/<id>/files?folder_id=root&version=<v>` (a list of files with
filename, size and content_details.download_url / sha256_hash) and each file at its download_url.
Files are served with HTTP Range support. Faults: answer 503 a number of times, drop the connection
part-way through a file, or publish a wrong checksum. Clients select it with HEMA_ZENODO_URL or
HEMA_MENDELEY_URL=<url>.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hema.dataset.sources.acevedo20 import MENDELEY_DATASET, MENDELEY_VERSION
from hema.dataset.sources.mll23 import ZENODO_RECORD
from tests.loopback import ServedInBackground


def class_zip(cell_class: str, files: dict[str, bytes], *, top_folder: bool = True, extra: dict[str, bytes] | None = None) -> bytes:
    """A `<class>.zip` like the record's: files under `<class>/` (or flat), plus raw `extra` entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"{cell_class}/{name}" if top_folder else name, content)
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tiny_tifs(cell_class: str, count: int, size: int = 8) -> dict[str, bytes]:
    """`count` distinct small RGB TIFFs named like MLL23's (`<class>_0001.TIF`, ...)."""
    import numpy as np
    from PIL import Image

    images = {}
    for i in range(1, count + 1):
        rng = np.random.default_rng(zlib.crc32(f"{cell_class}/{i}".encode()))
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, format="TIFF")
        images[f"{cell_class}_{i:04d}.TIF"] = out.getvalue()
    return images


class ZenodoEmulator(ServedInBackground):
    """Zenodo on 127.0.0.1 (ephemeral port) serving `files` (key -> bytes) as record ZENODO_RECORD.

    Switches, all changeable between requests:
      fail_next: this many next requests answer 503;
      drop_after: key -> byte count; the next download of key sends that many bytes, then closes;
      bad_checksum: keys whose published md5 is wrong;
      ignore_range: answer Range requests with the whole file (200), as some mirrors do.
    `requests` logs (method, path, Range header or None).
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.fail_next = 0
        self.drop_after: dict[str, int] = {}
        self.bad_checksum: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._serve("zenodo-emulator")

    def record(self) -> dict:
        """The record JSON, in the shape of https://zenodo.org/api/records/<id>."""
        entries = []
        for key, content in self.files.items():
            md5 = hashlib.md5(content + (b"corrupt" if key in self.bad_checksum else b"")).hexdigest()
            link = f"{self.url}/api/records/{ZENODO_RECORD}/files/{key}/content"
            entries.append({"id": hashlib.sha1(key.encode()).hexdigest(), "key": key, "size": len(content), "checksum": f"md5:{md5}", "links": {"self": link}})
        return {"id": int(ZENODO_RECORD), "recid": ZENODO_RECORD, "metadata": {"title": "MLL23 (emulated)"}, "files": entries}

    def mendeley_files(self) -> list:
        """The file list, in the shape of data.mendeley.com/public-api/datasets/<id>/files."""
        entries = []
        for key, content in self.files.items():
            sha256 = hashlib.sha256(content + (b"corrupt" if key in self.bad_checksum else b"")).hexdigest()
            url = f"{self.url}/public-files/datasets/{MENDELEY_DATASET}/files/{key}/file_downloaded"
            entries.append({"id": key, "filename": key, "size": len(content),
                            "content_details": {"download_url": url, "sha256_hash": sha256, "size": len(content)}})
        return entries

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                emulator.requests.append(("GET", self.path, self.headers.get("Range")))
                with emulator._lock:
                    failing = emulator.fail_next > 0
                    emulator.fail_next -= failing
                if failing:
                    return self._answer(503, b"Service Unavailable")
                if self.path == f"/api/records/{ZENODO_RECORD}":
                    return self._answer(200, json.dumps(emulator.record()).encode(), {"Content-Type": "application/json"})
                listing = f"/public-api/datasets/{MENDELEY_DATASET}/files?folder_id=root&version={MENDELEY_VERSION}"
                if self.path == listing:
                    return self._answer(200, json.dumps(emulator.mendeley_files()).encode(), {"Content-Type": "application/json"})
                m = re.fullmatch(rf"/api/records/{ZENODO_RECORD}/files/([^/]+)/content", self.path) or re.fullmatch(
                    rf"/public-files/datasets/{MENDELEY_DATASET}/files/([^/]+)/file_downloaded", self.path)
                if not m or m[1] not in emulator.files:
                    return self._answer(404, b'{"status": 404, "message": "not found"}')
                self._send_file(m[1], emulator.files[m[1]])

            def _send_file(self, key: str, content: bytes) -> None:
                start, status, headers = 0, 200, {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged and not emulator.ignore_range:
                    start = int(ranged[1])
                    if start >= len(content):
                        return self._answer(416, b"", {"Content-Range": f"bytes */{len(content)}"})
                    status, headers["Content-Range"] = 206, f"bytes {start}-{len(content) - 1}/{len(content)}"
                body = content[start:]
                drop = emulator.drop_after.pop(key, None)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if drop is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True  # the client sees the connection end short of Content-Length

        return Handler
