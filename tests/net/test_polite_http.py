"""The shared politeness helpers: Retry-After parsing, backoff bounds, the User-Agent."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kb.http import backoff_delay, env_float, retry_after_seconds, user_agent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # 30 s after `now` below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past: no wait
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(value: str, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert retry_after_seconds({"retry-after": value}, now=now) == expected


def test_no_retry_after_header() -> None:
    assert retry_after_seconds({}) is None


@given(attempt=st.integers(0, 30), base=st.floats(0.01, 10), cap=st.floats(0.01, 100), seed=st.integers())
def test_backoff_grows_but_never_passes_the_cap(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base, cap, random.Random(seed))
    ceiling = min(cap, base * 2**attempt)
    assert ceiling / 2 <= delay <= ceiling


def test_user_agent_names_project_version_purpose_and_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KB_CONTACT", raising=False)
    assert user_agent("link checker") == "pruning-kb/0.1.0 (LLM-pruning knowledge base; link checker)"
    monkeypatch.setenv("KB_CONTACT", "https://github.com/o/r")
    assert user_agent("x").endswith("; x; +https://github.com/o/r)")


def test_env_float_ignores_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in [("0.5", 0.5), ("", 3.0), ("fast", 3.0), ("-1", 3.0)]:
        monkeypatch.setenv("KB_X", raw)
        assert env_float("KB_X", 3.0) == expected
