"""retry.py: backoff, deadline, retryable vs not."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ebpf_tracer.export.retry import (
    MAX_SERVER_DELAY_S,
    SUCCESS,
    Outcome,
    RateLimitedLog,
    RetryPolicy,
    call_with_retry,
    parse_retry_after,
)

RETRY = Outcome(ok=False, retryable=True, detail="UNAVAILABLE")
FATAL = Outcome(ok=False, retryable=False, detail="HTTP 400")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, delay: float) -> bool:
        self.sleeps.append(delay)
        self.now += delay
        return False


def scripted(*outcomes: Outcome):
    calls: list[float] = []
    it = iter(outcomes)

    def attempt(timeout_s: float) -> Outcome:
        calls.append(timeout_s)
        return next(it)

    return attempt, calls


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=8.0, multiplier=2.0)
    assert [policy.backoff(n, rand=lambda: 1.0) for n in range(5)] == [1, 2, 4, 8, 8]
    assert [policy.backoff(n, rand=lambda: 0.0) for n in range(5)] == [0.5, 1, 2, 4, 4]


def test_retries_retryable_outcomes_until_success() -> None:
    clock = FakeClock()
    attempt, calls = scripted(RETRY, RETRY, SUCCESS)
    result = call_with_retry(attempt, timeout_s=30, wait=clock.wait, clock=clock,
                             policy=RetryPolicy(initial_backoff_s=1.0))
    assert result.outcome.ok and result.attempts == 3
    assert len(clock.sleeps) == 2 and 0.5 <= clock.sleeps[0] <= 1.0 <= clock.sleeps[1] <= 2.0
    # Each attempt gets what is left of the one deadline.
    assert calls[0] == 30 and calls[2] == 30 - sum(clock.sleeps)


def test_does_not_retry_a_non_retryable_outcome() -> None:
    clock = FakeClock()
    attempt, calls = scripted(FATAL, SUCCESS)
    result = call_with_retry(attempt, timeout_s=30, wait=clock.wait, clock=clock)
    assert result.outcome is FATAL and result.attempts == 1 and clock.sleeps == []


def test_stops_at_max_attempts() -> None:
    clock = FakeClock()
    attempt, calls = scripted(*[RETRY] * 10)
    result = call_with_retry(attempt, timeout_s=1000, wait=clock.wait, clock=clock,
                             policy=RetryPolicy(max_attempts=4))
    assert result.attempts == 4 and not result.outcome.ok


def test_gives_up_rather_than_sleep_past_the_deadline() -> None:
    clock = FakeClock()
    attempt, calls = scripted(*[RETRY] * 10)
    policy = RetryPolicy(initial_backoff_s=1.0, max_attempts=100)
    result = call_with_retry(attempt, timeout_s=3.5, wait=clock.wait, clock=clock, policy=policy)
    assert not result.outcome.ok
    assert clock.now < 3.5
    assert 2 <= result.attempts <= 3


def test_server_retry_after_lengthens_the_wait() -> None:
    clock = FakeClock()
    slow_down = Outcome(ok=False, retryable=True, detail="HTTP 429", retry_after_s=7.0)
    attempt, _ = scripted(slow_down, SUCCESS)
    result = call_with_retry(attempt, timeout_s=30, wait=clock.wait, clock=clock)
    assert result.outcome.ok and clock.sleeps == [7.0]


def test_retry_after_beyond_the_deadline_gives_up_now() -> None:
    clock = FakeClock()
    slow_down = Outcome(ok=False, retryable=True, detail="HTTP 429", retry_after_s=60.0)
    attempt, _ = scripted(slow_down, SUCCESS)
    result = call_with_retry(attempt, timeout_s=10, wait=clock.wait, clock=clock)
    assert not result.outcome.ok and clock.sleeps == []


def test_an_interrupted_wait_abandons_the_retries() -> None:
    attempt, calls = scripted(RETRY, SUCCESS)
    result = call_with_retry(attempt, timeout_s=30, wait=lambda delay: True)
    assert result.attempts == 1 and not result.outcome.ok


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier) == 0.0


def test_server_delay_is_capped() -> None:
    clock = FakeClock()
    huge = Outcome(ok=False, retryable=True, detail="429", retry_after_s=86_400.0)
    attempt, _ = scripted(huge, SUCCESS)
    result = call_with_retry(attempt, timeout_s=10_000, wait=clock.wait, clock=clock)
    assert result.outcome.ok and clock.sleeps == [MAX_SERVER_DELAY_S]


def test_every_failed_attempt_is_reported() -> None:
    seen: list[Outcome] = []
    attempt, _ = scripted(RETRY, RETRY, SUCCESS)
    clock = FakeClock()
    call_with_retry(attempt, timeout_s=30, wait=clock.wait, clock=clock, on_failure=seen.append)
    assert seen == [RETRY, RETRY]


def test_outcome_is_truthy_only_on_success() -> None:
    assert SUCCESS and not RETRY and not FATAL


def test_rate_limited_log_says_what_it_held_back(caplog) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), interval_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert limited.log(logging.WARNING, "503", "export failed: %s", "HTTP 503")
        for _ in range(4):
            clock.now += 10
            assert not limited.log(logging.WARNING, "503", "export failed: %s", "HTTP 503")
        assert limited.log(logging.WARNING, "401", "export failed: %s", "HTTP 401")  # own key
        clock.now += 30
        assert limited.log(logging.WARNING, "503", "export failed: %s", "HTTP 503")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "export failed: HTTP 503",
        "export failed: HTTP 401",
        "export failed: HTTP 503 (4 similar message(s) in the last 60s not shown)",
    ]
