"""Retry policy shared by the OTLP transports: what is retryable, and when to try again.

Transports describe each attempt as an Outcome; ``call_with_retry`` decides
whether to try again, with jittered exponential backoff, inside one deadline
(the OTLP timeout covers the whole export, retries included).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# OTLP spec: the gRPC codes and HTTP statuses worth retrying. Everything else
# (bad request, auth, not found...) will fail again the same way.
RETRYABLE_GRPC_CODES = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE",
     "UNAVAILABLE", "DATA_LOSS"}
)
RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt (or a whole export) went. Truthy when it succeeded, so an
    exporter returning an Outcome still reads as the ``bool`` of SpanExporter."""

    ok: bool
    retryable: bool = False
    detail: str = ""
    retry_after_s: float | None = None  # server's hint (Retry-After, RetryInfo), if any
    code: str = ""  # short error class for metrics: "UNAVAILABLE", "503", "connection_refused"
    rejected: int = 0  # spans the backend refused in a partial success

    def __bool__(self) -> bool:
        return self.ok


SUCCESS = Outcome(ok=True)
# Longest server-requested pause we honour: a misconfigured backend asking for
# hours must not silence export for hours (the queue would overflow anyway).
MAX_SERVER_DELAY_S = 300.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multiplier: float = 2.0

    def backoff(self, retry_number: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry ``retry_number`` (0-based): exponential, jittered to [b/2, b]
        so many agents restarting together do not hit the collector in lockstep."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry_number)
        return base * (0.5 + 0.5 * rand())


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class RetryResult:
    outcome: Outcome
    attempts: int


def call_with_retry(
    attempt: Callable[[float], Outcome],
    *,
    timeout_s: float,
    policy: RetryPolicy = DEFAULT_POLICY,
    wait: Callable[[float], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_failure: Callable[[Outcome], None] | None = None,
) -> RetryResult:
    """Call ``attempt(remaining_s)`` until it succeeds, fails for good, or time runs out.

    ``wait(delay)`` sleeps between attempts and returns True to abandon the
    retries (e.g. a ``threading.Event.wait`` set on shutdown).
    ``on_failure(outcome)`` sees every failed attempt (for error metrics).
    """
    if wait is None:
        wait = _sleep
    deadline = clock() + timeout_s
    attempts = 0
    while True:
        outcome = attempt(max(deadline - clock(), 0.001))
        attempts += 1
        if not outcome.ok and on_failure is not None:
            on_failure(outcome)
        if outcome.ok or not outcome.retryable or attempts >= policy.max_attempts:
            return RetryResult(outcome, attempts)
        delay = policy.backoff(attempts - 1)
        if outcome.retry_after_s is not None:
            delay = max(delay, min(outcome.retry_after_s, MAX_SERVER_DELAY_S))
        # Give up now rather than sleep past the deadline and fail anyway.
        if clock() + delay >= deadline:
            return RetryResult(outcome, attempts)
        if wait(delay):
            return RetryResult(outcome, attempts)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _sleep(delay: float) -> bool:
    time.sleep(delay)
    return False


class RateLimitedLog:
    """Logs a message kind at most once per ``interval_s``, then says how many
    similar ones it held back: an outage or a bad token must not flood the logs,
    yet the first occurrence is never delayed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval_s`` ago;
        True when it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            msg += " (%d similar message(s) in the last %.0fs not shown)"
            args = (*args, held, self.interval_s)
        self.logger.log(level, msg, *args)
        return True
