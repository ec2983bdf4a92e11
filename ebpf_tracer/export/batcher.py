"""Batching between the capture loop and an exporter.

The capture loop must keep draining the kernel's ring buffer whatever the
backend is doing, so ``on_end`` only appends to a bounded in-memory queue
(dropping the oldest span when full: the newest traffic is the most useful)
and a single worker thread does all encoding and I/O.

Across a backend outage the queue is the buffer: a batch whose export failed
with a retryable outcome (unavailable, throttled, refused...) goes back to the
head of the queue and is tried again, with capped, jittered exponential backoff,
until the backend returns. Nothing is lost unless the queue overflows (counted
as ``queue_full``), the backend refuses the batch for good (``export_failed``)
or shutdown's deadline passes first (``shutdown_timeout``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from ..model import Span
from .base import SpanExporter
from .config import (
    DEFAULT_EXPORT_TIMEOUT_S,
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_S,
)
from .retry import MAX_SERVER_DELAY_S, Outcome, RetryPolicy

log = logging.getLogger(__name__)

DROP_QUEUE_FULL = "queue_full"  # the queue overflowed: the oldest span made room
DROP_EXPORT_FAILED = "export_failed"  # the backend refused the batch (not retryable)
DROP_REJECTED = "rejected_by_backend"  # accepted batch, but spans refused (partial success)
DROP_SHUTDOWN_TIMEOUT = "shutdown_timeout"  # still held when the shutdown deadline passed
DROP_AFTER_SHUTDOWN = "after_shutdown"  # arrived after shutdown began
DROP_REASONS = (DROP_QUEUE_FULL, DROP_EXPORT_FAILED, DROP_REJECTED, DROP_SHUTDOWN_TIMEOUT,
                DROP_AFTER_SHUTDOWN)

# Between attempts at a held batch once the transport's own retries (within one
# export timeout) failed: grows 1, 2, 4 s to a 5 s cap, so a backend that comes
# back is used within ~5 s, yet a long outage costs one attempt per ~5 s.
HOLD_POLICY = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=5.0, multiplier=2.0)


@dataclass(slots=True)
class ExportStats:
    spans_queued: int = 0  # accepted by on_end
    spans_exported: int = 0  # delivered (or written) and accepted by the backend
    spans_dropped: dict[str, int] = field(default_factory=dict)  # by DROP_* reason
    export_failures: int = 0  # export calls that failed (returned False/failure, or raised)
    export_retries: int = 0  # held batches tried again after a retryable failure

    @property
    def dropped_total(self) -> int:
        return sum(self.spans_dropped.values())

    def describe(self) -> str:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.spans_dropped.items())) or "none"
        return (
            f"queued={self.spans_queued} exported={self.spans_exported} "
            f"dropped({dropped}) export_failures={self.export_failures}"
        )


def _as_outcome(result: object) -> Outcome:
    """Exporters return an Outcome (OTLP) or a bool (console, jsonl, fakes)."""
    if isinstance(result, Outcome):
        return result
    return Outcome(ok=bool(result), code="" if result else "failed")


class BatchSpanProcessor:
    """Queues finished spans and exports them in batches from a worker thread.

    A batch goes out when ``max_export_batch_size`` spans are waiting or
    ``schedule_delay_s`` has passed, whichever is first. Memory is bounded by
    ``max_queue_size`` queued spans plus one batch in flight.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay_s: float = DEFAULT_SCHEDULE_DELAY_S,
        export_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S,
        hold_policy: RetryPolicy = HOLD_POLICY,
    ) -> None:
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if not 1 <= max_export_batch_size <= max_queue_size:
            raise ValueError("max_export_batch_size must be between 1 and max_queue_size")
        if schedule_delay_s <= 0 or export_timeout_s <= 0:
            raise ValueError("schedule_delay_s and export_timeout_s must be positive")
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = max_export_batch_size
        self.schedule_delay_s = schedule_delay_s
        # The default deadline of shutdown() and force_flush(); an export slower
        # than this is reported, since it stalls the queue.
        self.export_timeout_s = export_timeout_s
        self.hold_policy = hold_policy
        self.stats = ExportStats()

        self._queue: collections.deque[Span] = collections.deque()
        self._inflight = 0  # spans of the batch being exported
        self._lock = threading.Lock()  # held only for O(1)/O(batch) queue operations
        self._wake = threading.Event()
        self._kick = threading.Event()  # ends a hold backoff early (flush, shutdown)
        self._flush_waiters: list[threading.Event] = []
        self._stopping = False
        self._shut_down = False
        self._abandoned = False  # shutdown's deadline passed: the worker must stop now
        self._failing_since: float | None = None  # first retryable failure of an outage
        self._hold_failures = 0
        self._next_drop_warning = 0.0
        self._worker = threading.Thread(target=self._run, name="ebpf-tracer-export", daemon=True)
        self._worker.start()

    # --- capture-loop side -------------------------------------------------

    def on_end(self, span: Span) -> None:
        """Queue ``span``. Never blocks on I/O; drops the oldest span when full."""
        with self._lock:
            if self._stopping:
                self._count_drop(DROP_AFTER_SHUTDOWN, 1)
                return
            queue = self._queue
            if len(queue) >= self.max_queue_size:
                queue.popleft()
                self._count_drop(DROP_QUEUE_FULL, 1)
                full = True
            else:
                full = False
            queue.append(span)
            self.stats.spans_queued += 1
            batch_ready = len(queue) >= self.max_export_batch_size
        if full:
            self._warn_queue_full()
        if batch_ready and not self._wake.is_set():
            self._wake.set()

    def on_end_many(self, spans: list[Span]) -> None:
        """Queue ``spans`` in order, as on_end does one by one, under one lock."""
        with self._lock:
            if self._stopping:
                self._count_drop(DROP_AFTER_SHUTDOWN, len(spans))
                return
            queue = self._queue
            queue.extend(spans)
            self.stats.spans_queued += len(spans)
            over = len(queue) - self.max_queue_size
            if over > 0:
                for _ in range(over):
                    queue.popleft()
                self._count_drop(DROP_QUEUE_FULL, over)
            batch_ready = len(queue) >= self.max_export_batch_size
        if over > 0:
            self._warn_queue_full()
        if batch_ready and not self._wake.is_set():
            self._wake.set()

    @property
    def queue_length(self) -> int:
        """Spans waiting in the queue (not counting a batch being exported)."""
        return len(self._queue)

    def oldest_age_s(self, now_ns: int) -> float:
        """How long ago (seconds, by `now_ns` on the spans' clock) the oldest
        queued span ended; 0 when the queue is empty. Without the lock: a
        glance, not an account."""
        queue = self._queue
        try:
            return max(0.0, (now_ns - queue[0].end_time_ns) / 1e9) if queue else 0.0
        except IndexError:  # emptied meanwhile
            return 0.0

    @property
    def pending(self) -> int:
        """Spans held: queued plus in flight. Every span accepted by on_end is
        exported, dropped (counted by reason) or pending."""
        with self._lock:
            return len(self._queue) + self._inflight

    @property
    def backend_failing_s(self) -> float:
        """How long exports have been failing with retryable errors (0 if not)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    # --- control -------------------------------------------------------------

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Try to export everything queued so far; True if nothing is left pending
        within ``timeout_s`` (default: the export timeout)."""
        if timeout_s is None:
            timeout_s = self.export_timeout_s
        if not self._worker.is_alive():
            return not self._queue
        deadline = time.monotonic() + timeout_s
        done = threading.Event()
        with self._lock:
            self._flush_waiters.append(done)
        self._wake.set()
        self._kick.set()  # a held batch is tried now, once; later tries keep the backoff
        if not done.wait(timeout_s):
            return False
        while self.pending and time.monotonic() < deadline and self._worker.is_alive():
            time.sleep(0.05)
        return self.pending == 0

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is held within ``timeout_s`` (default: the export timeout),
        retrying through an outage until then; then count what is left as dropped
        and shut the exporter down."""
        if timeout_s is None:
            timeout_s = self.export_timeout_s
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            self._stopping = True
        self._wake.set()
        self._kick.set()  # try a held batch now rather than after its backoff
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            with self._lock:
                self._abandoned = True
                left = len(self._queue) + self._inflight
                self._queue.clear()
                if left:
                    self._count_drop(DROP_SHUTDOWN_TIMEOUT, left)
            self._kick.set()
            log.warning(
                "span export did not finish within %.1fs; %d spans not delivered",
                timeout_s,
                left,
            )
        try:
            # Also cuts short the retries of an export still in flight.
            self.exporter.shutdown()
        except Exception as exc:  # shutdown must always complete
            log.warning("exporter shutdown failed: %s", exc)
        self._worker.join(1.0)
        log.info("span export stopped: %s", self.stats.describe())

    # --- worker --------------------------------------------------------------

    def _run(self) -> None:
        hold_until = 0.0
        while True:
            now = time.monotonic()
            if hold_until > now:
                # Backing off after a retryable failure: only flush/shutdown end it early.
                self._kick.wait(hold_until - now)
                self._kick.clear()
                woken = False
            else:
                woken = self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
                stopping = self._stopping
                abandoned = self._abandoned
            if abandoned:
                for waiter in waiters:
                    waiter.set()
                return
            # Woken only because a batch filled up: send full batches and let a
            # remainder wait to fill (or for the timer). Otherwise send it all;
            # everything queued before a flush request goes out before its
            # waiter is released.
            delay = self._drain(full_only=woken and not waiters and not stopping)
            hold_until = time.monotonic() + delay if delay else 0.0
            for waiter in waiters:
                waiter.set()
            with self._lock:
                if self._abandoned or (stopping and not self._queue and not self._inflight):
                    return

    def _drain(self, *, full_only: bool) -> float:
        """Export queued batches; the backoff delay if one must be held, else 0."""
        size = self.max_export_batch_size
        while True:
            with self._lock:
                queue = self._queue
                count = min(len(queue), size)
                if count == 0 or (full_only and count < size) or self._abandoned:
                    return 0.0
                batch = [queue.popleft() for _ in range(count)]
                self._inflight = count
            delay = self._export(batch)
            if delay:
                return delay

    def _export(self, batch: list[Span]) -> float:
        started = time.monotonic()
        try:
            outcome = _as_outcome(self.exporter.export(batch))
        except Exception:
            # An exporter bug must not kill the worker (and silently stop all export).
            log.exception("span exporter raised; %d spans dropped", len(batch))
            outcome = Outcome(ok=False, code="exception")
        elapsed = time.monotonic() - started
        if elapsed > self.export_timeout_s:
            log.warning(
                "exporting %d spans took %.1fs (more than %.1fs)",
                len(batch),
                elapsed,
                self.export_timeout_s,
            )
        with self._lock:
            self._inflight = 0
            if self._abandoned:
                return 0.0  # shutdown already counted these spans
            if outcome.ok:
                rejected = min(max(outcome.rejected, 0), len(batch))
                self.stats.spans_exported += len(batch) - rejected
                if rejected:
                    self._count_drop(DROP_REJECTED, rejected)
                recovered_after = self._recovered()
            elif outcome.retryable:
                self.stats.export_failures += 1
                self._hold(batch)
                recovered_after = None
            else:
                self.stats.export_failures += 1
                self._count_drop(DROP_EXPORT_FAILED, len(batch))
                recovered_after = self._recovered()
        if outcome.ok and recovered_after is not None:
            log.info("export recovered after %.1fs of backend failures; held spans are "
                     "being delivered", recovered_after)
        if outcome.ok or not outcome.retryable:
            return 0.0
        delay = self.hold_policy.backoff(self._hold_failures - 1)
        if outcome.retry_after_s is not None:
            delay = max(delay, min(outcome.retry_after_s, MAX_SERVER_DELAY_S))
        log.debug("export failed (%s); %d spans held, next attempt in %.1fs",
                  outcome.detail, self.pending, delay)
        return delay

    def _hold(self, batch: list[Span]) -> None:
        """Put a batch that failed retryably back at the head of the queue (lock held)."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self._hold_failures += 1
        self.stats.export_retries += 1
        queue = self._queue
        queue.extendleft(reversed(batch))
        over = len(queue) - self.max_queue_size
        if over > 0:
            # Newer spans arrived meanwhile: the oldest (this batch's) make room.
            for _ in range(over):
                queue.popleft()
            self._count_drop(DROP_QUEUE_FULL, over)

    def _recovered(self) -> float | None:
        """End an outage (lock held); its length if there was one."""
        since, self._failing_since = self._failing_since, None
        self._hold_failures = 0
        return None if since is None else time.monotonic() - since

    def _warn_queue_full(self) -> None:
        now = time.monotonic()
        if now < self._next_drop_warning:
            return
        self._next_drop_warning = now + 60.0  # once a minute while it lasts
        log.warning(
            "span queue full (%d spans): dropping the oldest; raise OTEL_BSP_MAX_QUEUE_SIZE "
            "or check the backend (dropped so far: %d)",
            self.max_queue_size,
            self.stats.spans_dropped.get(DROP_QUEUE_FULL, 0),
        )

    def _count_drop(self, reason: str, count: int) -> None:
        dropped = self.stats.spans_dropped
        dropped[reason] = dropped.get(reason, 0) + count
