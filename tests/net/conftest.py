"""Fixtures for the network tests: local HTTP servers on 127.0.0.1 that stop with the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from localserver import LocalServer, Reply, Request


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Request], Reply | None]], LocalServer]]:
    """`serve(route)` starts a server; all of them stop when the test ends."""
    started: list[LocalServer] = []

    def start(route: Callable[[Request], Reply | None]) -> LocalServer:
        started.append(LocalServer(route))
        return started[-1]

    yield start
    for s in started:
        s.stop()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; without them the tests' traffic cannot leave 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("KB_CONTACT", raising=False)
