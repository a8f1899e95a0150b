"""What every outgoing request shares: who we say we are, how long we wait, and how we back off.

No httpx import at module level: `kb --help` must stay fast, and these helpers are plain arithmetic
on headers and clocks. The network modules (`kb.arxiv`, `kb.links`, `kb.ghmeta`) build their own
clients and pass the pieces in here.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import os
import random
import threading
import time
from collections.abc import Callable, Mapping

from . import __version__


def user_agent(purpose: str) -> str:
    """A descriptive User-Agent: project, version and what the traffic is for.

    `KB_CONTACT` (an e-mail or the repository URL) is appended when set, so operators of a busy
    service can reach a human; the workflows set it to the repository's URL.
    """
    contact = os.environ.get("KB_CONTACT", "").strip()
    extra = f"; +{contact}" if contact else ""
    return f"pruning-kb/{__version__} (LLM-pruning knowledge base; {purpose}{extra})"


def describe(exc: BaseException) -> str:
    """An exception as one short line: its message with white space collapsed, else its type."""
    return " ".join(str(exc).split()) or type(exc).__name__


def env_float(name: str, default: float) -> float:
    """A non-negative float from the environment; a bad value is ignored rather than fatal."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value >= 0 else default


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait according to a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half of base * 2**attempt fixed, half random, never above cap."""
    ceiling: float = min(cap, base * (2**attempt))
    r: float = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2


class MinIntervalLimiter:
    """At most one request per `interval` seconds, across every thread that shares this object.

    `wait(interval)` blocks until `interval` seconds have passed since the previous call returned,
    then records the new start. The clock and sleep function are injectable so tests need no real time.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None
        self._lock = threading.Lock()

    def wait(self, interval: float) -> float:
        """Block as needed; return how long we slept."""
        with self._lock:
            slept = 0.0
            if self._last is not None:
                due = self._last + interval - self._clock()
                if due > 0:
                    self._sleep(due)
                    slept = due
            self._last = self._clock()
            return slept
