"""The Hugging Face Hub: telling a Hub id from a local folder, and pushing built folders (dataset,
model or Space) with token handling done once.

The token is resolved and checked against the Hub before any work that would be wasted by a
rejection (uploading gigabytes, or training a model whose push then fails). Errors become one-line
HemaErrors that never contain the token; the token itself is only ever handed to huggingface_hub.
The Hub's address comes from huggingface_hub (HF_ENDPOINT), so tests point everything at a local
stand-in by setting that variable before the import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError, HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

try:  # huggingface_hub >= 2 speaks HTTP through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError

from hema import __version__
from hema.base.errors import HemaError

_LOGIN_HINT = "pass --token, set HF_TOKEN, or run `hf auth login`"


def looks_like_path(ref: str) -> bool:
    """A local path rather than a Hub id (which has at most one slash and no leading dot or slash)."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def local_or_hub(ref: str, what: str) -> Path | str:
    """The local folder `ref` names (a Path), else `ref` as a Hub id; HemaError saying `what` it is
    when `ref` is a file, or looks like a path to nothing."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise HemaError(f"{what} {ref} is a file, not a folder")
    if looks_like_path(ref):
        raise HemaError(f"{what} {ref}: no such folder")
    return ref


def _api(token: str) -> HfApi:
    return HfApi(token=token, library_name="hema", library_version=__version__)


def resolve_token(token: str | None = None) -> str:
    """The token to push with: the explicit one, else HF_TOKEN, else the `hf auth login` cache."""
    resolved = token or get_token()
    if not resolved:
        raise HemaError(f"no Hugging Face token found: {_LOGIN_HINT}")
    return resolved


@contextmanager
def _hub_errors(action: str, endpoint: str) -> Iterator[None]:
    """Turn Hub and network failures of `action` into one-line HemaErrors (they never hold the token)."""
    try:
        yield
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HemaError(f"{action}: the Hub at {endpoint} rejected the token (401 Unauthorized); {_LOGIN_HINT}") from None
        if status == 403:
            raise HemaError(f"{action}: the token may not write there (403 Forbidden)") from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        raise HemaError(f"{action}: {' '.join(lines[:2])}") from None  # status, then what was not found
    except json.JSONDecodeError:
        raise HemaError(f"{action}: the server at {endpoint} answered with something that is not the Hub's JSON; "
                        "is HF_ENDPOINT the address of a Hugging Face Hub?") from None
    except ValueError as err:
        if not isinstance(err.__cause__, HfHubHTTPError):  # only the Hub refusing the card's metadata
            raise
        raise HemaError(f"{action}: {' '.join(str(err).split())}") from None
    except OfflineModeIsEnabled:
        raise HemaError(f"{action}: offline mode is on (HF_HUB_OFFLINE=1); unset it to reach the Hub") from None
    except TransportError as err:
        raise HemaError(f"{action}: cannot reach the Hub at {endpoint} ({type(err).__name__}: {err})") from None


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HemaError(f"invalid repo id {repo_id!r}: expected NAMESPACE/NAME, e.g. my-org/mll23") from None


def check_write_access(repo_id: str, token: str, repo_type: str = "model") -> None:
    """Fail early, before uploading or training, when `token` cannot write to `repo_id`.

    Asks the Hub who the token belongs to (one cheap request): an unknown token, a read-only token,
    or a namespace that is neither the user nor one of their organisations is refused with one line.
    """
    _check_repo_id(repo_id)
    api = _api(token)
    with _hub_errors(f"checking the token for {repo_type} {repo_id}", api.endpoint):
        me = api.whoami(token=token)
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HemaError(f"the token is read-only: {repo_type} {repo_id} needs a token with write access")
    user = me.get("name", "")
    namespaces = {user, *(org.get("name") for org in me.get("orgs") or [])}
    namespace = repo_id.split("/")[0] if "/" in repo_id else user
    if namespace not in namespaces:
        raise HemaError(
            f"the token of {user!r} cannot write to namespace {namespace!r} (yours: {', '.join(sorted(filter(None, namespaces)))})"
        )


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    repo_type: str,
    token: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str,
    ignore_patterns: list[str] | None = None,
    space_sdk: str | None = None,
) -> str:
    """Upload `folder` as one commit to `repo_id` (created if needed, on branch `revision`); returns its URL.

    The token is checked first, so a rejection costs one request and uploads nothing.
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        raise HemaError(f"nothing to push: {folder} is not a folder with files")
    check_write_access(repo_id, token, repo_type)
    api = _api(token)
    with _hub_errors(f"pushing {folder} to {repo_type} {repo_id}", api.endpoint):
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, token=token,
                              space_sdk=space_sdk)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True, token=token)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            ignore_patterns=ignore_patterns,
            token=token,
        )
    return f"{url}/tree/{revision}" if revision else str(url)
