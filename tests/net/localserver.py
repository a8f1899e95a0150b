"""Real HTTP servers on 127.0.0.1 for the network tests, and small helpers. Nothing here touches the internet.

`LocalServer` runs `http.server.ThreadingHTTPServer` on a free port in a daemon thread. Each test
gives it a routing function `route(req) -> Reply | None`; every request is logged with its path,
query and headers so tests can assert what was (or was not) sent. The fixture shuts the server
down when the test ends (see the `serve` fixture in conftest.py).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from kb.yamlio import load_yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    reset: bool = False  # abort the connection (TCP RST) instead of answering


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (timeouts, closed streams) are part of the tests. socketserver would print
    a traceback to stderr from a server thread at an arbitrary moment, into another test's capture."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class LocalServer:
    def __init__(self, route: Callable[[Request], Reply | None]) -> None:
        self.route = route
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                req = Request(
                    parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}
                )
                with server.lock:
                    server.requests.append(req)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.route(req) or Reply(404, b"no such route")
                    if reply.delay:
                        time.sleep(reply.delay)
                    if reply.reset:
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.connection.close()
                        self.close_connection = True
                        return
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (timeouts are part of the tests)
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Script:
    """Replies handed out in order per key; the last one repeats."""

    def __init__(self, **scripts: list[Reply]) -> None:
        self.scripts = scripts
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def next(self, key: str) -> Reply | None:
        if key not in self.scripts:
            return None
        with self.lock:
            n = self.calls.get(key, 0)
            self.calls[key] = n + 1
        replies = self.scripts[key]
        return replies[min(n, len(replies) - 1)]


def write_record(root: Path, paper_id: str, *, links: dict | None = None, repo: str | None = None) -> Path:
    """A schema-valid record (Wanda's, re-labelled) with the given links and repo."""
    data = load_yaml(ROOT / "papers" / "wanda.yaml").data
    data["id"] = paper_id
    data["related"] = []
    data.pop("implementation", None)
    data["links"] = links or {"paper": "https://arxiv.org/abs/2306.11695"}
    if repo is None:
        data.pop("repo", None)
    else:
        data["repo"] = repo
    path = root / "papers" / f"{paper_id}.yaml"
    header = "# yaml-language-server: $schema=../schema/paper.schema.json\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def json_reply(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})
