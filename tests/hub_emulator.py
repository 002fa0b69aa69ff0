"""A local stand-in for the Hugging Face Hub, so push and load round trips run offline.

It speaks the part of the Hub's HTTP API that huggingface_hub 2.x, datasets 5.x and transformers 5.x
use to upload a folder (create repo, preupload, LFS batch + basic PUT transfer, NDJSON commit,
branches) and to read one back (repo info, tree, paths-info, resolve with ETag / X-Repo-Commit and
Range). Clients select it with HF_ENDPOINT=<url> and HF_HUB_DISABLE_XET=1 (plain LFS instead of Xet).

Storage is a temporary folder: file contents, content-addressed by SHA-256, under `root/objects`;
repositories, branches and commits live in memory. Tokens are compared, never stored, logged or
echoed: the request log records only whether a request carried no, a valid or an invalid token.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.loopback import ServedInBackground

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# What the Hub's default .gitattributes stores in LFS; anything else binary or > 1 MB goes there too.
LFS_SUFFIXES = {
    ".arrow", ".bin", ".bz2", ".ckpt", ".gz", ".h5", ".jpeg", ".jpg", ".msgpack", ".npy", ".npz", ".onnx",
    ".parquet", ".pickle", ".pkl", ".png", ".pt", ".pth", ".safetensors", ".tar", ".tif", ".tiff", ".zip", ".zst",
}
LFS_MIN_BYTES = 1 << 20
INITIAL_FILES = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}


class HubError(Exception):
    """An error answer: HTTP status, the Hub's X-Error-Code (if any) and a message."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    lfs: bool
    oid: str  # the git blob id: of the content for regular files, of the LFS pointer for LFS ones


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        sha = self.branches.get(revision) or (revision if revision in self.commits else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[sha]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parent_folders(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class HubState:
    """Repositories and file contents, with the Hub's rules; all methods are thread-safe."""

    def __init__(self, root: Path, tokens: dict[str, str], user: str, orgs: tuple[str, ...]):
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tokens, self.user, self.orgs = tokens, user, orgs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self._counter = 0

    # --- auth
    def role(self, token: str | None) -> str | None:
        """'write', 'read' or None (no token); an unknown token is a 401."""
        if token is None:
            return None
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def require_write(self, token: str | None, namespace: str) -> None:
        role = self.role(token)
        if role is None:
            raise HubError(401, "You must be authenticated to do this")
        if role != "write" or namespace not in (self.user, *self.orgs):
            raise HubError(403, f"You don't have the rights to write to {namespace}")

    def whoami(self, token: str | None) -> dict:
        role = self.role(token)
        if role is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return {
            "type": "user",
            "id": "0" * 24,
            "name": self.user,
            "fullname": "Hub Emulator",
            "email": f"{self.user}@example.invalid",
            "emailVerified": True,
            "isPro": False,
            "orgs": [{"type": "org", "name": org, "fullname": org} for org in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": role}},
        }

    # --- objects
    def store_object(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        path = self.objects / sha
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha

    def has_object(self, sha256: str) -> bool:
        return (self.objects / sha256).exists()

    def read_object(self, sha256: str) -> bytes:
        return (self.objects / sha256).read_bytes()

    # --- repos
    def repo(self, repo_type: str, repo_id: str, token: str | None) -> Repo:
        role = self.role(token)
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and role is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool, token: str | None) -> Repo:
        self.require_write(token, repo_id.split("/")[0])
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo")
            repo = Repo(repo_type, repo_id, private, _now())
            self.repos[(repo_type, repo_id)] = repo
            files = {path: self._regular(content) for path, content in INITIAL_FILES.items()}
            self._add_commit(repo, "main", None, "initial commit", files)
            return repo

    def _regular(self, content: bytes) -> StoredFile:
        return StoredFile(self.store_object(content), len(content), False, git_blob_sha1(content))

    def _add_commit(self, repo: Repo, branch: str, parent: str | None, message: str, files: dict) -> Commit:
        self._counter += 1
        sha = hashlib.sha1(f"{repo.repo_id}|{parent}|{message}|{self._counter}".encode()).hexdigest()
        commit = Commit(sha, parent, message, _now(), files)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None, token: str | None) -> None:
        self.require_write(token, repo.repo_id.split("/")[0])
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = repo.resolve(starting_point or "main").sha

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        suffix = Path(path).suffix.lower()
        try:
            sample.decode("utf-8")
            text = True
        except UnicodeDecodeError:
            text = False
        return "lfs" if size and (suffix in LFS_SUFFIXES or size >= LFS_MIN_BYTES or not text) else "regular"

    def commit(self, repo: Repo, revision: str, lines: list[dict], token: str | None) -> Commit:
        """Apply an NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder) on a branch."""
        self.require_write(token, repo.repo_id.split("/")[0])
        with self.lock:
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            files = dict(head.files)
            message = ""
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    message = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and parent != head.sha:
                        raise HubError(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, "only base64 file contents are emulated")
                    files[value["path"]] = self._regular(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    oid = value["oid"]
                    if not self.has_object(oid):
                        raise HubError(400, f"LFS object {oid} of {value['path']} was never uploaded")
                    size = (self.objects / oid).stat().st_size
                    files[value["path"]] = StoredFile(oid, size, True, git_blob_sha1(lfs_pointer(oid, size)))
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"{value['path']} does not exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"commit operation {key!r} is not emulated")
            return self._add_commit(repo, revision, head.sha, message, files)


def _tree_entry(path: str, stored: StoredFile | None) -> dict:
    if stored is None:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
    entry = {"type": "file", "oid": stored.oid, "size": stored.size, "path": path}
    if stored.lfs:
        entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(lfs_pointer(stored.sha256, stored.size))}
    return entry


def _folders(files: dict[str, StoredFile]) -> set[str]:
    return {folder for path in files for folder in _parent_folders(path)}


def list_tree(commit: Commit, path: str, recursive: bool) -> list[dict]:
    """Entries under `path` (the repo root when empty); a missing path is EntryNotFound like on the Hub."""
    path = path.strip("/")
    folders = _folders(commit.files)
    if path and path not in folders:
        raise HubError(404, f"{path} does not exist on this revision", "EntryNotFound")
    prefix = f"{path}/" if path else ""
    entries = []
    for folder in sorted(folders):
        if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix):]):
            entries.append(_tree_entry(folder, None))
    for file_path, stored in sorted(commit.files.items()):
        if file_path.startswith(prefix) and (recursive or "/" not in file_path[len(prefix):]):
            entries.append(_tree_entry(file_path, stored))
    return entries


def _repo_info(repo: Repo, commit: Commit) -> dict:
    siblings = []
    for path, stored in sorted(commit.files.items()):
        sibling = {"rfilename": path, "size": stored.size, "blobId": stored.oid}
        if stored.lfs:
            sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256, "pointerSize": len(lfs_pointer(stored.sha256, stored.size))}
        siblings.append(sibling)
    return {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": commit.sha,
        "lastModified": commit.date,
        "createdAt": repo.created,
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
    }


_REPO_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/(.*))?$")
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_LFS_PUT = re.compile(r"^/lfs-upload/([0-9a-f]{64})$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # --- plumbing
    def log_message(self, format: str, *args) -> None:  # quiet: the emulator keeps its own log
        pass

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return auth[len("Bearer "):].strip() or None

    def _auth_state(self) -> str:
        token = self._token()
        return "none" if token is None else ("valid" if token in self.server.state.tokens else "invalid")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json") -> None:
        self.server.log.append({"method": self.command, "path": urlsplit(self.path).path, "status": status, "auth": self._auth_state()})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: object, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self) -> None:
        body = self._body() if self.command in ("POST", "PUT") else b""
        try:
            self._route(body)
        except HubError as err:
            headers = {"X-Error-Message": str(err)}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json({"error": str(err)}, err.status, headers)
        except Exception as err:  # an emulator bug: answer 500 and keep it for the test to report
            self.server.failures.append(f"{self.command} {self.path}: {type(err).__name__}: {err}")
            self._json({"error": "emulator failure"}, 500)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # --- routes
    def _route(self, body: bytes) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        state, token, base = self.server.state, self._token(), self.server.url
        if path == "/api/agent-harnesses":
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if path.startswith("/api/telemetry/"):
            return self._json({})
        if path == "/api/whoami-v2":
            return self._json(state.whoami(token))
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml(body)
        if path == "/api/repos/create" and self.command == "POST":
            return self._create_repo(json.loads(body), token, base)
        if (m := _LFS_PUT.match(path)) and self.command == "PUT":
            if hashlib.sha256(body).hexdigest() != m[1]:
                raise HubError(400, "uploaded content does not match its sha256 oid")
            state.store_object(body)
            return self._send(200)
        if (m := _LFS_BATCH.match(path)) and self.command == "POST":
            repo = state.repo(REPO_TYPES[m[1] or "models"], f"{m[2]}/{m[3]}", token)
            state.require_write(token, repo.repo_id.split("/")[0])
            objects = []
            for obj in json.loads(body)["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if not state.has_object(obj["oid"]):
                    entry["actions"] = {"upload": {"href": f"{base}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
            return self._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})
        if (m := _RESOLVE.match(path)) and self.command in ("GET", "HEAD"):
            repo = state.repo(REPO_TYPES[m[1] or "models"], f"{m[2]}/{m[3]}", token)
            return self._resolve(repo, unquote(m[4]), unquote(m[5]))
        if m := _REPO_API.match(path):
            repo_type, repo_id = REPO_TYPES[m[1]], f"{m[2]}/{m[3]}"
            return self._repo_api(state.repo(repo_type, repo_id, token), [unquote(p) for p in (m[4] or "").split("/") if p], query, body, token, base)
        raise HubError(404, f"{self.command} {path} is not emulated")

    def _validate_yaml(self, body: bytes) -> None:
        """Check the README's front matter parses to a mapping (the Hub's schema checks are not emulated)."""
        content = json.loads(body).get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(m[1]) if m else {}
        except yaml.YAMLError as err:
            metadata = f"invalid YAML: {' '.join(str(err).split())}"
        if not isinstance(metadata, dict | None):
            message = metadata if isinstance(metadata, str) else "the metadata must be a YAML mapping"
            return self._json({"errors": [{"message": message}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def _create_repo(self, payload: dict, token: str | None, base: str) -> None:
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or self.server.state.user
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{base}/{URL_PREFIX[repo_type]}{repo_id}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        try:
            self.server.state.create_repo(repo_type, repo_id, private, token)
        except HubError as err:
            if err.status != 409:
                raise
            return self._json({"error": str(err), "url": url}, 409)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_api(self, repo: Repo, rest: list[str], query: dict, body: bytes, token: str | None, base: str) -> None:
        state = self.server.state
        action = rest[0] if rest else ""
        if action == "" and self.command == "GET":
            return self._json(_repo_info(repo, repo.resolve("main")))
        if action == "revision" and len(rest) == 2:
            return self._json(_repo_info(repo, repo.resolve(rest[1])))
        if action == "tree" and len(rest) >= 2:
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(list_tree(repo.resolve(rest[1]), "/".join(rest[2:]), recursive))
        if action == "paths-info" and len(rest) == 2 and self.command == "POST":
            commit = repo.resolve(rest[1])
            form = json.loads(body) if body.lstrip().startswith(b"{") else parse_qs(body.decode())
            paths = form.get("paths", [])
            folders = _folders(commit.files)
            entries = [
                _tree_entry(p.strip("/"), commit.files.get(p.strip("/")))
                for p in ([paths] if isinstance(paths, str) else paths)
                if p.strip("/") in commit.files or p.strip("/") in folders
            ]
            return self._json(entries)
        if action == "preupload" and len(rest) == 2 and self.command == "POST":
            commit = repo.resolve(rest[1])
            files = []
            for f in json.loads(body)["files"]:
                mode = state.upload_mode(f["path"], f["size"], base64.b64decode(f.get("sample", "")))
                existing = commit.files.get(f["path"])
                oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
                files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            return self._json({"files": files, "commitOid": commit.sha})
        if action == "commit" and len(rest) == 2 and self.command == "POST":
            if query.get("create_pr"):
                raise HubError(400, "pull requests are not emulated")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            commit = state.commit(repo, rest[1], lines, token)
            url = f"{base}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.sha}"
            return self._json({"success": True, "commitOid": commit.sha, "commitUrl": url, "hookOutput": ""})
        if action == "branch" and len(rest) == 2 and self.command == "POST":
            payload = json.loads(body or b"{}")
            state.create_branch(repo, rest[1], payload.get("startingPoint"), token)
            return self._json({})
        if action == "refs" and self.command == "GET":
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in sorted(repo.branches.items())]
            return self._json({"branches": branches, "tags": [], "converts": []})
        if action == "commits" and len(rest) == 2 and self.command == "GET":
            commits, sha = [], repo.resolve(rest[1]).sha
            while sha:
                c = repo.commits[sha]
                commits.append({"id": c.sha, "title": c.message, "message": c.message, "authors": [{"user": state.user}], "date": c.date})
                sha = c.parent
            return self._json(commits)
        raise HubError(404, f"{self.command} /api/.../{'/'.join(rest)} is not emulated")

    def _resolve(self, repo: Repo, revision: str, path: str) -> None:
        commit = repo.resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        etag = stored.sha256 if stored.lfs else stored.oid
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(stored.size)}
        content = self.server.state.read_object(stored.sha256)
        status, ranged = 200, self.headers.get("Range")
        if ranged and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", ranged.strip())) and content:
            start, end = (int(m[1]), int(m[2]) if m[2] else len(content) - 1) if m[1] else (len(content) - int(m[2]), len(content) - 1)
            start, end = max(start, 0), min(end, len(content) - 1)
            if start > end:
                return self._send(416, headers={"Content-Range": f"bytes */{len(content)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        self._send(status, content, headers, "application/octet-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.log: list[dict] = []
        self.failures: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class HubEmulator(ServedInBackground):
    """The Hub on 127.0.0.1 (ephemeral port), served from a thread; storage under `root`.

    `token` writes (user `user`, orgs `orgs`), `read_token` only reads; any other token is a 401.
    `requests` is the log of answered requests: method, path, status and auth (none|valid|invalid).
    """

    def __init__(self, root: Path, token: str, read_token: str, user: str = "hema-tester", orgs: tuple[str, ...] = ("hema-org",)):
        self.root = Path(root)
        self.token, self.read_token = token, read_token
        self.state = HubState(self.root, {token: "write", read_token: "read"}, user, orgs)
        self._server = _Server(self.state)
        self._serve("hub-emulator")

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def requests(self) -> list[dict]:
        return self._server.log

    @property
    def failures(self) -> list[str]:
        """Requests the emulator itself failed on (a bug here, not in the client): should stay empty."""
        return self._server.failures

    def env(self) -> dict[str, str]:
        """Environment variables that point huggingface_hub, datasets and transformers here."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1"}
