"""A test server on 127.0.0.1, served from a daemon thread for the length of a `with` block."""

from __future__ import annotations

import threading
from socketserver import BaseServer


class ServedInBackground:
    """Base of the emulators: subclasses set `self._server` and call `_serve(name)` in __init__."""

    _server: BaseServer

    def _serve(self, name: str) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
