"""A throwaway HTTP server on 127.0.0.1 that serves test-made checkpoint files, at plain
URLs and as a Hugging Face Hub (its ``resolve`` protocol) for ``HF_ENDPOINT``."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import time
from dataclasses import dataclass, field

import torch

from topiq_loss import WeightsEntry


@dataclass
class ServedFile:
    data: bytes
    status: int = 200
    truncate_at: int | None = None  # close the connection after this many bytes
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (a slow server)
    send_length: bool = True  # False: no Content-Length header
    repeat: int = 1  # send the body this many times (a long or "endless" stream)
    header_delay: float = 0.0  # > 0: send the response head one byte at a time, this far apart
    header_phase: str = "headers"  # where the trickle starts: "status-line" or "headers"
    announced: str | None = None  # as a Hub file: the sha256 announced (default: the true one)


#: Where the fake Hub serves the files of the official repository.
HUB_PATH = "chaofengc/IQA-PyTorch-Weights/resolve/main/"
_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class WeightsServer:
    files: dict[str, ServedFile] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # paths of every HEAD and GET, in order
    port: int = 0

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def hits(self, name: str) -> int:
        return sum(1 for r in self.requests if r == "/" + name)

    def on_hub(self, name: str, served: ServedFile) -> None:
        """Serve ``served`` as the Hub file ``name`` of the official repository."""
        self.files[HUB_PATH + name] = served


def start_server() -> tuple[WeightsServer, http.server.ThreadingHTTPServer]:
    state = WeightsServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - http.server API
            self.do_GET(body=False)

        def do_GET(self, body: bool = True) -> None:  # noqa: N802 - http.server API
            path = self.path.split("?", 1)[0]
            # /api/...: huggingface_hub's own look-ups (an agent registry, once a day), not files.
            state.requests.extend([] if path.startswith("/api/") else [path])
            served = state.files.get(path.lstrip("/"))
            if served is not None and served.header_delay:
                self._trickle_head(served)
                return
            if served is None or served.status != 200:
                self.send_response(served.status if served else 404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            if path.lstrip("/").startswith(HUB_PATH):  # the Hub's resolve protocol
                digest = served.announced or hashlib.sha256(served.data).hexdigest()
                self.send_header("X-Repo-Commit", _COMMIT)
                self.send_header("ETag", f'"{digest}"')
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(served.data)))
            if served.send_length:
                self.send_header("Content-Length", str(len(served.data) * served.repeat))
            self.end_headers()
            if not body:
                return
            body = served.data if served.truncate_at is None else served.data[: served.truncate_at]
            try:
                step = 1 << 16
                for _ in range(served.repeat):
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        if served.chunk_delay:
                            time.sleep(served.chunk_delay)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if not served.send_length:
                self.close_connection = True
            if served.truncate_at is not None:
                self.close_connection = True

        def _trickle_head(self, served: ServedFile) -> None:
            """A head that never ends, one byte at a time: each byte would reset a socket timeout."""
            status = b"HTTP/1.1 200 OK\r\n"
            head = b"" if served.header_phase == "status-line" else status
            slow = (status if served.header_phase == "status-line" else b"") + b"X-Slow: " + b"a" * 100_000
            try:
                self.wfile.write(head)
                self.wfile.flush()
                for i in range(len(slow)):
                    self.wfile.write(slow[i : i + 1])
                    self.wfile.flush()
                    time.sleep(served.header_delay)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """``torch.save({"params": tensors})`` as bytes: the official files' layout."""
    buf = io.BytesIO()
    torch.save({"params": tensors}, buf)
    return buf.getvalue()


def entry_for(name: str, release: str | None = None) -> WeightsEntry:
    """A registry entry for a test file named by :func:`hash_named`: on the (fake) Hub under
    its name, and in the release folder ``release`` (default: a closed port)."""
    dead = f"http://127.0.0.1:{closed_port()}/release"
    return WeightsEntry(name="test", filename=name, sha256_prefix=name.rsplit("-", 1)[1][:8], release=release or dead)


def hash_named(stem: str, data: bytes) -> str:
    """torch.hub-style file name: <stem>-<first 8 hex of sha256>.pth."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
